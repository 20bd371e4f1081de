'use strict'

const { EventEmitter } = require('events')
const os = require('os')
const { NativeClient, takePanicReports, optionDefaults } = require('./native')
const { layout } = require('./notices')
const { Event, Action } = require('./messages')
const { gatewayError } = require('./errors')
const { pemBuffer, pemPath, tokenUri, caList, CODES } = require('./tls-options')
// Diagnostics through the `debug` package, as 2.x's, under the same namespaces: DEBUG,
// `require('debug').enable()` at run time, `debug.log` and DEBUG_COLORS work as applications
// expect. Per-message paths check `debug.enabled` (a cached flag in `debug` 4) before formatting.
const createDebug = require('debug')
const { newId } = require('./ids')
const { sendEvent } = require('./encode')
const { meterOf, loggerOf, log, ClientMetrics } = require('./observe')

const debug = createDebug('imt:gateway:client')
const nativeDebug = createDebug('imt:gateway:native')
const outboxDebug = createDebug('imt:gateway:outbox')

// Logs what the native core kept of the internal errors (panics) it caught.
function reportPanics () {
  for (const report of takePanicReports()) nativeDebug('%s', report)
}

// What an option left out (undefined or null) is: the one table of defaults, src/defaults.rs.
const DEFAULTS = optionDefaults().client
const OUTBOX_DEFAULTS = optionDefaults().outbox
const SYNC_MODES = ['always', 'interval', 'none']

// The notices this reader reads, with their fields in order, checked at load against the
// native table (src/node/notice.rs), which numbers them.
const { kinds: KINDS, widths: WIDTHS } = layout('client', {
  connect: [],
  drain: [],
  action: ['id', 'type', 'payload', 'delivered'],
  shape: ['shape', 'type', 'keys'],
  shapedAction: ['id', 'shape', 'delivered', '...values'],
  acknowledgement: ['correlid', 'status', 'code', 'message'],
  done: ['seq'],
  failed: ['seq', 'code', 'message', 'refused'],
  reconnect: [],
  disconnect: [],
  error: ['code', 'message', 'proxyStatus', 'socksReply'],
  fatal: ['code', 'message'],
  idle: ['cycle'],
  recovered: ['code', 'message'],
  state: ['state', 'delay', 'failed']
})
const CONNECT = KINDS.connect
const DRAIN = KINDS.drain
const ACTION = KINDS.action
const SHAPE = KINDS.shape
const SHAPED_ACTION = KINDS.shapedAction
const ACKNOWLEDGEMENT = KINDS.acknowledgement
const DONE = KINDS.done
const FAILED = KINDS.failed
const RECONNECT = KINDS.reconnect
const DISCONNECT = KINDS.disconnect
const ERROR = KINDS.error
const FATAL = KINDS.fatal
const IDLE = KINDS.idle
const RECOVERED = KINDS.recovered
const STATE = KINDS.state

// A batch comes as the callback's arguments (the values one by one: nothing to build), or, when
// it has more values than a call should take (MAX_ARGUMENTS in src/node/client/mailbox.rs), as one
// array, its only argument. A batch's first value is always a kind, a number, so the two
// cannot be confused.
function batchOf (values) {
  return values.length === 1 && Array.isArray(values[0]) ? values[0] : values
}

// The callbacks of events not yet done, by seq. Seqs are handed out here, one per send(),
// and events are done in the order they were sent, so a sliding array serves where a Map
// spent its time growing and rehashing (7% of the client's CPU with 64 events in flight).
class Callbacks {
  constructor () {
    this._list = [] // _list[i] is the callback of seq _base + i, or undefined
    this._base = 1
    this._head = 0 // entries before it are all done
  }

  /** Names the next event: returns its seq, under which `callback` (or none) waits. */
  add (callback) {
    this._list.push(callback)
    return this._base + this._list.length - 1
  }

  /** The callback of `seq`, removed; undefined if it has none (or ran already). */
  take (seq) {
    const at = seq - this._base
    if (at < this._head || at >= this._list.length) return undefined
    const callback = this._list[at]
    this._list[at] = undefined
    if (at === this._head) this._advance()
    return callback
  }

  /** How many callbacks are waiting. */
  waiting () {
    let count = 0
    for (let at = this._head; at < this._list.length; at++) if (this._list[at] !== undefined) count++
    return count
  }

  /** Every callback still waiting, in order of send(); none is left afterwards. */
  drain () {
    const waiting = this._list.slice(this._head).filter((callback) => callback !== undefined)
    this._base += this._list.length
    this._list = []
    this._head = 0
    return waiting
  }

  _advance () {
    const list = this._list
    let head = this._head
    while (head < list.length && list[head] === undefined) head++
    if (head === list.length) {
      this._base += list.length
      this._list = []
      this._head = 0
    } else if (head >= 1024 && head * 2 >= list.length) {
      this._base += head
      this._list = list.slice(head)
      this._head = 0
    } else {
      this._head = head
    }
  }
}

// A boolean option: only `false` turns on off what is on by default, as in the original.
function flag (value, name) {
  if (value === undefined || value === null) return DEFAULTS[name]
  return DEFAULTS[name] ? value !== false : Boolean(value)
}

// A key or certificate for TLS: given, of a PEM type, not empty, and carrying the PEM label (as
// the original checked); otherwise the constructor throws with the option's code.
function pemOption (value, option, label, message) {
  // A PKCS#11 URI or `{ pkcs11 }`: the key (or certificate) stays in the token.
  const uri = tokenUri(value, option)
  if (uri !== undefined) return uri
  // `{ path }`: the file, read by the native side now and at every connection attempt.
  const path = pemPath(value, option)
  if (path !== undefined) return path
  const buffer = pemBuffer(value, option)
  if (buffer === undefined || !new RegExp(`-----BEGIN [A-Z0-9 ]*${label}-----`).test(buffer.toString('latin1'))) {
    throw gatewayError(message, CODES[option])
  }
  return buffer
}

// The TLS material of the constructor or of setCredentials(), as the native side takes it: PEM
// Buffers, or strings naming files. `ca` left out is undefined.
function credentials (options) {
  return {
    key: pemOption(options.key, 'key', 'PRIVATE KEY', 'Invalid private key.'),
    cert: pemOption(options.cert, 'cert', 'CERTIFICATE', 'Invalid certificate.'),
    ca: caList(options.ca)
  }
}

// The longest wait a timer takes (about 24.8 days); longer waits are taken in steps.
const MAX_TIMER = 0x7fffffff

function count (value, name, fallback = DEFAULTS[name]) {
  if (value === undefined || value === null) return fallback
  const number = Number(value)
  if (!Number.isInteger(number) || number < 0 || number > 0xffffffff) {
    throw gatewayError(`options.${name} must be a non-negative integer.`, 'ERR_INVALID_ARG_VALUE', RangeError)
  }
  return number
}

// `certificateWarning` in ms: any non-negative integer (months are more than 32 bits of ms).
function certificateWarning (value) {
  if (value === undefined || value === null) return DEFAULTS.certificateWarning
  const number = Number(value)
  if (!Number.isSafeInteger(number) || number < 0) {
    throw gatewayError('options.certificateWarning must be a non-negative integer (ms).', 'ERR_INVALID_ARG_VALUE', RangeError)
  }
  return number
}

// `options.outbox`, checked and completed from the defaults; undefined without one.
function outboxOptions (outbox) {
  if (outbox === undefined || outbox === null || outbox === false) return undefined
  if (typeof outbox !== 'object') {
    throw gatewayError('options.outbox must be an object with a path.', 'ERR_INVALID_ARG_TYPE', TypeError)
  }
  if (typeof outbox.path !== 'string' || outbox.path === '') {
    throw gatewayError('options.outbox.path must be a non-empty string (a directory).', 'ERR_INVALID_ARG_TYPE', TypeError)
  }
  const sync = outbox.sync === undefined || outbox.sync === null ? OUTBOX_DEFAULTS.sync : outbox.sync
  if (!SYNC_MODES.includes(sync)) {
    throw gatewayError(`options.outbox.sync must be 'always', 'interval' or 'none'. Received ${String(sync)}.`, 'ERR_INVALID_ARG_VALUE', RangeError)
  }
  const positive = (value, name, fallback, max) => {
    if (value === undefined || value === null) return fallback
    const number = Number(value)
    if (!Number.isInteger(number) || number < 1 || number > max) {
      throw gatewayError(`options.outbox.${name} must be an integer from 1 to ${max}.`, 'ERR_INVALID_ARG_VALUE', RangeError)
    }
    return number
  }
  return {
    path: outbox.path,
    sync,
    syncInterval: positive(outbox.syncInterval, 'syncInterval', OUTBOX_DEFAULTS.syncInterval, 0xffffffff),
    maxBytes: positive(outbox.maxBytes, 'maxBytes', OUTBOX_DEFAULTS.maxBytes, Number.MAX_SAFE_INTEGER),
    // Undocumented, for tests: the size at which a new segment file is started.
    segmentBytes: outbox.segmentBytes === undefined ? undefined : positive(outbox.segmentBytes, 'segmentBytes', undefined, Number.MAX_SAFE_INTEGER)
  }
}

// `proxy`, `servername` and `lookup`, checked for their types; the proxy URL itself is read by
// the native side, which refuses one it cannot use with ERR_INVALID_ARG_VALUE (its password
// left out of the message).
function routeOptions (options) {
  const { proxy, servername, lookup } = options
  const route = {}
  if (proxy === false) {
    route.direct = true
  } else if (typeof proxy === 'string') {
    route.proxy = proxy
  } else if (proxy !== undefined && proxy !== null) {
    throw gatewayError('options.proxy must be a URL (http://host:port or socks5://host:port) or false.', 'ERR_INVALID_ARG_TYPE', TypeError)
  }
  if (servername !== undefined && servername !== null) {
    if (typeof servername !== 'string' || servername === '') {
      throw gatewayError('options.servername must be a non-empty string.', 'ERR_INVALID_ARG_TYPE', TypeError)
    }
    route.servername = servername
  }
  if (lookup !== undefined && lookup !== null && typeof lookup !== 'function') {
    throw gatewayError('options.lookup must be a function, as dns.lookup.', 'ERR_INVALID_ARG_TYPE', TypeError)
  }
  return route
}

// What a lookup callback answered, as address strings: `[{ address, family }]` (all: true),
// or one address as dns.lookup gives it without `all`.
function addressList (addresses) {
  if (typeof addresses === 'string') return [addresses]
  if (!Array.isArray(addresses)) return []
  return addresses.map((entry) => String(typeof entry === 'object' && entry !== null ? entry.address : entry))
}

// What a getter of the bundle threw, which need not be an Error (`throw 42`).
function reason (thrown) {
  if (thrown instanceof Error) return thrown.message
  try {
    return String(thrown)
  } catch (_) {
    return Object.prototype.toString.call(thrown)
  }
}

// `client.certificate` from the native side's: names as objects, an attribute given twice as
// an array of its values (as Node's `tls.PeerCertificate`).
function namesOf (pairs) {
  const names = {}
  for (const [key, value] of pairs) {
    if (!(key in names)) names[key] = value
    else if (Array.isArray(names[key])) names[key].push(value)
    else names[key] = [names[key], value]
  }
  return names
}

function certificateOf (native) {
  return {
    subject: namesOf(native.subject),
    issuer: namesOf(native.issuer),
    validFrom: native.validFrom,
    validTo: native.validTo,
    fingerprint256: native.fingerprint256
  }
}

// Send validation, in the original's order after the callback check.
function invalidEvent (event) {
  if (!(event instanceof Event)) return new TypeError('Event expected.')
  if (typeof event.type !== 'string') return new Error('Invalid event type.')
  if (!event.type) return new Error('Event type not specified.')
  if (event.bundle !== null && event.bundle !== undefined && typeof event.bundle !== 'object') {
    return new Error('Invalid event bundle.')
  }
  return null
}

/**
 * A device's connection to the gateway, with the original's API: `connect()`, `send()`,
 * `close()`, and the events `connect`, `drain`/`drained`, `action`, `acknowledgement`,
 * `reconnect`, `disconnect` and `error`. The socket, TLS, the protocol and the queue of
 * events live in the native core; this class validates, keeps the send callbacks and turns
 * the core's batched notices into events.
 */
class Client extends EventEmitter {
  constructor (options) {
    super()
    if (options === null || typeof options !== 'object') throw new Error('Options expected.')
    const host = options.host === undefined || options.host === null ? DEFAULTS.host : String(options.host)
    const port = options.port === undefined || options.port === null ? DEFAULTS.port : Number(options.port)
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw gatewayError(`Port should be >= 0 and < 65536. Received ${options.port}.`, 'ERR_SOCKET_BAD_PORT', RangeError)
    }
    // The original's rule: plain TCP for exactly 'localhost', mutual TLS for every other host.
    const tls = host !== 'localhost'
    const { key, cert, ca } = tls ? credentials(options) : {}

    this._callbacks = new Callbacks()
    /**
     * What the client recovered from by itself (a connection error while reconnecting, an
     * undecodable frame, a token it ignored, `connectTimeout`, `ackTimeout`), counted by
     * code: never emitted as `error`, as in 2.x, and logged under DEBUG.
     */
    this.recovered = {}
    this._cycle = 0
    this._active = false
    this._wantRef = true
    // Callbacks a close() without a connection still holds the process for (see close()).
    this._closing = 0
    this.host = host
    this.port = port
    const reconnectDelay = count(options.reconnectDelay, 'reconnectDelay')
    this._certificateWarning = certificateWarning(options.certificateWarning)
    // The fingerprint of the certificate `certificateExpiring` was emitted for, and the timer
    // that emits it for the certificate in force while the client is active.
    this._warned = null
    this._warning = null
    // setCredentialsAsync() calls waiting for a connection with their material to drain.
    this._credentialWaiters = null
    const outbox = outboxOptions(options.outbox)
    const route = routeOptions(options)
    this._lookup = options.lookup || null
    // client.health(): the connection's state as the core last reported it (or as connect() and
    // close() set it at once), since when (ms since the epoch), and the last error.
    this._state = 'closed'
    this._since = Date.now()
    this._lastError = null
    this._reported = 'closed'
    this._now = 0
    this._logger = loggerOf(options.logger)
    const deviceName = os.hostname()
    const meter = meterOf(options.meterProvider)
    const self = new WeakRef(this)
    // The client as its batch callback reaches it. A client with work (from connect() until
    // the core reports it idle) is held here, strongly, since the native side holds the
    // callback: it keeps working, as Node keeps an open socket, even when the application kept
    // no reference to it. An idle client is reached only through `self`, so it is
    // garbage-collected like any object, and its native half with it. (A WeakRef's deref()
    // costs a runtime call and an entry in V8's list of objects kept for the job: a busy
    // client does not pay it per batch.)
    const reach = { active: null }
    this._reach = reach
    // Refused TLS material throws an Error with its code (EINVALIDKEY, EKEYMISMATCH, ...).
    this._native = new NativeClient({
      host,
      port,
      tls,
      key,
      cert,
      ca,
      deviceName,
      autoReconnect: flag(options.autoReconnect, 'autoReconnect'),
      maxReconnectAttempts: count(options.maxReconnectAttempts, 'maxReconnectAttempts'),
      maxInFlight: Math.max(1, count(options.maxInFlight, 'maxInFlight')),
      maxQueueSize: count(options.maxQueueSize, 'maxQueueSize'),
      reconnectDelay,
      // No default of its own: the reconnect delay, so no backoff.
      maxReconnectDelay: count(options.maxReconnectDelay, 'maxReconnectDelay', reconnectDelay),
      connectTimeout: count(options.connectTimeout, 'connectTimeout'),
      ackTimeout: count(options.ackTimeout, 'ackTimeout'),
      keepAlive: count(options.keepAlive, 'keepAlive'),
      // With metrics, the core times each answered event for the duration histogram.
      timeEvents: meter !== null,
      // Opened here: a locked outbox (EOUTBOXLOCKED) or an unusable directory throws now.
      outbox,
      ...route,
      // Called through a threadsafe function, never inside the driver's poll (see
      // src/node/client/lookup.rs); it holds the client only weakly.
      lookup: this._lookup === null
        ? undefined
        : (id, hostname) => {
            const client = self.deref()
            if (client) client._resolve(id, hostname)
          }
    }, (...values) => {
      const client = reach.active !== null ? reach.active : self.deref()
      if (client) client._dispatch(batchOf(values))
    })
    // See the listener methods below: a subclass may have added one already.
    if (this.listenerCount('acknowledgement') > 0) this._native.acknowledgements(true)
    // The two calls made per event and per action, as plain functions (see Calls in
    // src/node/client/calls.rs), made at the first send() or action: an idle client does not pay
    // for them.
    this._sendNative = null
    this._ackNative = null
    // The action shapes the native side has told (src/shapes.rs), by number.
    this._shapes = null
    // With an outbox: open from here until close() (without keepQueue), opened again by the
    // next connect() or send().
    this._outbox = outbox !== undefined
    this._outboxClosed = false
    if (this._outbox) this._restored()
    // Null without a meter: then each event pays one null check, nothing else.
    this._metrics = meter === null ? null : new ClientMetrics(meter, this, deviceName)
  }

  // Runs the `lookup` option for lookup `id` of the native side and hands back its answer
  // once: the addresses, or the error's code (ENOTFOUND when it has none) and message.
  _resolve (id, hostname) {
    let answered = false
    const answer = (err, addresses) => {
      if (answered) return
      answered = true
      if (err) {
        const code = err.code !== undefined && err.code !== null ? String(err.code) : 'ENOTFOUND'
        debug('lookup %s failed: %s (%s)', hostname, reason(err), code)
        this._native.lookupDone(id, code, reason(err), [])
        return
      }
      this._native.lookupDone(id, null, null, addressList(addresses))
    }
    try {
      this._lookup(hostname, { all: true, family: 0 }, answer)
    } catch (err) {
      answer(err)
    }
  }

  _makeCalls () {
    const { send, ack } = this._native.calls()
    this._sendNative = send
    this._ackNative = ack
  }

  // The outbox was just opened: `restored` on the next tick, so listeners added right after
  // `new Client()` or `connect()` hear it, before any acknowledgement of what it found.
  _restored () {
    const found = this._native.takeRestored()
    if (!found) return
    if (outboxDebug.enabled) {
      outboxDebug('opened %s: %d events to send first', found.path, found.events)
      for (const damage of found.damage) {
        outboxDebug('damage in %s at byte %d: %d bytes %s (%s)', damage.segment, damage.offset,
          damage.bytes, damage.truncated ? 'cut off' : 'left in place', damage.kind)
      }
    }
    process.nextTick(() => this.emit('restored', found))
  }

  // Opens the outbox again after close(); throws what opening it threw (EOUTBOXLOCKED, ...).
  _reopenOutbox () {
    if (this._native.reopenOutbox()) this._restored()
    this._outboxClosed = false
  }

  /** Starts connecting; a no-op while connected or connecting. Returns the client. */
  connect () {
    if (this._outboxClosed) this._reopenOutbox()
    this._cycle = (this._cycle + 1) >>> 0
    this._active = true
    this._reach.active = this
    debug('connect to %s:%d', this.host, this.port)
    if (this._state === 'closed') this._setState('connecting')
    if (this._wantRef) this._native.ref()
    this._native.connect(this._cycle)
    this._scheduleWarning()
    return this
  }

  /**
   * Closes the connection and stops reconnecting; `disconnect` follows if it was connected.
   * The callbacks of events not yet acknowledged get an error with code `ECLOSED`, unless
   * `{keepQueue: true}` keeps them queued for the next `connect()`.
   */
  close (options) {
    const keepQueue = Boolean(options && options.keepQueue)
    debug('close%s', keepQueue ? ' (keeping the queue)' : '')
    this._drained = false
    try {
      this._native.close(keepQueue)
    } catch (err) {
      // The outbox's last sync failed: its events are written, only perhaps not synced.
      outboxDebug('closing the outbox: %s (%s)', err.message, err.code)
    }
    if (this._outbox && !keepQueue) this._outboxClosed = true
    if (this._metrics !== null) this._metrics.drain()
    this._setState('closed')
    // A client with no connection keeps nothing alive, yet the callbacks of its queued events
    // are still to run (ECLOSED, from the native side): hold the process until they have.
    if (!keepQueue && !this._active && this._wantRef && this._closing === 0) {
      this._closing = this._callbacks.waiting()
      if (this._closing > 0) this._native.ref()
    }
    this._rejectConnects(gatewayError('The client was closed before it connected.', 'ECLOSED'))
    this._rejectCredentials(gatewayError('The client was closed before a connection with the new credentials drained.', 'ECLOSED'))
    if (this._warning) {
      clearTimeout(this._warning)
      this._warning = null
    }
    return this
  }

  /**
   * Queues `event`; events go out in order, one at a time by default, once the server has
   * drained. `callback(err)` runs exactly once: when the server acknowledged the event, or
   * with the reason it could not be delivered.
   */
  send (event, callback) {
    if (callback !== undefined && callback !== null && typeof callback !== 'function') {
      throw new Error('Invalid callback.')
    }
    const invalid = invalidEvent(event)
    if (invalid) {
      if (this._metrics !== null) this._metrics.events.failed++
      if (!callback) throw invalid
      process.nextTick(callback, invalid)
      return this
    }
    if (this._dead) {
      if (this._metrics !== null) this._metrics.events.failed++
      if (!callback) throw this._dead
      process.nextTick(callback, this._dead)
      return this
    }
    if (this._outboxClosed) {
      try {
        this._reopenOutbox()
      } catch (err) {
        if (!callback) throw err
        process.nextTick(callback, err)
        return this
      }
    }
    // Without an id, the native send makes one (see src/node/client/calls.rs).
    const id = event.id === null ? undefined : event.id
    const seq = this._callbacks.add(callback || undefined)
    let refused
    try {
      if (this._sendNative === null) this._makeCalls()
      // The id made, undefined (an id was given), or the Error with its code that refused the
      // event (IM491, EINVALIDBUNDLE, or the outbox's: EQUEUEFULL, ENOSPC, ...), which is then
      // not queued.
      refused = sendEvent(this._sendNative, seq, id, event.type, event.bundle === undefined ? null : event.bundle)
    } catch (err) {
      // What JavaScript threw while the bundle was read (a getter).
      refused = gatewayError(`Invalid event bundle: ${reason(err)}`, 'EINVALIDBUNDLE')
    }
    if (typeof refused === 'string') {
      event.id = refused
      return this
    }
    // A refused event has an id all the same, as every event send() was given.
    if (id === undefined) event.id = newId()
    if (refused !== undefined) {
      this._callbacks.take(seq)
      if (this._metrics !== null) this._metrics.events.failed++
      reportPanics()
      if (this._outbox && outboxDebug.enabled) outboxDebug('send refused: %s (%s)', refused.message, refused.code)
      if (!callback) throw refused
      process.nextTick(callback, refused)
    }
    return this
  }

  // The promise API: the methods above, awaited. It only adds waiters on the client's own
  // notices; the callback API and the events are the same with or without it.

  /**
   * Connects (as `connect()`) and resolves with the client at the first DRAINED after the call,
   * at once if it is connected and drained already. Rejects with the error that ends the
   * client's attempts: the ending error with `autoReconnect: false`, the last one when
   * `maxReconnectAttempts` is used up, `ECLOSED` when `close()` comes first. That error is
   * emitted as `error` too only if the client has an `error` listener.
   */
  connectAsync () {
    if (this._dead) return Promise.reject(this._dead)
    if (this._active && this._drained) return Promise.resolve(this)
    return new Promise((resolve, reject) => {
      if (!this._connectWaiters || this._connectWaiters.length === 0) {
        this._connectWaiters = []
        this._connectFailure = null
      }
      this._connectWaiters.push({ resolve, reject })
      if (!this._active) this.connect()
    })
  }

  /**
   * `send(event)`, awaited: resolves with the event (its `id` filled in) when the gateway
   * accepted it, rejects with the callback's error (the gateway's code, `ECLOSED`,
   * `EQUEUEFULL`, `EINVALIDBUNDLE`, ...).
   */
  sendAsync (event) {
    return new Promise((resolve, reject) => {
      this.send(event, (err) => err ? reject(err) : resolve(event))
    })
  }

  /**
   * `close(options)`, awaited: resolves with the client once it is fully closed, with
   * `disconnect` emitted if it was connected and no socket or timer left.
   */
  closeAsync (options) {
    return new Promise((resolve) => {
      if (!this._active) {
        this.close(options)
        resolve(this)
        return
      }
      if (!this._closeWaiters) this._closeWaiters = []
      this._closeWaiters.push(resolve)
      this.close(options)
    })
  }

  // An `error` while connectAsync() waits: with no `error` listener it is held to the end of
  // its batch, where the Idle that ends the attempts (if it came) turns it into the rejection;
  // otherwise it is emitted then, as it would have been.
  _holdError (err) {
    if (!this._connectWaiters || this._connectWaiters.length === 0) return false
    this._connectFailure = err
    if (this.listenerCount('error') > 0) return false
    if (!this._heldErrors) this._heldErrors = []
    this._heldErrors.push(err)
    return true
  }

  _emitHeldErrors () {
    const held = this._heldErrors
    this._heldErrors = null
    let thrown = null
    for (const err of held) {
      try {
        this.emit('error', err)
      } catch (error) {
        if (!thrown) thrown = { error }
      }
    }
    if (thrown) throw thrown.error
  }

  _resolveConnects () {
    const waiters = this._connectWaiters
    if (!waiters || waiters.length === 0) return
    this._connectWaiters = []
    this._connectFailure = null
    for (const waiter of waiters) waiter.resolve(this)
  }

  _rejectConnects (err) {
    const waiters = this._connectWaiters
    if (!waiters || waiters.length === 0) return
    this._connectWaiters = []
    this._connectFailure = null
    for (const waiter of waiters) waiter.reject(err)
  }

  // The client went idle: no attempt is left, so connectAsync() waiters fail (with the error
  // that ended the attempts, which is then not emitted) and closeAsync() waiters are done.
  _settleIdle () {
    if (this._connectWaiters && this._connectWaiters.length) {
      const err = this._connectFailure ||
        gatewayError('The connection ended before the gateway drained.', 'ECONNRESET')
      if (this._heldErrors) this._heldErrors = this._heldErrors.filter((held) => held !== err)
      if (this._heldErrors && this._heldErrors.length === 0) this._heldErrors = null
      this._rejectConnects(err)
    }
    const closing = this._closeWaiters
    if (closing && closing.length) {
      this._closeWaiters = []
      for (const resolve of closing) resolve(this)
    }
  }

  /**
   * Where the client is, cheaply enough for a health endpoint called on every request: one
   * native call, no allocation but the object returned. `state` is the connection's
   * (`'connecting'`, `'connected'`, `'drained'`, `'backoff'` or `'closed'`), `since` when it
   * entered it and `lastError.at` when that error came (ms since the epoch, as `Date.now()`),
   * `oldestQueuedAge` how long (ms) the oldest event not yet acknowledged has waited (0 for
   * none). See `ClientHealth` in index.d.ts and docs/client.md.
   */
  health () {
    const native = this._native.health()
    const expiresAt = native.certificateExpiresAt
    return {
      state: this._state,
      since: this._since,
      lastError: this._lastError,
      reconnects: native.reconnects,
      queued: native.queued,
      inFlight: native.inFlight,
      oldestQueuedAge: native.oldestQueuedAge,
      outbox: this._outbox ? { events: native.outboxEvents, bytes: native.outboxBytes } : null,
      certificateExpiresIn: expiresAt === null ? null : expiresAt - Date.now()
    }
  }

  // The state health() reports, from the core's `state` notices (and at once from connect()
  // and close()); the core's own transitions count connections and go to the logger.
  _setState (state) {
    if (state === this._state) return
    this._state = state
    this._since = Date.now()
  }

  _stateNotice (state, delay, failed) {
    const previous = this._reported
    this._reported = state
    this._setState(state)
    const metrics = this._metrics
    if (metrics !== null) {
      if (failed) metrics.connections.failed++
      else if (state === 'connected' || (state === 'drained' && previous === 'connecting')) metrics.connections.connected++
    }
    const logger = this._logger
    if (logger === null) return
    const fields = { event: state, host: this.host, port: this.port }
    if (state === 'backoff') {
      fields.delay = delay
      fields.reconnects = this._native.health().reconnects
      log(logger, 'warn', fields, `reconnecting in ${Math.round(delay)} ms`)
    } else if (state === 'connecting') {
      log(logger, 'debug', fields, 'connecting')
    } else {
      if (failed) fields.failed = true
      log(logger, 'info', fields, state)
    }
  }

  // An error, emitted or recovered from: health()'s lastError, and the logger's record.
  _noteError (code, message, recovered) {
    this._lastError = { code, message, at: Date.now() }
    if (this._logger !== null) {
      log(this._logger, recovered ? 'warn' : 'error', { event: 'error', code, message, recovered, host: this.host, port: this.port }, message)
    }
  }

  /**
   * The client's counters, kept by the native core and read in one call: what is queued and in
   * flight now, totals of events, actions, reconnects and bytes since `new Client()`, whether
   * it is connected and drained, and the last event's round trip in ms (null before the first).
   * A fresh plain object each time; see `ClientStats` in index.d.ts and docs/client.md.
   */
  stats () {
    const stats = this._native.stats()
    const certificate = this._native.certificate()
    stats.certificateExpiresIn = certificate ? certificate.expiresAt - Date.now() : null
    return this._outbox ? Object.assign(stats, this._native.outboxStats()) : stats
  }

  /**
   * The device certificate in force (the one the next or current TLS handshake presents):
   * `{ subject, issuer, validFrom, validTo, fingerprint256 }` as Node's `tls.PeerCertificate`
   * names them, or null without TLS. A certificate read from a file is the one read at the
   * latest connection attempt (or at `new Client()` / `setCredentials()`).
   */
  get certificate () {
    const native = this._native.certificate()
    return native ? certificateOf(native) : null
  }

  /**
   * Replaces the TLS material (`key`, `cert`, and `ca`, which when left out stays as it is;
   * each a PEM string or Buffer or `{ path }`). Checked at once: refused material throws an
   * Error with its code (EINVALIDKEY, EINVALIDCERT, EINVALIDCA, EKEYMISMATCH, ENOENT, ...) and
   * the old material stays in force. The new material is used from the next TLS handshake;
   * with `{ reconnect: true }` the connection in hand is closed gracefully and a new one opened
   * at once (events in flight are sent again, as after any reconnect: nothing is lost).
   */
  setCredentials (creds, options) {
    if (creds === null || typeof creds !== 'object') {
      throw gatewayError('setCredentials() expects an object with key and cert.', 'ERR_INVALID_ARG_TYPE', TypeError)
    }
    const { key, cert, ca } = credentials(creds)
    const reconnect = Boolean(options && options.reconnect)
    this._credentials = this._native.setCredentials(key, cert, ca, reconnect && this._active)
    debug('credentials replaced (%d)%s', this._credentials, reconnect ? ', reconnecting' : '')
    this._scheduleWarning()
    return this
  }

  /**
   * `setCredentials(creds, { reconnect: true })`, awaited: resolves with the client once a
   * connection using the new material has been drained by the gateway (`drained`); rejects
   * with what setCredentials() threw, or when the client closes or gives up first. Waits for
   * `connect()` when the client is not connected.
   */
  setCredentialsAsync (creds, options) {
    return new Promise((resolve, reject) => {
      this.setCredentials(creds, Object.assign({ reconnect: true }, options))
      if (!this._credentialWaiters) this._credentialWaiters = []
      this._credentialWaiters.push({ generation: this._credentials, resolve, reject })
    })
  }

  // A connection drained: setCredentialsAsync() calls whose material it used are done.
  _credentialsDrained () {
    const waiters = this._credentialWaiters
    if (!waiters) return
    const connected = this._native.connectedCredentials()
    const done = waiters.filter((waiter) => waiter.generation <= connected)
    if (done.length === 0) return
    this._credentialWaiters = waiters.filter((waiter) => waiter.generation > connected)
    if (this._credentialWaiters.length === 0) this._credentialWaiters = null
    for (const waiter of done) waiter.resolve(this)
  }

  _rejectCredentials (err) {
    const waiters = this._credentialWaiters
    if (!waiters) return
    this._credentialWaiters = null
    for (const waiter of waiters) waiter.reject(err)
  }

  // `certificateExpiring` for the certificate in force: now if it is inside the warning
  // (once per certificate), else by a timer (unreferenced) while the client is active.
  _scheduleWarning () {
    if (this._warning) {
      clearTimeout(this._warning)
      this._warning = null
    }
    if (!this._active) return
    const native = this._native.certificate()
    if (!native) return
    const left = native.expiresAt - this._certificateWarning - Date.now()
    if (left <= 0) {
      if (this._warned === native.fingerprint256) return
      this._warned = native.fingerprint256
      debug('certificate expiring: %s', native.validTo)
      const certificate = certificateOf(native)
      process.nextTick(() => this.emit('certificateExpiring', certificate))
      return
    }
    this._warning = setTimeout(() => {
      this._warning = null
      this._scheduleWarning()
    }, Math.min(left, MAX_TIMER))
    this._warning.unref()
  }

  /** Keeps the Node process alive while the client is connected or reconnecting (default). */
  ref () {
    this._wantRef = true
    if (this._active) this._native.ref()
    return this
  }

  /** Lets the Node process exit even while the client is connected, as `socket.unref()`. */
  unref () {
    this._wantRef = false
    this._native.unref()
    return this
  }

  // A batch is one flat list, `[kind, ...fields, kind, ...]` (lib/notices.js).
  _dispatch (batch) {
    let thrown = null
    for (let at = 0; at < batch.length;) {
      const kind = batch[at]
      const fields = at + 1
      at = fields + WIDTHS[kind]
      // A shaped action's values follow its fields, one per key of its shape.
      const shape = kind === SHAPED_ACTION ? this._shapes[batch[fields + 1]] : null
      if (shape !== null) at += shape.keys.length
      try {
        // The notices of every event and action first, each in a small function of its own:
        // the rest is rare, and JavaScript compiles the hot path alone.
        if (kind === DONE) this._done(batch[fields], null, 'acked')
        else if (shape !== null) this._shapedAction(shape, batch, fields)
        else if (kind === ACTION) this._action(batch[fields], batch[fields + 1], batch[fields + 2], batch[fields + 3])
        else this._notice(kind, batch, fields)
      } catch (err) {
        // A listener or callback threw: finish the batch so no callback is lost, then let the
        // exception surface as Node would have surfaced it.
        if (!thrown) thrown = { err }
      }
    }
    if (this._heldErrors) {
      try {
        this._emitHeldErrors()
      } catch (err) {
        if (!thrown) thrown = { err }
      }
    }
    if (thrown) throw thrown.err
  }

  // No socket, no attempt, no timer: stop keeping the process alive for this client.
  _idle () {
    this._setState('closed')
    this._active = false
    this._drained = false
    this._reach.active = null
    this._native.unref()
    if (this._warning) {
      clearTimeout(this._warning)
      this._warning = null
    }
    if (this._credentialWaiters) {
      this._rejectCredentials(this._connectFailure ||
        gatewayError('The client stopped before a connection with the new credentials drained.', 'ECONNRESET'))
    }
    this._settleIdle()
  }

  // The core stopped after an internal error (a bug, caught before it could crash Node): every
  // waiting callback gets that error and the application hears of it once.
  _stopped (code, message) {
    reportPanics()
    this._dead = gatewayError(message, code)
    let thrown = null
    const callbacks = this._callbacks.drain()
    if (this._metrics !== null) this._metrics.events.failed += callbacks.length
    for (const callback of callbacks) {
      try {
        callback(gatewayError(message, code))
      } catch (err) {
        if (!thrown) thrown = { err }
      }
    }
    try {
      this._error(code, message)
    } catch (err) {
      if (!thrown) thrown = { err }
    }
    this._idle()
    if (thrown) throw thrown.err
  }

  // `proxyStatus` and `socksReply`: what a refusing proxy answered (EPROXY), else null.
  _error (code, message, proxyStatus = null, socksReply = null) {
    const err = gatewayError(message, code)
    if (proxyStatus !== null) err.proxyStatus = proxyStatus
    if (socksReply !== null) err.socksReply = socksReply
    debug('error: %s (%s)', err.message, err.code)
    this._noteError(err.code, err.message, false)
    this._drained = false
    if (this._holdError(err)) return
    this.emit('error', err)
  }

  _recovered (code, message) {
    this.recovered[code] = (this.recovered[code] || 0) + 1
    if (debug.enabled) debug('recovered: %s (%s)', message, code)
    this._noteError(code, message, true)
  }

  _done (seq, err, outcome) {
    if (this._metrics !== null) this._metrics.done(outcome)
    const callback = this._callbacks.take(seq)
    if (err && debug.enabled) debug('event %d failed: %s (%s)', seq, err.message, err.code)
    if (callback && this._closing > 0 && --this._closing === 0 && !this._active) this._native.unref()
    if (callback) callback(err)
  }

  // Every kind but `done` and `action`, which `_dispatch` reads itself.
  _notice (kind, batch, at) {
    switch (kind) {
      case SHAPE:
        // Told once, before the first action of the shape (src/shapes.rs).
        if (this._shapes === null) this._shapes = []
        this._shapes[batch[at]] = { type: batch[at + 1], keys: batch[at + 2] }
        break
      case ACKNOWLEDGEMENT: {
        if (this.listenerCount('acknowledgement') === 0) {
          // The last listener went: the native side stops making these until one is added.
          this._native.acknowledgements(false)
          break
        }
        const body = { correlid: batch[at], status: batch[at + 1] }
        const code = batch[at + 2]
        const message = batch[at + 3]
        if (message !== undefined) {
          body.error = { message }
          if (code !== undefined) body.error.code = code
        }
        this.emit('acknowledgement', body)
        break
      }
      case FAILED:
        this._done(batch[at], gatewayError(batch[at + 2], batch[at + 1]), batch[at + 3] ? 'refused' : 'failed')
        break
      case CONNECT:
        debug('connected')
        this.emit('connect')
        break
      case DRAIN:
        debug('drained')
        this._drained = true
        this.emit('drain')
        this.emit('drained')
        this._resolveConnects()
        this._credentialsDrained()
        this._scheduleWarning()
        break
      case RECONNECT:
        debug('reconnecting')
        this._drained = false
        this.emit('reconnect')
        break
      case DISCONNECT:
        debug('disconnected')
        this._drained = false
        this.emit('disconnect')
        break
      case ERROR:
        this._error(batch[at], batch[at + 1], batch[at + 2], batch[at + 3])
        break
      case FATAL:
        this._stopped(batch[at], batch[at + 1])
        break
      case RECOVERED:
        this._recovered(batch[at], batch[at + 1])
        break
      case IDLE:
        if (batch[at] === this._cycle) this._idle()
        break
      case STATE:
        this._stateNotice(batch[at], batch[at + 1], batch[at + 2])
        break
    }
  }

  // An action whose parameters are an object of a shape told before: the object is built
  // here, each key set in the shape's order, as the native side sets them for any other
  // object (and msgpack-lite did): `parameters[key] = value`.
  _shapedAction (shape, batch, at) {
    const keys = shape.keys
    const parameters = {}
    for (let i = 0, from = at + 3; i < keys.length; i++) parameters[keys[i]] = batch[from + i]
    this._action(batch[at], shape.type, parameters, batch[at + 2])
  }

  // `delivered` names the id as the server sent it when the application could change the id
  // object (a Buffer, an array, an object, a Date), else it is null and the id, a primitive,
  // names itself: the acknowledgement answers the action delivered, whatever became of
  // `action.id` (docs/PROTOCOL.md section 4.5).
  _action (id, type, payload, delivered) {
    if (this._ackNative === null) this._makeCalls()
    const action = new Action(id, type, payload)
    const named = delivered === null ? id : delivered
    let acked = false
    const ack = (err) => {
      if (acked) return
      acked = true
      if (this._metrics !== null) this._metrics.actions[err === undefined || err === null ? 'acked' : 'failed']++
      if (err === undefined || err === null) return this._ackNative(named)
      const message = err instanceof Error || (typeof err === 'object' && err.message !== undefined) ? String(err.message) : String(err)
      const code = typeof err === 'object' && err.code !== undefined && err.code !== null ? String(err.code) : undefined
      this._ackNative(named, code, message)
    }
    if (debug.enabled) debug('action %s %s', action.id, action.type)
    this.emit('action', action, ack)
  }
}

// An `acknowledgement` notice costs a string and an object per event: the native side makes
// them only while someone listens. Every way of adding a listener turns them on (`once` and
// `prependOnceListener` add through these too); a notice that finds no listener turns them off.
for (const name of ['on', 'addListener', 'prependListener', 'once', 'prependOnceListener']) {
  const add = EventEmitter.prototype[name]
  Object.defineProperty(Client.prototype, name, {
    configurable: true,
    writable: true,
    value: {
      [name] (event, listener) {
        const result = add.call(this, event, listener)
        if (event === 'acknowledgement' && this._native !== undefined) this._native.acknowledgements(true)
        return result
      }
    }[name]
  })
}

module.exports = { Client, Event, Action }
