'use strict'
// What a peer can make the bundled Server hold, and how long: close() and destroy() with a peer
// that stopped reading, the HELLO deadline, the idle limit, the bound on echoes a peer leaves
// unacknowledged, and backpressure from a busy JavaScript thread to the sockets.

const test = require('ava')
const { RawClient, frame } = require('./helpers/raw-client')
const { start, startTls, once, waitFor } = require('./helpers/server')
const { startNode } = require('./helpers/child')
const { scaled } = require('./helpers/time')

// The server's goodbye bound (LINGER in src/server/peer.rs).
const LINGER = 10000
const NINE_MIB = 9 * 1024 * 1024

// A peer past DRAINED that stops reading with two 9 MiB events sent: the echo of the first
// cannot be written, so the server's write is stuck.
async function stuckPeer (server) {
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  client.socket.pause()
  const blob = Buffer.alloc(NINE_MIB, 7)
  client.send('EVENT', { id: 'big-1', type: 'blob', bundle: { blob } })
  client.send('EVENT', { id: 'big-2', type: 'blob', bundle: { blob } })
  // Long enough for the server to have read the first and be writing its echo.
  await new Promise((resolve) => setTimeout(resolve, scaled(1000)))
  return client
}

function within (promise, ms, what) {
  let timer
  const late = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done within ${ms} ms`)), ms)
  })
  return Promise.race([promise, late]).finally(() => clearTimeout(timer))
}

test('close() finishes within its linger while a peer has stopped reading', async (t) => {
  const server = await start(t)
  const client = await stuckPeer(server)
  const started = Date.now()
  await within(new Promise((resolve) => server.close(resolve)), LINGER + scaled(5000), 'close()')
  t.log(`close() took ${Date.now() - started} ms`)
  t.false(server.listening)
  client.destroy()
})

test('destroy() finishes at once, also during a close() held up by a peer that stopped reading', async (t) => {
  const server = await start(t)
  const client = await stuckPeer(server)
  let closed = false
  server.close(() => { closed = true })
  await new Promise((resolve) => setTimeout(resolve, 100))
  const started = Date.now()
  await within(new Promise((resolve) => server.destroy(resolve)), scaled(2000), 'destroy()')
  t.log(`destroy() took ${Date.now() - started} ms`)
  await waitFor(() => closed, scaled(2000))
  t.false(server.listening)
  t.is(server.connections().length, 0)
  client.destroy()
})

test('destroy() right after close() does not wait for the close() either', async (t) => {
  const server = await start(t)
  const client = await stuckPeer(server)
  let closed = false
  server.close(() => { closed = true })
  await within(new Promise((resolve) => server.destroy(resolve)), scaled(2000), 'destroy()')
  t.true(closed)
  t.false(server.listening)
  client.destroy()
})

test('connections that never say HELLO are closed at the HELLO deadline, with BYE ETIMEDOUT', async (t) => {
  const server = await start(t, { helloTimeout: 300 })
  const errors = []
  server.on('clientError', (err) => errors.push(err.code))
  const count = 50
  const clients = await Promise.all(Array.from({ length: count }, () => RawClient.connect({ port: server.address().port })))
  const started = Date.now()
  await within(Promise.all(clients.map((c) => c.closed)), scaled(5000), 'closing silent connections')
  const took = Date.now() - started
  t.log(`${count} silent connections closed in ${took} ms`)
  t.true(took >= 250, `closed after ${took} ms, before the deadline`)
  for (const client of clients) {
    const bye = client.frames.shift()
    t.is(bye && bye.name, 'BYE')
    t.is(bye.body.error.code, 'ETIMEDOUT')
    t.is(bye.body.error.message, 'No HELLO within 300 ms.')
  }
  await waitFor(() => errors.length === count)
  t.deepEqual(new Set(errors), new Set(['ETIMEDOUT']))
  await waitFor(() => server.connections().length === 0)
})

test('the HELLO deadline also holds after a TLS handshake', async (t) => {
  const { server, pki } = await startTls(t, { helloTimeout: 300 })
  const client = await RawClient.connect({ port: server.address().port, tls: { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert } })
  await within(client.closed, scaled(5000), 'closing a silent TLS connection')
  t.is(client.frames[0].name, 'BYE')
  t.is(client.frames[0].body.error.code, 'ETIMEDOUT')
})

test('HELLO within the deadline stops its timer', async (t) => {
  const server = await start(t, { helloTimeout: 300 })
  const client = await RawClient.connect({ port: server.address().port })
  t.deepEqual(await client.handshake(), ['WELCOME', 'DRAINED'])
  await new Promise((resolve) => setTimeout(resolve, 600))
  t.false(client.ended)
  t.is(server.connections().length, 1)
  client.destroy()
})

test('the idle limit closes a connection that sends nothing, and not one that keeps talking', async (t) => {
  // The limit grows on slow platforms (under emulation a busy process can stall for a second),
  // up to 5 s, while the talker keeps sending every 100 ms.
  const idle = Math.min(scaled(1000), 5000)
  const server = await start(t, { idleTimeout: idle, echo: false })
  const errors = []
  server.on('clientError', (err) => errors.push(err))
  const talker = await RawClient.connect({ port: server.address().port })
  await talker.handshake('talker')
  let n = 0
  const chatter = setInterval(() => talker.send('EVENT', { id: `e${n++}`, type: 'tick', bundle: null }), 100)
  t.teardown(() => clearInterval(chatter))
  const silent = await RawClient.connect({ port: server.address().port })
  silent.hello('silent')
  const started = Date.now()
  await within(silent.closed, scaled(5000), 'closing the idle connection')
  const took = Date.now() - started
  t.true(took >= idle * 0.9, `closed after ${took} ms`)
  const bye = silent.frames.find((f) => f.name === 'BYE')
  t.deepEqual(bye.body, { error: { code: 'ETIMEDOUT', message: `Idle for ${idle} ms.` } })
  await new Promise((resolve) => setTimeout(resolve, idle * 1.5))
  t.false(talker.ended, 'a connection that keeps sending stays')
  t.is(errors.length, 1)
  t.is(errors[0].code, 'ETIMEDOUT')
  clearInterval(chatter)
  talker.destroy()
})

test('a peer that leaves its echoes unacknowledged is disconnected with EQUEUEFULL', async (t) => {
  const server = await start(t)
  const reported = once(server, 'clientError')
  const client = await RawClient.connect({ port: server.address().port })
  await client.handshake()
  // Reads everything (acknowledgements and the echo in flight), acknowledges no echo: over
  // 64 MiB of echoes wait.
  const events = 1200
  const blob = Buffer.alloc(64 * 1024, 3)
  for (let i = 0; i < events; i++) {
    if (!client.socket.write(frame(4, { id: `e${i}`, type: 'blob', bundle: { blob } }))) {
      await Promise.race([new Promise((resolve) => client.socket.once('drain', resolve)), client.closed])
      if (client.ended) break
    }
  }
  await within(client.closed, scaled(10000), 'disconnecting the peer')
  const bye = client.frames.find((f) => f.name === 'BYE')
  t.truthy(bye, 'the peer got BYE')
  t.is(bye.body.error.code, 'EQUEUEFULL')
  t.regex(bye.body.error.message, /unacknowledged/)
  const [err] = await reported
  t.is(err.code, 'EQUEUEFULL')
  const acks = client.frames.filter((f) => f.name === 'ACKNOWLEDGEMENT').length
  t.true(acks < events, `${acks} events acknowledged before the disconnect`)
})

// The server runs in a child whose JavaScript is busy in its first `event` listener while this
// process floods events; the child reports its peak RSS and every event id it saw. Serial: the
// flood would hold up the timers of the tests above.
test.serial('a busy JavaScript thread holds the sockets back: memory stays bounded and no event is lost', async (t) => {
  const source = `
    const { Server } = require('imt-gateway')
    const fs = require('fs')
    const [flag, busyMs] = [process.env.FLAG, Number(process.env.BUSY_MS)]
    const server = new Server({ echo: false })
    let seen = 0
    let inOrder = true
    let busy = true
    server.on('event', (event) => {
      if (event.id !== 'e' + seen) inOrder = false
      seen++
      if (busy) {
        busy = false
        const until = Date.now() + busyMs
        while (Date.now() < until && !fs.existsSync(flag)) {}
        console.log('resumed')
      }
      if (seen === Number(process.env.EVENTS)) {
        console.log(JSON.stringify({ seen, inOrder, base, peak: process.resourceUsage().maxRSS * 1024 }))
        server.close()
      }
    })
    let base
    server.listen(0, '127.0.0.1', () => {
      base = process.memoryUsage().rss
      console.log('port ' + server.address().port)
    })
  `
  const flag = require('path').join(require('os').tmpdir(), `imt-bounds-${process.pid}-${Date.now()}`)
  t.teardown(() => require('fs').rmSync(flag, { force: true }))
  const events = 1600
  const size = 256 * 1024
  let port
  const portSeen = new Promise((resolve) => { port = resolve })
  const { child, ended } = startNode(source, {
    env: { FLAG: flag, BUSY_MS: String(scaled(5000)), EVENTS: String(events) },
    timeout: 120000
  })
  let out = ''
  child.stdout.on('data', (d) => {
    out += d
    const m = /port (\d+)/.exec(out)
    if (m) port(Number(m[1]))
  })
  const client = await RawClient.connect({ port: await portSeen })
  await client.handshake()
  const blob = Buffer.alloc(size, 1)
  const started = Date.now()
  for (let i = 0; i < events; i++) {
    if (!client.socket.write(frame(4, { id: `e${i}`, type: 'blob', bundle: { blob } }))) {
      await new Promise((resolve) => client.socket.once('drain', resolve))
    }
  }
  // Everything is in the kernel's hands: let the child's JavaScript go on.
  require('fs').writeFileSync(flag, '')
  t.log(`${events} events of ${size / 1024} KiB written in ${Date.now() - started} ms`)
  const result = await ended
  client.destroy()
  t.is(result.signal, null, result.err)
  const report = JSON.parse(result.out.trim().split('\n').pop())
  t.is(report.seen, events)
  t.true(report.inOrder)
  const growth = report.peak - report.base
  t.log(`peak rss growth while ${(events * size / 1048576).toFixed(0)} MiB of events went through: ${(growth / 1048576).toFixed(1)} MiB`)
  // Scaled like the other limits: under qemu-user the emulator's own memory grows with the work.
  t.true(growth < scaled(160 * 1048576), `peak rss grew ${(growth / 1048576).toFixed(1)} MiB`)
})
