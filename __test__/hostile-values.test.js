'use strict'
// Values whose JavaScript changes the memory of a Buffer while the encoder walks them: a
// `Buffer[Symbol.hasInstance]`, a getter, a Proxy trap or a `valueOf` that shrinks a resizable
// ArrayBuffer or detaches one. The encoder reads a Buffer's bytes only after the last JavaScript
// it runs for that Buffer, so it sends the bytes as they are then (none, once shrunk to 0 or
// detached: an empty Buffer) and never reads memory that is gone (this killed the process with
// SIGSEGV). Each case runs in a child process, through send() before the client connects, send()
// once it is connected, and Server#queueAction(); the child prints what the other end received.

const test = require('ava')
const { runNode } = require('./helpers/child')

const SIZE = 8 << 20

// Runs in the child before a case's `make()`, which returns a fresh bundle each time it is
// called (and arms whatever hook the case uses).
const PRELUDE = `
const { Client, Server, Event } = require('imt-gateway')
const os = require('os')
const SIZE = ${SIZE}
// 8 MB, as a Buffer (a Uint8Array given Buffer.prototype) over an ArrayBuffer that can shrink
// (resizable) or be detached; shrink(to) resizes, or detaches when to is undefined.
function hostile ({ fixed = false, detach = false, size = SIZE } = {}) {
  const ab = detach ? new ArrayBuffer(size) : new ArrayBuffer(size, { maxByteLength: size })
  const bytes = fixed ? new Uint8Array(ab, 0, size) : new Uint8Array(ab)
  bytes.fill(7)
  Object.setPrototypeOf(bytes, Buffer.prototype)
  const shrink = (to) => {
    if (detach) {
      structuredClone(ab, { transfer: [ab] })
      global.gc()
    } else {
      ab.resize(to)
    }
  }
  return { ab, bytes, shrink }
}
// Buffer[Symbol.hasInstance] (so Buffer.isBuffer() and instanceof), running run() once when
// asked about target.
let onInstanceof = null
Object.defineProperty(Buffer, Symbol.hasInstance, {
  configurable: true,
  value (value) {
    if (onInstanceof && onInstanceof.target === value) {
      const { run } = onInstanceof
      onInstanceof = null
      run()
    }
    return Function.prototype[Symbol.hasInstance].call(this, value)
  }
})
function describe (v) {
  if (ArrayBuffer.isView(v) && !(v instanceof DataView)) return v.constructor.name + '(' + v.length + (v.length ? ':' + v[0] + '..' + v[v.length - 1] : '') + ')'
  if (v instanceof ArrayBuffer) return 'ArrayBuffer(' + v.byteLength + ')'
  if (v instanceof DataView) return 'DataView(' + v.byteLength + ')'
  if (v instanceof Date) return 'Date(' + v.getTime() + ')'
  if (v instanceof Number) return 'Number(' + Number(v) + ')'
  if (v instanceof Error) return v.name + '(' + v.message + ')'
  if (Array.isArray(v)) return v.map(describe)
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, describe(x)]))
  return v
}
function next (emitter, name) {
  return new Promise((resolve) => emitter.once(name, (...args) => resolve(args)))
}
async function main () {
  const seen = {}
  const server = new Server({ echo: false })
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve))
  const client = new Client({ host: 'localhost', port: server.address().port })
  const sendOne = async (key) => {
    const event = next(server, 'event')
    try {
      client.send(new Event('hostile', make()), (err) => { if (err) seen[key + 'Callback'] = err.code })
    } catch (err) {
      seen[key] = 'threw ' + err.code
      return
    }
    seen[key] = describe((await event)[0].bundle)
  }
  // Encoded at the call, before the client connects.
  const queued = sendOne('sendQueued')
  client.connect()
  await queued
  await sendOne('sendConnected')
  const action = next(client, 'action')
  try {
    server.queueAction(os.hostname(), { type: 'hostile', parameters: make() })
    const [received, ack] = await action
    seen.action = describe(received.parameters)
    ack()
  } catch (err) {
    seen.action = 'threw ' + err.code
  }
  console.log(JSON.stringify(seen))
  process.exit(0)
}
main().catch((err) => { console.log('failed', err.stack); process.exit(3) })
`

/** Runs `source` (which defines `make()`) in a child; what the other end saw for each path. */
async function run (t, source) {
  const result = await runNode(PRELUDE + source, { node: ['--expose-gc'], timeout: 60000 })
  t.is(result.signal, null, `the child died; stderr: ${result.err}`)
  t.is(result.code, 0, `stdout: ${result.out}\nstderr: ${result.err}`)
  return JSON.parse(result.out)
}

/** Each of the three paths received `expected`, and nothing was refused. */
function same (expected) {
  return { sendQueued: expected, sendConnected: expected, action: expected }
}

const FULL = `Buffer(${SIZE}:7..7)`

test('a Buffer[Symbol.hasInstance] that shrinks the Buffer to nothing: an empty Buffer is sent', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile()
      onInstanceof = { target: bytes, run: () => shrink(0) }
      return { data: bytes, after: 1 }
    }
  `), same({ data: 'Buffer(0)', after: 1 }))
})

test('a Buffer[Symbol.hasInstance] that shrinks a Buffer of fixed length out of bounds: an empty Buffer', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile({ fixed: true })
      onInstanceof = { target: bytes, run: () => shrink(0) }
      return { data: bytes }
    }
  `), same({ data: 'Buffer(0)' }))
})

test('a Buffer[Symbol.hasInstance] that shrinks the Buffer in part: the bytes left are sent', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile()
      onInstanceof = { target: bytes, run: () => shrink(16) }
      return [bytes]
    }
  `), same(['Buffer(16:7..7)']))
})

test('a Buffer[Symbol.hasInstance] that detaches the Buffer: an empty Buffer is sent', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile({ detach: true })
      onInstanceof = { target: bytes, run: () => shrink() }
      return { data: bytes }
    }
  `), same({ data: 'Buffer(0)' }))
})

test('a getter that shrinks a Buffer met later in the bundle: the Buffer as it is then', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile()
      return { get first () { shrink(0); return 1 }, data: bytes }
    }
  `), same({ first: 1, data: 'Buffer(0)' }))
})

test('a getter that shrinks a Buffer written earlier in the bundle: the Buffer as it was', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile()
      return { data: bytes, get last () { shrink(0); return 2 } }
    }
  `), same({ data: FULL, last: 2 }))
})

test('a constructor getter on the Buffer itself that detaches it: an empty Buffer', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile({ detach: true })
      Object.defineProperty(bytes, 'constructor', { get () { shrink(); return Buffer } })
      return { data: bytes }
    }
  `), same({ data: 'Buffer(0)' }))
})

test('Proxy traps that shrink a Buffer: the Buffer as it is when read', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const first = hostile()
      const second = hostile()
      return new Proxy({ a: first.bytes, b: second.bytes }, {
        ownKeys (target) { first.shrink(0); return Reflect.ownKeys(target) },
        get (target, key) { if (key === 'b') second.shrink(3); return Reflect.get(target, key) }
      })
    }
  `), same({ a: 'Buffer(0)', b: 'Buffer(3:7..7)' }))
})

test('valueOf of a Number or a Date-like object that shrinks a Buffer: the Buffer as it is then', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const first = hostile()
      const second = hostile()
      const number = new Number(5)
      number.valueOf = () => { first.shrink(0); return 5 }
      const date = Object.create(Date.prototype)
      date.valueOf = () => { second.shrink(0); return 1000 }
      return { number, a: first.bytes, date, b: second.bytes }
    }
  `), same({ number: 'Number(5)', a: 'Buffer(0)', date: 'Date(1000)', b: 'Buffer(0)' }))
})

test('an Error whose message getter shrinks a Buffer: the Buffer as it is then', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile()
      const error = new Error('x')
      Object.defineProperty(error, 'message', { get () { shrink(0); return 'gone' } })
      return { error, data: bytes }
    }
  `), same({ error: 'Error(gone)', data: 'Buffer(0)' }))
})

test('toJSON is not called: the Buffer is sent whole', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const { bytes, shrink } = hostile()
      return { json: { toJSON () { shrink(0); return 1 } }, data: bytes }
    }
  `), same({ json: { toJSON: null }, data: FULL }))
})

test('an ArrayBuffer and a DataView whose constructor getters shrink them: their bytes as they are then', async (t) => {
  t.deepEqual(await run(t, `
    function make () {
      const first = hostile()
      const second = hostile()
      Object.defineProperty(first.ab, 'constructor', { get () { first.shrink(0); return ArrayBuffer } })
      const view = new DataView(second.ab)
      Object.defineProperty(view, 'constructor', { get () { second.shrink(5); return DataView } })
      return { ab: first.ab, view }
    }
  `), same({ ab: 'ArrayBuffer(0)', view: 'DataView(5)' }))
})

test('a typed array named otherwise whose Buffer[Symbol.hasInstance] shrinks it: its extension, as it is then', async (t) => {
  t.deepEqual(await run(t, `
    class Int8Array extends Uint8Array {}
    function make () {
      const ab = new ArrayBuffer(SIZE, { maxByteLength: SIZE })
      const bytes = new Int8Array(ab)
      bytes.fill(7)
      onInstanceof = { target: bytes, run: () => ab.resize(2) }
      return { data: bytes }
    }
  `), same({ data: 'Int8Array(2:7..7)' }))
})
