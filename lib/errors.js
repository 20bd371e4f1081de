'use strict'

// Every error this package reports is an Error with a stable `code`.
function gatewayError (message, code, Ctor = Error) {
  const err = new Ctor(message)
  if (code !== undefined && code !== null) err.code = code
  return err
}

// The native side reports construction failures as "CODE: message".
function fromNative (err) {
  const match = /^([A-Z][A-Z0-9_]+): ([\s\S]*)$/.exec(err && err.message)
  return match ? gatewayError(match[2], match[1]) : err
}

module.exports = { gatewayError, fromNative }
