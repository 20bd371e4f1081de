'use strict'

// Every file in examples/ is run here: each script's syntax (`node --check`), and what can be
// checked against the bundled Server: the device service script (TLS, credentials and outbox
// as systemd passes them), the graceful shutdown on SIGTERM, and the ava and jest examples run
// by their own test runner. The examples `require('imt-gateway')` as a user's code does; here
// that resolves to this package through NODE_PATH (a directory holding an `imt-gateway`
// symlink to the package root), as it would from node_modules.
const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawn, spawnSync } = require('child_process')
const { Server } = require('..')
const { createPki } = require('imt-gateway/testing')
const { scaled } = require('./helpers/time')

const root = path.join(__dirname, '..')
const examples = path.join(root, 'examples')

// NODE_PATH for the children: `imt-gateway` is this package.
const modules = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-examples-modules-'))
fs.symlinkSync(root, path.join(modules, 'imt-gateway'), 'dir')
test.after.always(() => fs.rmSync(modules, { recursive: true, force: true }))
const childEnv = (env = {}) => {
  const out = { ...process.env, NODE_PATH: modules, ...env }
  delete out.DEBUG
  return out
}

function tmpdir (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-examples-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Every file under examples/, relative to it. */
function exampleFiles (dir = examples) {
  return fs.readdirSync(dir, { withFileTypes: true }).flatMap((entry) => {
    if (entry.name === 'node_modules') return []
    const full = path.join(dir, entry.name)
    return entry.isDirectory() ? exampleFiles(full) : [path.relative(examples, full)]
  })
}

/** Starts an example script; `ended` resolves to {code, signal, out, err}; killed after `timeout` ms. */
function startExample (script, { env, cwd = examples, args = [], timeout = 20000 } = {}) {
  const child = spawn(process.execPath, [script, ...args], { cwd, env: childEnv(env) })
  let out = ''
  let err = ''
  const watchers = []
  child.stdout.on('data', (d) => {
    out += d
    for (const w of watchers.slice()) if (w.test(out)) { watchers.splice(watchers.indexOf(w), 1); w.resolve() }
  })
  child.stderr.on('data', (d) => { err += d })
  const timer = setTimeout(() => child.kill('SIGKILL'), scaled(timeout))
  const ended = new Promise((resolve) => child.on('close', (code, signal) => {
    clearTimeout(timer)
    resolve({ code, signal, out, err, at: Date.now() })
  }))
  /** Resolves once the output matches `test` (a function of the output so far). */
  const output = (test) => new Promise((resolve) => {
    if (test(out)) resolve()
    else watchers.push({ test, resolve })
  })
  return { child, ended, output }
}

test('every JavaScript file in examples/ passes node --check', (t) => {
  const scripts = exampleFiles().filter((file) => file.endsWith('.js'))
  t.true(scripts.length >= 6, scripts.join(', '))
  for (const file of scripts) {
    const run = spawnSync(process.execPath, ['--check', path.join(examples, file)], { encoding: 'utf8' })
    t.is(run.status, 0, `${file}: ${run.stderr}`)
  }
})

test('graceful-shutdown.js: on SIGTERM it exits 0 only after the server acknowledged every event it sent', async (t) => {
  // Each acknowledgement is held back 300 ms, so at SIGTERM events are in flight and queued.
  const acknowledged = new Map()
  const received = []
  const server = new Server({
    echo: false,
    onEvent: (event) => {
      received.push(event.id)
      return new Promise((resolve) => setTimeout(() => {
        acknowledged.set(event.id, Date.now())
        resolve()
      }, 300))
    }
  })
  await server.listenAsync(0)
  t.teardown(() => server.destroy())
  const example = startExample('graceful-shutdown.js', {
    env: { IMT_GATEWAY_HOST: 'localhost', IMT_GATEWAY_PORT: String(server.address().port), IMT_DEVICE_INTERVAL: '50' }
  })
  // Three events sent, the first not yet acknowledged.
  await example.output((out) => (out.match(/^sent /gm) || []).length >= 3)
  const sentBefore = acknowledged.size
  example.child.kill('SIGTERM')
  const { code, signal, out, err, at } = await example.ended
  t.is(signal, null, err)
  t.is(code, 0, out + err)
  t.true(sentBefore < received.length || sentBefore < 3, 'some events were unacknowledged at SIGTERM')
  const sent = [...out.matchAll(/^sent (\S+)$/gm)].map((m) => m[1])
  t.true(sent.length >= 3)
  t.deepEqual(received, sent, 'the server received every event sent, in order, once')
  for (const id of sent) {
    t.true(acknowledged.has(id), `${id} acknowledged`)
    t.true(acknowledged.get(id) <= at, `${id} acknowledged before the exit`)
  }
  t.regex(out, /^SIGTERM: waiting for [1-9]\d* acknowledgements$/m)
  t.regex(out, new RegExp(`^closed: ${sent.length} acknowledged, 0 not$`, 'm'))
})

test('device.js (the systemd and Docker service): TLS with credentials, an outbox under STATE_DIRECTORY, actions acknowledged, a clean stop on SIGTERM', async (t) => {
  const dir = tmpdir(t)
  const device = os.hostname()
  const pki = createPki({ device })
  const credentials = path.join(dir, 'credentials')
  const state = path.join(dir, 'state')
  fs.mkdirSync(credentials)
  fs.mkdirSync(state, { mode: 0o700 })
  fs.writeFileSync(path.join(credentials, 'device.key'), pki.client.key, { mode: 0o600 })
  fs.writeFileSync(path.join(credentials, 'device.crt'), pki.client.cert)
  fs.writeFileSync(path.join(dir, 'ca.pem'), pki.caCert)
  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false })
  const events = []
  server.on('event', (event, connection) => events.push({ event, connection }))
  await server.listenAsync(0, '127.0.0.1')
  t.teardown(() => server.destroy())
  const example = startExample('device.js', {
    env: {
      IMT_GATEWAY_HOST: '127.0.0.1',
      IMT_GATEWAY_PORT: String(server.address().port),
      IMT_GATEWAY_CA: path.join(dir, 'ca.pem'),
      CREDENTIALS_DIRECTORY: credentials,
      STATE_DIRECTORY: state,
      IMT_DEVICE_INTERVAL: '100'
    }
  })
  const acked = await new Promise((resolve) => server.queueAction(device, { type: 'reboot', parameters: { delay: 0 } }, resolve))
  t.is(acked, null, 'the action was acknowledged as done')
  await example.output((out) => out.includes('[device] action reboot {"delay":0}'))
  while (events.length < 2) await new Promise((resolve) => setTimeout(resolve, 20))
  example.child.kill('SIGTERM')
  const { code, signal, out, err } = await example.ended
  t.is(signal, null, err)
  t.is(code, 0, out + err)
  t.regex(out, /\[device\] connected to 127\.0\.0\.1:\d+/)
  t.regex(out, /\[device\] SIGTERM: stopping/)
  t.regex(out, /\[device\] stopped \(0 events left in the outbox\)/)
  t.is(events[0].event.type, 'status')
  t.is(typeof events[0].event.bundle.uptime, 'number')
  t.is(events[0].connection.subject.includes(device), true, 'the device authenticated with its certificate')
  const outbox = fs.statSync(path.join(state, 'outbox'))
  t.true(outbox.isDirectory(), 'the outbox is under STATE_DIRECTORY')
  if (process.platform !== 'win32') t.is(outbox.mode & 0o777, 0o700)
})

/** An INI-style unit file: {section: {key: [values]}}, comments and blank lines skipped. */
function parseUnit (text) {
  const unit = {}
  let section = null
  for (const raw of text.split('\n')) {
    const line = raw.trim()
    if (line === '' || line.startsWith('#') || line.startsWith(';')) continue
    const header = /^\[([A-Za-z]+)\]$/.exec(line)
    if (header) {
      section = unit[header[1]] = unit[header[1]] || {}
      continue
    }
    const pair = /^([A-Za-z]+)=(.*)$/.exec(line)
    if (!pair || section === null) throw new Error(`not a unit file line: ${raw}`)
    ;(section[pair[1]] = section[pair[1]] || []).push(pair[2])
  }
  return unit
}

const UNIT = path.join(examples, 'systemd', 'imt-gateway-device.service')

test('systemd/imt-gateway-device.service runs device.js with its outbox under StateDirectory=', (t) => {
  const unit = parseUnit(fs.readFileSync(UNIT, 'utf8'))
  t.deepEqual(Object.keys(unit), ['Unit', 'Service', 'Install'])
  t.deepEqual(unit.Unit.After, ['network-online.target'])
  const [execStart] = unit.Service.ExecStart
  const [node, script] = execStart.split(' ')
  t.is(path.basename(node), 'node')
  t.is(path.basename(script), 'device.js')
  t.true(fs.existsSync(path.join(examples, path.basename(script))), 'the script it runs is examples/device.js')
  t.deepEqual(unit.Service.StateDirectory, ['imt-gateway-device'])
  t.deepEqual(unit.Service.StateDirectoryMode, ['0700'], 'the outbox refuses a directory others may write')
  t.deepEqual(unit.Service.LoadCredential.map((value) => value.split(':')[0]), ['device.key', 'device.crt'], 'the names device.js reads in $CREDENTIALS_DIRECTORY')
  t.deepEqual(unit.Service.KillSignal, ['SIGTERM'])
  t.deepEqual(unit.Install.WantedBy, ['multi-user.target'])
  // device.js reads these variables; every one the unit sets is one it reads.
  const source = fs.readFileSync(path.join(examples, 'device.js'), 'utf8')
  for (const assignment of unit.Service.Environment) {
    const name = assignment.split('=')[0]
    if (name !== 'NODE_ENV') t.true(source.includes(`env.${name}`), `device.js reads ${name}`)
  }
})

const analyze = spawnSync('systemd-analyze', ['--version'], { encoding: 'utf8' })
const verify = analyze.status === 0 ? test : test.skip
verify(`systemd-analyze verify accepts the unit with no warning${analyze.status === 0 ? '' : ' (skipped: systemd-analyze is not installed here)'}`, (t) => {
  // ExecStart= names /usr/bin/node, which verify requires to exist: checked with this Node's path.
  const dir = tmpdir(t)
  const copy = path.join(dir, 'imt-gateway-device.service')
  fs.writeFileSync(copy, fs.readFileSync(UNIT, 'utf8').replace('ExecStart=/usr/bin/node ', `ExecStart=${process.execPath} `))
  const run = spawnSync('systemd-analyze', ['verify', copy], { encoding: 'utf8' })
  t.is(run.status, 0, run.stderr)
  t.is(run.stderr.trim(), '', 'no warning (unknown keys and bad values only warn)')
})

test('Dockerfile: node:20-alpine (the musl binaries), copies files that exist, runs device.js', (t) => {
  const lines = fs.readFileSync(path.join(examples, 'Dockerfile'), 'utf8').replace(/\\\n/g, ' ').split('\n')
    .map((line) => line.trim()).filter((line) => line && !line.startsWith('#'))
  const instructions = lines.map((line) => { const [, op, rest] = /^([A-Z]+)\s+(.*)$/.exec(line); return { op, rest } })
  t.is(instructions[0].op, 'FROM')
  t.is(instructions[0].rest, 'node:20-alpine')
  const copied = instructions.filter((i) => i.op === 'COPY').flatMap((i) => i.rest.split(/\s+/).slice(0, -1))
  t.true(copied.length > 0)
  for (const source of copied) t.true(fs.existsSync(path.join(examples, source)), `COPY ${source}: exists in examples/ (the build context)`)
  t.true(instructions.some((i) => i.op === 'RUN' && /npm install .*imt-gateway@/.test(i.rest)), 'installs imt-gateway from the registry')
  const cmd = JSON.parse(instructions.find((i) => i.op === 'CMD').rest)
  t.deepEqual(cmd, ['node', 'device.js'])
  t.true(copied.includes(cmd[1]))
  // What "picks the musl binary" rests on: the musl platform packages say libc musl.
  for (const name of ['linux-x64-musl', 'linux-arm64-musl']) {
    t.deepEqual(JSON.parse(fs.readFileSync(path.join(root, 'npm', name, 'package.json'), 'utf8')).libc, ['musl'])
  }
})

test('raspberry-pi.md: its links resolve and the packages it names are the ARM ones', (t) => {
  const text = fs.readFileSync(path.join(examples, 'raspberry-pi.md'), 'utf8')
  const links = [...text.matchAll(/\]\(([^)#]+)\)/g)].map((m) => m[1])
  t.true(links.length >= 2)
  for (const link of links) t.true(fs.existsSync(path.join(examples, link)), link)
  const named = [...text.matchAll(/`imt-gateway-(linux-[a-z0-9-]+)`/g)].map((m) => m[1])
  t.deepEqual(named.sort(), ['linux-arm-gnueabihf', 'linux-arm64-gnu', 'linux-arm64-musl'])
  for (const name of named) {
    const manifest = JSON.parse(fs.readFileSync(path.join(root, 'npm', name, 'package.json'), 'utf8'))
    t.true(['arm', 'arm64'].includes(manifest.cpu[0]), name)
  }
})

/** The command line script of an installed package (its package.json `bin`). */
function binOf (name) {
  const dir = path.join(root, 'node_modules', name)
  const { bin } = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  return path.join(dir, typeof bin === 'string' ? bin : bin[name])
}

test('examples/ava: the device module\'s tests pass under ava, run as `npx ava` in that folder', async (t) => {
  const cli = binOf('ava')
  const { code, signal, out, err } = await startExample(cli, { cwd: path.join(examples, 'ava'), timeout: 60000 }).ended
  t.is(signal, null)
  t.is(code, 0, out + err)
  t.regex(out, /3 tests passed/)
})

test('examples/jest: the device module\'s tests pass under jest, run as `npx jest` in that folder', async (t) => {
  const cli = binOf('jest')
  const { code, signal, out, err } = await startExample(cli, { cwd: path.join(examples, 'jest'), args: ['--ci'], timeout: 60000 }).ended
  t.is(signal, null)
  t.is(code, 0, out + err)
  t.regex(err, /Tests: +3 passed, 3 total/)
})
