'use strict'

const { gatewayError } = require('./errors')

// TLS material fails closed: an option that was given must yield something usable, or the
// constructor throws with the option's code (EINVALIDKEY, EINVALIDCERT, EINVALIDCA) and says what
// was wrong. Only `undefined` and `null` mean "not given".
const CODES = { key: 'EINVALIDKEY', cert: 'EINVALIDCERT', ca: 'EINVALIDCA' }

function given (value) {
  return value !== undefined && value !== null
}

function describe (value) {
  if (Array.isArray(value)) return `an array of ${value.length}`
  if (typeof value === 'object') {
    const keys = Object.keys(value)
    return keys.length ? `an object with ${keys.map((key) => `'${key}'`).join(', ')}` : 'an empty object'
  }
  return `a ${typeof value}`
}

// One PEM document (a string, Buffer or other Uint8Array) as a Buffer; `name` is the option's
// name as the user wrote it (`options.key`, `options.ca[1]`, ...), `option` picks the code.
function pemBuffer (value, option, name = `options.${option}`) {
  if (!given(value)) return undefined
  let buffer
  if (Buffer.isBuffer(value)) buffer = value
  else if (typeof value === 'string') buffer = Buffer.from(value)
  else if (value instanceof Uint8Array) buffer = Buffer.from(value.buffer, value.byteOffset, value.byteLength)
  else throw gatewayError(`${name} must be a PEM string or Buffer; got ${describe(value)}.`, CODES[option], TypeError)
  if (buffer.length === 0) throw gatewayError(`${name} is empty.`, CODES[option])
  return buffer
}

// `{ path: '/etc/device/cert.pem' }`: a PEM file, read by the native side at every connection
// attempt (the Client) or at listen() and setCredentials() (the Server). Returns the path, a
// string, which the native side takes for a file (PEM text has become a Buffer by then);
// undefined when `value` is not of that form.
function pemPath (value, option, name = `options.${option}`) {
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array || Array.isArray(value)) return undefined
  if (!Object.prototype.hasOwnProperty.call(value, 'path')) return undefined
  const unknown = Object.keys(value).filter((key) => key !== 'path')
  if (unknown.length) {
    throw gatewayError(`${name} has ${unknown.map((key) => `'${key}'`).join(', ')}: a file is given as { path } alone.`, CODES[option], TypeError)
  }
  if (typeof value.path !== 'string' || value.path === '' || value.path.includes('\0')) {
    throw gatewayError(`${name}.path must be a non-empty string (a file).`, CODES[option], TypeError)
  }
  return value.path
}

// `ca` may be the original's `{root, intermediate}`, one PEM (string or Buffer), or an array.
// Every form must name at least one PEM; the native side then requires each to hold at least one
// certificate. Without this, `[]` or `{rootCA: ...}` would have meant "no ca": a client trusting
// the platform's public roots, a server admitting clients without certificates.
function caList (ca) {
  if (!given(ca)) return undefined
  if (Array.isArray(ca)) {
    if (ca.length === 0) throw gatewayError('options.ca is an empty array: give at least one PEM.', 'EINVALIDCA')
    return ca.map((item, i) => {
      if (!given(item)) throw gatewayError(`options.ca[${i}] is ${item}.`, 'EINVALIDCA', TypeError)
      const path = pemPath(item, 'ca', `options.ca[${i}]`)
      return path !== undefined ? path : pemBuffer(item, 'ca', `options.ca[${i}]`)
    })
  }
  const path = pemPath(ca, 'ca')
  if (path !== undefined) return [path]
  if (typeof ca === 'object' && !(ca instanceof Uint8Array)) {
    const unknown = Object.keys(ca).filter((key) => key !== 'root' && key !== 'intermediate')
    if (unknown.length) {
      throw gatewayError(`options.ca has ${unknown.map((key) => `'${key}'`).join(', ')}: only 'root' and 'intermediate' are read.`, 'EINVALIDCA', TypeError)
    }
    const list = ['root', 'intermediate'].filter((key) => given(ca[key])).map((key) => pemBuffer(ca[key], 'ca', `options.ca.${key}`))
    if (list.length === 0) throw gatewayError('options.ca has neither root nor intermediate.', 'EINVALIDCA', TypeError)
    return list
  }
  return [pemBuffer(ca, 'ca')]
}

module.exports = { pemBuffer, pemPath, caList, given, CODES }
