'use strict'
// The Node Client under test, one scenario per process: argv[2] is the scenario as JSON.
// Prints one JSON object with the figures.

const fs = require('fs')
const os = require('os')
const path = require('path')
const { Client, Event } = require('imt-gateway')

const scenario = JSON.parse(process.argv[2])
// The process's resident size before any client exists (the addon loaded, nothing collected):
// the `idle` scenario's second figure is the growth from here.
const startRss = process.memoryUsage().rss
const now = () => Number(process.hrtime.bigint()) / 1e6
/** Microseconds of CPU (user and system, every thread) per message since `since`. */
const cpuUs = (since, messages) => {
  const used = process.cpuUsage(since)
  return (used.user + used.system) / messages
}

function client (extra = {}) {
  return new Client({ host: '127.0.0.1', port: scenario.port, key: scenario.key, cert: scenario.cert, ca: scenario.ca, ...extra })
}

function drained (c) {
  return new Promise((resolve, reject) => { c.once('drain', resolve); c.once('error', reject) })
}

function percentile (sorted, p) {
  return sorted.length ? sorted[Math.round((sorted.length - 1) * p)] : 0
}

/** `text`: the data as a string of `size` bytes of UTF-8 (see bench/server.js), not a Buffer. */
function bundle (size, n, text) {
  if (text) return { data: Buffer.alloc(size, text === 'ascii' ? 'x' : '\u0436').toString() }
  return size ? { data: Buffer.alloc(size, 7) } : { n }
}

/**
 * With `metrics`: an OpenTelemetry SDK MeterProvider whose reader collects every second into an
 * in-memory exporter, as an application exporting its metrics would have (the SDK is one of the
 * package's devDependencies).
 */
function meterProvider () {
  const { MeterProvider, InMemoryMetricExporter, PeriodicExportingMetricReader, AggregationTemporality } = require('@opentelemetry/sdk-metrics')
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 1000 })
  return new MeterProvider({ readers: [reader] })
}

/** Sends `count` events at once, each of `payloads` in turn (or `{ n }`); resolves when all are done. */
function sendAll (c, count, size, payloads) {
  return new Promise((resolve, reject) => {
    let done = 0
    for (let i = 0; i < count; i++) {
      c.send(new Event('bench', size ? payloads[i % payloads.length] : { n: i }), (err) => {
        if (err) return reject(err)
        if (++done === count) resolve()
      })
    }
  })
}

async function events ({ count, size, text, maxInFlight = 1, outbox, metrics, warmup = 0 }) {
  // With `outbox: { sync }`: a fresh outbox directory, removed afterwards.
  const dir = outbox && fs.mkdtempSync(path.join(os.tmpdir(), 'imt-bench-outbox-'))
  const provider = metrics ? meterProvider() : null
  const c = client({ maxInFlight, ...(outbox ? { outbox: { path: dir, ...outbox } } : {}), ...(provider ? { meterProvider: provider } : {}) })
  c.connect()
  await drained(c)
  const payloads = Array.from({ length: Math.min(count, 4) }, (_, i) => bundle(size, i, text))
  // A first collection before the measured time: it compiles the SDK's collection path, a cost
  // an application pays once, not per event.
  if (provider) await provider.forceFlush()
  // Untimed events first, with `warmup`, as the round trip does: the JavaScript on the path is
  // then compiled, as in a process that has run a while.
  if (warmup) await sendAll(c, warmup, size, payloads)
  const cpu = process.cpuUsage()
  const started = now()
  await sendAll(c, count, size, payloads)
  // With metrics, one collection and export inside the measured time: the durations the client
  // hands over in bulk are recorded then.
  if (provider) await provider.forceFlush()
  const seconds = (now() - started) / 1000
  const cpuPer = cpuUs(cpu, count)
  c.close()
  if (provider) await provider.shutdown()
  if (dir) fs.rmSync(dir, { recursive: true, force: true })
  return { perSecond: count / seconds, mbPerSecond: count * size / seconds / 1e6, cpuUs: cpuPer }
}

async function rtt ({ count, warmup = 0 }) {
  const c = client()
  c.connect()
  await drained(c)
  // Untimed round trips first, with `warmup`: the JavaScript on the path is then compiled
  // (the floor, compiled ahead of time, sends as many untimed).
  for (let i = 0; i < warmup; i++) {
    await new Promise((resolve, reject) => c.send(new Event('bench', { n: i }), (err) => err ? reject(err) : resolve()))
  }
  const times = []
  const cpu = process.cpuUsage()
  for (let i = 0; i < count; i++) {
    const sent = now()
    await new Promise((resolve, reject) => c.send(new Event('bench', { n: i }), (err) => err ? reject(err) : resolve()))
    times.push((now() - sent) * 1000)
  }
  const cpuPer = cpuUs(cpu, count)
  times.sort((a, b) => a - b)
  c.close()
  return { rttMedianUs: percentile(times, 0.5), rttP99Us: percentile(times, 0.99), cpuUs: cpuPer }
}

async function actions ({ count, size, warmup = 0, warmupDevice }) {
  // With `warmup`: first, untimed, a client of its own connects as `warmupDevice`, for which
  // the gateway holds `warmup` actions, and acknowledges them (the JavaScript on the path is then
  // compiled); the timed client connects after it has closed.
  if (warmup) {
    // The Client names its device after the host, as the original does, and takes no option
    // for it: the warm-up client is made with another host name.
    const hostname = os.hostname
    os.hostname = () => warmupDevice
    let w
    try {
      w = client()
    } finally {
      os.hostname = hostname
    }
    let acked = 0
    w.on('action', (action, ack) => { acked++; ack() })
    w.connect()
    await drained(w)
    await w.closeAsync()
    if (acked !== warmup) throw new Error(`expected ${warmup} warm-up actions, got ${acked}`)
  }
  const c = client()
  let seen = 0
  c.on('action', (action, ack) => { seen++; ack() })
  const cpu = process.cpuUsage()
  const started = now()
  c.connect()
  await drained(c)
  const seconds = (now() - started) / 1000
  const cpuPer = cpuUs(cpu, count)
  c.close()
  if (seen !== count) throw new Error(`expected ${count} actions, got ${seen}`)
  return { perSecond: count / seconds, mbPerSecond: count * size / seconds / 1e6, cpuUs: cpuPer }
}

async function connect ({ count, proxy, fresh }) {
  // `proxy`: a URL to connect through, or false to go straight whatever the environment says.
  // `fresh`: a new client for each connect, so each handshake is a full one (no resumption:
  // the device's signature is made every time).
  let c = client(proxy === undefined ? {} : { proxy })
  const times = []
  for (let i = 0; i < count; i++) {
    if (fresh && i > 0) c = client()
    const started = now()
    c.connect()
    await drained(c)
    times.push((now() - started) * 1000)
    await new Promise((resolve) => { c.once('disconnect', resolve); c.close() })
  }
  times.sort((a, b) => a - b)
  return { medianUs: percentile(times, 0.5) }
}

// Two figures for `clients` idle connected clients, each RSS growth divided by `clients`:
// `bytesPerClient`, the bench's own, between two forced garbage collections; and
// `rssGrowthPerClient`, from the process's start to the connected clients with no collection
// forced: garbage not yet collected counts too.
async function idle ({ clients }) {
  global.gc()
  const before = process.memoryUsage().rss
  const all = []
  // In waves, so that the handshakes do not all time out behind each other.
  for (let i = 0; i < clients; i += 500) {
    const wave = Array.from({ length: Math.min(500, clients - i) }, () => client())
    await Promise.all(wave.map((c) => { c.connect(); return drained(c) }))
    all.push(...wave)
  }
  await new Promise((resolve) => setTimeout(resolve, 500))
  const grown = process.memoryUsage().rss
  global.gc()
  const after = process.memoryUsage().rss
  for (const c of all) c.close()
  return { bytesPerClient: (after - before) / clients, rssGrowthPerClient: (grown - startRss) / clients, clients: all.length }
}

const scenarios = { events, rtt, actions, connect, idle }

scenarios[scenario.kind](scenario).then((result) => {
  console.log(JSON.stringify(result))
  process.exit(0)
}, (err) => {
  console.error(err)
  process.exit(1)
})
