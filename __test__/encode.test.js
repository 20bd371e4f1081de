'use strict'
// lib/encode.js writes plain objects of primitives in JavaScript and hands the rest of a bundle
// over to the native walk where it stops. Whichever of the two writes a value, the bytes must
// be msgpack-lite 0.1.26's, and every getter and Proxy trap must run once, in the same order.

const test = require('ava')
const msgpack = require('msgpack-lite-0126')
const { Client, Event } = require('imt-gateway')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { once } = require('./helpers/server')
const { scaled } = require('./helpers/time')

/** A small deterministic generator (xorshift32), so that a failure can be replayed. */
function generator (seed) {
  let x = seed >>> 0 || 1
  const next = () => {
    x ^= x << 13
    x >>>= 0
    x ^= x >>> 17
    x ^= x << 5
    x >>>= 0
    return x / 2 ** 32
  }
  const int = (n) => Math.floor(next() * n)
  const pick = (list) => list[int(list.length)]
  return { next, int, pick }
}

class Thing { constructor () { this.a = 1 } }

function randomString (g, max) {
  const length = g.int(max + 1)
  let s = ''
  for (let i = 0; i < length; i++) {
    const kind = g.int(10)
    if (kind < 5) s += String.fromCharCode(32 + g.int(95))
    else if (kind < 7) s += String.fromCharCode(0x80 + g.int(0x780))
    else if (kind < 8) s += String.fromCharCode(0x800 + g.int(0xd000))
    else if (kind < 9) s += String.fromCharCode(0xd800 + g.int(0x800)) // lone or paired surrogates
    else s += String.fromCodePoint(0x10000 + g.int(0x10000))
  }
  return s
}

function randomNumber (g) {
  return g.pick([
    () => g.int(256) - 128,
    () => g.int(70000) - 35000,
    () => g.int(2 ** 32) - 2 ** 31,
    () => g.int(2 ** 33),
    () => -g.int(2 ** 33),
    () => (g.next() - 0.5) * 1e6,
    () => g.pick([0, -0, NaN, Infinity, -Infinity, 2 ** 31, -(2 ** 31), 2 ** 31 - 1, -(2 ** 31) - 1, 127, 128, -32, -33, 255, 256, 65535, 65536, -128, -129, -32768, -32769, 2 ** 53, 0.1])
  ])()
}

function randomValue (g, depth) {
  const kind = g.int(depth > 2 ? 8 : 16)
  switch (kind) {
    case 0: case 1: case 2: return randomNumber(g)
    case 3: case 4: return randomString(g, g.pick([8, 40, 70, 300]))
    case 5: return g.next() < 0.5
    case 6: return g.pick([null, undefined, () => 1, Symbol('s')])
    case 7: return randomString(g, 64)
    case 8: case 9: return randomObject(g, depth + 1)
    case 10: return Array.from({ length: g.int(5) }, () => randomValue(g, depth + 1))
    case 11: return Buffer.from(randomString(g, 20))
    case 12: return new Date(g.int(2 ** 40))
    case 13: return g.pick([new Uint8Array([1, 2]), new Float64Array([g.next()]), new Thing(), new Map([[1, 2]]), Object.assign(Object.create(null), { x: 1 }), new Number(3)]) // eslint-disable-line no-new-wrappers
    case 14: return new Proxy(randomObject(g, depth + 1), {})
    default: return { constructor: g.pick([Object, 'x', Thing, undefined]), v: randomNumber(g) }
  }
}

function randomObject (g, depth) {
  const object = {}
  const count = g.pick([0, 1, 3, 8, 15, 16, 17, 40])
  for (let i = 0; i < count; i++) {
    const key = g.next() < 0.8 ? randomString(g, g.pick([6, 30, 64, 80])) : String(g.int(100))
    object[key] = randomValue(g, depth)
  }
  return object
}

/** The bundles of the test: random ones, and the cases at the walk's edges. */
function bundles () {
  const g = generator(Number(process.env.ENCODE_SEED) || 28)
  const list = []
  for (let i = 0; i < 400; i++) list.push(randomObject(g, 0))
  // A bundle is an object (anything else is refused before any walk).
  while (list.length < 450) {
    const value = randomValue(g, 0)
    if (typeof value === 'object' && value !== null) list.push(value)
  }
  // Past the room this walk has (16 KiB): handed over part way.
  list.push(Object.fromEntries(Array.from({ length: 3000 }, (_, i) => [`key${i}`, 'v'.repeat(i % 60)])))
  list.push(Object.fromEntries(Array.from({ length: 70000 }, (_, i) => [`k${i}`, i])))
  list.push(Object.fromEntries(Array.from({ length: 300 }, (_, i) => [randomString(g, 64), randomString(g, 64)])))
  list.push({ ['x'.repeat(65)]: 1, b: 2 }, { a: 'y'.repeat(65), b: 2 }, { a: 1, b: { c: 2 }, d: 3 })
  list.push([1, 2, 3], new Thing(), Buffer.from('b'), new Date(5), Object.create(null))
  return list
}

// A client drained by a fake gateway, and the gateway's side of the connection.
async function drained (t) {
  const gateway = await fakeGateway(t)
  const client = new Client({ host: 'localhost', port: gateway.port, connectTimeout: scaled(30000) })
  t.teardown(() => client.close())
  client.connect()
  const peer = await gateway.accept()
  await welcome(peer)
  await once(client, 'drain')
  return { client, peer }
}

test('bundles written in JavaScript and natively are msgpack-lite 0.1.26 byte for byte', async (t) => {
  const { client, peer } = await drained(t)
  let index = 0
  for (const bundle of bundles()) {
    const id = `id-${index++}`
    const done = new Promise((resolve) => client.send(new Event('row', bundle, id), resolve))
    const failed = await Promise.race([done, peer.next()])
    if (failed instanceof Error) {
      t.fail(`bundle ${index - 1} failed: ${failed.message}`)
      continue
    }
    const event = failed
    const wanted = msgpack.encode({ id, type: 'row', bundle })
    if (!event.raw.equals(wanted)) {
      t.fail(`bundle ${index - 1} differs: ${event.raw.toString('hex').slice(0, 400)} vs ${wanted.toString('hex').slice(0, 400)}`)
    }
    peer.send('ACKNOWLEDGEMENT', { correlid: id, status: 0 })
    t.is(await done, null)
  }
  t.pass()
})

test('every getter and Proxy trap of a bundle runs once, in the walk order, wherever the walk is handed over', async (t) => {
  const { client, peer } = await drained(t)
  const log = []
  const getters = (name, entries) => {
    const object = {}
    for (const [key, value] of entries) {
      Object.defineProperty(object, key, { enumerable: true, get: () => { log.push(`${name}.${key}`); return value } })
    }
    return object
  }
  const inner = getters('inner', [['x', 1], ['y', 'two']])
  const traps = new Proxy({ p: 1, q: 'long'.repeat(20) }, {
    get (target, key) { log.push(`proxy.get ${String(key)}`); return target[key] },
    ownKeys (target) { log.push('proxy.ownKeys'); return Reflect.ownKeys(target) }
  })
  const bundle = getters('top', [['a', 1], ['b', 's'], ['c', inner], ['d', 'z'.repeat(70)], ['e', traps], ['f', true]])
  const expected = ['top.a', 'top.b', 'top.c', 'inner.x', 'inner.y', 'top.d', 'top.e',
    'proxy.get constructor', 'proxy.ownKeys', 'proxy.get p', 'proxy.get q', 'top.f']
  // A getter that sends an event of its own, while the bundle is being walked.
  let nested = null
  const sender = getters('sender', [['a', 1]])
  Object.defineProperty(sender, 'b', {
    enumerable: true,
    get: () => {
      log.push('sender.b')
      nested = new Promise((resolve) => client.send(new Event('nested', { n: 1, s: 'é' }, 'nested-id'), resolve))
      return 'after'
    }
  })
  const plainBundle = { a: 1, b: 's', c: { x: 1, y: 'two' }, d: 'z'.repeat(70), e: { p: 1, q: 'long'.repeat(20) }, f: true }
  const cases = [[bundle, expected, plainBundle], [sender, ['sender.a', 'sender.b'], { a: 1, b: 'after' }]]
  for (const [body, order, plain] of cases) {
    log.length = 0
    const done = new Promise((resolve) => client.send(new Event('row', body, 'ordered'), resolve))
    t.deepEqual(log, order)
    if (body === sender) {
      // The nested send was queued first: the outer event is queued once its bundle is written.
      const event = await peer.next()
      t.true(event.raw.equals(msgpack.encode({ id: 'nested-id', type: 'nested', bundle: { n: 1, s: 'é' } })))
      peer.send('ACKNOWLEDGEMENT', { correlid: 'nested-id', status: 0 })
      t.is(await nested, null)
    }
    const event = await peer.next()
    t.true(event.raw.equals(msgpack.encode({ id: 'ordered', type: 'row', bundle: plain })))
    peer.send('ACKNOWLEDGEMENT', { correlid: 'ordered', status: 0 })
    t.is(await done, null)
  }
})

test('a revoked Proxy fails its send() as the native walk fails it', async (t) => {
  const gateway = await fakeGateway(t)
  const client = new Client({ host: 'localhost', port: gateway.port, connectTimeout: scaled(30000) })
  t.teardown(() => client.close())
  const { proxy, revoke } = Proxy.revocable({ a: 1 }, {})
  revoke()
  const err = await new Promise((resolve) => client.send(new Event('row', proxy, 'revoked'), resolve))
  t.is(err.code, 'EINVALIDBUNDLE')
  t.is(err.message, "Invalid event bundle: Cannot perform 'get' on a proxy that has been revoked")
})
