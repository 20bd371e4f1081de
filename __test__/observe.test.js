'use strict'
// What operators see: client.health() through a client's life, the OpenTelemetry instruments of
// the client and the Server (read through @opentelemetry/sdk-metrics, as an application's SDK
// would read them), a client without @opentelemetry/api installed, and the `logger` option's
// structured records. Real sockets against the bundled Server.

const test = require('ava')
const fs = require('fs')
const net = require('net')
const os = require('os')
const path = require('path')
const { MeterProvider, InMemoryMetricExporter, PeriodicExportingMetricReader, AggregationTemporality } = require('@opentelemetry/sdk-metrics')
const { Client, Server, Event } = require('imt-gateway')
const { start, startTls, once, waitFor, freePort } = require('./helpers/server')
const { runNode } = require('./helpers/child')
const { scaled } = require('./helpers/time')

const DEVICE = os.hostname()
const delay = (ms) => new Promise((resolve) => setTimeout(resolve, ms))

/** A MeterProvider whose reader is collected on demand: `{ provider, collect }`. */
function meter () {
  const exporter = new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE)
  const reader = new PeriodicExportingMetricReader({ exporter, exportIntervalMillis: 3600000 })
  const provider = new MeterProvider({ readers: [reader] })
  /** Every metric by name: `{ unit, type, points: [{ attributes, value }] }`. */
  const collect = async () => {
    const { resourceMetrics, errors } = await reader.collect()
    if (errors.length) throw errors[0]
    const metrics = {}
    for (const scope of resourceMetrics.scopeMetrics) {
      for (const metric of scope.metrics) {
        metrics[metric.descriptor.name] = {
          unit: metric.descriptor.unit,
          scope: scope.scope.name,
          points: metric.dataPoints.map((point) => ({ attributes: point.attributes, value: point.value }))
        }
      }
    }
    return metrics
  }
  return { provider, collect }
}

/**
 * Collects until `holds(metrics)`, for at most 5 s: the server's notices may reach JavaScript a
 * moment after the client heard its acknowledgement.
 */
async function collectUntil (collect, holds) {
  const deadline = Date.now() + scaled(5000)
  let metrics = await collect()
  while (!holds(metrics) && Date.now() < deadline) {
    await delay(5)
    metrics = await collect()
  }
  return metrics
}

/** The value of the point with exactly `attributes`, or undefined. */
function point (metric, attributes) {
  const found = metric.points.find((p) => JSON.stringify(Object.entries(p.attributes).sort()) === JSON.stringify(Object.entries(attributes).sort()))
  return found && found.value
}

function sent (client, event) {
  return new Promise((resolve) => client.send(event, (err) => resolve(err)))
}

test('health(): closed, connecting, drained, backoff with the last error while the server is gone, drained again, closed', async (t) => {
  const port = await freePort()
  const client = new Client({ host: 'localhost', port, reconnectDelay: 100 })
  t.teardown(() => client.close())
  const created = Date.now()
  const fresh = client.health()
  t.deepEqual(fresh, {
    state: 'closed',
    since: fresh.since,
    lastError: null,
    reconnects: 0,
    queued: 0,
    inFlight: 0,
    oldestQueuedAge: 0,
    outbox: null,
    certificateExpiresIn: null
  })
  t.true(fresh.since >= created - 1000 && fresh.since <= Date.now(), 'since: ms since the epoch')

  // Nothing listens yet: connecting, then backoff with ECONNREFUSED; an event waits.
  client.send(new Event('queued', { n: 1 }), () => {})
  client.connect()
  t.is(client.health().state, 'connecting', 'at once after connect()')
  await waitFor(() => client.health().state === 'backoff')
  const backoff = client.health()
  t.like(backoff.lastError, { code: 'ECONNREFUSED' })
  t.is(typeof backoff.lastError.message, 'string')
  t.true(backoff.lastError.at >= created && backoff.lastError.at <= Date.now())
  t.is(backoff.queued, 1)
  await delay(60)
  t.true(client.health().oldestQueuedAge >= 50, `the event has waited: ${client.health().oldestQueuedAge} ms`)

  // A server comes: the state each event announces is the state health() gives in its listener.
  const server = new Server()
  t.teardown(() => new Promise((resolve) => server.destroy(resolve)))
  const seen = []
  client.on('connect', () => seen.push(['connect', client.health().state]))
  client.on('drained', () => seen.push(['drained', client.health().state]))
  const drainedOnce = once(client, 'drained')
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve))
  await drainedOnce
  t.deepEqual(seen, [['connect', 'connected'], ['drained', 'drained']])
  await waitFor(() => client.health().queued + client.health().inFlight === 0)
  const drained = client.health()
  t.like(drained, { state: 'drained', queued: 0, inFlight: 0, oldestQueuedAge: 0 })
  t.true(drained.reconnects >= 1)
  t.true(drained.since >= backoff.lastError.at)

  // The server goes: backoff again, with the refused reconnect as the last error.
  const errorBefore = drained.lastError.at
  await new Promise((resolve) => server.destroy(resolve))
  await waitFor(() => client.health().state === 'backoff' && client.health().lastError.at > errorBefore)
  t.is(client.health().lastError.code, 'ECONNREFUSED')

  // It comes back: drained again.
  const again = new Server()
  t.teardown(() => new Promise((resolve) => again.destroy(resolve)))
  await new Promise((resolve) => again.listen(port, '127.0.0.1', resolve))
  await waitFor(() => client.health().state === 'drained')
  t.true(client.health().reconnects > drained.reconnects)

  client.close()
  t.is(client.health().state, 'closed', 'at once after close()')
  await delay(50)
  t.is(client.health().state, 'closed')
})

test('health(): the certificate\'s remaining validity over TLS, and the outbox\'s events and bytes', async (t) => {
  const { server, pki } = await startTls(t)
  const client = new Client({ host: '127.0.0.1', port: server.address().port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  t.teardown(() => client.close())
  const left = client.health().certificateExpiresIn
  t.true(Math.abs(left - client.stats().certificateExpiresIn) < 1000)
  t.true(left > 0)

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-health-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const stored = new Client({ host: 'localhost', port: 1, outbox: { path: dir } })
  t.teardown(() => stored.close())
  t.deepEqual(stored.health().outbox, { events: 0, bytes: 0 })
  stored.send(new Event('a', { n: 1 }), () => {})
  stored.send(new Event('b', { n: 2 }), () => {})
  const { outbox } = stored.health()
  t.is(outbox.events, 2)
  t.is(outbox.bytes, stored.stats().outboxBytes)
  t.true(outbox.bytes > 0)
})

test('metrics: each event is timed from send() to its acknowledgement, none is left out over thousands, and a closed client hands over its last', async (t) => {
  const { provider, collect } = meter()
  // The gateway holds the verdict on the first event for 300 ms.
  const server = await start(t, { echo: false, onEvent: (event) => event.type === 'slow' ? delay(300) : undefined })
  const client = new Client({ host: 'localhost', port: server.address().port, maxInFlight: 64, meterProvider: provider })
  t.teardown(() => client.close())
  await client.connectAsync()
  t.is(await sent(client, new Event('slow', {})), null)
  let m = await collect()
  let { value } = m['imt_gateway.client.event.duration'].points[0]
  t.is(value.count, 1)
  t.true(value.min >= 0.29 && value.max < scaled(5), `${value.min} s: the gateway's 300 ms, and not more than a few seconds`)
  // More than the core keeps between hand-overs, pipelined.
  const count = 2500
  const results = await Promise.all(Array.from({ length: count }, (_, n) => sent(client, new Event('fast', { n }))))
  t.deepEqual(results.filter((r) => r !== null), [])
  m = await collect()
  value = m['imt_gateway.client.event.duration'].points[0].value
  t.is(value.count, count + 1, 'every acknowledged event, once')
  t.true(value.max < scaled(30), `${value.max} s: each event's own wait, queue included`)
  // Another client's event answered after the last collection; the client is closed and
  // dropped before the next one: close() handed its duration over.
  const other = new WeakRef(await (async () => {
    const dropped = new Client({ host: 'localhost', port: server.address().port, meterProvider: provider })
    await dropped.connectAsync()
    t.is(await sent(dropped, new Event('fast', { n: -1 })), null)
    dropped.close()
    return dropped
  })())
  for (let i = 0; i < 50 && other.deref() !== undefined; i++) {
    await delay(20)
    global.gc()
  }
  t.is(other.deref(), undefined, 'the closed client was collected')
  m = await collect()
  t.is(m['imt_gateway.client.event.duration'].points[0].value.count, count + 2)
})

test('metrics: the client\'s instruments count events, actions and connections by outcome, with device.id, and observe the queue and the state', async (t) => {
  const { provider, collect } = meter()
  const server = await start(t, {
    echo: false,
    onEvent: (event) => event.type === 'bad' ? { code: 'E_BAD', message: 'Refused.' } : undefined
  })
  const port = server.address().port
  const client = new Client({ host: 'localhost', port, meterProvider: provider })
  t.teardown(() => client.close())
  client.on('action', (action, ack) => ack(action.type === 'fail' ? new Error('no') : undefined))
  await client.connectAsync()

  for (const n of [1, 2, 3]) t.is(await sent(client, new Event('good', { n })), null)
  t.is((await sent(client, new Event('bad', {}))).code, 'E_BAD')
  // Refused by send() itself: failed, never sent.
  t.is((await sent(client, new Event('big', { n: 10n }))).code, 'EINVALIDBUNDLE')
  const acks = ['ok', 'fail'].map((type) => new Promise((resolve) => server.queueAction(DEVICE, { type }, resolve)))
  await Promise.all(acks)

  const device = { 'device.id': DEVICE }
  let m = await collect()
  t.is(m['imt_gateway.client.events'].unit, '{event}')
  t.is(m['imt_gateway.client.events'].scope, 'imt-gateway')
  t.is(point(m['imt_gateway.client.events'], { ...device, outcome: 'acked' }), 3)
  t.is(point(m['imt_gateway.client.events'], { ...device, outcome: 'refused' }), 1)
  t.is(point(m['imt_gateway.client.events'], { ...device, outcome: 'failed' }), 1)
  await waitFor(() => client.stats().actionsAcked === 2)
  m = await collect()
  t.is(point(m['imt_gateway.client.actions'], { ...device, outcome: 'acked' }), 1)
  t.is(point(m['imt_gateway.client.actions'], { ...device, outcome: 'failed' }), 1)
  t.is(m['imt_gateway.client.actions'].unit, '{action}')
  t.is(point(m['imt_gateway.client.connections'], { ...device, outcome: 'connected' }), 1)
  t.is(point(m['imt_gateway.client.connections'], { ...device, outcome: 'failed' }), 0)
  t.is(m['imt_gateway.client.connections'].unit, '{connection}')

  const duration = m['imt_gateway.client.event.duration']
  t.is(duration.unit, 's')
  t.is(duration.points.length, 1)
  t.deepEqual(duration.points[0].attributes, {}, 'no attributes: one hash less per event')
  t.is(duration.points[0].value.count, 4, 'the acked and the refused events')
  t.true(duration.points[0].value.sum > 0 && duration.points[0].value.sum < 10, `${duration.points[0].value.sum} s`)

  t.is(m['imt_gateway.client.state'].unit, '{client}')
  t.is(point(m['imt_gateway.client.state'], { ...device, state: 'drained' }), 1)
  for (const state of ['connecting', 'connected', 'backoff', 'closed']) t.is(point(m['imt_gateway.client.state'], { ...device, state }), 0, state)
  t.is(point(m['imt_gateway.client.queue.size'], device), 0)
  t.is(m['imt_gateway.client.queue.size'].unit, '{event}')
  t.is(m['imt_gateway.client.outbox.size'], undefined, 'no client with an outbox')

  // Closed with events queued: they fail (ECLOSED); a second client that cannot connect counts
  // a failed connection; the queue gauge sees events waiting.
  client.close()
  client.send(new Event('late', {}), () => {})
  client.send(new Event('late', {}), () => {})
  await waitFor(() => client.health().queued === 2)
  m = await collect()
  t.is(point(m['imt_gateway.client.queue.size'], device), 2)
  t.is(point(m['imt_gateway.client.state'], { ...device, state: 'closed' }), 1)
  const closing = [sent(client, new Event('late', {}))]
  client.close()
  await Promise.all(closing)
  await waitFor(() => client.health().queued === 0)

  const refused = new Client({ host: 'localhost', port: await freePort(), autoReconnect: false, meterProvider: provider })
  refused.on('error', () => {})
  refused.connect()
  await waitFor(() => refused.health().state === 'closed' && refused.health().lastError !== null)
  m = await collect()
  t.is(point(m['imt_gateway.client.events'], { ...device, outcome: 'failed' }), 4, 'EINVALIDBUNDLE and three ECLOSED')
  t.is(point(m['imt_gateway.client.connections'], { ...device, outcome: 'failed' }), 1)
  t.is(point(m['imt_gateway.client.state'], { ...device, state: 'closed' }), 2, 'two clients of this device')
})

test('metrics: the outbox gauge in bytes', async (t) => {
  const { provider, collect } = meter()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-metrics-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const client = new Client({ host: 'localhost', port: 1, outbox: { path: dir }, meterProvider: provider })
  t.teardown(() => client.close())
  client.send(new Event('a', { n: 1 }), () => {})
  const m = await collect()
  t.is(m['imt_gateway.client.outbox.size'].unit, 'By')
  t.is(point(m['imt_gateway.client.outbox.size'], { 'device.id': DEVICE }), client.stats().outboxBytes)
  t.true(client.stats().outboxBytes > 0)
})

test('metrics: the server counts connections (a failed handshake too), events and actions by outcome', async (t) => {
  const { provider, collect } = meter()
  const { server, pki } = await startTls(t, {
    echo: false,
    meterProvider: provider,
    onEvent: (event) => event.type === 'bad' ? { message: 'no' } : undefined
  })
  const port = server.address().port
  const client = new Client({ host: '127.0.0.1', port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  t.teardown(() => client.close())
  client.on('action', (action, ack) => ack(action.type === 'fail' ? new Error('no') : undefined))
  await client.connectAsync()
  await sent(client, new Event('good', {}))
  await sent(client, new Event('good', {}))
  await sent(client, new Event('bad', {}))
  await Promise.all(['ok', 'fail'].map((type) => new Promise((resolve) => server.queueAction(DEVICE, { type }, resolve))))
  // Not TLS at all: refused before a connection is made.
  const junk = net.connect(port, '127.0.0.1', () => junk.end('GET / HTTP/1.0\r\n\r\n'))
  junk.on('error', () => {})
  await once(server, 'clientError')

  const m = await collectUntil(collect, (m) => point(m['imt_gateway.server.events'], { outcome: 'acked' }) + point(m['imt_gateway.server.events'], { outcome: 'refused' }) >= 3)
  t.is(point(m['imt_gateway.server.connections'], { outcome: 'connected' }), 1)
  t.is(point(m['imt_gateway.server.connections'], { outcome: 'failed' }), 1)
  t.is(m['imt_gateway.server.connections'].unit, '{connection}')
  t.is(point(m['imt_gateway.server.events'], { outcome: 'acked' }), 2)
  t.is(point(m['imt_gateway.server.events'], { outcome: 'refused' }), 1)
  t.is(point(m['imt_gateway.server.actions'], { outcome: 'acked' }), 1)
  t.is(point(m['imt_gateway.server.actions'], { outcome: 'failed' }), 1)
})

test('metrics: the server counts the events it acknowledges by itself, with no event listener', async (t) => {
  const { provider, collect } = meter()
  const server = await start(t, { echo: false, meterProvider: provider })
  const client = new Client({ host: 'localhost', port: server.address().port })
  t.teardown(() => client.close())
  await client.connectAsync()
  for (let n = 0; n < 5; n++) await sent(client, new Event('e', { n }))
  const m = await collectUntil(collect, (m) => point(m['imt_gateway.server.events'], { outcome: 'acked' }) >= 5)
  t.is(point(m['imt_gateway.server.events'], { outcome: 'acked' }), 5)
})

test('meterProvider and logger are checked: a TypeError with ERR_INVALID_ARG_TYPE', (t) => {
  for (const options of [{ meterProvider: {} }, { meterProvider: 'x' }, { logger: {} }, { logger: { info () {} } }, { logger: 5 }]) {
    t.like(t.throws(() => new Client({ host: 'localhost', port: 1, ...options }), { instanceOf: TypeError }), { code: 'ERR_INVALID_ARG_TYPE' }, JSON.stringify(options))
    t.like(t.throws(() => new Server(options), { instanceOf: TypeError }), { code: 'ERR_INVALID_ARG_TYPE' }, JSON.stringify(options))
  }
})

// The child hides @opentelemetry/api from resolution (as when it is not installed), counting the
// lookups; a client and a server then work, and nothing of OpenTelemetry is loaded.
test('without @opentelemetry/api installed, clients and servers work, it is looked for once, and nothing is loaded', async (t) => {
  const { code, signal, out, err } = await runNode(`
    const Module = require('module')
    let lookups = 0
    const resolve = Module._resolveFilename
    Module._resolveFilename = function (request, ...rest) {
      if (request.startsWith('@opentelemetry/')) {
        lookups++
        const err = new Error("Cannot find module '" + request + "'")
        err.code = 'MODULE_NOT_FOUND'
        throw err
      }
      return resolve.call(this, request, ...rest)
    }
    const { Client, Server, Event } = require('imt-gateway')
    ;(async () => {
      const server = await new Server({ echo: false }).listenAsync(0, '127.0.0.1')
      const clients = [0, 1].map(() => new Client({ host: 'localhost', port: server.address().port }))
      let acked = 0
      for (const client of clients) {
        await client.connectAsync()
        await client.sendAsync(new Event('e', { n: 1 }))
        acked++
      }
      const loaded = Object.keys(require.cache).filter((file) => file.includes('opentelemetry'))
      console.log(JSON.stringify({ lookups, loaded, acked, metrics: clients.map((c) => c._metrics), state: clients[0].health().state }))
      for (const client of clients) await client.closeAsync()
      await server.closeAsync()
    })()
  `)
  t.is(signal, null, err)
  t.is(code, 0, err)
  t.deepEqual(JSON.parse(out), { lookups: 1, loaded: [], acked: 2, metrics: [null, null], state: 'drained' })
})

// The global MeterProvider of @opentelemetry/api is process-wide state: in a child.
test('the global MeterProvider is used when registered, the meterProvider option overrides it, and the API\'s no-op provider costs nothing', async (t) => {
  const { code, signal, out, err } = await runNode(`
    const api = require('@opentelemetry/api')
    const { MeterProvider, InMemoryMetricExporter, PeriodicExportingMetricReader, AggregationTemporality } = require('@opentelemetry/sdk-metrics')
    const { Client, Server, Event } = require('imt-gateway')
    const make = () => {
      const reader = new PeriodicExportingMetricReader({ exporter: new InMemoryMetricExporter(AggregationTemporality.CUMULATIVE), exportIntervalMillis: 3600000 })
      return { reader, provider: new MeterProvider({ readers: [reader] }) }
    }
    const acked = async (reader) => {
      const { resourceMetrics } = await reader.collect()
      const metric = resourceMetrics.scopeMetrics.flatMap((s) => s.metrics).find((m) => m.descriptor.name === 'imt_gateway.client.events')
      return metric ? metric.dataPoints.filter((p) => p.attributes.outcome === 'acked').reduce((sum, p) => sum + p.value, 0) : null
    }
    ;(async () => {
      const server = await new Server({ echo: false }).listenAsync(0, '127.0.0.1')
      const port = server.address().port
      const noop = new Client({ host: 'localhost', port })
      const global = make()
      api.metrics.setGlobalMeterProvider(global.provider)
      const own = make()
      const a = new Client({ host: 'localhost', port })
      const b = new Client({ host: 'localhost', port, meterProvider: own.provider })
      for (const [client, n] of [[noop, 1], [a, 2], [b, 3]]) {
        await client.connectAsync()
        for (let i = 0; i < n; i++) await client.sendAsync(new Event('e', {}))
        await client.closeAsync()
      }
      console.log(JSON.stringify({ noop: noop._metrics, global: await acked(global.reader), own: await acked(own.reader) }))
      await server.closeAsync()
    })()
  `)
  t.is(signal, null, err)
  t.is(code, 0, err)
  t.deepEqual(JSON.parse(out), { noop: null, global: 2, own: 3 })
})

/** A logger that keeps its records: `[level, fields, message]`. */
function capture () {
  const records = []
  const logger = {}
  for (const level of ['debug', 'info', 'warn', 'error']) logger[level] = (fields, message) => records.push([level, fields, message])
  return { logger, records }
}

test('logger: the client reports connection changes, retries with their delays and errors with their codes as fields', async (t) => {
  const { logger, records } = capture()
  const port = await freePort()
  const client = new Client({ host: 'localhost', port, reconnectDelay: 100, logger })
  t.teardown(() => client.close())
  client.connect()
  await waitFor(() => records.some(([, fields]) => fields.event === 'backoff'))
  const server = new Server()
  t.teardown(() => new Promise((resolve) => server.destroy(resolve)))
  const drained = once(client, 'drained')
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve))
  await drained
  client.close()
  await waitFor(() => records.some(([, fields]) => fields.event === 'closed'))

  const where = { host: 'localhost', port }
  const kinds = records.map(([, fields]) => fields.event)
  t.is(kinds[0], 'connecting')
  t.like(records[0], ['debug', { event: 'connecting', ...where }, 'connecting'])
  const error = records.find(([, fields]) => fields.event === 'error')
  t.like(error, ['warn', { event: 'error', code: 'ECONNREFUSED', recovered: true, ...where }])
  t.is(typeof error[1].message, 'string')
  const backoff = records.find(([, fields]) => fields.event === 'backoff')
  t.like(backoff, ['warn', { event: 'backoff', ...where }])
  t.true(backoff[1].delay >= 0 && backoff[1].delay <= 100, `delay ${backoff[1].delay} ms`)
  t.is(typeof backoff[1].reconnects, 'number')
  t.regex(backoff[2], /^reconnecting in \d+ ms$/)
  t.like(records.find(([, fields]) => fields.event === 'connected'), ['info', { event: 'connected', ...where }, 'connected'])
  t.like(records.find(([, fields]) => fields.event === 'drained'), ['info', { event: 'drained', ...where }, 'drained'])
  t.like(records[records.length - 1], ['info', { event: 'closed', ...where }, 'closed'])
  t.true(kinds.indexOf('connected') < kinds.indexOf('drained'))
  // Fields, not formatted text: every record's first argument is a plain object.
  for (const [level, fields, message] of records) {
    t.true(['debug', 'info', 'warn', 'error'].includes(level))
    t.is(Object.getPrototypeOf(fields), Object.prototype)
    t.is(typeof message, 'string')
  }
})

test('logger: an error that ends the attempts is logged at error level, and a logger that throws does not break the client', async (t) => {
  const { logger, records } = capture()
  const port = await freePort()
  const client = new Client({ host: 'localhost', port, autoReconnect: false, logger })
  const failure = await t.throwsAsync(client.connectAsync())
  t.like(records.find(([, fields]) => fields.event === 'error'), ['error', { event: 'error', code: failure.code, recovered: false, message: failure.message }])
  t.like(records.find(([, fields]) => fields.event === 'closed'), ['info', { event: 'closed', failed: true }])

  const throwing = { debug () { throw new Error('logger broke') }, info () { throw new Error('logger broke') }, warn () { throw new Error('logger broke') }, error () { throw new Error('logger broke') } }
  const server = await start(t)
  const other = new Client({ host: 'localhost', port: server.address().port, logger: throwing })
  await other.connectAsync()
  t.is(await sent(other, new Event('e', {})), null)
  await other.closeAsync()
})

test('logger: the server reports listening, connections, client errors and close as fields', async (t) => {
  const { logger, records } = capture()
  const { server, pki } = await startTls(t, { logger })
  const port = server.address().port
  const client = new Client({ host: '127.0.0.1', port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  await client.connectAsync()
  const junk = net.connect(port, '127.0.0.1', () => junk.end('hello'))
  junk.on('error', () => {})
  await once(server, 'clientError')
  await client.closeAsync()
  await waitFor(() => records.some(([, fields]) => fields.event === 'disconnect'), scaled(5000))
  await new Promise((resolve) => server.close(resolve))
  t.like(records[0], ['info', { event: 'listening', port }])
  t.like(records.find(([, fields]) => fields.event === 'connection'), ['info', { event: 'connection', remoteAddress: '127.0.0.1' }])
  const clientError = records.find(([, fields]) => fields.event === 'clientError')
  t.is(clientError[0], 'warn')
  t.is(typeof clientError[1].code, 'string')
  t.like(records.find(([, fields]) => fields.event === 'disconnect'), ['info', { event: 'disconnect', deviceName: DEVICE }])
  t.like(records[records.length - 1], ['info', { event: 'close' }])
})
