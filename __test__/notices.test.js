'use strict'

// The notice format between the native side and lib/ (src/node/notice.rs, lib/notices.js):
// one table, numbered in Rust, read by the client's and the server's readers at load. These
// tests fail when the two sides disagree: a reader that reads other kinds or fields than the
// table's, a writer that writes other fields than its table's (checked in debug builds, which
// the suite runs), or a reader that turns a notice into the wrong event.

process.env.IMT_GATEWAY_TEST_HOOKS = '1'

const test = require('ava')
const native = require('../lib/native')

// Every batch the native side hands to a client's callback, and the form it came in. Set up
// before lib/client.js is loaded, which takes NativeClient from lib/native.js.
const forms = []
const NativeClient = native.NativeClient
native.NativeClient = class extends NativeClient {
  constructor (options, onBatch) {
    super(options, (...values) => {
      forms.push(values.length === 1 && Array.isArray(values[0]) ? values[0].length : -values.length)
      return onBatch(...values)
    })
  }
}

const { Client, Server, Event } = require('imt-gateway')
const { layout, FORMAT } = require('../lib/notices')
const msgpack = require('msgpack-lite')
const { frame } = require('./helpers/raw-client')
const { fakeGateway } = require('./helpers/fake-gateway')
const { waitFor } = require('./helpers/server')

const reads = (side) => Object.fromEntries(FORMAT[side].map(({ kind, fields }) => [kind, fields]))

test('the native tables number their kinds in order, each name once', (t) => {
  for (const side of ['client', 'server']) {
    const table = FORMAT[side]
    t.deepEqual(table.map((spec) => spec.number), table.map((_, i) => i), side)
    t.is(new Set(table.map((spec) => spec.kind)).size, table.length, side)
  }
})

test('a reader that reads other kinds or fields than the native table fails at load with ENOTICEFORMAT', (t) => {
  for (const side of ['client', 'server']) {
    t.notThrows(() => layout(side, reads(side)))
    const [first, second] = FORMAT[side].filter((spec) => spec.fields.length >= 2)
    const swapped = { ...reads(side), [first.kind]: [...first.fields].reverse() }
    t.like(t.throws(() => layout(side, swapped)), { code: 'ENOTICEFORMAT' }, `${side}: field order`)
    const shorter = { ...reads(side), [second.kind]: second.fields.slice(1) }
    t.like(t.throws(() => layout(side, shorter)), { code: 'ENOTICEFORMAT' }, `${side}: a field missing`)
    const missing = reads(side)
    delete missing[first.kind]
    t.like(t.throws(() => layout(side, missing)), { code: 'ENOTICEFORMAT' }, `${side}: a kind not read`)
    const extra = { ...reads(side), invented: [] }
    t.like(t.throws(() => layout(side, extra)), { code: 'ENOTICEFORMAT' }, `${side}: a kind never written`)
    // And a native table that grew a field, as a reader built against an older one meets it.
    const grown = FORMAT[side].map((spec) => spec.kind === first.kind ? { ...spec, fields: [...spec.fields, 'more'] } : spec)
    t.like(t.throws(() => layout(side, reads(side), grown)), { code: 'ENOTICEFORMAT' }, `${side}: a field added`)
  }
})

// A sample batch walked with the table's widths: every kind once or more, ending exactly at the end.
// A shaped action's values, one per key of its shape, follow its fields.
function walk (t, side, batch) {
  const { kinds, widths } = layout(side, reads(side))
  const seen = new Set()
  const shapes = []
  let at = 0
  while (at < batch.length) {
    const kind = batch[at]
    t.is(typeof kind, 'number', `a kind at ${at}`)
    seen.add(FORMAT[side][kind].kind)
    if (kind === kinds.shape) shapes[batch[at + 1]] = batch[at + 3]
    if (kind === kinds.shapedAction) at += shapes[batch[at + 2]].length
    at += 1 + widths[kind]
  }
  t.is(at, batch.length, 'the last notice ends the batch')
  t.deepEqual([...seen].sort(), FORMAT[side].map((spec) => spec.kind).sort())
}

test('a client batch with every kind, made by the native writer, is read as the events it stands for', (t) => {
  const samples = native.__noticeSamples().client
  walk(t, 'client', samples)
  const records = []
  const logger = { debug: (f) => records.push(f), info: (f) => records.push(f), warn: (f) => records.push(f), error: (f) => records.push(f) }
  const client = new Client({ host: 'localhost', port: 1, logger })
  const seen = []
  for (const name of ['connect', 'drain', 'drained', 'reconnect', 'disconnect']) client.on(name, () => seen.push(name))
  client.on('action', (action, ack) => seen.push(['action', action.id, action.type, action.parameters, typeof ack]))
  client.on('acknowledgement', (body) => seen.push(['acknowledgement', body]))
  client.on('error', (err) => seen.push(['error', err.code, err.message, err.proxyStatus, err.socksReply, 'proxyStatus' in err]))
  const done = []
  // Seqs 1 and 2, which the samples finish (the second with ECLOSED).
  client._callbacks.add((err) => done.push(['seq 1', err]))
  client._callbacks.add((err) => done.push(['seq 2', err && err.code]))
  client._dispatch(samples)
  t.deepEqual(seen, [
    'connect', 'drain', 'drained',
    ['action', 'a1', 'sample', null, 'function'],
    ['action', [1], 'sample', null, 'function'],
    ['action', 'a2', 'sample', { n: 2, list: [2] }, 'function'],
    ['action', [3], 'sample', { n: 3, list: [3] }, 'function'],
    ['acknowledgement', { correlid: 'e1', status: 1, error: { code: 'C1', message: 'rejected' } }],
    ['acknowledgement', { correlid: 'e2', status: 0 }],
    'reconnect', 'disconnect',
    ['error', 'ECONNRESET', 'sample', undefined, undefined, false],
    ['error', 'EPROXY', 'sample', 407, undefined, true],
    ['error', 'EPROXY', 'sample', undefined, 2, false],
    ['error', 'EINTERNAL', 'sample', undefined, undefined, false]
  ])
  t.deepEqual(done, [['seq 1', null], ['seq 2', 'ECLOSED']])
  t.deepEqual(client.recovered, { ECLOSED: 1 })
  // The state notice (backoff, 250 ms, after a failed attempt), then fatal: closed.
  t.like(records.find((r) => r.event === 'backoff'), { event: 'backoff', delay: 250 })
  t.is(client.health().state, 'closed')
  t.like(client.health().lastError, { code: 'EINTERNAL' })
  t.like(t.throws(() => client.send(new Event('x', {}))), { code: 'EINTERNAL' }, 'fatal stopped the client')
})

test('a server batch with every kind, made by the native writer, is read as the events it stands for', async (t) => {
  const samples = native.__noticeSamples().server
  walk(t, 'server', samples)
  const decided = []
  const server = new Server({ onEvent: (event) => { decided.push(event.id) } })
  const conn = { id: 3, remoteAddress: '127.0.0.1', remotePort: 4567, deviceName: 'device' }
  const seen = []
  for (const name of ['connection', 'hello', 'disconnect']) server.on(name, (c) => seen.push([name, c]))
  server.on('event', (event, c) => seen.push(['event', event.id, event.type, event.bundle, c.id]))
  server.on('acknowledgement', (ack, c) => seen.push(['acknowledgement', ack.id, ack.status, ack.error && ack.error.code, ack.error && ack.error.message, c.id]))
  server.on('clientError', (err, c) => seen.push(['clientError', err.code, err.message, c]))
  server.on('close', () => seen.push('close'))
  const settled = []
  server._actionCallbacks.set(9, (err) => settled.push([9, err && err.code]))
  server._actionCallbacks.set(10, (err) => settled.push([10, err && err.code]))
  server._dispatch(samples)
  t.deepEqual(seen.slice(0, 2), [['connection', conn], ['hello', conn]])
  t.deepEqual(seen.slice(2), [
    ['event', 'e1', 'sample', { n: 1 }, 3],
    ['event', 'e2', 'sample', null, 3],
    ['acknowledgement', 'a1', 1, 'C1', 'failed', 3],
    ['acknowledgement', 'a2', 0, null, null, 3],
    ['clientError', 'EPROTO', 'sample', null],
    ['disconnect', conn],
    'close'
  ])
  t.deepEqual(settled, [[9, 'C1'], [10, 'ECLOSED']])
  await new Promise((resolve) => setImmediate(resolve))
  t.deepEqual(decided, ['e1'], 'only the event with a decision goes to onEvent')
})

test('a batch comes as the callback\'s arguments, or as one array when it is large; either is read in full', async (t) => {
  const gateway = await fakeGateway(t)
  const count = 3000
  // Actions of one write, which the client reads in large batches (five values each), then
  // one more on its own.
  const many = Buffer.concat([frame(2), frame(7), ...Array.from({ length: count }, (_, i) => frame(5, { id: i, type: 'many', parameters: { i } }))])
  let peer
  gateway.accept().then(async (p) => {
    peer = p
    await peer.next()
    peer.sendRaw(many)
  })
  const client = new Client({ host: 'localhost', port: gateway.port, autoReconnect: false })
  t.teardown(() => client.close())
  const ids = []
  client.on('action', (action, ack) => {
    ids.push(action.id)
    ack()
  })
  forms.length = 0
  client.connect()
  await waitFor(() => ids.length === count, 20000)
  peer.sendRaw(frame(5, { id: count, type: 'one', parameters: {} }))
  await waitFor(() => ids.length === count + 1, 5000)
  t.deepEqual(ids, Array.from({ length: count + 1 }, (_, i) => i), 'every action, in order')
  t.true(forms.some((n) => n > 1024), `a batch of more than 1024 values came as one array (${forms.filter((n) => n > 0)})`)
  t.true(forms.some((n) => n < 0), 'smaller batches came as arguments')
  t.false(forms.some((n) => n > 0 && n <= 1024), 'no batch of 1024 values or fewer came as an array')
  t.false(forms.some((n) => n < -1024), 'no batch of more than 1024 values came as arguments')
})

test('action parameters are the objects msgpack-lite decodes, whether their shape is new, known or one a client does not tell', async (t) => {
  const gateway = await fakeGateway(t)
  // Maps written by hand (map 16, string keys), so that keys may repeat.
  const map = (entries) => Buffer.concat([
    Buffer.from([0xde, entries.length >> 8, entries.length & 0xff]),
    ...entries.flatMap(([key, value]) => [msgpack.encode(key), msgpack.encode(value)])
  ])
  const action = (id, type, parameters) => {
    const body = Buffer.concat([Buffer.from([0x83]), msgpack.encode('id'), msgpack.encode(id), msgpack.encode('type'), msgpack.encode(type), msgpack.encode('parameters'), parameters])
    const header = Buffer.alloc(6)
    header[0] = 5
    header.writeUInt32LE(body.length, 2)
    return Buffer.concat([header, body])
  }
  const maps = [
    map([['a', 1], ['b', 'two'], ['c', { d: [3] }]]),
    // A repeated key: set twice, the last value stays.
    map([['a', 1], ['a', 2]]),
    // `__proto__` sets the prototype, as msgpack-lite's `map[key] = value` does.
    map([['__proto__', { inherited: true }], ['own', 1]]),
    // Integer-like keys come first in the object's order.
    map([['x', 'x'], ['10', 'ten'], ['2', 'two']]),
    map([['x', null], ['y', Buffer.from([1, 2])], ['z', new Date(5)]]),
    // More keys, or more bytes, than a shape has.
    map(Array.from({ length: 17 }, (_, i) => [`k${i}`, i])),
    map([['long', 1], ['x'.repeat(1100), 2]]),
    // Past the 64 shapes a client tells: one key each.
    ...Array.from({ length: 70 }, (_, i) => map([[`only${i}`, i]]))
  ]
  // Each map twice of one type (its shape new, then known), then once of another type.
  const sent = [...maps.map((m) => ['t', m]), ...maps.map((m) => ['t', m]), ...maps.map((m) => ['u', m])]
  gateway.accept().then(async (peer) => {
    await peer.next()
    peer.sendRaw(Buffer.concat([frame(2), ...sent.map(([type, m], i) => action(`a${i}`, type, m)), frame(7)]))
  })
  const client = new Client({ host: 'localhost', port: gateway.port, autoReconnect: false })
  t.teardown(() => client.close())
  const received = []
  client.on('action', (action, ack) => {
    received.push(action)
    ack()
  })
  client.connect()
  await waitFor(() => received.length === sent.length, 20000)
  for (const [i, [type, m]] of sent.entries()) {
    const expected = msgpack.decode(m)
    const got = received[i]
    t.is(got.id, `a${i}`)
    t.is(got.type, type)
    t.deepEqual(Object.keys(got.parameters), Object.keys(expected), `keys of action ${i}`)
    t.deepEqual(got.parameters, expected, `action ${i}`)
    t.deepEqual(Object.getPrototypeOf(got.parameters), Object.getPrototypeOf(expected), `prototype of action ${i}`)
  }
  t.true(received[2].parameters.inherited, 'the prototype msgpack-lite sets')
  t.false(Object.hasOwn(received[2].parameters, '__proto__'))
  t.deepEqual(received[1].parameters, { a: 2 })
})
