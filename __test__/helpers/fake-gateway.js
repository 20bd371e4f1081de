'use strict'
// A scripted gateway for the cases the bundled Server never produces (a BYE with the
// server's own error code, an acknowledgement for the wrong event, a server that never
// acknowledges): a plain or mutual-TLS listener whose accepted sockets are RawClient peers,
// driven frame by frame by the test.

const net = require('net')
const tls = require('tls')
const { RawClient } = require('./raw-client')

/**
 * Listens on 127.0.0.1 (with mutual TLS when `pki` is given) and resolves to
 * `{port, accept()}`; `accept()` resolves to the next connection's RawClient.
 */
function fakeGateway (t, { pki } = {}) {
  const peers = []
  const waiters = []
  const onSocket = (socket) => {
    const peer = new RawClient(socket)
    const waiter = waiters.shift()
    if (waiter) waiter(peer)
    else peers.push(peer)
  }
  const server = pki
    ? tls.createServer({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, requestCert: true, rejectUnauthorized: true }, onSocket)
    : net.createServer(onSocket)
  const sockets = new Set()
  server.on(pki ? 'secureConnection' : 'connection', (socket) => {
    sockets.add(socket)
    socket.on('close', () => sockets.delete(socket))
  })
  server.on('tlsClientError', () => {})
  t.teardown(() => new Promise((resolve) => {
    for (const socket of sockets) socket.destroy()
    server.close(() => resolve())
  }))
  return new Promise((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve({
      port: server.address().port,
      accept: () => peers.length ? Promise.resolve(peers.shift()) : new Promise((resolve) => waiters.push(resolve))
    }))
  })
}

/** Answers HELLO with WELCOME and DRAINED, as a gateway with nothing held. */
async function welcome (peer) {
  const hello = await peer.next()
  if (hello.name !== 'HELLO') throw new Error(`expected HELLO, got ${hello.name}`)
  peer.send('WELCOME')
  peer.send('DRAINED')
  return hello
}

module.exports = { fakeGateway, welcome }
