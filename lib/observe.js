'use strict'

// What operators see besides DEBUG: OpenTelemetry metrics, through the application's own
// `@opentelemetry/api` (an optional peer dependency), and the `logger` option.
//
// Cost: `@opentelemetry/api` is looked for once, at the first client or server made without a
// `meterProvider` option; when it is absent, or no MeterProvider was registered (its meter is
// the API's no-op one), a client keeps `_metrics === null` and pays one null check per event.
// With a meter, the counters are plain integers here, observed by the SDK only when it collects
// (asynchronous counters: nothing per event but an increment); the one instrument recorded per
// event is the duration histogram (without attributes), whose durations the core measures and
// hands over in bulk (ClientMetrics.drain).

const { gatewayError } = require('./errors')
const { version } = require('../package.json')

const SCOPE = 'imt-gateway'
const STATES = ['connecting', 'connected', 'drained', 'backoff', 'closed']
// Seconds, from a LAN round trip to a minute-long outage.
const DURATION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60]

// Durations wait in the core for at most this many events before they are recorded.
const DRAIN_EVERY = 1024
const NO_ATTRIBUTES = Object.freeze({})

let api // undefined: not looked for yet; null: absent

/** The application's `@opentelemetry/api`, required once; null when it is not installed. */
function otel () {
  if (api === undefined) {
    try {
      api = require('@opentelemetry/api')
    } catch (_) {
      api = null
    }
  }
  return api
}

/**
 * The meter for a client or server: from `meterProvider` when given (the API is then not
 * needed), else from the global MeterProvider of `@opentelemetry/api`; null when there is none
 * (no API, or only its no-op provider).
 */
function meterOf (meterProvider) {
  if (meterProvider !== undefined && meterProvider !== null) {
    if (typeof meterProvider !== 'object' || typeof meterProvider.getMeter !== 'function') {
      throw gatewayError('options.meterProvider must be an OpenTelemetry MeterProvider (with getMeter()).', 'ERR_INVALID_ARG_TYPE', TypeError)
    }
    return meterProvider.getMeter(SCOPE, version)
  }
  const found = otel()
  if (found === null) return null
  const meter = found.metrics.getMeter(SCOPE, version)
  return meter instanceof found.createNoopMeter().constructor ? null : meter
}

/** `options.logger`: undefined/null for none, else an object with debug/info/warn/error. */
function loggerOf (logger) {
  if (logger === undefined || logger === null) return null
  const usable = typeof logger === 'object' || typeof logger === 'function'
  if (!usable || ['debug', 'info', 'warn', 'error'].some((level) => typeof logger[level] !== 'function')) {
    throw gatewayError('options.logger must have debug, info, warn and error methods (pino, winston, console).', 'ERR_INVALID_ARG_TYPE', TypeError)
  }
  return logger
}

/**
 * Writes one record: `logger[level](fields, message)`, pino's order. A logger that throws does
 * not break the client: the record is dropped.
 */
function log (logger, level, fields, message) {
  try {
    logger[level](fields, message)
  } catch (_) {}
}

// One set of instruments per meter, shared by every client made with it: each client's counts
// are added to its device's totals, and the gauges sum the live clients of a device.
const clientRegistries = new WeakMap()
const serverRegistries = new WeakMap()

class ClientRegistry {
  constructor (meter) {
    this.devices = new Map() // device.id -> totals
    this.clients = new Set() // WeakRef<Client>
    // Recorded without attributes: the SDK hashes a point's attributes at every record(), and
    // `device.id` alone made it four times dearer. OpenTelemetry's conventions put `device.id`
    // on the Resource.
    this.duration = meter.createHistogram('imt_gateway.client.event.duration', {
      unit: 's',
      description: 'From send() to the gateway\'s acknowledgement (accepted or refused).',
      advice: { explicitBucketBoundaries: DURATION_BUCKETS }
    })
    const events = meter.createObservableCounter('imt_gateway.client.events', {
      unit: '{event}', description: 'Events done, by outcome: acked, refused (by the gateway), failed (no verdict).'
    })
    const actions = meter.createObservableCounter('imt_gateway.client.actions', {
      unit: '{action}', description: 'Actions the application acknowledged, by outcome: acked, failed.'
    })
    const connections = meter.createObservableCounter('imt_gateway.client.connections', {
      unit: '{connection}', description: 'Connection attempts, by outcome: connected (welcomed), failed.'
    })
    const queue = meter.createObservableGauge('imt_gateway.client.queue.size', {
      unit: '{event}', description: 'Events not yet acknowledged: queued and in flight.'
    })
    const outbox = meter.createObservableGauge('imt_gateway.client.outbox.size', {
      unit: 'By', description: 'Bytes held by the durable outbox.'
    })
    const state = meter.createObservableGauge('imt_gateway.client.state', {
      unit: '{client}', description: '1 (per client) for the current connection state.'
    })
    meter.addBatchObservableCallback((result) => {
      for (const [device, totals] of this.devices) {
        for (const outcome of ['acked', 'refused', 'failed']) result.observe(events, totals.events[outcome], totals.attributes.events[outcome])
        for (const outcome of ['acked', 'failed']) result.observe(actions, totals.actions[outcome], totals.attributes.actions[outcome])
        for (const outcome of ['connected', 'failed']) result.observe(connections, totals.connections[outcome], totals.attributes.connections[outcome])
        totals.gauges = { queue: 0, outbox: null, states: Object.fromEntries(STATES.map((s) => [s, 0])) }
        totals.device = device
      }
      for (const ref of this.clients) {
        const client = ref.deref()
        if (client === undefined) {
          this.clients.delete(ref)
          continue
        }
        // Called before the SDK collects its synchronous instruments: the durations it
        // records now are in this collection.
        client._metrics.drain()
        const gauges = client._metrics.totals.gauges
        const health = client._native.health()
        gauges.queue += health.queued + health.inFlight
        if (health.outboxBytes !== null) gauges.outbox = (gauges.outbox || 0) + health.outboxBytes
        gauges.states[client._state]++
      }
      for (const totals of this.devices.values()) {
        const { gauges, attributes } = totals
        result.observe(queue, gauges.queue, attributes.device)
        if (gauges.outbox !== null) result.observe(outbox, gauges.outbox, attributes.device)
        for (const name of STATES) result.observe(state, gauges.states[name], attributes.states[name])
      }
    }, [events, actions, connections, queue, outbox, state])
  }

  totals (device) {
    let totals = this.devices.get(device)
    if (totals) return totals
    const attributes = (outcomes) => Object.fromEntries(outcomes.map((outcome) => [outcome, { 'device.id': device, outcome }]))
    totals = {
      events: { acked: 0, refused: 0, failed: 0 },
      actions: { acked: 0, failed: 0 },
      connections: { connected: 0, failed: 0 },
      gauges: null,
      attributes: {
        device: { 'device.id': device },
        events: attributes(['acked', 'refused', 'failed']),
        actions: attributes(['acked', 'failed']),
        connections: attributes(['connected', 'failed']),
        states: Object.fromEntries(STATES.map((state) => [state, { 'device.id': device, state }]))
      }
    }
    this.devices.set(device, totals)
    return totals
  }
}

/**
 * A client's metrics: its device's totals (counted here), and the durations of its answered
 * events, which the core measures (from send() to the acknowledgement) and keeps until they
 * are taken here in bulk: at each collection, at close(), and every DRAIN_EVERY events.
 */
class ClientMetrics {
  constructor (meter, client, device) {
    let registry = clientRegistries.get(meter)
    if (!registry) {
      registry = new ClientRegistry(meter)
      clientRegistries.set(meter, registry)
    }
    registry.clients.add(new WeakRef(client))
    this.totals = registry.totals(device)
    this.events = this.totals.events
    this.actions = this.totals.actions
    this.connections = this.totals.connections
    this._duration = registry.duration
    this._native = client._native
    this._undrained = 0
  }

  /** An event is done with this `outcome`. */
  done (outcome) {
    this.events[outcome]++
    if (++this._undrained === DRAIN_EVERY) this.drain()
  }

  /**
   * Records the durations the core measured since the last time, in one loop: a `record()`
   * per acknowledgement in the middle of the client's own work cost twice as much per event
   * (with its send() timestamps, 0.5 µs: bench/run.js, 'metrics on, maxInFlight 64').
   */
  drain () {
    this._undrained = 0
    const durations = this._native.takeDurations()
    const histogram = this._duration
    for (let i = 0; i < durations.length; i++) histogram.record(durations[i], NO_ATTRIBUTES)
  }
}

class ServerMetrics {
  constructor (meter) {
    let registry = serverRegistries.get(meter)
    if (!registry) {
      registry = { connections: { connected: 0, failed: 0 }, events: { acked: 0, refused: 0 }, actions: { acked: 0, failed: 0 } }
      const connections = meter.createObservableCounter('imt_gateway.server.connections', {
        unit: '{connection}', description: 'Connections, by outcome: connected, failed (ended before `connection`, as a failed TLS handshake).'
      })
      const events = meter.createObservableCounter('imt_gateway.server.events', {
        unit: '{event}', description: 'Events received, by outcome: acked, refused (by onEvent).'
      })
      const actions = meter.createObservableCounter('imt_gateway.server.actions', {
        unit: '{action}', description: 'Queued actions answered, by outcome: acked, failed (acknowledged with an error, or dropped at close).'
      })
      const attributes = {}
      for (const name of ['connections', 'events', 'actions']) {
        attributes[name] = Object.fromEntries(Object.keys(registry[name]).map((outcome) => [outcome, { outcome }]))
      }
      const instruments = { connections, events, actions }
      meter.addBatchObservableCallback((result) => {
        for (const name of ['connections', 'events', 'actions']) {
          for (const [outcome, value] of Object.entries(registry[name])) result.observe(instruments[name], value, attributes[name][outcome])
        }
      }, [connections, events, actions])
      serverRegistries.set(meter, registry)
    }
    this.connections = registry.connections
    this.events = registry.events
    this.actions = registry.actions
    // The ids of this server's peers that got `connection`: a `clientError` for any other (a
    // failed TLS handshake) is a failed connection.
    this.open = new Set()
  }

  connected (connection) {
    this.connections.connected++
    this.open.add(connection.id)
  }

  disconnected (connection) {
    this.open.delete(connection.id)
  }

  clientError (connection) {
    if (connection === null || !this.open.has(connection.id)) this.connections.failed++
  }
}

module.exports = { otel, meterOf, loggerOf, log, ClientMetrics, ServerMetrics, STATES }
