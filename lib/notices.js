'use strict'

// The notice format the native side speaks to lib/client.js and lib/server.js, read from its
// one definition, the tables in src/node/notice.rs: a batch is one flat list,
// `kind, ...fields, kind, ...fields`, where a kind's number and its fields are the table's. A
// last field named `...name` stands for as many values as the notice says elsewhere (a shaped
// action's values, one per key of its shape): `widths` counts the other fields only.
// Each reader states which fields it reads of each kind, in order; if the native table says
// otherwise, the reader fails at load with ENOTICEFORMAT instead of misreading batches.

const { noticeFormat } = require('./native')
const { gatewayError } = require('./errors')

const FORMAT = noticeFormat()

/**
 * The layout of `side`'s batches ('client' or 'server') for a reader of `reads` (each kind's
 * name and the names of its fields, in order): `{ kinds, widths }`, where `kinds[name]` is the
 * kind's number and `widths[number]` how many fields follow it, besides a `...name` field's
 * values. Throws ENOTICEFORMAT when `reads` and the table (the native one unless given) differ
 * in any kind or field.
 */
function layout (side, reads, table = FORMAT[side]) {
  const kinds = {}
  const widths = []
  const differ = (what) => gatewayError(`The ${side} notice format of the native binary differs from lib/'s: ${what}.`, 'ENOTICEFORMAT')
  for (const { kind, number, fields } of table) {
    const read = reads[kind]
    if (!Array.isArray(read)) throw differ(`kind ${kind} is not read`)
    if (read.join() !== fields.join()) {
      throw differ(`kind ${kind} has the fields [${fields.join(', ')}], read as [${read.join(', ')}]`)
    }
    kinds[kind] = number
    widths[number] = fields.filter((field) => !field.startsWith('...')).length
  }
  for (const kind of Object.keys(reads)) {
    if (!(kind in kinds)) throw differ(`kind ${kind} is read but never written`)
  }
  return { kinds, widths }
}

module.exports = { layout, FORMAT }
