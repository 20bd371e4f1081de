'use strict'

// Diagnostics go to stderr only when the DEBUG environment variable enables the namespace, with
// the `debug` package's syntax: names separated by commas or spaces, `*` as a wildcard, and a
// leading `-` to exclude. The original printed protocol errors unconditionally; we never do.

const { format } = require('util')

function patterns (spec) {
  return String(spec || '').split(/[\s,]+/).filter(Boolean).map((item) => {
    const exclude = item.startsWith('-')
    const body = (exclude ? item.slice(1) : item).replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*?')
    return { exclude, regexp: new RegExp(`^${body}$`) }
  })
}

function enabled (namespace, spec = process.env.DEBUG) {
  const list = patterns(spec)
  if (list.some((p) => p.exclude && p.regexp.test(namespace))) return false
  return list.some((p) => !p.exclude && p.regexp.test(namespace))
}

/** A logger for `namespace`, or a no-op when DEBUG does not enable it (checked once). */
function createDebug (namespace) {
  if (!enabled(namespace)) return () => {}
  return (...args) => process.stderr.write(`${new Date().toISOString()} ${namespace} ${format(...args)}\n`)
}

module.exports = { createDebug, enabled }
