'use strict'
// docs/client.md, `keepAlive`: a gateway that vanishes (no FIN, no RST: its host or network is gone) is
// noticed in seconds, with or without data left unacknowledged. The gateway and the device run
// in two network namespaces joined by a veth pair; taking the gateway's end down makes every
// packet vanish without an answer. That needs root (CI is) and `ip` (iproute2, installed by
// scripts/toolchains.sh's `network` part); elsewhere the tests show as skipped with the reason.

const test = require('ava')
const path = require('path')
const { spawn, spawnSync } = require('child_process')
const { createPki } = require('imt-gateway/testing')
const { scaled } = require('./helpers/time')

const ROOT = path.join(__dirname, '..')
const GATEWAY = '10.77.0.1'
const KEEP_ALIVE = 1000

/** Why network namespaces cannot be made here, or null when they can. */
function unavailable () {
  if (process.platform !== 'linux') return 'network namespaces are Linux only'
  const probe = `imt-probe-${process.pid}`
  const made = spawnSync('ip', ['netns', 'add', probe], { encoding: 'utf8' })
  if (made.error) return `no \`ip\` command (${made.error.code}): install iproute2`
  if (made.status !== 0) return `\`ip netns add\` failed (root needed): ${made.stderr.trim()}`
  spawnSync('ip', ['netns', 'del', probe])
  return null
}

const reason = unavailable()

function ip (...args) {
  const result = spawnSync('ip', args, { encoding: 'utf8' })
  if (result.status !== 0) throw new Error(`ip ${args.join(' ')}: ${result.stderr}`)
}

/** Two namespaces, gateway and device, joined by a veth pair; removed after the test. */
function network (t, id) {
  const names = { gateway: `imt-gw-${process.pid}-${id}`, device: `imt-dev-${process.pid}-${id}` }
  const links = { gateway: `imtg${process.pid % 1e5}${id}`, device: `imtd${process.pid % 1e5}${id}` }
  ip('netns', 'add', names.gateway)
  t.teardown(() => spawnSync('ip', ['netns', 'del', names.gateway]))
  ip('netns', 'add', names.device)
  t.teardown(() => spawnSync('ip', ['netns', 'del', names.device]))
  ip('link', 'add', links.gateway, 'netns', names.gateway, 'type', 'veth', 'peer', 'name', links.device, 'netns', names.device)
  ip('-n', names.gateway, 'addr', 'add', `${GATEWAY}/30`, 'dev', links.gateway)
  ip('-n', names.device, 'addr', 'add', '10.77.0.2/30', 'dev', links.device)
  for (const side of ['gateway', 'device']) {
    ip('-n', names[side], 'link', 'set', 'lo', 'up')
    ip('-n', names[side], 'link', 'set', links[side], 'up')
  }
  return { names, vanish: () => ip('-n', names.gateway, 'link', 'set', links.gateway, 'down') }
}

/** Node code run in a namespace; `lines` collects its JSON lines; killed after the test. */
function run (t, namespace, source, env) {
  const child = spawn('ip', ['netns', 'exec', namespace, process.execPath, '-e', source], { cwd: ROOT, env: { ...process.env, ...env } })
  t.teardown(() => child.kill('SIGKILL'))
  child.lines = []
  child.err = ''
  let buffered = ''
  const waiters = []
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    let at
    while ((at = buffered.indexOf('\n')) >= 0) {
      child.lines.push(JSON.parse(buffered.slice(0, at)))
      buffered = buffered.slice(at + 1)
      for (const wake of waiters.splice(0)) wake()
    }
  })
  child.stderr.on('data', (chunk) => { child.err += chunk })
  child.on('close', () => { for (const wake of waiters.splice(0)) wake() })
  /** The first line for which `predicate` holds; rejects after `ms` or when the child ends. */
  child.line = (predicate, ms) => new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${JSON.stringify(child.lines)} ${child.err}`)), ms)
    const check = () => {
      const found = child.lines.find(predicate)
      if (found) { clearTimeout(timer); return resolve(found) }
      if (child.exitCode !== null || child.signalCode !== null) { clearTimeout(timer); return reject(new Error(`ended: ${child.err}`)) }
      waiters.push(check)
    }
    check()
  })
  return child
}

const GATEWAY_SOURCE = `
  const { Server } = require('imt-gateway')
  const pki = JSON.parse(process.env.PKI)
  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false, onEvent: () => new Promise(() => {}) })
  server.listen(7777, '${GATEWAY}', () => console.log(JSON.stringify({ listening: true })))
`

// The device: connects, then on a line on standard input (the gateway has just vanished)
// optionally sends an event, and reports how the connection ended and how long that took.
const DEVICE_SOURCE = `
  const { Client, Event } = require('imt-gateway')
  const pki = JSON.parse(process.env.PKI)
  const client = new Client({ host: '${GATEWAY}', port: 7777, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert,
    keepAlive: ${KEEP_ALIVE}, autoReconnect: false })
  const print = (line) => console.log(JSON.stringify(line))
  let vanished = null
  client.once('drained', () => print({ connected: true }))
  client.on('disconnect', () => print({ disconnect: true, ms: Date.now() - vanished }))
  client.on('error', (err) => { print({ code: err.code, message: err.message, ms: Date.now() - vanished }); client.close() })
  process.stdin.once('data', (data) => {
    vanished = Date.now()
    if (String(data).trim() === 'send') client.send(new Event('unanswered', { n: 1 }), () => {})
  })
  client.connect()
`

const cases = [
  ['an idle connection (keepalive probes go unanswered)', 'idle', 1],
  ['an event written and never acknowledged (TCP_USER_TIMEOUT)', 'send', 2]
]

for (const [what, input, id] of cases) {
  const title = `keepAlive: a gateway that vanishes is noticed in seconds, with ETIMEDOUT: ${what}`
  if (reason) {
    test.skip(`${title} (skipped: ${reason})`, () => {})
    continue
  }
  test(title, async (t) => {
    const net = network(t, id)
    const pki = createPki({ hosts: [GATEWAY] })
    const env = { PKI: JSON.stringify({ caCert: pki.caCert, server: pki.server, client: pki.client }) }
    const gateway = run(t, net.names.gateway, GATEWAY_SOURCE, env)
    await gateway.line((l) => l.listening, scaled(10000))
    const device = run(t, net.names.device, DEVICE_SOURCE, env)
    await device.line((l) => l.connected, scaled(10000))
    net.vanish()
    device.stdin.write(`${input}\n`)
    // Without keepAlive's settings the OS waits about two hours (idle) or fifteen minutes
    // (retransmissions) before it gives up on the connection.
    const ended = await device.line((l) => l.code, scaled(3 * 2 * KEEP_ALIVE + 4000))
    t.log(`noticed ${ended.ms} ms after the gateway vanished: ${ended.code}: ${ended.message}`)
    t.is(ended.code, 'ETIMEDOUT')
    t.regex(ended.message, /timed out/i)
    t.true(ended.ms >= KEEP_ALIVE, 'not before the keepalive time')
    t.true(ended.ms < scaled(2 * KEEP_ALIVE + 3000), `noticed within 2 x keepAlive (and some): ${ended.ms} ms`)
    await device.line((l) => l.disconnect, scaled(2000))
  })
}
