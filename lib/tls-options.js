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
  // The native side takes a string starting `pkcs11:` for a token's URI, not a file.
  return /^pkcs11:/i.test(value.path) ? `./${value.path}` : value.path
}

// A key (or certificate) in a hardware token: a PKCS#11 URI (RFC 7512) string, or
// `{ pkcs11: { module, token | slot, object | id, pin } }`, as the URI string the native side
// parses (src/pkcs11.rs); undefined when `value` is neither. `type` is `private` for the key and
// `cert` for the certificate.
const PKCS11_FIELDS = ['module', 'token', 'slot', 'object', 'id', 'pin']
function tokenUri (value, option, name = `options.${option}`) {
  if (typeof value === 'string') return /^pkcs11:/i.test(value) ? value : undefined
  if (value === null || typeof value !== 'object' || value instanceof Uint8Array || Array.isArray(value)) return undefined
  if (!Object.prototype.hasOwnProperty.call(value, 'pkcs11')) return undefined
  const bad = (why) => gatewayError(`${name}.pkcs11 ${why}`, 'EPKCS11URI', TypeError)
  const others = Object.keys(value).filter((key) => key !== 'pkcs11')
  if (others.length) throw bad(`comes alone: ${others.map((key) => `'${key}'`).join(', ')} cannot go with it.`)
  const spec = value.pkcs11
  if (spec === null || typeof spec !== 'object') throw bad('must be an object { module, token | slot, object | id, pin }.')
  const unknown = Object.keys(spec).filter((key) => !PKCS11_FIELDS.includes(key))
  if (unknown.length) throw bad(`has ${unknown.map((key) => `'${key}'`).join(', ')}; it takes ${PKCS11_FIELDS.join(', ')}.`)
  const text = (key) => {
    if (spec[key] === undefined || spec[key] === null) return undefined
    if (typeof spec[key] !== 'string' || spec[key] === '') throw bad(`.${key} must be a non-empty string.`)
    return spec[key]
  }
  const module = text('module')
  if (module === undefined) throw bad('.module is required: the path of the PKCS#11 module (.so, .dylib, .dll).')
  const path = []
  const token = text('token')
  if (token !== undefined) path.push(`token=${encodeURIComponent(token)}`)
  if (spec.slot !== undefined && spec.slot !== null) {
    if (!Number.isSafeInteger(spec.slot) || spec.slot < 0) throw bad('.slot must be a non-negative integer.')
    path.push(`slot-id=${spec.slot}`)
  }
  if (token === undefined && path.length === 0) throw bad('needs token (its label) or slot.')
  const object = text('object')
  if (object !== undefined) path.push(`object=${encodeURIComponent(object)}`)
  if (spec.id !== undefined && spec.id !== null) {
    let id
    if (spec.id instanceof Uint8Array) id = Buffer.from(spec.id.buffer, spec.id.byteOffset, spec.id.byteLength)
    else if (typeof spec.id === 'string' && /^([0-9a-f]{2})+$/i.test(spec.id)) id = Buffer.from(spec.id, 'hex')
    else throw bad('.id must be a hex string or a Buffer.')
    path.push(`id=${[...id].map((byte) => `%${byte.toString(16).padStart(2, '0')}`).join('')}`)
  }
  if (object === undefined && spec.id === undefined) throw bad('needs object (its label) or id.')
  path.push(`type=${option === 'cert' ? 'cert' : 'private'}`)
  const query = [`module-path=${encodeURIComponent(module)}`]
  const pin = text('pin')
  if (pin !== undefined) query.push(`pin-value=${encodeURIComponent(pin)}`)
  return `pkcs11:${path.join(';')}?${query.join('&')}`
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

module.exports = { pemBuffer, pemPath, tokenUri, caList, given, CODES }
