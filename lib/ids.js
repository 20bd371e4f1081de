'use strict'

const { randomFillSync } = require('crypto')

// Ids of events and actions: random UUIDs (version 4) without dashes, as the original makes
// them. Made from a pool of random bytes refilled every 256 ids, as crypto.randomUUID() makes
// its own, and hex-encoded in one call: a fifth of the cost of formatting a UUID and removing
// its dashes.
const POOL = Buffer.alloc(16 * 256)
let offset = POOL.length

function newId () {
  if (offset === POOL.length) {
    randomFillSync(POOL)
    offset = 0
  }
  const at = offset
  offset += 16
  POOL[at + 6] = (POOL[at + 6] & 0x0f) | 0x40 // version 4
  POOL[at + 8] = (POOL[at + 8] & 0x3f) | 0x80 // the RFC 4122 variant
  return POOL.toString('hex', at, at + 16)
}

module.exports = { newId }
