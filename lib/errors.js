'use strict'

// Every error this package reports is an Error with a stable `code`: those made here, and
// those the native side throws, whose `code` it sets where it makes them (src/node/mod.rs).
function gatewayError (message, code, Ctor = Error) {
  const err = new Ctor(message)
  if (code !== undefined && code !== null) err.code = code
  return err
}

module.exports = { gatewayError }
