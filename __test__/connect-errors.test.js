'use strict'
// The table of error codes (docs/client.md), for the connection failures no other file produces: a host
// that does not resolve (ENOTFOUND), a server certificate whose signature does not verify
// (CERT_SIGNATURE_FAILURE) and one that is wrong in another way (ETLSCERT). Each is what the
// application sees: the `error` that ends a client with `autoReconnect: false`.

const test = require('ava')
const { Client } = require('imt-gateway')
const { TestCertificateAuthority } = require('imt-gateway/testing')
const { start, once } = require('./helpers/server')

const ca = new TestCertificateAuthority('imt-gateway connect-errors root')
const device = ca.issue({ commonName: 'device-1', client: true })
const HOSTS = ['localhost', '127.0.0.1']

/** The error that ends a client that trusts `trusted`, and what it emitted before. */
async function failure (t, options, trusted = ca.cert) {
  const client = new Client({ key: device.key, cert: device.cert, ca: trusted, autoReconnect: false, ...options })
  t.teardown(() => client.close())
  const seen = []
  client.on('connect', () => seen.push('connect'))
  client.on('disconnect', () => seen.push('disconnect'))
  client.connect()
  const [err] = await once(client, 'error')
  t.true(err instanceof Error)
  return { err, seen }
}

test('a host name that does not resolve fails with ENOTFOUND', async (t) => {
  // .invalid never resolves (RFC 2606), whatever the resolver.
  const { err, seen } = await failure(t, { host: 'no-such-gateway.invalid', port: 7777 })
  t.is(err.code, 'ENOTFOUND')
  t.regex(err.message, /ENOTFOUND no-such-gateway\.invalid/)
  t.deepEqual(seen, [])
})

test('a server certificate whose signature does not verify fails with CERT_SIGNATURE_FAILURE', async (t) => {
  // A root with the same name as the one that signed the server's certificate, but another
  // key: the chain is found by name, and the signature check fails.
  const twin = new TestCertificateAuthority('imt-gateway connect-errors root')
  const server = await start(t, { ...ca.issue({ commonName: 'localhost', altNames: HOSTS, server: true }) })
  const { err, seen } = await failure(t, { host: '127.0.0.1', port: server.address().port }, twin.cert)
  t.is(err.code, 'CERT_SIGNATURE_FAILURE')
  t.regex(err.message, /TLS/)
  t.deepEqual(seen, [])
})

test('a server certificate wrong in another way (issued for clients only) fails with ETLSCERT', async (t) => {
  const server = await start(t, { ...ca.issue({ commonName: 'localhost', altNames: HOSTS, client: true }) })
  const { err, seen } = await failure(t, { host: '127.0.0.1', port: server.address().port })
  t.is(err.code, 'ETLSCERT')
  t.regex(err.message, /TLS: .*server authentication/)
  t.deepEqual(seen, [])
})

test('the control: the same server certificate issued for servers is accepted', async (t) => {
  const server = await start(t, { ...ca.issue({ commonName: 'localhost', altNames: HOSTS, server: true }) })
  const client = new Client({ host: '127.0.0.1', port: server.address().port, key: device.key, cert: device.cert, ca: ca.cert, autoReconnect: false })
  t.teardown(() => client.close())
  const errors = []
  client.on('error', (err) => errors.push(err.code))
  client.connect()
  await once(client, 'drained')
  t.deepEqual(errors, [])
})
