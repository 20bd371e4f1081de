'use strict'
// The gateway decodes with msgpack-lite, so every value must be written as msgpack-lite 0.1.26
// (the original's codec) writes it, byte for byte, and read back into the same JavaScript
// types as its decode makes them. Compared against msgpack-lite 0.1.26 itself.

const test = require('ava')
const msgpack = require('msgpack-lite-0126')
const { Client, Event, Server } = require('imt-gateway')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { once, waitFor } = require('./helpers/server')
const { scaled } = require('./helpers/time')

class CustomError extends Error {}
class Thing { constructor () { this.a = 1; this.b = 'two' } }

const bytes = Uint8Array.from({ length: 40 }, (_, i) => i * 7)

/** Every row of docs/PROTOCOL.md section 5 (MessagePack mapping), and the cases around them. */
function corpus () {
  const error = new Error('boom')
  error.code = 'E1'
  const noStack = new TypeError('no stack')
  noStack.stack = undefined
  return {
    Uint8Array: new Uint8Array([1, 2, 255]),
    'Uint8Array view with an offset': bytes.subarray(3, 9),
    'empty Uint8Array': new Uint8Array(0),
    Int8Array: new Int8Array([-1, 2, -128]),
    Int16Array: new Int16Array([-1, 300]),
    Uint16Array: new Uint16Array([65535, 1]),
    Int32Array: new Int32Array([-5, 1 << 30]),
    Uint32Array: new Uint32Array([2 ** 32 - 1]),
    Float32Array: new Float32Array([1.5, -0.25]),
    Float64Array: new Float64Array([Math.PI, -0, NaN]),
    'Float64Array view': new Float64Array(new Float64Array([1, 2, 3, 4]).buffer, 8, 2),
    Uint8ClampedArray: new Uint8ClampedArray([0, 128, 255]),
    'Uint8Array of 255 bytes': new Uint8Array(255).fill(9),
    'Uint8Array of 70000 bytes': new Uint8Array(70000).fill(3),
    DataView: new DataView(bytes.buffer, 5, 10),
    ArrayBuffer: bytes.buffer.slice(0, 17),
    'empty ArrayBuffer': new ArrayBuffer(0),
    'new Number': new Number(5), // eslint-disable-line no-new-wrappers
    'new Number, fraction': new Number(1.5), // eslint-disable-line no-new-wrappers
    'new Number, large': new Number(2 ** 40), // eslint-disable-line no-new-wrappers
    'new String': new String('text'), // eslint-disable-line no-new-wrappers
    'new String, long': new String('x'.repeat(300)), // eslint-disable-line no-new-wrappers
    'new Boolean(true)': new Boolean(true), // eslint-disable-line no-new-wrappers
    'new Boolean(false)': new Boolean(false), // eslint-disable-line no-new-wrappers
    RegExp: /a\/b+[c]/gi,
    'RegExp, no flags': new RegExp(''), // eslint-disable-line prefer-regex-literals
    Error: error,
    'TypeError without a stack': noStack,
    RangeError: new RangeError('out'),
    'EvalError, SyntaxError, ReferenceError, URIError': [new EvalError('e'), new SyntaxError('s'), new ReferenceError('r'), new URIError('u')],
    'an Error subclass (a map of its own keys)': Object.assign(new CustomError('sub'), { extra: 1 }),
    'Proxy of an array': new Proxy([1, 'two', { three: 3 }], {}),
    'Proxy of an object': new Proxy({ a: 1 }, {}),
    Buffer: Buffer.from('a buffer'),
    'Buffer of 255 bytes': Buffer.alloc(255, 1),
    Map: new Map([['k', 'v']]),
    Set: new Set([1, 2]),
    Date: new Date(1700000000123),
    'class instance': new Thing(),
    'Object.create(null)': Object.assign(Object.create(null), { x: 1 }),
    'own constructor key': { constructor: 'x', y: 2 },
    'symbols and functions': { s: Symbol('s'), f () {}, [Symbol('k')]: 1, u: undefined },
    numbers: [0, -0, 1, -1, 127, 128, -32, -33, 255, 256, 65535, 65536, 2 ** 31 - 1, 2 ** 31, -(2 ** 31), -(2 ** 31) - 1, 1.5, NaN, Infinity, -Infinity],
    nested: { list: [new Uint8Array([1]), { deep: new Number(3) }], when: new Date(0) } // eslint-disable-line no-new-wrappers
  }
}

/** Past 100,000 values, containers seen before are copied, not walked again: the bytes must
 * not change, shallower or deeper. */
function large () {
  const shared = { a: 1, b: [1, new Uint8Array([2])], c: { d: 'e' } }
  return {
    'one object shared 150,000 times': { list: Array.from({ length: 150000 }, () => shared), deeper: [[[shared]]], last: shared },
    '150,000 distinct objects': Array.from({ length: 150000 }, (_, i) => ({ i, s: String(i) }))
  }
}

/** The EVENT body msgpack-lite 0.1.26 writes for `bundle`. */
function expected (id, type, bundle) {
  return msgpack.encode({ id, type, bundle })
}

/** A client connected to a fake gateway, acknowledging every action into `actions`. */
// The file's tests share one JavaScript thread, and the large ones keep it busy for minutes
// under qemu: the fake gateway's WELCOME can come later than the default 30 s connectTimeout,
// and a client that gave up on it would talk to a connection the test no longer watches.
const FAKE_GATEWAY_OPTIONS = { host: 'localhost', connectTimeout: scaled(30000) }

async function actionsFromFake (t) {
  const gateway = await fakeGateway(t)
  const client = new Client({ ...FAKE_GATEWAY_OPTIONS, port: gateway.port })
  t.teardown(() => client.close())
  const actions = []
  client.on('action', (action, ack) => { actions.push(action); ack() })
  client.connect()
  const peer = await gateway.accept()
  await welcome(peer)
  return { client, peer, actions }
}

test('every value is written byte for byte as msgpack-lite 0.1.26 writes it', async (t) => {
  const gateway = await fakeGateway(t)
  const client = new Client({ ...FAKE_GATEWAY_OPTIONS, port: gateway.port })
  t.teardown(() => client.close())
  client.connect()
  const peer = await gateway.accept()
  await welcome(peer)
  await once(client, 'drain')
  for (const [name, bundle] of Object.entries({ ...corpus(), ...large() })) {
    const id = `id-${name}`
    const type = 'row'
    const done = new Promise((resolve) => client.send(new Event(type, { value: bundle }, id), resolve))
    const event = await peer.next()
    t.is(event.name, 'EVENT')
    const wanted = expected(id, type, { value: bundle })
    if (event.raw.length < 4096) t.deepEqual(event.raw, wanted, name)
    else t.true(event.raw.equals(wanted), name)
    peer.send('ACKNOWLEDGEMENT', { correlid: id, status: 0 })
    t.is(await done, null)
  }
})

test('the extension types are read back into the same JavaScript types as msgpack-lite decodes them', async (t) => {
  const { peer, actions } = await actionsFromFake(t)
  const rows = Object.entries(corpus())
  for (const [name, value] of rows) {
    const body = msgpack.encode({ id: name, type: 'row', parameters: { value } })
    const header = Buffer.alloc(6)
    header[0] = 5
    header.writeUInt32LE(body.length, 2)
    peer.sendRaw(Buffer.concat([header, body]))
  }
  await waitFor(() => actions.length === rows.length)
  for (const [index, [name, value]] of rows.entries()) {
    const wanted = msgpack.decode(msgpack.encode(value))
    const got = actions[index].parameters.value
    t.is(actions[index].id, name)
    t.is(Object.prototype.toString.call(got), Object.prototype.toString.call(wanted), name)
    t.is(got && got.constructor, wanted && wanted.constructor, name)
    if (wanted instanceof Error) {
      for (const key of ['name', 'message', 'stack', 'columnNumber', 'fileName', 'lineNumber']) t.is(got[key], wanted[key], `${name}.${key}`)
    } else if (Array.isArray(wanted) && wanted.some((item) => item instanceof Error)) {
      t.deepEqual(got.map((e) => [e.constructor, e.message]), wanted.map((e) => [e.constructor, e.message]), name)
    } else if (typeof wanted === 'object' && wanted !== null && typeof wanted.valueOf() !== 'object') {
      t.is(got.valueOf(), wanted.valueOf(), name)
    } else if (wanted instanceof ArrayBuffer) {
      t.deepEqual(Buffer.from(got), Buffer.from(wanted), name)
    } else if (wanted instanceof DataView) {
      t.deepEqual(Buffer.from(got.buffer, got.byteOffset, got.byteLength), Buffer.from(wanted.buffer, wanted.byteOffset, wanted.byteLength), name)
    } else if (wanted instanceof RegExp) {
      t.is(String(got), String(wanted), name)
    } else {
      t.deepEqual(got, wanted, name)
    }
    // And what the client would send back is the same bytes again.
    t.deepEqual(msgpack.encode(got), msgpack.encode(wanted), name)
  }
})

test('the bundled Server echoes extension types back unchanged', async (t) => {
  const server = new Server()
  t.teardown(() => new Promise((resolve) => server.destroy(resolve)))
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const received = []
  server.on('event', (event) => received.push(event.bundle))
  const client = new Client({ host: 'localhost', port: server.address().port })
  t.teardown(() => client.close())
  const actions = []
  client.on('action', (action, ack) => { actions.push(action.parameters); ack() })
  client.connect()
  const bundle = { u8: new Uint8Array([1, 2]), f64: new Float64Array([0.5]), n: new Number(7), re: /x/g } // eslint-disable-line no-new-wrappers
  await new Promise((resolve, reject) => client.send(new Event('t', bundle), (err) => err ? reject(err) : resolve()))
  await waitFor(() => actions.length === 1 && received.length === 1)
  for (const got of [received[0], actions[0]]) {
    t.true(got.u8 instanceof Uint8Array && !Buffer.isBuffer(got.u8))
    t.deepEqual([...got.u8], [1, 2])
    t.true(got.f64 instanceof Float64Array)
    t.deepEqual([...got.f64], [0.5])
    t.true(got.n instanceof Number)
    t.is(got.n.valueOf(), 7)
    t.true(got.re instanceof RegExp)
    t.is(String(got.re), '/x/g')
  }
})

test('a BigInt fails its own send() through the callback, as msgpack-lite refuses it', async (t) => {
  t.throws(() => msgpack.encode({ n: 1n }), { message: /Unsupported type "bigint"/ })
  const client = new Client({ host: 'localhost', port: 1 })
  t.teardown(() => client.close())
  const err = await new Promise((resolve) => client.send(new Event('t', { n: 10n }), resolve))
  t.is(err.code, 'EINVALIDBUNDLE')
  t.regex(err.message, /Unsupported type "bigint"/)
  const thrown = t.throws(() => client.send(new Event('t', { list: [1n] })))
  t.is(thrown.code, 'EINVALIDBUNDLE')
})

test('a getter that throws something other than an Error fails the send with what it threw', async (t) => {
  const client = new Client({ host: 'localhost', port: 1 })
  t.teardown(() => client.close())
  const hostile = { get n () { throw 42 } } // eslint-disable-line no-throw-literal
  const err = await new Promise((resolve) => client.send(new Event('t', hostile), resolve))
  t.is(err.code, 'EINVALIDBUNDLE')
  t.is(err.message, 'Invalid event bundle: 42')
  const text = { get n () { throw 'plain text' } } // eslint-disable-line no-throw-literal
  const second = await new Promise((resolve) => client.send(new Event('t', text), resolve))
  t.is(second.message, 'Invalid event bundle: plain text')
})

test('a bundle that would not fit a frame fails its send() at once with IM491', async (t) => {
  const client = new Client({ host: 'localhost', port: 1 })
  t.teardown(() => client.close())
  const refuse = async (bundle) => {
    const started = process.hrtime.bigint()
    const err = await new Promise((resolve) => client.send(new Event('t', bundle), resolve))
    return { err, ms: Number(process.hrtime.bigint() - started) / 1e6 }
  }
  const huge = await refuse({ a: new Array(2 ** 32 - 1) })
  t.is(huge.err.code, 'IM491')
  t.is(huge.err.message, 'Maximum buffer size exceeded.')
  // Walking the 2^32 - 1 holes would take minutes: a bound far above the few ms it takes.
  t.true(huge.ms < scaled(1000), `${huge.ms} ms`)
  t.log(`new Array(2 ** 32 - 1) refused in ${huge.ms.toFixed(2)} ms`)

  let shared = { leaf: 1 }
  for (let i = 0; i < 30; i++) shared = { a: shared, b: shared }
  const multiplied = await refuse(shared)
  t.is(multiplied.err.code, 'IM491')
  // Walking 2^30 leaves would take minutes: a bound far above the ~1 s it takes here.
  t.true(multiplied.ms < scaled(10000), `${multiplied.ms} ms`)
  t.log(`a subtree shared 2^30 times refused in ${multiplied.ms.toFixed(0)} ms`)

  const long = await refuse({ text: 'x'.repeat(11 * 1024 * 1024) })
  t.is(long.err.code, 'IM491')
  const big = await refuse({ data: Buffer.alloc(10 * 1024 * 1024) })
  t.is(big.err.code, 'IM491')
  const keys = await refuse(Object.fromEntries(Array.from({ length: 2e5 }, (_, i) => [`k${i}`, 'v'.repeat(100)])))
  t.is(keys.err.code, 'IM491')
  // Without a callback, send() throws it.
  t.is(t.throws(() => client.send(new Event('t', { a: new Array(2 ** 32 - 1) }))).code, 'IM491')
  // Just under the cap still goes.
  const fits = await new Promise((resolve) => {
    client.send(new Event('t', { data: Buffer.alloc(10 * 1024 * 1024 - 100) }), resolve)
    setTimeout(() => resolve('queued'), 50)
  })
  t.is(fits, 'queued')
})

test('extension types with data that makes no such value arrive as {type, buffer}, and nothing crashes', async (t) => {
  const { peer, actions } = await actionsFromFake(t)
  let seed = 0x9e3779b9
  const random = () => { seed ^= seed << 13; seed ^= seed >>> 17; seed ^= seed << 5; return (seed >>> 0) / 2 ** 32 }
  const ext = (type, data) => {
    const header = data.length <= 0xff ? Buffer.from([0xc7, data.length, type]) : Buffer.from([0xc8, data.length >> 8, data.length & 0xff, type])
    return Buffer.concat([header, data])
  }
  const payloads = []
  for (let type = 0; type <= 0x20; type++) {
    // (A Date's data must be a number: anything else is a protocol error, as before.)
    if (type === 0x0d) continue
    for (let i = 0; i < 8; i++) payloads.push(ext(type, Buffer.from(Array.from({ length: Math.floor(random() * 40) }, () => Math.floor(random() * 256)))))
  }
  // Misaligned typed arrays, a RegExp that does not compile, an Error of a string.
  payloads.push(ext(0x18, Buffer.alloc(7)), ext(0x0A, msgpack.encode(['(', ''])), ext(0x0E, msgpack.encode('boom')))
  // Boxed numbers wrapped in each other far deeper than anything decodes.
  let deep = msgpack.encode(1)
  for (let i = 0; i < 2000; i++) deep = ext(0x0F, deep)
  payloads.push(deep)
  const head = Buffer.from([0x83, 0xa2, 0x69, 0x64])
  for (const [index, payload] of payloads.entries()) {
    const body = Buffer.concat([head, msgpack.encode(index), msgpack.encode('type'), msgpack.encode('x'), msgpack.encode('parameters'), payload])
    const header = Buffer.alloc(6)
    header[0] = 5
    header.writeUInt32LE(body.length, 2)
    peer.sendRaw(Buffer.concat([header, body]))
  }
  await waitFor(() => actions.length === payloads.length)
  t.deepEqual(actions.map((a) => a.id), payloads.map((_, i) => i))
  const misaligned = actions[payloads.length - 4].parameters
  t.is(misaligned.type, 0x18)
  t.is(misaligned.buffer.length, 7)
  t.is(actions[payloads.length - 3].parameters.type, 0x0A)
  t.true(actions[payloads.length - 2].parameters instanceof Error)
  t.is(actions[payloads.length - 1].parameters.constructor, Number, 'the outer levels still make Numbers')
})

/** A string of exactly `bytes` bytes of UTF-8: `unit` repeated, ASCII `a`s filling the rest
 * (in front, so that the string ends with `unit`, the last character an ASCII check reads). */
function sized (unit, bytes) {
  const width = Buffer.byteLength(unit)
  const count = Math.floor(bytes / width)
  return 'a'.repeat(bytes - count * width) + unit.repeat(count)
}

/** Strings of every kind, each around the lengths where the way they are made changes (256
 * bytes of UTF-8: below it V8 decodes a non-ASCII string, from it Rust transcodes it) and
 * large, as ids, keys and values. */
function strings () {
  const rows = { empty: '' }
  const kinds = {
    ASCII: 'x',
    'Latin-1 range (é, ÿ)': 'éÿ',
    'one Latin-1 character in ASCII': null,
    'two-byte characters (ж)': 'ж',
    'three-byte characters (€)': '€',
    'emoji (4 bytes, a surrogate pair)': '😀',
    'every width mixed': 'aé€😀ж',
    'lone surrogates (msgpack-lite and Node write U+FFFD)': '\ud800b\udfff'
  }
  for (const [kind, unit] of Object.entries(kinds)) {
    for (const bytes of [1, 5, 254, 255, 256, 257, 258, 70000, 300000]) {
      rows[`${kind}, ${bytes} bytes`] = unit === null ? 'a'.repeat(Math.max(0, bytes - 2)) + 'é' : sized(unit, bytes)
    }
  }
  rows['non-ASCII first, then ASCII, 100000 bytes'] = 'ж' + 'a'.repeat(99998)
  rows['ÿ (U+00FF) and Ā (U+0100) at the Latin-1 edge, 300 bytes'] = 'a'.repeat(296) + '\u00ff\u0100'
  return rows
}

/** What a string is on the wire: lone surrogates written as U+FFFD, as msgpack-lite and Node do. */
function wellFormed (text) {
  return text.replace(/[\ud800-\udbff](?![\udc00-\udfff])|(?<![\ud800-\udbff])[\udc00-\udfff]/g, '\ufffd')
}

/** Sends each of `rows` ([name, text]) from a fake gateway in an action, as its type, a key and
 * a value; checks that each arrives as sent, then goes back out in an event as msgpack-lite
 * writes it, as received and as first written. */
async function stringsRoundTrip (t, rows) {
  const { client, peer, actions } = await actionsFromFake(t)
  await once(client, 'drain')
  for (const [name, text] of rows) {
    const body = msgpack.encode({ id: name, type: text, parameters: { [text]: text, list: [text] } })
    const header = Buffer.alloc(6)
    header[0] = 5
    header.writeUInt32LE(body.length, 2)
    peer.sendRaw(Buffer.concat([header, body]))
  }
  await waitFor(() => actions.length === rows.length)
  for (const [index, [name, text]] of rows.entries()) {
    const expected = wellFormed(text)
    const action = actions[index]
    t.is(action.id, name)
    t.true(action.type === expected, `${name}: type`)
    t.deepEqual(Object.keys(action.parameters), [expected, 'list'], `${name}: key`)
    t.true(action.parameters[expected] === expected, `${name}: value`)
    t.true(action.parameters.list[0] === expected, `${name}: value in an array`)
  }
  // Sent back, as received and as first written: msgpack-lite's bytes each time. (An event
  // needs a type: the empty string is only a value then.)
  for (const [index, [name, text]] of rows.entries()) {
    const type = text || 'empty'
    for (const [which, bundle] of [['received', actions[index].parameters], ['original', { [text]: text, list: [text] }]]) {
      const done = new Promise((resolve) => client.send(new Event(type, bundle, name), resolve))
      // (The acknowledgements of the actions come first.)
      let event = await peer.next()
      while (event.name === 'ACKNOWLEDGEMENT') event = await peer.next()
      t.is(event.name, 'EVENT')
      t.true(event.raw.equals(expected(name, type, { [text]: text, list: [text] })), `${name}: ${which} sent back`)
      peer.send('ACKNOWLEDGEMENT', { correlid: name, status: 0 })
      t.is(await done, null)
    }
  }
}

test('strings of every kind and length arrive in actions as sent, and go back out in events byte for byte', async (t) => {
  await stringsRoundTrip(t, Object.entries(strings()))
})

// From 256 KiB of UTF-8 the decoder leaves a string in its frame instead of copying it, and
// Node.js makes it an external string: one byte either side, a string is the same string.
const SHARED_TEXT_FROM = 256 * 1024

test('strings one byte under and at 256 KiB, where they start to stay in the frame, arrive alike and go back out byte for byte', async (t) => {
  const rows = []
  for (const [kind, unit] of Object.entries({ ASCII: 'x', 'Latin-1 (é)': 'é', 'two-byte (ж)': 'ж', 'emoji (😀)': '😀' })) {
    for (const bytes of [SHARED_TEXT_FROM - 1, SHARED_TEXT_FROM]) rows.push([`${kind}, ${bytes} bytes`, sized(unit, bytes)])
  }
  await stringsRoundTrip(t, rows)
})

test('a string of invalid UTF-8 from a gateway arrives as Node decodes those bytes, short or long', async (t) => {
  const { peer, actions } = await actionsFromFake(t)
  // CESU-8 surrogates, a stray continuation byte, a cut-off sequence, an overlong NUL.
  const bad = Buffer.from([0xed, 0xa0, 0x80, 0x80, 0x61, 0xe2, 0x82, 0xc0, 0x80, 0xc3, 0xa9])
  const cases = [bad, Buffer.concat([Buffer.alloc(300, 'a'), bad]), Buffer.concat([Buffer.alloc(70000, 'ж'), bad])]
  for (const [index, raw] of cases.entries()) {
    const str = raw.length < 0x10000 ? Buffer.from([0xda, raw.length >> 8, raw.length & 0xff]) : Buffer.from([0xdb, 0, raw.length >> 16, (raw.length >> 8) & 0xff, raw.length & 0xff])
    const body = Buffer.concat([Buffer.from([0x83]), msgpack.encode('id'), msgpack.encode(index), msgpack.encode('type'), msgpack.encode('x'), msgpack.encode('parameters'), Buffer.from([0x81]), msgpack.encode('value'), str, raw])
    const header = Buffer.alloc(6)
    header[0] = 5
    header.writeUInt32LE(body.length, 2)
    peer.sendRaw(Buffer.concat([header, body]))
  }
  await waitFor(() => actions.length === cases.length)
  for (const [index, raw] of cases.entries()) t.true(actions[index].parameters.value === raw.toString('utf8'), `case ${index}`)
})
