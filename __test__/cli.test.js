'use strict'
// The `imt-gateway` command: server, send and listen against each other and against a raw
// JavaScript gateway, over plain TCP and over mutual TLS with the certificates `server --tls`
// wrote.

const test = require('ava')
const fs = require('fs')
const net = require('net')
const os = require('os')
const path = require('path')
const { spawn } = require('child_process')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { scaled } = require('./helpers/time')
const { freePort } = require('./helpers/server')

const BIN = path.join(__dirname, '..', 'bin', 'imt-gateway.js')

/** Runs the command to its end: `{code, signal, out, err}`. */
function run (args, { input, timeout = 20000, env } = {}) {
  const child = start(args, env)
  if (input !== undefined) child.stdin.end(input)
  else child.stdin.end()
  const timer = setTimeout(() => child.kill('SIGKILL'), scaled(timeout))
  return child.done.then((result) => { clearTimeout(timer); return result })
}

/** Starts the command; `child.done` resolves when it has ended and its output is read. */
function start (args, env = {}) {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  child.out = ''
  child.err = ''
  child.stdout.on('data', (d) => { child.out += d })
  child.stderr.on('data', (d) => { child.err += d })
  child.done = new Promise((resolve) => child.on('close', (code, signal) => resolve({ code, signal, out: child.out, err: child.err })))
  return child
}

/** Resolves once `predicate(child)` holds; rejects if the child ends first or after `ms`. */
function until (child, predicate, ms = scaled(20000)) {
  return new Promise((resolve, reject) => {
    const started = Date.now()
    let ended = false
    child.done.then(() => { ended = true })
    const poll = () => {
      if (predicate(child)) return resolve()
      if (ended) return reject(new Error(`ended first:\n${child.out}\n${child.err}`))
      if (Date.now() - started > ms) return reject(new Error(`timed out:\n${child.out}\n${child.err}`))
      setTimeout(poll, 10)
    }
    poll()
  })
}

const jsonLines = (text) => text.split('\n').filter(Boolean).map((line) => JSON.parse(line))

/** `imt-gateway server ...` on a free port; resolves once it listens, with the options it printed. */
async function server (t, args = []) {
  const child = start(['server', '--port', '0', '--host', '127.0.0.1', ...args])
  t.teardown(() => child.kill('SIGKILL'))
  await until(child, (c) => /imt-gateway listen (.*)\n/.test(c.err))
  const port = Number(/listening on [^\n]*:(\d+),/.exec(child.err)[1])
  const options = /imt-gateway listen (.*)\n/.exec(child.err)[1].split(' ')
  return { child, port, options }
}

/** `imt-gateway listen ...`; resolves once it is connected. */
async function listen (t, args) {
  const child = start(['listen', ...args])
  t.teardown(() => child.kill('SIGKILL'))
  await until(child, (c) => /connected to/.test(c.err))
  return child
}

function tempDir (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-gateway-cli-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** The PKI `server --tls DIR` wrote, in the shape the fake gateway takes. */
function pkiFrom (dir) {
  const read = (name) => fs.readFileSync(path.join(dir, name), 'utf8')
  return { caCert: read('ca.crt'), server: { key: read('server.key'), cert: read('server.crt') }, client: { key: read('device.key'), cert: read('device.crt') } }
}

test('--help for the command and each subcommand; usage errors exit 2 with one line', async (t) => {
  const main = await run(['--help'])
  t.is(main.code, 0)
  t.regex(main.out, /^Usage: imt-gateway <command>/)
  for (const command of ['server', 'send', 'listen']) {
    const help = await run([command, '--help'])
    t.is(help.code, 0, command)
    t.regex(help.out, new RegExp(`^Usage: imt-gateway ${command}`))
    t.regex(help.out, /--port/)
  }
  const none = await run([])
  t.is(none.code, 2)
  t.regex(none.err, /^Usage:/)
  const unknown = await run(['serve'])
  t.is(unknown.code, 2)
  t.is(unknown.err, "imt-gateway: EUSAGE: unknown command 'serve'. See 'imt-gateway --help'.\n")
  const option = await run(['send', 'x', '--bogus'])
  t.is(option.code, 2)
  t.regex(option.err, /^imt-gateway: ERR_PARSE_ARGS_UNKNOWN_OPTION: Unknown option '--bogus'.*\n$/)
  t.is(option.err.split('\n').length, 2, 'one line')
  const tls = await run(['send', 'x', '--host', '127.0.0.1'])
  t.is(tls.code, 2)
  t.regex(tls.err, /^imt-gateway: EUSAGE: --key and --cert are needed for mutual TLS to 127\.0\.0\.1/)
})

test('plain TCP: send to server prints the acknowledgement; --reject fails it with the code; JSON from standard input', async (t) => {
  const gateway = await server(t, ['--reject', 'bad'])
  t.deepEqual(gateway.options, ['--host', 'localhost', '--port', String(gateway.port)])

  const sent = await run(['send', 'reading', '{"celsius":21.5}', ...gateway.options])
  t.is(sent.code, 0, sent.err)
  const [ack] = jsonLines(sent.out)
  t.is(ack.status, 0)
  t.is(typeof ack.correlid, 'string')

  const rejected = await run(['send', 'bad', '{"n":1}', ...gateway.options])
  t.is(rejected.code, 1)
  t.is(rejected.out, '')
  t.is(rejected.err, 'imt-gateway: EREJECTED: Events of type bad are rejected (--reject).\n')

  const piped = await run(['send', 'piped', ...gateway.options], { input: '{"from": "stdin"}\n' })
  t.is(piped.code, 0, piped.err)

  await until(gateway.child, (c) => c.out.split('\n').length > 3)
  const events = jsonLines(gateway.child.out)
  t.deepEqual(events.map((e) => [e.type, e.bundle, e.accepted]), [
    ['reading', { celsius: 21.5 }, true],
    ['bad', { n: 1 }, false],
    ['piped', { from: 'stdin' }, true]
  ])
  t.is(events[0].id, ack.correlid)
  t.is(events[0].device, os.hostname())
  t.deepEqual(events[1].error, { code: 'EREJECTED', message: 'Events of type bad are rejected (--reject).' })

  const busy = await run(['server', '--port', String(gateway.port), '--host', '127.0.0.1'])
  t.is(busy.code, 1)
  t.regex(busy.err, /^imt-gateway: EADDRINUSE: [^\n]+\n$/)

  gateway.child.kill('SIGTERM')
  const stopped = await gateway.child.done
  t.is(stopped.code, 0, stopped.err)
  t.regex(stopped.err, /SIGTERM, closing\n$/)
})

test('send: bad JSON is refused before connecting; a refused connection and a gateway\'s rejection exit 1 with their code', async (t) => {
  let connections = 0
  const probe = net.createServer((socket) => { connections++; socket.destroy() })
  await new Promise((resolve) => probe.listen(0, '127.0.0.1', resolve))
  t.teardown(() => probe.close())
  const port = String(probe.address().port)

  const bad = await run(['send', 'x', '{"n":', '--port', port])
  t.is(bad.code, 1)
  t.regex(bad.err, /^imt-gateway: EINVALIDJSON: the bundle is not JSON: .*\n$/)
  const badStdin = await run(['send', 'x', '--port', port], { input: 'nope' })
  t.is(badStdin.code, 1)
  t.regex(badStdin.err, /^imt-gateway: EINVALIDJSON: standard input is not JSON: /)
  const array = await run(['send', 'x', '[1]', '--port', port])
  t.is(array.code, 1)
  t.is(array.err, 'imt-gateway: EINVALIDBUNDLE: the bundle must be a JSON object.\n')
  t.is(connections, 0)

  const closed = await freePort()
  const refused = await run(['send', 'x', '{}', '--port', String(closed)])
  t.is(refused.code, 1)
  t.is(refused.err, `imt-gateway: ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:${closed}\n`)

  const fake = await fakeGateway(t)
  const pending = run(['send', 'reading', '{"n":2}', '--port', String(fake.port)])
  const peer = await fake.accept()
  await welcome(peer)
  const event = await peer.next()
  t.is(event.name, 'EVENT')
  t.is(event.body.type, 'reading')
  t.deepEqual(event.body.bundle, { n: 2 })
  peer.send('ACKNOWLEDGEMENT', { correlid: event.body.id, status: 1, error: { code: 'E_GATEWAY', message: 'Not today.' } })
  const result = await pending
  t.is(result.code, 1)
  t.is(result.err, 'imt-gateway: E_GATEWAY: Not today.\n')

  const silent = await fakeGateway(t)
  // The limit runs from the start, so a slow machine may time out before the welcome is done.
  const limit = scaled(300)
  const timing = run(['send', 'x', '{}', '--port', String(silent.port), '--timeout', String(limit)])
  silent.accept().then(welcome).catch(() => {})
  const timedOut = await timing
  t.is(timedOut.code, 1)
  t.is(timedOut.err, `imt-gateway: ETIMEDOUT: no acknowledgement within ${limit} ms.\n`)
})

test('send acknowledges the actions the gateway held for the device, notes each on standard error, then sends its event', async (t) => {
  const fake = await fakeGateway(t)
  const pending = run(['send', 'reading', '{"n":3}', '--port', String(fake.port)])
  const peer = await fake.accept()
  t.is((await peer.next()).name, 'HELLO')
  peer.send('WELCOME')
  peer.send('ACTION', { id: 'h1', type: 'display', parameters: { text: 'hi' } })
  t.deepEqual((await peer.next()).body, { correlid: 'h1', status: 0 })
  peer.send('ACTION', { id: 'h2', type: 'reboot', parameters: null })
  t.deepEqual((await peer.next()).body, { correlid: 'h2', status: 0 })
  peer.send('DRAINED')
  const event = await peer.next()
  t.is(event.name, 'EVENT')
  t.deepEqual([event.body.type, event.body.bundle], ['reading', { n: 3 }])
  peer.send('ACKNOWLEDGEMENT', { correlid: event.body.id, status: 0 })
  const result = await pending
  t.is(result.code, 0, result.err)
  t.deepEqual(jsonLines(result.out), [{ correlid: event.body.id, status: 0 }])
  t.is(result.err, [
    'imt-gateway: acknowledged action {"id":"h1","type":"display","parameters":{"text":"hi"}}',
    'imt-gateway: acknowledged action {"id":"h2","type":"reboot","parameters":null}',
    ''
  ].join('\n'))
})

test('listen against a raw gateway prints each action and acks it (--fail with an error), closes on SIGINT and exits 1 when the connection is lost', async (t) => {
  const fake = await fakeGateway(t)
  const child = start(['listen', '--port', String(fake.port), '--fail', 'reboot'])
  t.teardown(() => child.kill('SIGKILL'))
  const peer = await fake.accept()
  await welcome(peer)
  await until(child, (c) => /connected to/.test(c.err))
  peer.send('ACTION', { id: 'a1', type: 'display', parameters: { text: 'hi' } })
  t.deepEqual((await peer.next()).body, { correlid: 'a1', status: 0 })
  peer.send('ACTION', { id: 'a2', type: 'reboot', parameters: null })
  t.deepEqual((await peer.next()).body, { correlid: 'a2', status: 1, error: { code: 'EFAILED', message: 'Actions of type reboot fail (--fail).' } })
  // The ack can reach the gateway before the printed line reaches this process's pipe.
  await until(child, (c) => jsonLines(c.out).length >= 2)
  t.deepEqual(jsonLines(child.out), [
    { id: 'a1', type: 'display', parameters: { text: 'hi' } },
    { id: 'a2', type: 'reboot', parameters: null }
  ])
  child.kill('SIGTERM')
  const ended = await child.done
  t.is(ended.code, 0, ended.err)
  await peer.closed

  const again = start(['listen', '--port', String(fake.port)])
  t.teardown(() => again.kill('SIGKILL'))
  const second = await fake.accept()
  await welcome(second)
  await until(again, (c) => /connected to/.test(c.err))
  second.destroy()
  const lost = await again.done
  t.is(lost.code, 1)
  t.regex(lost.err, /imt-gateway: ECONNRESET: [^\n]+\n$/)

  const refused = await run(['listen', '--port', String(await freePort())])
  t.is(refused.code, 1)
  t.regex(refused.err, /^imt-gateway: ECONNREFUSED: connect ECONNREFUSED 127\.0\.0\.1:\d+\n$/)
})

test('mutual TLS: server --tls writes the certificates and prints the options that send and listen use', async (t) => {
  const dir = path.join(tempDir(t), 'pki')
  const gateway = await server(t, ['--tls', dir, '--action', 'display={"text":"hi"}', '--reject', 'bad'])
  t.deepEqual(fs.readdirSync(dir).sort(), ['ca.crt', 'device.crt', 'device.key', 'server.crt', 'server.key'])
  t.is(fs.statSync(path.join(dir, 'device.key')).mode & 0o777, 0o600)
  t.regex(gateway.child.err, /mutual TLS/)
  t.deepEqual(gateway.options, ['--host', '127.0.0.1', '--port', String(gateway.port),
    '--key', path.join(dir, 'device.key'), '--cert', path.join(dir, 'device.crt'), '--ca', path.join(dir, 'ca.crt')])

  const device = await listen(t, [...gateway.options, '--fail', 'display'])
  await until(device, (c) => c.out.length > 0)
  t.deepEqual(jsonLines(device.out).map((a) => [a.type, a.parameters]), [['display', { text: 'hi' }]])
  await until(gateway.child, (c) => /acknowledgement/.test(c.out))
  const [printed] = jsonLines(gateway.child.out)
  t.like(printed.acknowledgement, { type: 'display', status: 1, error: { code: 'EFAILED', message: 'Actions of type display fail (--fail).' } })

  const sent = await run(['send', 'reading', '{"n":1}', ...gateway.options])
  t.is(sent.code, 0, sent.err)
  const rejected = await run(['send', 'bad', '{}', ...gateway.options])
  t.is(rejected.code, 1)
  t.is(rejected.err, 'imt-gateway: EREJECTED: Events of type bad are rejected (--reject).\n')
  const untrusting = await run(['send', 'x', '{}', ...gateway.options.slice(0, -2)])
  t.is(untrusting.code, 1)
  t.regex(untrusting.err, /^imt-gateway: UNABLE_TO_VERIFY_LEAF_SIGNATURE: /)
  const plain = await run(['send', 'x', '{}', '--port', String(gateway.port)])
  t.is(plain.code, 1)
  t.is(plain.err.split('\n').length, 2)

  device.kill('SIGINT')
  t.is((await device.done).code, 0)
  gateway.child.kill('SIGINT')
  t.is((await gateway.child.done).code, 0)

  // The same directory again: the certificates are kept, so the printed options still work.
  const before = fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8')
  const restarted = await server(t, ['--tls', dir])
  t.regex(restarted.child.err, /using the certificates in /)
  t.is(fs.readFileSync(path.join(dir, 'ca.crt'), 'utf8'), before)
  const resent = await run(['send', 'reading', '{"n":2}', ...restarted.options])
  t.is(resent.code, 0, resent.err)

  // Some of the files but not all: refused rather than overwritten.
  const partial = tempDir(t)
  fs.writeFileSync(path.join(partial, 'ca.crt'), before)
  const refused = await run(['server', '--port', '0', '--tls', partial])
  t.is(refused.code, 1)
  t.regex(refused.err, /^imt-gateway: EEXIST: .* has some of the certificate files but not server\.key, server\.crt, device\.key, device\.crt;/)
})

test('mutual TLS against a raw gateway with the certificates server --tls wrote: send and listen', async (t) => {
  const dir = tempDir(t)
  const gateway = await server(t, ['--tls', dir])
  gateway.child.kill('SIGINT')
  await gateway.child.done
  const pki = pkiFrom(dir)
  const fake = await fakeGateway(t, { pki })
  const options = ['--host', '127.0.0.1', '--port', String(fake.port), '--key', path.join(dir, 'device.key'), '--cert', path.join(dir, 'device.crt'), '--ca', path.join(dir, 'ca.crt')]

  const pending = run(['send', 'reading', '{"n":3}', ...options])
  const peer = await fake.accept()
  await welcome(peer)
  const event = await peer.next()
  t.deepEqual(event.body.bundle, { n: 3 })
  t.regex(peer.socket.getPeerCertificate().subject.CN, new RegExp(os.hostname()))
  peer.send('ACKNOWLEDGEMENT', { correlid: event.body.id, status: 0 })
  const sent = await pending
  t.is(sent.code, 0, sent.err)
  t.deepEqual(jsonLines(sent.out), [{ correlid: event.body.id, status: 0 }])

  const device = start(['listen', ...options])
  t.teardown(() => device.kill('SIGKILL'))
  const second = await fake.accept()
  await welcome(second)
  second.send('ACTION', { id: 7, type: 'blink', parameters: { times: 2 } })
  t.deepEqual((await second.next()).body, { correlid: 7, status: 0 })
  device.kill('SIGINT')
  const ended = await device.done
  t.is(ended.code, 0, ended.err)
  t.deepEqual(jsonLines(ended.out), [{ id: 7, type: 'blink', parameters: { times: 2 } }])
})

test('--proxy: send and listen reach a TLS gateway through an HTTP CONNECT proxy; its refusal and a bad URL exit 1 without the password', async (t) => {
  const http = require('http')
  const { createProxy } = await import('proxy')
  const proxy = createProxy(http.createServer())
  const expected = 'Basic ' + Buffer.from('dev:pw').toString('base64')
  proxy.authenticate = (req) => req.headers['proxy-authorization'] === expected
  const connects = []
  proxy.on('connect', (req) => connects.push(req.url))
  await new Promise((resolve) => proxy.listen(0, '127.0.0.1', resolve))
  t.teardown(() => { proxy.closeAllConnections(); proxy.close() })
  const url = `http://dev:pw@127.0.0.1:${proxy.address().port}`

  const gateway = await server(t, ['--tls', path.join(tempDir(t), 'pki'), '--action', 'display={"text":"hi"}'])
  const target = `127.0.0.1:${gateway.port}`
  const device = await listen(t, [...gateway.options, '--proxy', url])
  await until(device, (c) => c.out.length > 0)
  t.deepEqual(jsonLines(device.out).map((a) => a.type), ['display'])
  const sent = await run(['send', 'reading', '{"n":1}', ...gateway.options, '--proxy', url])
  t.is(sent.code, 0, sent.err)
  t.deepEqual(connects, [target, target])

  const refused = await run(['send', 'reading', '{}', ...gateway.options, '--proxy', url.replace(':pw@', ':wrong@')])
  t.is(refused.code, 1)
  t.regex(refused.err, /^imt-gateway: EPROXY: proxy http:\/\/dev:\*\*\*@127\.0\.0\.1:\d+ refused: HTTP 407 /)
  t.false(refused.err.includes('wrong'))
  const bad = await run(['send', 'reading', '{}', ...gateway.options, '--proxy', 'ftp://dev:hunter2@127.0.0.1:21'])
  t.is(bad.code, 1)
  t.regex(bad.err, /^imt-gateway: ERR_INVALID_ARG_VALUE: options\.proxy: /)
  t.false(bad.err.includes('hunter2'))
  // --proxy false goes straight, whatever HTTPS_PROXY says (here: a proxy that is not there).
  const dead = `http://127.0.0.1:${await freePort()}`
  const straight = await run(['send', 'reading', '{}', ...gateway.options, '--proxy', 'false'], { env: { HTTPS_PROXY: dead } })
  t.is(straight.code, 0, straight.err)
  const viaEnv = await run(['send', 'reading', '{}', ...gateway.options], { env: { HTTPS_PROXY: dead } })
  t.is(viaEnv.code, 1)
  t.regex(viaEnv.err, /^imt-gateway: ECONNREFUSED: /)
  t.is(connects.length, 3)
})
