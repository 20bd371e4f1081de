'use strict'
// The `lookup` and `servername` options, and the address race (RFC 8305 Happy Eyeballs) as an
// application sees it: a name whose first address silently drops packets still connects at
// once through the next. Also run on the tokio driver (`npm run test:tokio`).

const test = require('ava')
const net = require('net')
const { spawn } = require('child_process')
const { Client } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { startTls } = require('./helpers/server')

function newClient (t, options) {
  const client = new Client(options)
  t.teardown(() => client.close())
  return client
}

function tlsOptions (pki, port) {
  return { port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
}

/**
 * A black hole on [::1]:`port`: a listener with a one-place accept queue filled by connections
 * nobody accepts (its process never returns to its event loop), so the kernel drops further
 * SYNs. Null when this host has no IPv6 loopback.
 */
async function blackHole (t, port) {
  const probe = net.createServer()
  const ipv6 = await new Promise((resolve) => {
    probe.once('error', () => resolve(false))
    probe.listen({ host: '::1', port: 0, ipv6Only: true }, () => probe.close(() => resolve(true)))
  })
  if (!ipv6) return null
  // backlog 1 (Node reads 0 as its default). The child never returns to its event loop once it
  // listens, so it accepts nothing; the fillers made here take every place in its queue.
  const child = spawn(process.execPath, ['-e', `
    const net = require('net')
    const server = net.createServer()
    server.on('error', (err) => { console.log('error ' + err.code); process.exit(1) })
    server.listen({ host: '::1', port: ${port}, backlog: 1, ipv6Only: true }, () => {
      console.log('ready')
      Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0)
    })
  `], { stdio: ['ignore', 'pipe', 'inherit'] })
  // Gone before the test's server closes (teardowns run last first): its port must not be
  // free on 127.0.0.1 while [::1] still drops SYNs for it, or another test's 'localhost'
  // connection to that port number would hang on the IPv6 attempt.
  const exited = new Promise((resolve) => child.once('exit', resolve))
  t.teardown(() => {
    child.kill('SIGKILL')
    return exited
  })
  const said = await new Promise((resolve) => {
    let out = ''
    child.stdout.on('data', (chunk) => {
      out += chunk
      if (out.includes('\n')) resolve(out.trim())
    })
    child.on('exit', () => resolve(out.trim()))
  })
  if (said !== 'ready') throw new Error(`the black hole did not start: ${said}`)
  const fillers = []
  for (let i = 0; i < 4; i++) fillers.push(net.connect(port, '::1').on('error', () => {}))
  t.teardown(() => { for (const filler of fillers) filler.destroy() })
  await new Promise((resolve) => setTimeout(resolve, 200))
  return child
}

/** Whether a TCP connect to `host:port` completes within `ms`. */
function connects (host, port, ms) {
  return new Promise((resolve) => {
    const socket = net.connect(port, host)
    const timer = setTimeout(() => { socket.destroy(); resolve(false) }, ms)
    socket.on('connect', () => { clearTimeout(timer); socket.destroy(); resolve(true) })
    socket.on('error', () => { clearTimeout(timer); resolve(false) })
  })
}

test('lookup giving a black-holed IPv6 address first and a working IPv4 one second connects well within connectTimeout', async (t) => {
  const { server, pki } = await startTls(t)
  const port = server.address().port
  const hole = await blackHole(t, port)
  if (!hole) {
    t.log('SKIPPED: no IPv6 loopback on this host to make a black hole on')
    t.pass()
    return
  }
  t.false(await connects('::1', port, 500), 'the IPv6 address drops SYNs: a plain connect hangs')
  const asked = []
  const lookup = (hostname, options, callback) => {
    asked.push([hostname, options])
    setImmediate(callback, null, [{ address: '::1', family: 6 }, { address: '127.0.0.1', family: 4 }])
  }
  const client = newClient(t, {
    ...tlsOptions(pki, port),
    host: 'gateway.test',
    servername: 'localhost',
    lookup,
    connectTimeout: 20000,
    autoReconnect: false
  })
  const started = Date.now()
  await client.connectAsync()
  const ms = Date.now() - started
  t.log(`connected in ${ms} ms past the black hole (connectTimeout 20000 ms)`)
  t.true(ms < 5000, `took ${ms} ms`)
  t.deepEqual(asked, [['gateway.test', { all: true, family: 0 }]])
  t.is(client.recovered.ETIMEDOUT, undefined)
})

test('a lookup that fails fails the attempt with its code, then the usual backoff', async (t) => {
  const notFound = Object.assign(new Error('getaddrinfo ENOTFOUND gateway.test'), { code: 'ENOTFOUND' })
  let calls = 0
  const client = newClient(t, {
    ...tlsOptions(createPki(), 1),
    host: 'gateway.test',
    lookup: (hostname, options, callback) => { calls++; callback(notFound) },
    reconnectDelay: 10,
    maxReconnectAttempts: 2
  })
  const err = await t.throwsAsync(client.connectAsync())
  t.is(err.code, 'ENOTFOUND')
  t.is(err.message, 'getaddrinfo ENOTFOUND gateway.test')
  t.is(calls, 3, 'one lookup per attempt')
  t.is(client.recovered.ENOTFOUND, 2)
})

test('a lookup that throws, answers twice, answers no address or something not an address fails cleanly', async (t) => {
  const { pki } = await startTls(t)
  const cases = [
    ['throws with a code', () => { throw Object.assign(new Error('resolver down'), { code: 'EAI_AGAIN' }) }, 'EAI_AGAIN', /resolver down/],
    ['throws without a code', () => { throw new Error('boom') }, 'ENOTFOUND', /boom/],
    ['answers nothing', (h, o, callback) => callback(null, []), 'ENOTFOUND', /gateway\.test/],
    ['answers a name', (h, o, callback) => callback(null, [{ address: 'not-an-ip', family: 4 }]), 'ERR_INVALID_IP_ADDRESS', /not-an-ip/],
    ['answers twice', (h, o, callback) => { callback(Object.assign(new Error('first'), { code: 'ENOTFOUND' })); callback(null, [{ address: '127.0.0.1', family: 4 }]) }, 'ENOTFOUND', /first/]
  ]
  for (const [what, lookup, code, message] of cases) {
    const client = newClient(t, { ...tlsOptions(pki, 1), host: 'gateway.test', lookup, autoReconnect: false })
    const err = await t.throwsAsync(client.connectAsync(), undefined, what)
    t.is(err.code, code, what)
    t.regex(err.message, message, what)
  }
})

test('servername: a gateway reached by IP address whose certificate names localhost', async (t) => {
  const { server, pki } = await startTls(t, {}, { hosts: ['localhost'] })
  const options = { ...tlsOptions(pki, server.address().port), host: '127.0.0.1', autoReconnect: false }
  // Without it, the address is checked against the certificate, which does not name it.
  const err = await t.throwsAsync(newClient(t, options).connectAsync())
  t.is(err.code, 'ERR_TLS_CERT_ALTNAME_INVALID')
  await t.notThrowsAsync(newClient(t, { ...options, servername: 'localhost' }).connectAsync())
  // And a servername the certificate does not name is refused as the host would be.
  const other = await t.throwsAsync(newClient(t, { ...options, servername: 'gateway.example' }).connectAsync())
  t.is(other.code, 'ERR_TLS_CERT_ALTNAME_INVALID')
})

test('a client with a lookup function keeps Node alive only while it has work, on both drivers', async (t) => {
  const { runNode } = require('./helpers/child')
  const { server, pki } = await startTls(t)
  const options = JSON.stringify({ ...tlsOptions(pki, server.address().port), host: 'gateway.test', servername: 'localhost' })
  for (const io of ['libuv', 'tokio']) {
    const result = await runNode(`
      const { Client } = require('imt-gateway')
      const lookup = (hostname, options, callback) => callback(null, [{ address: '127.0.0.1', family: 4 }])
      new Client({ ...${options}, lookup }) // never connected: nothing to wait for
      const client = new Client({ ...${options}, lookup })
      client.connectAsync().then(() => { console.log('drained'); client.close() })
    `, { env: { IMT_GATEWAY_IO: io === 'tokio' ? 'tokio' : '' } })
    t.is(result.signal, null, `${io}: ${result.err}`)
    t.is(result.code, 0, `${io}: ${result.err}`)
    t.is(result.out, 'drained\n', io)
    t.true(result.ms < 8000, `${io}: exited after ${result.ms} ms`)
  }
})
