'use strict'

// The common bundle, a plain object of numbers, short strings, booleans and nulls, written
// into MessagePack here, as the native walk (src/node/value/encode.rs) writes it, byte for byte:
// a property read from JavaScript costs a few instructions where each Node-API call costs
// hundreds. The walk here does what the native walk does, in its order (`Array.isArray`, then
// `constructor`, then `Object.keys`, then each value), and stops where the two would differ or
// where this one would need more room: it then hands the rest over (`send()` in
// src/node/client/calls.rs), with what it read already, so that no getter or Proxy trap runs
// twice and each runs in the native walk's order.

const SIZE = 16384
// The most one entry written here takes: two strings of up to SHORT UTF-16 units, at most 3
// bytes each (a surrogate pair is 4 bytes for 2 units), each with a 2-byte header.
const ENTRY = 2 * (2 + 3 * 64)
const SHORT = 64
const SCRATCH = new Uint8Array(SIZE)
const VIEW = new DataView(SCRATCH.buffer)

// Read once, as the native side keeps `Object` by reference: a program that replaces these
// globals later changes neither walk.
const PlainObject = Object
const keysOf = Object.keys
const isArray = Array.isArray

// Where this walk stopped, for the native call (see `resumed` in src/node/client/calls.rs):
// `length` bytes of SCRATCH; `at` -1 the whole bundle, -2 none of it (`first` is its
// constructor), from 0 the entries before key `at` of `keys`, with `first` that key's value
// when `read`.
let length = -1
let keys
let at = -1
let first
let read = false
// A getter of a bundle being walked here may send an event of its own: that one is walked
// natively, leaving SCRATCH to the walk under way.
let busy = false

/** `s` (at most SHORT units) as MessagePack at `pos`, as Node writes UTF-8 (a lone surrogate
 * as U+FFFD); returns the end. */
function putString (s, pos) {
  const units = s.length
  let bytes = units
  for (let i = 0; i < units; i++) {
    const c = s.charCodeAt(i)
    if (c < 0x80) continue
    if (c < 0x800) {
      bytes += 1
    } else if (c >= 0xd800 && c <= 0xdbff && i + 1 < units && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      bytes += 2 // 4 bytes for the pair's 2 units
      i++
    } else {
      bytes += 2
    }
  }
  if (bytes < 32) {
    SCRATCH[pos++] = 0xa0 | bytes
  } else {
    SCRATCH[pos++] = 0xd9
    SCRATCH[pos++] = bytes
  }
  if (bytes === units) {
    for (let i = 0; i < units; i++) SCRATCH[pos++] = s.charCodeAt(i)
    return pos
  }
  for (let i = 0; i < units; i++) {
    let c = s.charCodeAt(i)
    if (c < 0x80) {
      SCRATCH[pos++] = c
    } else if (c < 0x800) {
      SCRATCH[pos++] = 0xc0 | (c >> 6)
      SCRATCH[pos++] = 0x80 | (c & 0x3f)
    } else {
      if (c >= 0xd800 && c <= 0xdfff) {
        const next = i + 1 < units ? s.charCodeAt(i + 1) : 0
        if (c <= 0xdbff && (next & 0xfc00) === 0xdc00) {
          c = 0x10000 + ((c - 0xd800) << 10) + (next - 0xdc00)
          SCRATCH[pos++] = 0xf0 | (c >> 18)
          SCRATCH[pos++] = 0x80 | ((c >> 12) & 0x3f)
          SCRATCH[pos++] = 0x80 | ((c >> 6) & 0x3f)
          SCRATCH[pos++] = 0x80 | (c & 0x3f)
          i++
          continue
        }
        c = 0xfffd
      }
      SCRATCH[pos++] = 0xe0 | (c >> 12)
      SCRATCH[pos++] = 0x80 | ((c >> 6) & 0x3f)
      SCRATCH[pos++] = 0x80 | (c & 0x3f)
    }
  }
  return pos
}

/** The number `n` at `pos`, as `number_bytes` in src/protocol/value.rs; returns the end. */
function putNumber (n, pos) {
  if ((n | 0) === n) {
    if (n >= -32 && n <= 0x7f) {
      SCRATCH[pos] = n & 0xff
      return pos + 1
    }
    if (n >= 0) {
      if (n <= 0xff) {
        SCRATCH[pos] = 0xcc
        SCRATCH[pos + 1] = n
        return pos + 2
      }
      if (n <= 0xffff) {
        SCRATCH[pos] = 0xcd
        VIEW.setUint16(pos + 1, n)
        return pos + 3
      }
      SCRATCH[pos] = 0xce
      VIEW.setUint32(pos + 1, n)
      return pos + 5
    }
    if (n >= -0x80) {
      SCRATCH[pos] = 0xd0
      SCRATCH[pos + 1] = n & 0xff
      return pos + 2
    }
    if (n >= -0x8000) {
      SCRATCH[pos] = 0xd1
      VIEW.setInt16(pos + 1, n)
      return pos + 3
    }
    SCRATCH[pos] = 0xd2
    VIEW.setInt32(pos + 1, n)
    return pos + 5
  }
  SCRATCH[pos] = 0xcb
  if (n !== n) { // eslint-disable-line no-self-compare
    // One NaN, written as V8 and the native side write it.
    SCRATCH[pos + 1] = 0x7f
    SCRATCH[pos + 2] = 0xf8
    SCRATCH.fill(0, pos + 3, pos + 9)
  } else {
    VIEW.setFloat64(pos + 1, n)
  }
  return pos + 9
}

/** Walks `bundle`, an object, as far as it can (see the module's comment). */
function walk (bundle) {
  keys = undefined
  first = undefined
  read = false
  let array
  try {
    array = isArray(bundle)
  } catch {
    // A revoked Proxy, which `Array.isArray` refuses and the native walk does not: it runs
    // no JavaScript of the program, so the native walk takes the bundle as if never seen.
    array = true
  }
  if (array) {
    length = -1
    return
  }
  const c = bundle.constructor
  if (c !== PlainObject) {
    length = 0
    at = -2
    first = c
    return
  }
  const list = keysOf(bundle)
  const n = list.length
  let pos
  if (n < 16) {
    SCRATCH[0] = 0x80 | n
    pos = 1
  } else if (n <= 0xffff) {
    SCRATCH[0] = 0xde
    VIEW.setUint16(1, n)
    pos = 3
  } else {
    SCRATCH[0] = 0xdf
    VIEW.setUint32(1, n)
    pos = 5
  }
  // More keys than could ever fit here: the native walk takes them all, and refuses a map
  // over the frame cap before it reads any value.
  if (n > SIZE >> 1) return handOver(list, 0, pos, undefined, false)
  for (let i = 0; i < n; i++) {
    const key = list[i]
    if (pos > SIZE - ENTRY || key.length > SHORT) return handOver(list, i, pos, undefined, false)
    const value = bundle[key]
    const mark = pos
    pos = putString(key, pos)
    switch (typeof value) {
      case 'number':
        pos = putNumber(value, pos)
        break
      case 'string':
        if (value.length > SHORT) return handOver(list, i, mark, value, true)
        pos = putString(value, pos)
        break
      case 'boolean':
        SCRATCH[pos++] = value ? 0xc3 : 0xc2
        break
      case 'undefined':
      case 'function':
      case 'symbol':
        SCRATCH[pos++] = 0xc0
        break
      case 'object':
        if (value === null) {
          SCRATCH[pos++] = 0xc0
          break
        }
        return handOver(list, i, mark, value, true)
      default: // bigint: the native walk's error
        return handOver(list, i, mark, value, true)
    }
  }
  length = pos
  at = -1
}

function handOver (list, i, pos, value, wasRead) {
  length = pos
  keys = list
  at = i
  first = value
  read = wasRead
}

/**
 * `native(seq, id, type, bundle, ...)`, the native `send` (src/node/client/calls.rs), with as
 * much of `bundle` written here as this walk writes; returns what it returns. A string id, or
 * none (undefined: the native send makes one), only: an object id's getters run before the
 * bundle's, in the native walk.
 */
function sendEvent (native, seq, id, type, bundle) {
  if (busy || (id !== undefined && typeof id !== 'string') || bundle === null || typeof bundle !== 'object') {
    return native(seq, id, type, bundle, SCRATCH, -1)
  }
  busy = true
  try {
    walk(bundle)
  } finally {
    busy = false
  }
  // SCRATCH is copied before the native walk runs any JavaScript (which may send again).
  return native(seq, id, type, bundle, SCRATCH, length, keys, at, first, read)
}

module.exports = { sendEvent }
