'use strict'
// client.stats(): the counters kept in the native core, read in one call. Against a scripted
// gateway every frame is known, so the counts and the bytes are checked exactly; against the
// bundled Server (plain and TLS), as an application would see them.

const test = require('ava')
const fs = require('fs')
const path = require('path')
const msgpack = require('msgpack-lite')
const { Client, Event } = require('imt-gateway')
const { frame, TOKENS } = require('./helpers/raw-client')
const { fakeGateway } = require('./helpers/fake-gateway')
const { start, startTls, once, waitFor } = require('./helpers/server')
const { scaled } = require('./helpers/time')
const { runNode } = require('./helpers/child')

const ZERO = {
  queued: 0,
  inFlight: 0,
  acknowledged: 0,
  rejected: 0,
  resent: 0,
  failedClosed: 0,
  failedQueueFull: 0,
  actionsReceived: 0,
  actionsAcked: 0,
  reconnects: 0,
  bytesSent: 0,
  bytesReceived: 0,
  connected: false,
  drained: false,
  rtt: null,
  certificateExpiresIn: null
}

const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/**
 * Waits until the stats hold `expected` (a subset of fields), then checks them: what a batch
 * reports is counted before its listeners run, but a frame the peer reads may be on the wire a
 * moment before the core's turn that wrote it has stored its counters (under tokio).
 */
async function expectStats (t, client, expected, message) {
  const deadline = Date.now() + scaled(5000)
  const holds = (stats) => Object.entries(expected).every(([key, value]) => stats[key] === value)
  while (!holds(client.stats()) && Date.now() < deadline) await delay(5)
  t.like(client.stats(), expected, message)
}

/** The bytes of an EVENT frame for `event`, as msgpack-lite writes its body. */
function eventFrameSize (event) {
  return 6 + msgpack.encode({ id: event.id, type: event.type, bundle: event.bundle }).length
}

test('a fresh client has every counter at zero and no round trip', (t) => {
  const client = new Client({ host: 'localhost', port: 1 })
  t.deepEqual(client.stats(), ZERO)
  t.not(client.stats(), client.stats(), 'a fresh object each call')
})

test('a known session is counted exactly: events, a rejection, an action, a cut with a re-send, ECLOSED and the bytes of every frame', async (t) => {
  const gateway = await fakeGateway(t)
  const client = new Client({ host: 'localhost', port: gateway.port, reconnectDelay: 20 })
  t.teardown(() => client.close())
  client.on('action', (action, ack) => ack())

  // Every frame either side wrote, in bytes: what the peers read, and what they sent.
  let sent = 0
  let received = 0
  const take = async (peer) => {
    const read = await peer.next()
    sent += 6 + read.raw.length
    return read
  }
  const put = (peer, name, body) => {
    peer.send(name, body)
    received += frame(TOKENS[name], body).length
  }
  const bytes = () => expectStats(t, client, { bytesSent: sent, bytesReceived: received }, 'the bytes of the frames')

  client.connect()
  const peer = await gateway.accept()
  t.is((await take(peer)).name, 'HELLO')
  await bytes()
  t.like(client.stats(), { connected: false, drained: false }, 'not welcomed yet')

  put(peer, 'WELCOME')
  await once(client, 'connect')
  t.like(client.stats(), { connected: true, drained: false })

  put(peer, 'ACTION', { id: 1, type: 'reboot', parameters: { now: true } })
  const ackOfAction = await take(peer)
  t.deepEqual([ackOfAction.name, ackOfAction.body], ['ACKNOWLEDGEMENT', { correlid: 1, status: 0 }])
  await expectStats(t, client, { actionsReceived: 1, actionsAcked: 1 })

  put(peer, 'DRAINED')
  await once(client, 'drained')
  t.like(client.stats(), { connected: true, drained: true })
  await bytes()

  // Three events accepted, one at a time.
  for (let n = 1; n <= 3; n++) {
    const done = client.sendAsync(new Event('reading', { n }))
    const written = await take(peer)
    t.is(written.name, 'EVENT')
    await expectStats(t, client, { inFlight: 1, queued: 0 })
    put(peer, 'ACKNOWLEDGEMENT', { correlid: written.body.id, status: 0 })
    await done
    const stats = client.stats()
    t.like(stats, { acknowledged: n, inFlight: 0 })
    t.is(typeof stats.rtt, 'number')
    t.true(stats.rtt > 0, `rtt ${stats.rtt} ms`)
    t.true(stats.rtt < scaled(5000), `rtt ${stats.rtt} ms`)
  }

  // One rejected.
  const rejected = client.sendAsync(new Event('reading', { n: 4 }))
  const fourth = await take(peer)
  put(peer, 'ACKNOWLEDGEMENT', { correlid: fourth.body.id, status: 1, error: { code: 'IM4', message: 'Invalid bundle.' } })
  const err = await t.throwsAsync(rejected)
  t.is(err.code, 'IM4')
  t.like(client.stats(), { acknowledged: 3, rejected: 1 })
  await bytes()

  // The connection is cut with an event in flight: the client reconnects and sends it again.
  const again = client.sendAsync(new Event('reading', { n: 5 }))
  const fifth = await take(peer)
  await expectStats(t, client, { inFlight: 1 })
  const reconnecting = once(client, 'reconnect')
  peer.destroy()
  await reconnecting
  t.like(client.stats(), { reconnects: 1, connected: false, drained: false, queued: 1, inFlight: 0, resent: 0 })
  const peer2 = await gateway.accept()
  t.is((await take(peer2)).name, 'HELLO')
  put(peer2, 'WELCOME')
  put(peer2, 'DRAINED')
  const resent = await take(peer2)
  t.deepEqual(resent.raw, fifth.raw, 'the same frame, the same id')
  await expectStats(t, client, { resent: 1, inFlight: 1, queued: 0, connected: true, drained: true })
  put(peer2, 'ACKNOWLEDGEMENT', { correlid: resent.body.id, status: 0 })
  await again
  t.like(client.stats(), { acknowledged: 4, resent: 1, reconnects: 1 })

  // close() with one event in flight and one queued: both fail with ECLOSED.
  const codes = []
  client.send(new Event('reading', { n: 6 }), (err) => codes.push(err && err.code))
  client.send(new Event('reading', { n: 7 }), (err) => codes.push(err && err.code))
  await take(peer2)
  await expectStats(t, client, { inFlight: 1, queued: 1 })
  await bytes()
  const disconnected = once(client, 'disconnect')
  client.close()
  await disconnected
  await expectStats(t, client, { failedClosed: 2 })
  t.deepEqual(codes, ['ECLOSED', 'ECLOSED'])
  const stats = client.stats()
  t.deepEqual({ ...stats, rtt: null }, {
    queued: 0,
    inFlight: 0,
    acknowledged: 4,
    rejected: 1,
    resent: 1,
    failedClosed: 2,
    failedQueueFull: 0,
    actionsReceived: 1,
    actionsAcked: 1,
    reconnects: 1,
    bytesSent: sent,
    bytesReceived: received,
    connected: false,
    drained: false,
    rtt: null,
    certificateExpiresIn: null
  })
  t.true(stats.rtt > 0, 'the last round trip stays')
})

test('a full queue counts EQUEUEFULL, and close() counts the queued events as ECLOSED', async (t) => {
  const client = new Client({ host: 'localhost', port: 1, maxQueueSize: 2 })
  const results = []
  for (let i = 0; i < 3; i++) client.send(new Event('reading', { i }), (err) => results.push(err && err.code))
  // Counted by the time the callbacks run.
  await waitFor(() => results.length === 1)
  t.deepEqual(results, ['EQUEUEFULL'])
  t.like(client.stats(), { failedQueueFull: 1, queued: 2 })
  client.close()
  await waitFor(() => results.length === 3)
  t.deepEqual(results, ['EQUEUEFULL', 'ECLOSED', 'ECLOSED'])
  t.like(client.stats(), { failedClosed: 2, queued: 0 })
  t.like(client.stats(), { bytesSent: 0, bytesReceived: 0, connected: false, rtt: null })
})

test('against the bundled server an event adds its frame to bytesSent and the acknowledgement to bytesReceived', async (t) => {
  const server = await start(t, { echo: false })
  const client = new Client({ host: 'localhost', port: server.address().port })
  t.teardown(() => client.close())
  await client.connectAsync()
  t.like(client.stats(), { connected: true, drained: true, queued: 0, inFlight: 0 })
  const before = client.stats()
  t.true(before.bytesSent > 6, 'HELLO')
  t.is(before.bytesReceived, 12, 'WELCOME and DRAINED')
  const event = await client.sendAsync(new Event('reading', { celsius: 21.5, tags: ['a', 'b'] }))
  const ack = 6 + msgpack.encode({ correlid: event.id, status: 0 }).length
  await expectStats(t, client, {
    bytesSent: before.bytesSent + eventFrameSize(event),
    bytesReceived: before.bytesReceived + ack,
    acknowledged: 1
  })
  t.true(client.stats().rtt > 0)
  await client.closeAsync()
  t.like(client.stats(), { connected: false, drained: false, acknowledged: 1 })
})

test('echoed events: actions received and acked are counted, a kick counts a reconnect', async (t) => {
  const server = await start(t)
  const client = new Client({ host: 'localhost', port: server.address().port, reconnectDelay: 20 })
  t.teardown(() => client.close())
  client.on('action', (action, ack) => ack())
  await client.connectAsync()
  for (let n = 0; n < 5; n++) await client.sendAsync(new Event('reading', { n }))
  await expectStats(t, client, { acknowledged: 5, actionsReceived: 5, actionsAcked: 5 })
  const drained = once(client, 'drained')
  server.kick()
  await drained
  t.like(client.stats(), { reconnects: 1, connected: true, drained: true })
})

test('under TLS the bytes include the handshake and the records', async (t) => {
  const { server, pki } = await startTls(t, { echo: false })
  const client = new Client({ host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  t.teardown(() => client.close())
  await client.connectAsync()
  const event = await client.sendAsync(new Event('reading', { n: 1 }))
  const stats = client.stats()
  // Certificates both ways: far more than HELLO, EVENT, WELCOME, DRAINED and ACKNOWLEDGEMENT.
  t.true(stats.bytesSent > 500 + eventFrameSize(event), `bytesSent ${stats.bytesSent}`)
  t.true(stats.bytesReceived > 500, `bytesReceived ${stats.bytesReceived}`)
  t.like(stats, { acknowledged: 1, connected: true, drained: true })
  t.true(stats.rtt > 0)
})

test("docs/client.md's counters example runs and prints what it says", async (t) => {
  const guide = fs.readFileSync(path.join(__dirname, '..', 'docs', 'client.md'), 'utf8')
  const section = guide.slice(guide.indexOf('## Counters: `client.stats()`'))
  const example = /```js\n([\s\S]*?)```/.exec(section)[1]
  const result = await runNode(example)
  t.is(result.err, '')
  t.is(result.code, 0)
  t.regex(result.out, /acknowledged: 3,\n {2}inFlight: 0,/)
  t.regex(result.out, /last round trip \d+\.\d{3} ms/)
  t.regex(result.out, /connected after close: false/)
})
