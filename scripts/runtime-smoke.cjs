'use strict'
// One client/server round trip, run under each JavaScript runtime that loads Node-API addons
// (Node, Bun, Deno) by scripts/test-runtimes.js: the bundled Server echoes events as actions,
// and a plain JavaScript gateway in the same process acknowledges them, over mutual TLS and
// plain TCP, and mutual TLS once more through an HTTP CONNECT proxy (a few lines of `net` here,
// so that it runs under every runtime). Prints one line, `ok <runtime> <driver> ...`, and exits 0; exits 1 on failure
// or after 20 s.

const net = require('net')
const path = require('path')
const root = path.join(__dirname, '..')
const { Client, Event, Server } = require(root)
const { createPki, ioDriver } = require(path.join(root, 'lib', 'testing'))

const runtime = typeof Bun !== 'undefined' ? 'bun' : typeof Deno !== 'undefined' ? 'deno' : 'node'
const EVENTS = 20

const timer = setTimeout(() => fail(new Error('timed out')), 20000)

function fail (err) {
  console.log(`FAILED ${runtime}: ${err && err.stack ? err.stack : err}`)
  process.exit(1)
}

/** Sends EVENTS events through `client` and waits for every callback and every echo. */
function roundTrip (client, echoes) {
  return new Promise((resolve, reject) => {
    let acknowledged = 0
    let actions = 0
    const check = () => {
      if (acknowledged === EVENTS && actions === (echoes ? EVENTS : 0)) resolve()
    }
    client.on('action', (action, ack) => {
      ack()
      actions++
      check()
    })
    client.on('error', reject)
    client.once('drain', () => {
      for (let i = 0; i < EVENTS; i++) {
        client.send(new Event('smoke', { i, data: Buffer.from([i]) }), (err) => {
          if (err) return reject(err)
          acknowledged++
          check()
        })
      }
    })
    client.connect()
  })
}

/** A gateway written in plain JavaScript: WELCOME and DRAINED, then every event acked. */
function javascriptGateway () {
  const frame = (token, body) => {
    const header = Buffer.alloc(6)
    header[0] = token
    header.writeUInt32LE(body.length, 2)
    return Buffer.concat([header, body])
  }
  const msgpack = require('msgpack-lite')
  const server = net.createServer((socket) => {
    let buffer = Buffer.alloc(0)
    socket.on('error', () => {})
    socket.on('data', (chunk) => {
      buffer = Buffer.concat([buffer, chunk])
      while (buffer.length >= 6 && buffer.length >= 6 + buffer.readUInt32LE(2)) {
        const length = buffer.readUInt32LE(2)
        const token = buffer[0]
        const body = length ? msgpack.decode(buffer.subarray(6, 6 + length)) : null
        buffer = buffer.subarray(6 + length)
        if (token === 1) socket.write(Buffer.concat([frame(2, Buffer.alloc(0)), frame(7, Buffer.alloc(0))]))
        if (token === 4) socket.write(frame(6, msgpack.encode({ correlid: body.id, status: 0 })))
      }
    })
  })
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => resolve(server)))
}

/** An HTTP CONNECT proxy in plain JavaScript; `tunnels` counts the tunnels it opened. */
function connectProxy () {
  const proxy = net.createServer((socket) => {
    let head = Buffer.alloc(0)
    socket.on('error', () => {})
    const onData = (chunk) => {
      head = Buffer.concat([head, chunk])
      const end = head.indexOf('\r\n\r\n')
      if (end < 0) return
      socket.off('data', onData)
      const [method, target] = head.subarray(0, end).toString('latin1').split(' ')
      const colon = target ? target.lastIndexOf(':') : -1
      if (method !== 'CONNECT' || colon < 0) return socket.end('HTTP/1.1 400 Bad Request\r\n\r\n')
      const upstream = net.connect(Number(target.slice(colon + 1)), target.slice(0, colon).replace(/^\[|\]$/g, ''), () => {
        proxy.tunnels++
        socket.write('HTTP/1.1 200 Connection established\r\n\r\n')
        const rest = head.subarray(end + 4)
        if (rest.length) upstream.write(rest)
        socket.pipe(upstream)
        upstream.pipe(socket)
      })
      upstream.on('error', () => socket.destroy())
    }
    socket.on('data', onData)
  })
  proxy.tunnels = 0
  return new Promise((resolve) => proxy.listen(0, '127.0.0.1', () => resolve(proxy)))
}

async function main () {
  const started = Date.now()
  const pki = createPki()
  const tls = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert })
  await new Promise((resolve) => tls.listen(0, '127.0.0.1', resolve))
  const secure = new Client({ host: '127.0.0.1', port: tls.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await roundTrip(secure, true)
  secure.close()

  const proxy = await connectProxy()
  const proxied = new Client({ host: '127.0.0.1', port: tls.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert, proxy: `http://127.0.0.1:${proxy.address().port}` })
  await roundTrip(proxied, true)
  proxied.close()
  if (proxy.tunnels < 1) throw new Error('the client did not go through the proxy')

  const plain = new Server()
  await new Promise((resolve) => plain.listen(0, '127.0.0.1', resolve))
  const local = new Client({ host: 'localhost', port: plain.address().port })
  await roundTrip(local, true)
  local.close()

  const gateway = await javascriptGateway()
  const other = new Client({ host: 'localhost', port: gateway.address().port })
  await roundTrip(other, false)
  other.close()

  await new Promise((resolve) => tls.close(() => resolve()))
  await new Promise((resolve) => plain.close(() => resolve()))
  await new Promise((resolve) => gateway.close(() => resolve()))
  proxy.close()
  clearTimeout(timer)
  console.log(`ok ${runtime} ${ioDriver()} ${4 * EVENTS} events in ${Date.now() - started} ms, ${proxy.tunnels} through a proxy's tunnel`)
  // Whether a process exits by itself is tested under Node (__test__/process.test.js).
  process.exit(0)
}

main().catch(fail)
