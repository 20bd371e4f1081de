'use strict'
// Starts a bundled Server on a free loopback port and closes it after the test.

const { Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const net = require('net')
const { scaled } = require('./time')

function start (t, options = {}) {
  const server = new Server(options)
  t.teardown(() => new Promise((resolve) => server.destroy(resolve)))
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve(server))
  })
}

/** A server with mutual TLS, and the PKI that made its certificates. */
async function startTls (t, options = {}, pkiOptions = {}) {
  const pki = createPki(pkiOptions)
  const server = await start(t, { key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, ...options })
  return { server, pki }
}

function once (emitter, name) {
  return new Promise((resolve) => emitter.once(name, (...args) => resolve(args)))
}

/** Resolves once `predicate()` holds, polling; rejects after `ms`. */
function waitFor (predicate, ms = scaled(10000)) {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const poll = () => {
      if (predicate()) return resolve()
      if (Date.now() - started > ms) return reject(new Error('timed out'))
      setTimeout(poll, 5)
    }
    poll()
  })
}

/** A loopback port nothing listens on (it listened a moment ago). */
function freePort () {
  return new Promise((resolve, reject) => {
    const probe = net.createServer()
    probe.once('error', reject)
    probe.listen(0, '127.0.0.1', () => {
      const { port } = probe.address()
      probe.close(() => resolve(port))
    })
  })
}

module.exports = { start, startTls, once, waitFor, freePort }
