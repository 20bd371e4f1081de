'use strict'
// Delivery under fire: a Client sends events to the bundled Server (mutual TLS) through the
// chaos proxy, which keeps cutting, stalling, delaying and corrupting the connection. Checks
// the at-least-once guarantee: the Server sees every event id, every callback runs exactly
// once and reports success, and duplicates never outnumber the disconnects.
//
//   npm run chaos                       10,000 events, at least 50 forced disconnects
//   node scripts/chaos.js --events 2000 --seed 7

const { Client, Event, Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { startChaosProxy } = require('./chaos-proxy')

async function runChaos ({ events = 10000, seed = 1, meanBytes = 40000, minDisconnects = 50, log = () => {} } = {}) {
  const pki = createPki({ hosts: ['localhost', '127.0.0.1'] })
  const received = new Map()
  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert, echo: false })
  server.on('event', (event) => received.set(event.id, (received.get(event.id) || 0) + 1))
  server.on('clientError', () => {})
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const proxy = await startChaosProxy({ target: { host: '127.0.0.1', port: server.address().port }, seed, meanBytes })

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

function argument (name, fallback) {
  const index = process.argv.indexOf(`--${name}`)
  return index === -1 ? fallback : Number(process.argv[index + 1])
}

if (require.main === module) {
  const options = {
    events: argument('events', 10000),
    seed: argument('seed', 1),
    meanBytes: argument('mean-bytes', 40000),
    minDisconnects: argument('min-disconnects', 50),
    log: (line) => console.log(line)
  }
  console.log(`chaos: ${options.events} events, seed ${options.seed}, a fault every ~${options.meanBytes} bytes on average`)
  runChaos(options).then((result) => {
    console.log(JSON.stringify(result, null, 2))
    console.log(result.ok ? 'chaos: OK' : 'chaos: FAILED')
    process.exitCode = result.ok ? 0 : 1
  }, (err) => {
    console.error(err)
    process.exitCode = 1
  })
}

module.exports = { runChaos }
