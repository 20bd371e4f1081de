'use strict'

// Keys, certificates and CAs arrive as PEM strings or Buffers; the native side takes Buffers.
function pemBuffer (value) {
  if (value === undefined || value === null) return undefined
  if (Buffer.isBuffer(value)) return value
  if (typeof value === 'string') return Buffer.from(value)
  if (value instanceof Uint8Array) return Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  return undefined
}

// `ca` may be the original's `{root, intermediate}`, one PEM (string or Buffer), or an array.
function caList (ca) {
  if (ca === undefined || ca === null) return undefined
  const items = Array.isArray(ca)
    ? ca
    : (typeof ca === 'object' && !Buffer.isBuffer(ca) && !(ca instanceof Uint8Array))
        ? [ca.root, ca.intermediate]
        : [ca]
  const list = items.map(pemBuffer).filter(Boolean)
  return list.length ? list : undefined
}

module.exports = { pemBuffer, caList }
