'use strict'
// Delivery under fire: a Client sends events to the bundled Server (mutual TLS) through the
// chaos proxy, which keeps cutting, stalling, delaying and corrupting the connection. Checks
// the at-least-once guarantee: the Server sees every event id, every callback runs exactly
// once and reports success, and duplicates never outnumber the disconnects.
//
//   npm run chaos                       10,000 events, at least 50 forced disconnects
//   node scripts/chaos.js --events 2000 --seed 7
//   npm run chaos -- --outbox           the sender is a child process with a durable outbox,
//                                       SIGKILLed and restarted (--kills 10) mid-send

const { Client, Event, Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { startChaosProxy } = require('./chaos-proxy')

/**
 * The bundled Server (mutual TLS, no echo) counting each event id it receives, behind a chaos
 * proxy that cuts, corrupts and stalls the connections made through it.
 */
async function startGateway (seed, meanBytes) {
  const pki = createPki({ hosts: ['localhost', '127.0.0.1'] })
  const received = new Map()
  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false })
  server.on('event', (event) => received.set(event.id, (received.get(event.id) || 0) + 1))
  server.on('clientError', () => {})
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const proxy = await startChaosProxy({ target: { host: '127.0.0.1', port: server.address().port }, seed, meanBytes })
  return { pki, received, server, proxy }
}

async function runChaos ({ events = 10000, seed = 1, meanBytes = 40000, minDisconnects = 50, log = () => {} } = {}) {
  const { pki, received, server, proxy } = await startGateway(seed, meanBytes)

  const client = new Client({
    host: '127.0.0.1',
    port: proxy.port,
    key: pki.client.key,
    cert: pki.client.cert,
    ca: pki.caCert,
    reconnectDelay: 10,
    connectTimeout: 2000,
    ackTimeout: 2000
  })
  const errors = {}
  client.on('error', (err) => { errors[err.code] = (errors[err.code] || 0) + 1 })
  let reconnects = 0
  client.on('reconnect', () => reconnects++)

  const started = Date.now()
  const calls = new Array(events).fill(0)
  const failures = []
  const ids = []
  const finished = new Promise((resolve) => {
    let done = 0
    for (let i = 0; i < events; i++) {
      const event = new Event('chaos', { i, at: new Date(), pad: 'x'.repeat(i % 200) })
      ids.push(event.id || null)
      client.send(event, (err) => {
        calls[i]++
        if (err) failures.push({ i, code: err.code, message: err.message })
        if (++done === events) resolve()
        if (done % 1000 === 0) log(`  ${done} events acknowledged, ${proxy.stats.connections} connections so far`)
      })
      ids[i] = event.id
    }
  })
  client.connect()
  await finished
  const ms = Date.now() - started

  client.close()
  await proxy.close()
  await new Promise((resolve) => server.destroy(resolve))

  const missing = ids.filter((id) => !received.has(id)).length
  const deliveries = [...received.values()].reduce((a, b) => a + b, 0)
  const duplicates = deliveries - received.size
  const disconnects = proxy.stats.connections - 1
  const result = {
    seed,
    events,
    ms,
    disconnects,
    faults: { cut: proxy.stats.cut, corrupt: proxy.stats.corrupt, stall: proxy.stats.stall },
    reconnects,
    errors,
    serverReceived: deliveries,
    uniqueAtServer: received.size,
    missing,
    duplicates,
    callbacksExactlyOnce: calls.every((n) => n === 1),
    callbackFailures: failures.length,
    firstFailure: failures[0] || null
  }
  result.ok = missing === 0 && result.callbacksExactlyOnce && failures.length === 0 &&
    duplicates <= disconnects && disconnects >= minDisconnects
  return result
}

// One life of the outbox sender: sends `count` events (ids `L<life>-<i>`) in bursts, printing
// each id once send() has returned (stdout to a pipe is synchronous), then, unless killed first,
// waits until the outbox is empty and says so.
const SENDER = `
const { Client, Event } = require(process.env.CHAOS_ROOT)
const { dir, port, life, count, key, cert, ca } = JSON.parse(process.env.CHAOS_SENDER)
const client = new Client({ host: '127.0.0.1', port, key, cert, ca, reconnectDelay: 10, connectTimeout: 2000, ackTimeout: 2000, outbox: { path: dir } })
client.on('error', () => {})
client.on('restored', (info) => process.stdout.write('restored ' + info.events + '\\n'))
client.connect()
let i = 0
function burst () {
  for (let k = 0; k < 50 && i < count; k++, i++) {
    const id = 'L' + life + '-' + i
    client.send(new Event('chaos', { i, pad: 'x'.repeat(i % 200) }, id), () => {})
    process.stdout.write('sent ' + id + '\\n')
  }
  if (i < count) return setTimeout(burst, 2)
  const wait = setInterval(() => {
    if (client.stats().outboxPending === 0) {
      clearInterval(wait)
      process.stdout.write('empty\\n')
      client.close()
    }
  }, 20)
}
burst()
`

// Delivery across process deaths: the sender (a child with an outbox, through the chaos proxy)
// is SIGKILLed `kills` times at seeded random moments and started again on the same outbox;
// every event whose send() returned in any life must reach the Server, and duplicates stay
// within one per connection that ended (stop-and-wait).
async function runOutboxChaos ({ events = 10000, seed = 1, meanBytes = 40000, kills = 10, log = () => {} } = {}) {
  const fs = require('fs')
  const os = require('os')
  const path = require('path')
  const { spawn } = require('child_process')
  const { pki, received, server, proxy } = await startGateway(seed, meanBytes)
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-chaos-outbox-'))
  let state = seed >>> 0 || 1
  const random = () => { state ^= state << 13; state ^= state >>> 17; state ^= state << 5; return (state >>> 0) / 4294967296 }

  const started = Date.now()
  const sent = []
  let restored = 0
  const perLife = Math.ceil(events / (kills + 1))
  for (let life = 0; life <= kills; life++) {
    const last = life === kills
    const child = spawn(process.execPath, ['-e', SENDER], {
      stdio: ['ignore', 'pipe', 'inherit'],
      env: {
        ...process.env,
        CHAOS_ROOT: require('path').join(__dirname, '..'),
        CHAOS_SENDER: JSON.stringify({ dir, port: proxy.port, life, count: perLife, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
      }
    })
    let buffered = ''
    let empty = false
    let opened
    const open = new Promise((resolve) => { opened = resolve })
    child.stdout.on('data', (chunk) => {
      buffered += chunk
      const lines = buffered.split('\n')
      buffered = lines.pop()
      for (const line of lines) {
        if (line.startsWith('sent ')) sent.push(line.slice(5))
        else if (line.startsWith('restored ')) {
          restored += Number(line.slice(9))
          opened()
        } else if (line === 'empty') empty = true
      }
    })
    const exited = new Promise((resolve) => child.on('close', (code, signal) => resolve(signal || code)))
    if (!last) {
      // Killed a while after its outbox is open: while it sends, or while its events wait.
      await Promise.race([open, exited])
      const after = Math.floor(random() * 400)
      await new Promise((resolve) => setTimeout(resolve, after))
      child.kill('SIGKILL')
    }
    const ended = await exited
    log(`  life ${life}: ${ended === 'SIGKILL' ? 'killed' : 'ended'}, ${sent.length} events sent so far, ${restored} restored so far`)
    if (last && !empty) throw new Error('the last sender ended before its outbox was empty')
  }
  const ms = Date.now() - started
  // The last acknowledgements may reach the Server's listeners a moment after the sender saw them.
  const deadline = Date.now() + 5000
  while (sent.some((id) => !received.has(id)) && Date.now() < deadline) await new Promise((resolve) => setTimeout(resolve, 20))
  await proxy.close()
  await new Promise((resolve) => server.destroy(resolve))
  fs.rmSync(dir, { recursive: true, force: true })

  const missing = sent.filter((id) => !received.has(id))
  const deliveries = [...received.values()].reduce((a, b) => a + b, 0)
  const duplicates = deliveries - received.size
  const connections = proxy.stats.connections
  const result = {
    seed,
    events: sent.length,
    kills,
    ms,
    connections,
    faults: { cut: proxy.stats.cut, corrupt: proxy.stats.corrupt, stall: proxy.stats.stall },
    restored,
    serverReceived: deliveries,
    uniqueAtServer: received.size,
    missing: missing.length,
    firstMissing: missing[0] || null,
    duplicates
  }
  result.ok = missing.length === 0 && duplicates <= connections
  return result
}

function argument (name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index === -1 ? fallback : Number(process.argv[index + 1])
}

/** Prints a run's result and sets the exit status from it. */
function report (run) {
  run.then((result) => {
    console.log(JSON.stringify(result, null, 2))
    console.log(result.ok ? 'chaos: OK' : 'chaos: FAILED')
    process.exitCode = result.ok ? 0 : 1
  }, (err) => {
    console.error(err)
    process.exitCode = 1
  })
}

if (require.main === module && process.argv.includes('--outbox')) {
  const options = {
    events: argument('events', 10000),
    seed: argument('seed', 1),
    meanBytes: argument('mean-bytes', 40000),
    kills: argument('kills', 10),
    log: (line) => console.log(line)
  }
  console.log(`chaos (outbox): ${options.events} events from a sender killed ${options.kills} times, seed ${options.seed}, a fault every ~${options.meanBytes} bytes on average`)
  report(runOutboxChaos(options))
} else if (require.main === module) {
  const options = {
    events: argument('events', 10000),
    seed: argument('seed', 1),
    meanBytes: argument('mean-bytes', 40000),
    minDisconnects: argument('min-disconnects', 50),
    log: (line) => console.log(line)
  }
  console.log(`chaos: ${options.events} events, seed ${options.seed}, a fault every ~${options.meanBytes} bytes on average`)
  report(runChaos(options))
}

module.exports = { runChaos, runOutboxChaos }
