'use strict'

// Throwaway certificates for tests, demos and benchmarks: never ship or commit what this makes.
const { randomBytes } = require('crypto')
const { TestCertificateAuthority, ioDriver } = require('./native')

/**
 * A root CA with a server certificate (for `hosts`, default localhost and loopback addresses)
 * and a device (client) certificate, all PEM strings.
 */
function createPki ({ hosts = ['localhost', '127.0.0.1', '::1'], device = 'device-1', keyType = 'ec' } = {}) {
  const ca = new TestCertificateAuthority(`imt-gateway test root ${randomBytes(4).toString('hex')}`)
  const server = ca.issue({ commonName: hosts[0], altNames: hosts, server: true, keyType })
  const client = ca.issue({ commonName: device, client: true, keyType })
  return { ca, caCert: ca.cert, server, client }
}

module.exports = { TestCertificateAuthority, createPki, ioDriver }
