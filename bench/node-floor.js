'use strict'
// The Node floor: the least a JavaScript client on Node's own `tls` can do, to show where pure
// JavaScript stops. Frames (docs/PROTOCOL.md, section 2) and MessagePack are written by hand for
// exactly the messages it needs (HELLO, WELCOME, DRAINED, EVENT and its ACKNOWLEDGEMENT,
// ACTION and its acknowledgement); no session, no queue, no reconnect, no timers. Like the
// package's client it sends one event at a time and waits for its acknowledgement (checking its
// correlid and status), hands each action to the application as `{id, type, parameters}` and
// acknowledges it. One scenario per process, as bench/client.js: argv[2] is the scenario as JSON
// (`kind`: `events`, `rtt` or `actions`; small messages only). Prints one JSON object.

const tls = require('tls')

const HELLO = 0x01
const WELCOME = 0x02
const BYE = 0x03
const EVENT = 0x04
const ACTION = 0x05
const ACKNOWLEDGEMENT = 0x06
const DRAINED = 0x07

const scenario = JSON.parse(process.argv[2])

// ---- MessagePack, writing: a map header, a string, a non-negative integer, nil.

function mapHeader (out, at, n) {
  out[at] = 0x80 | n
  return at + 1
}

function str (out, at, s) {
  const len = Buffer.byteLength(s)
  if (len < 32) {
    out[at++] = 0xa0 | len
  } else if (len < 0x100) {
    out[at++] = 0xd9
    out[at++] = len
  } else {
    out[at++] = 0xda
    out.writeUInt16BE(len, at)
    at += 2
  }
  return at + out.write(s, at)
}

function uint (out, at, n) {
  if (n < 0x80) {
    out[at] = n
    return at + 1
  }
  if (n < 0x10000) {
    out[at] = 0xcd
    out.writeUInt16BE(n, at + 1)
    return at + 3
  }
  out[at] = 0xce
  out.writeUInt32BE(n, at + 1)
  return at + 5
}

/** An action's id back as it came (a string or an integer, as gateways send them). */
function id (out, at, value) {
  return typeof value === 'string' ? str(out, at, value) : uint(out, at, value)
}

/** A frame: `write(out, at)` writes the body from `at` and returns where it ends. */
function frame (token, write) {
  const out = Buffer.allocUnsafe(256)
  const end = write(out, 6)
  out[0] = token
  out[1] = 0
  out.writeUInt32LE(end - 6, 2)
  return out.subarray(0, end)
}

const hello = (device) => frame(HELLO, (out, at) => {
  at = mapHeader(out, at, 1)
  at = str(out, at, 'metadata')
  at = mapHeader(out, at, 1)
  at = str(out, at, 'device_name')
  return str(out, at, device)
})

const event = (eventId, n) => frame(EVENT, (out, at) => {
  at = mapHeader(out, at, 3)
  at = str(out, at, 'id')
  at = str(out, at, eventId)
  at = str(out, at, 'type')
  at = str(out, at, 'bench')
  at = str(out, at, 'bundle')
  at = mapHeader(out, at, 1)
  at = str(out, at, 'n')
  return uint(out, at, n)
})

const acknowledgement = (actionId) => frame(ACKNOWLEDGEMENT, (out, at) => {
  at = mapHeader(out, at, 2)
  at = str(out, at, 'correlid')
  at = id(out, at, actionId)
  at = str(out, at, 'status')
  return uint(out, at, 0)
})

// ---- MessagePack, reading: the values a small ACTION or ACKNOWLEDGEMENT holds.

let body = null
let pos = 0

function decode () {
  const b = body[pos++]
  if (b < 0x80) return b
  if (b >= 0xe0) return b - 0x100
  if ((b & 0xf0) === 0x80) return map(b & 0x0f)
  if ((b & 0xe0) === 0xa0) return text(b & 0x1f)
  switch (b) {
    case 0xc0: return null
    case 0xc2: return false
    case 0xc3: return true
    case 0xcc: return body[pos++]
    case 0xcd: pos += 2; return body.readUInt16BE(pos - 2)
    case 0xce: pos += 4; return body.readUInt32BE(pos - 4)
    case 0xd0: pos += 1; return body.readInt8(pos - 1)
    case 0xd1: pos += 2; return body.readInt16BE(pos - 2)
    case 0xd2: pos += 4; return body.readInt32BE(pos - 4)
    case 0xcb: pos += 8; return body.readDoubleBE(pos - 8)
    case 0xd9: return text(body[pos++])
    case 0xda: pos += 2; return text(body.readUInt16BE(pos - 2))
    case 0xde: pos += 2; return map(body.readUInt16BE(pos - 2))
    default: throw new Error(`node floor: MessagePack 0x${b.toString(16)} not handled`)
  }
}

function text (len) {
  pos += len
  return body.toString('utf8', pos - len, pos)
}

function map (n) {
  const out = {}
  for (let i = 0; i < n; i++) {
    const key = decode()
    out[key] = decode()
  }
  return out
}

/** The frame body at `start..end` of `buffer`, decoded. */
function decodeBody (buffer, start, end) {
  body = buffer
  pos = start
  const value = decode()
  if (pos !== end) throw new Error('node floor: trailing bytes in a frame')
  return value
}

// ---- The connection.

/**
 * Connects, says HELLO, acknowledges every held action up to DRAINED, then calls `drained()`.
 * Afterwards `onAcknowledgement({correlid, status})` is called for each acknowledgement; actions
 * are acknowledged as they come. Returns `{ write, actions(), end() }`.
 */
function connect (device, drained, onAcknowledgement, fail) {
  const socket = tls.connect({ host: '127.0.0.1', port: scenario.port, key: scenario.key, cert: scenario.cert, ca: scenario.ca })
  socket.setNoDelay(true)
  let welcomed = false
  let actions = 0
  let pending = null
  socket.on('secureConnect', () => socket.write(hello(device)))
  socket.on('error', fail)
  socket.on('close', () => fail(new Error('node floor: connection closed')))
  socket.on('data', (chunk) => {
    const buffer = pending === null ? chunk : Buffer.concat([pending, chunk])
    let at = 0
    while (buffer.length - at >= 6) {
      const end = at + 6 + buffer.readUInt32LE(at + 2)
      if (end > buffer.length) break
      const token = buffer[at]
      const start = at + 6
      at = end
      if (token === ACKNOWLEDGEMENT) {
        onAcknowledgement(decodeBody(buffer, start, end))
      } else if (token === ACTION) {
        // `{id, type, parameters}`, as an application would be given it.
        const action = decodeBody(buffer, start, end)
        actions++
        socket.write(acknowledgement(action.id))
      } else if (token === WELCOME) {
        welcomed = true
      } else if (token === DRAINED) {
        if (welcomed) drained()
      } else if (token === BYE) {
        return fail(new Error('node floor: BYE from the gateway'))
      } else {
        return fail(new Error(`node floor: unexpected token ${token}`))
      }
    }
    pending = at === buffer.length ? null : buffer.subarray(at)
  })
  const end = () => {
    socket.removeAllListeners('close')
    socket.end()
  }
  return { write: (data) => socket.write(data), actions: () => actions, end }
}

function percentile (sorted, p) {
  return sorted.length ? sorted[Math.round((sorted.length - 1) * p)] : 0
}

/** `warmup` untimed events, then `count` timed, each sent when the one before is acknowledged. */
function events ({ count, warmup = 0 }) {
  return new Promise((resolve, reject) => {
    const total = warmup + count
    const times = []
    let n = 0
    let expected = null
    let sent = 0n
    let cpu = null
    let started = 0n
    const next = () => {
      if (n === warmup) {
        cpu = process.cpuUsage()
        started = process.hrtime.bigint()
      }
      expected = n.toString(16).padStart(32, '0')
      sent = process.hrtime.bigint()
      peer.write(event(expected, n))
    }
    const peer = connect('node-floor', next, ({ correlid, status }) => {
      if (correlid !== expected) return reject(new Error('node floor: acknowledgement for another event'))
      if (status !== 0 && status !== null) return reject(new Error(`node floor: event refused (status ${status})`))
      const now = process.hrtime.bigint()
      if (n >= warmup) times.push(Number(now - sent) / 1e3)
      if (++n < total) return next()
      const used = process.cpuUsage(cpu)
      const seconds = Number(now - started) / 1e9
      times.sort((a, b) => a - b)
      resolve({
        perSecond: count / seconds,
        mbPerSecond: 0,
        rttMedianUs: percentile(times, 0.5),
        rttP99Us: percentile(times, 0.99),
        cpuUs: (used.user + used.system) / count
      })
    }, reject)
  })
}

/** Connects as `device`, for which the gateway holds `count` actions, and acknowledges each;
 * with `warmup`, untimed first, as `${device}-warmup`, which holds `warmup` actions. */
async function actions ({ count, device, warmup = 0 }) {
  if (warmup) {
    await new Promise((resolve, reject) => {
      const peer = connect(`${device}-warmup`, () => {
        if (peer.actions() !== warmup) return reject(new Error(`node floor: expected ${warmup} warm-up actions, got ${peer.actions()}`))
        peer.end()
        resolve()
      }, () => reject(new Error('node floor: acknowledgement with no event sent')), reject)
    })
  }
  return new Promise((resolve, reject) => {
    const cpu = process.cpuUsage()
    const started = process.hrtime.bigint()
    const peer = connect(device, () => {
      const seconds = Number(process.hrtime.bigint() - started) / 1e9
      const used = process.cpuUsage(cpu)
      if (peer.actions() !== count) return reject(new Error(`node floor: expected ${count} actions, got ${peer.actions()}`))
      resolve({ perSecond: count / seconds, mbPerSecond: 0, cpuUs: (used.user + used.system) / count })
    }, () => reject(new Error('node floor: acknowledgement with no event sent')), reject)
  })
}

const run = scenario.kind === 'actions' ? actions : events
run(scenario).then((result) => {
  console.log(JSON.stringify(result))
  process.exit(0)
}, (err) => {
  console.error(err)
  process.exit(1)
})
