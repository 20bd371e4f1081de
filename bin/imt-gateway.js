#!/usr/bin/env node
'use strict'
// The `imt-gateway` command: a local gateway (`server`), one event (`send`) and a device that
// prints and acknowledges actions (`listen`). Errors are one line, `imt-gateway: CODE: message`;
// the exit status is 0 on success, 1 on a failure and 2 on a usage error.

const fs = require('fs')
const os = require('os')
const path = require('path')
const { parseArgs } = require('util')
const { Client, Event, Server } = require('..')
const { optionDefaults } = require('../lib/native')

// The ports from the one table of defaults (src/defaults.rs): the gateway's, and the bundled
// server's.
const DEFAULTS = optionDefaults()
const CLIENT_PORT = DEFAULTS.client.port
const SERVER_PORT = DEFAULTS.server.port
const PKI_FILES = { ca: 'ca.crt', serverKey: 'server.key', serverCert: 'server.crt', deviceKey: 'device.key', deviceCert: 'device.crt' }

// The connection options that send and listen share.
const CONNECTION_HELP = `  --host HOST      gateway host (default localhost); exactly 'localhost' is plain TCP, any
                   other host mutual TLS with --key and --cert
  --port PORT      gateway port (default ${CLIENT_PORT})
  --key FILE       the device's private key, PEM; or a PKCS#11 URI (pkcs11:...), a key
                   held by a hardware token, which signs there
  --cert FILE      the device's certificate, PEM; or a PKCS#11 URI (pkcs11:...;type=cert)
  --ca FILE        trust anchors for the gateway's certificate, PEM (default: the platform's)
  --proxy URL      through this proxy: http://[user:pass@]host:port (HTTP CONNECT) or
                   socks5://[user:pass@]host:port; 'false' goes straight whatever
                   HTTPS_PROXY and ALL_PROXY say (default: those, for TLS)`

const HELP = {
  main: `Usage: imt-gateway <command> [options]

Commands:
  server   run the bundled gateway and print each event it receives as a JSON line
  send     send one event to a gateway and print its acknowledgement
  listen   connect as a device, print each action as a JSON line and acknowledge it

Run 'imt-gateway <command> --help' for a command's options.
Exit status: 0 on success, 1 on a failure, 2 on a usage error.`,
  server: `Usage: imt-gateway server [--port ${SERVER_PORT}] [--host HOST] [--tls DIR] [--reject TYPE]... [--action TYPE[=JSON]]...

Runs the bundled gateway until interrupted (SIGINT, SIGTERM). Each event it receives is
printed on standard output as one JSON line {"type", "id", "bundle", "device", "accepted",
"error"?}; accepted events are acknowledged and echoed back to their device as an action.

Options:
  --port PORT           port to listen on; 0 picks a free one (default ${SERVER_PORT})
  --host HOST           address to listen on (default: all interfaces)
  --tls DIR             mutual TLS: use ca.crt, server.key, server.crt, device.key and
                        device.crt in DIR, writing throwaway ones there first if none exist,
                        and require a client certificate from the CA; prints the send and
                        listen options that match
  --reject TYPE         reject events of this type (code EREJECTED); may be repeated
  --action TYPE[=JSON]  an action to deliver to each device name once, at its first
                        connection (held until that device acknowledges it); its
                        acknowledgement is printed as a JSON line {"acknowledgement": ...};
                        may be repeated
  -h, --help            this help`,
  send: `Usage: imt-gateway send TYPE [JSON] [options]

Sends one event of type TYPE with the bundle JSON (an object; read from standard input when
JSON is absent and standard input is not a terminal), prints the gateway's acknowledgement as
a JSON line and exits 0. A rejection, a connection failure or JSON that does not parse is
printed as 'imt-gateway: CODE: message' and exits 1. Actions the gateway held for the
device arrive before it takes events: they are acknowledged and noted on standard error.

Options:
${CONNECTION_HELP}
  --timeout MS     give up after this long, connection and acknowledgement together
                   (default 10000)
  -h, --help       this help`,
  listen: `Usage: imt-gateway listen [options]

Connects as a device, prints each action as a JSON line {"id", "type", "parameters"} and
acknowledges it, until interrupted (SIGINT, SIGTERM), then closes the connection. Exits 1 if
the connection cannot be made or is lost.

Options:
${CONNECTION_HELP}
  --fail TYPE      acknowledge actions of this type with an error (code EFAILED); may be
                   repeated
  -h, --help       this help`
}

class UsageError extends Error {
  constructor (message, code = 'EUSAGE') {
    super(message)
    this.code = code
  }
}

function fail (message, code) {
  const err = new Error(message)
  err.code = code
  return err
}

/** One line: `imt-gateway: CODE: message`. */
function report (err) {
  const code = err && err.code ? `${err.code}: ` : ''
  const message = err instanceof Error ? err.message : String(err)
  process.stderr.write(`imt-gateway: ${code}${message.replace(/\s*\n\s*/g, ' ')}\n`)
}

function note (text) {
  process.stderr.write(`${text}\n`)
}

function help (text) {
  process.stdout.write(`${text}\n`)
}

function line (value) {
  process.stdout.write(`${JSON.stringify(value)}\n`)
}

function parse (command, args, options, allowPositionals = false) {
  try {
    return parseArgs({ args, options: { help: { type: 'boolean', short: 'h' }, ...options }, allowPositionals, strict: true })
  } catch (err) {
    const message = /[.'"]$/.test(err.message) ? err.message : `${err.message}.`
    throw new UsageError(`${message} See 'imt-gateway ${command} --help'.`, err.code || 'EUSAGE')
  }
}

function portOf (value, fallback) {
  if (value === undefined) return fallback
  const port = Number(value)
  if (!/^\d+$/.test(value) || port > 65535) throw new UsageError(`--port must be a port number, not '${value}'.`)
  return port
}

function jsonOf (text, what) {
  try {
    return JSON.parse(text)
  } catch (err) {
    throw fail(`${what} is not JSON: ${err.message}`, 'EINVALIDJSON')
  }
}

function readFile (file, option) {
  try {
    return fs.readFileSync(file)
  } catch (err) {
    throw fail(`cannot read ${option} ${file}: ${err.message}`, err.code || 'EIO')
  }
}

function readStdin () {
  return new Promise((resolve, reject) => {
    const chunks = []
    process.stdin.on('data', (chunk) => chunks.push(chunk))
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')))
    process.stdin.on('error', reject)
  })
}

const CONNECTION_OPTIONS = {
  host: { type: 'string' },
  port: { type: 'string' },
  key: { type: 'string' },
  cert: { type: 'string' },
  ca: { type: 'string' },
  proxy: { type: 'string' }
}

/** Client options from --host, --port, --key, --cert, --ca, --proxy: 2.x's rule, plain TCP for 'localhost'. */
function clientOptions (values) {
  const host = values.host === undefined ? 'localhost' : values.host
  const options = { host, port: portOf(values.port, CLIENT_PORT) }
  if (host !== 'localhost') {
    if (values.key === undefined || values.cert === undefined) {
      throw new UsageError(`--key and --cert are needed for mutual TLS to ${host} (only --host localhost is plain TCP).`)
    }
  }
  // A PKCS#11 URI names a key (or certificate) in a hardware token: passed on, not read.
  const token = (value) => /^pkcs11:/i.test(value)
  if (values.key !== undefined) options.key = token(values.key) ? values.key : readFile(values.key, '--key')
  if (values.cert !== undefined) options.cert = token(values.cert) ? values.cert : readFile(values.cert, '--cert')
  if (values.ca !== undefined) options.ca = readFile(values.ca, '--ca')
  // A URL the client cannot use is refused by it (ERR_INVALID_ARG_VALUE, password left out).
  if (values.proxy !== undefined) options.proxy = values.proxy === 'false' ? false : values.proxy
  return options
}

// Resolves on the first SIGINT or SIGTERM.
function interrupted () {
  return new Promise((resolve) => {
    const stop = (signal) => {
      process.off('SIGINT', stop)
      process.off('SIGTERM', stop)
      resolve(signal)
    }
    process.on('SIGINT', stop)
    process.on('SIGTERM', stop)
  })
}

// --tls DIR: the five files, reused when all are there, written when none is, refused otherwise.
function tlsFiles (dir, hosts) {
  const files = Object.fromEntries(Object.entries(PKI_FILES).map(([name, file]) => [name, path.resolve(dir, file)]))
  const present = Object.values(files).filter((file) => fs.existsSync(file))
  if (present.length === 0) {
    const { createPki } = require('../lib/testing')
    const pki = createPki({ hosts, device: os.hostname() })
    fs.mkdirSync(dir, { recursive: true })
    fs.writeFileSync(files.ca, pki.caCert)
    fs.writeFileSync(files.serverCert, pki.server.cert)
    fs.writeFileSync(files.serverKey, pki.server.key, { mode: 0o600 })
    fs.writeFileSync(files.deviceCert, pki.client.cert)
    fs.writeFileSync(files.deviceKey, pki.client.key, { mode: 0o600 })
    note(`imt-gateway: wrote throwaway certificates (not for production) to ${path.resolve(dir)}: ${Object.values(PKI_FILES).join(', ')}`)
  } else if (present.length < Object.keys(files).length) {
    const missing = Object.values(files).filter((file) => !present.includes(file)).map((file) => path.basename(file))
    throw fail(`${path.resolve(dir)} has some of the certificate files but not ${missing.join(', ')}; remove them or name another directory.`, 'EEXIST')
  } else {
    note(`imt-gateway: using the certificates in ${path.resolve(dir)}`)
  }
  return files
}

function quote (text) {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replace(/'/g, "'\\''")}'`
}

async function server (args) {
  const { values } = parse('server', args, {
    port: { type: 'string' },
    host: { type: 'string' },
    tls: { type: 'string' },
    reject: { type: 'string', multiple: true },
    action: { type: 'string', multiple: true }
  })
  if (values.help) return help(HELP.server)
  const port = portOf(values.port, SERVER_PORT)
  const rejected = new Set(values.reject || [])
  const actions = (values.action || []).map((spec) => {
    const at = spec.indexOf('=')
    const type = at < 0 ? spec : spec.slice(0, at)
    if (!type) throw new UsageError(`--action needs a type: '${spec}'.`)
    return { type, parameters: at < 0 ? null : jsonOf(spec.slice(at + 1), `--action ${type}'s parameters`) }
  })
  // Where a client on this machine reaches the server, for the options printed below.
  const wildcard = values.host === undefined || ['0.0.0.0', '::', '[::]'].includes(values.host)
  const reach = wildcard || values.host === 'localhost' ? '127.0.0.1' : values.host
  const options = {
    port,
    onEvent: (event) => rejected.has(event.type)
      ? { code: 'EREJECTED', message: `Events of type ${event.type} are rejected (--reject).` }
      : undefined
  }
  let files = null
  if (values.tls !== undefined) {
    const hosts = ['localhost', '127.0.0.1', '::1']
    if (!hosts.includes(reach)) hosts.push(reach)
    files = tlsFiles(values.tls, hosts)
    options.key = readFile(files.serverKey, '--tls')
    options.cert = readFile(files.serverCert, '--tls')
    options.ca = readFile(files.ca, '--tls')
  }
  const gateway = new Server(options)
  gateway.on('event', (event, connection) => {
    const verdict = options.onEvent(event)
    line({
      type: event.type,
      id: event.id,
      bundle: event.bundle,
      device: connection.deviceName === undefined ? null : connection.deviceName,
      accepted: !verdict,
      ...(verdict ? { error: { code: verdict.code, message: verdict.message } } : {})
    })
  })
  gateway.on('clientError', (err, connection) => report(fail(`${err.message} (${connection ? `${connection.remoteAddress}:${connection.remotePort}` : 'a peer'})`, err.code)))
  const served = new Set()
  gateway.on('hello', (connection) => {
    const device = connection.deviceName
    if (!actions.length || device === undefined || served.has(device)) return
    served.add(device)
    for (const { type, parameters } of actions) {
      const id = gateway.queueAction(device, { type, parameters }, (err) => {
        line({ acknowledgement: { id, type, device, status: err ? 1 : 0, ...(err ? { error: { code: err.code === undefined ? null : err.code, message: err.message } } : {}) } })
      })
    }
  })
  await gateway.listenAsync(port, values.host)
  const address = gateway.address()
  const target = reach === '127.0.0.1' && !files ? 'localhost' : reach
  const shown = address.address.includes(':') ? `[${address.address}]` : address.address
  note(`imt-gateway: listening on ${shown}:${address.port}, ${files ? 'mutual TLS (client certificates required)' : 'plain TCP'}; Ctrl-C stops`)
  const connect = files
    ? `--host ${quote(target)} --port ${address.port} --key ${quote(files.deviceKey)} --cert ${quote(files.deviceCert)} --ca ${quote(files.ca)}`
    : `--host ${quote(target)} --port ${address.port}`
  note(`  imt-gateway send TYPE '{"key":"value"}' ${connect}`)
  note(`  imt-gateway listen ${connect}`)
  const signal = await interrupted()
  note(`imt-gateway: ${signal}, closing`)
  await gateway.closeAsync()
}

async function send (args) {
  const { values, positionals } = parse('send', args, { ...CONNECTION_OPTIONS, timeout: { type: 'string' } }, true)
  if (values.help) return help(HELP.send)
  if (positionals.length < 1) throw new UsageError("send needs an event type. See 'imt-gateway send --help'.")
  if (positionals.length > 2) throw new UsageError(`send takes TYPE and JSON, not ${positionals.length} arguments; quote the JSON.`)
  const [type, given] = positionals
  const timeout = values.timeout === undefined ? 10000 : Number(values.timeout)
  if (!Number.isInteger(timeout) || timeout <= 0) throw new UsageError(`--timeout must be a positive number of milliseconds, not '${values.timeout}'.`)
  const text = given !== undefined ? given : process.stdin.isTTY ? '' : await readStdin()
  const bundle = text.trim() === '' ? null : jsonOf(text, given !== undefined ? 'the bundle' : 'standard input')
  if (bundle !== null && (typeof bundle !== 'object' || Array.isArray(bundle))) {
    throw fail('the bundle must be a JSON object.', 'EINVALIDBUNDLE')
  }
  const client = new Client({ ...clientOptions(values), autoReconnect: false, connectTimeout: timeout })
  const event = new Event(type, bundle)
  let acknowledgement = null
  client.on('acknowledgement', (ack) => { if (ack.correlid === event.id) acknowledgement = ack })
  client.on('error', () => {}) // connectAsync() and sendAsync() report it
  // The gateway delivers the actions it holds for the device before DRAINED, and waits for
  // each acknowledgement: acknowledge them, or the event would never go out.
  client.on('action', (action, ack) => {
    note(`imt-gateway: acknowledged action ${JSON.stringify({ id: action.id, type: action.type, parameters: action.parameters })}`)
    ack()
  })
  let timer
  const deadline = new Promise((resolve, reject) => {
    timer = setTimeout(() => reject(fail(`no acknowledgement within ${timeout} ms.`, 'ETIMEDOUT')), timeout)
  })
  try {
    await Promise.race([(async () => {
      await client.connectAsync()
      await client.sendAsync(event)
    })(), deadline])
    line(acknowledgement || { correlid: event.id, status: 0 })
  } finally {
    clearTimeout(timer)
    await client.closeAsync()
  }
}

async function listen (args) {
  const { values } = parse('listen', args, { ...CONNECTION_OPTIONS, fail: { type: 'string', multiple: true } })
  if (values.help) return help(HELP.listen)
  const failing = new Set(values.fail || [])
  const client = new Client({ ...clientOptions(values), autoReconnect: false })
  client.on('action', (action, ack) => {
    line({ id: action.id, type: action.type, parameters: action.parameters })
    if (failing.has(action.type)) ack({ code: 'EFAILED', message: `Actions of type ${action.type} fail (--fail).` })
    else ack()
  })
  const lost = new Promise((resolve, reject) => {
    let ended = null
    client.on('error', (err) => { ended = err })
    client.on('disconnect', () => reject(ended || fail('the gateway closed the connection.', 'ECONNRESET')))
  })
  // Listening for signals from the start: an action can be acked (and the process signalled)
  // before connectAsync()'s promise has settled.
  const stop = interrupted()
  const connected = client.connectAsync()
  connected.catch(() => {})
  lost.catch(() => {})
  const early = await Promise.race([connected.then(() => null), stop])
  if (early === null) {
    note(`imt-gateway: connected to ${client.host}:${client.port}; Ctrl-C stops`)
  }
  const signal = early || await Promise.race([stop, lost])
  note(`imt-gateway: ${signal}, closing`)
  await client.closeAsync()
}

const COMMANDS = { server, send, listen }

async function main (argv) {
  const [command, ...args] = argv
  if (command === undefined || command === '-h' || command === '--help' || command === 'help') {
    if (command === 'help' && Object.prototype.hasOwnProperty.call(COMMANDS, args[0])) return help(HELP[args[0]])
    if (command !== undefined) return help(HELP.main)
    note(HELP.main)
    process.exitCode = 2
    return
  }
  if (!Object.prototype.hasOwnProperty.call(COMMANDS, command)) {
    throw new UsageError(`unknown command '${command}'. See 'imt-gateway --help'.`)
  }
  await COMMANDS[command](args)
}

main(process.argv.slice(2)).catch((err) => {
  report(err)
  process.exitCode = err instanceof UsageError ? 2 : 1
})
