'use strict'

const { EventEmitter } = require('events')
const { NativeServer, optionDefaults } = require('./native')
const { Event } = require('./messages')
const { gatewayError } = require('./errors')
const fs = require('fs')
const { pemBuffer, pemPath, tokenUri, caList } = require('./tls-options')
const { newId } = require('./ids')
const { layout } = require('./notices')
const { meterOf, loggerOf, log, ServerMetrics } = require('./observe')

// The notices this reader reads, with their fields in order, checked at load against the
// native table (src/node/notice.rs), which numbers them. A batch is one flat array,
// `[kind, ...fields, kind, ...]`; `connection` is `{id, remoteAddress, remotePort, deviceName,
// subject}` (null for a clientError before one was made).
const { kinds: KINDS, widths: WIDTHS } = layout('server', {
  connection: ['connection'],
  hello: ['connection'],
  event: ['connection', 'id', 'type', 'payload', 'decision'],
  acknowledgement: ['connection', 'correlid', 'ticket', 'status', 'code', 'message'],
  discarded: ['ticket'],
  clientError: ['connection', 'code', 'message'],
  disconnect: ['connection'],
  close: []
})

// What an option left out is: the one table of defaults, src/defaults.rs.
const DEFAULTS = optionDefaults().server

// A duration option in milliseconds (0 for none), or the table's default when left out.
function millis (value, name) {
  if (value === undefined || value === null) return DEFAULTS[name]
  const number = Number(value)
  if (!Number.isInteger(number) || number < 0 || number > 0xffffffff) {
    throw gatewayError(`options.${name} must be a non-negative integer.`, 'ERR_INVALID_ARG_VALUE', RangeError)
  }
  return number
}

// What an `onEvent` handler returned, as the acknowledgement to send.
function verdictOf (result) {
  if (result === undefined || result === null || result === true) return null
  if (result === false) return { message: 'Event rejected.' }
  if (typeof result === 'object') {
    return {
      code: result.code === undefined || result.code === null ? undefined : String(result.code),
      message: String(result.message === undefined ? 'Event rejected.' : result.message)
    }
  }
  return { message: String(result) }
}

// The server's TLS options as given, each checked: PEM Buffers, or paths of files.
function tlsSources (options) {
  const source = (value, option) => {
    // A PKCS#11 URI: the native side knows it by its `pkcs11:` start (PEM never starts so).
    const uri = tokenUri(value, option)
    if (uri !== undefined) return Buffer.from(uri)
    const path = pemPath(value, option)
    return path !== undefined ? path : pemBuffer(value, option)
  }
  const sources = { key: source(options.key, 'key'), cert: source(options.cert, 'cert'), ca: caList(options.ca) }
  sources.files = [sources.key, sources.cert, ...(sources.ca || [])].some((item) => typeof item === 'string')
  return sources
}

// The PEM of each source, files read now; a file that cannot be read throws with the fs code
// (ENOENT, EACCES, ...) and names the option and the path.
function readTls (sources) {
  const read = (item, name) => {
    if (typeof item !== 'string') return item
    try {
      return fs.readFileSync(item)
    } catch (err) {
      throw gatewayError(`Cannot read ${name} (${item}): ${err.message}`, err.code || 'EIO')
    }
  }
  return {
    key: read(sources.key, 'options.key'),
    cert: read(sources.cert, 'options.cert'),
    ca: sources.ca === undefined ? undefined : sources.ca.map((item, i) => read(item, `options.ca[${i}]`))
  }
}

/**
 * The local gateway: the original's test server (`new Server().listen(cb)` on port 7777, plain
 * TCP, every event acknowledged and echoed back as an action), grown into a gateway for tests,
 * demos and development: TLS and mutual TLS, any port, per-event acknowledgement decisions,
 * actions queued for devices, and a list of connected devices.
 */
class Server extends EventEmitter {
  constructor (options = {}) {
    super()
    if (options === null || typeof options !== 'object') throw new TypeError('Options must be an object.')
    if (options.onEvent !== undefined && typeof options.onEvent !== 'function') {
      throw new TypeError('options.onEvent must be a function.')
    }
    this._port = options.port === undefined ? DEFAULTS.port : options.port
    this._host = options.host
    this._onEvent = options.onEvent
    this._actionCallbacks = new Map()
    this._listening = false
    this._closesStarted = 0
    this._closeNotices = 0
    this._closeCallbacks = new Map()
    // Graceful closes: how many were asked for, the last one a destroy() came after, and
    // whether one is under way.
    this._gracefulAsked = 0
    this._dropUpTo = 0
    this._gracefulRunning = false
    // Native calls run one after another, so close() right after listen() closes what it opened.
    this._queue = Promise.resolve()
    // Refused TLS material throws an Error with its code (EINVALIDKEY, EKEYMISMATCH, ...),
    // and so does a `ca` without the key and certificate that TLS needs: without them the
    // server would speak plain TCP and check no client at all.
    // `{ path }` options are read now (a file that cannot be read throws at once), again at
    // each listen(), and at setCredentials().
    this._tls = tlsSources(options)
    const { key, cert, ca } = readTls(this._tls)
    if (ca !== undefined && (key === undefined || cert === undefined)) {
      throw gatewayError('options.ca requires options.key and options.cert: client certificates are checked only over TLS.', key === undefined ? 'EINVALIDKEY' : 'EINVALIDCERT')
    }
    this._native = new NativeServer({
      key,
      cert,
      ca,
      echo: options.echo === undefined || options.echo === null ? DEFAULTS.echo : options.echo !== false,
      decideEvents: typeof options.onEvent === 'function',
      helloTimeout: millis(options.helloTimeout, 'helloTimeout'),
      idleTimeout: millis(options.idleTimeout, 'idleTimeout')
    })
    this._logger = loggerOf(options.logger)
    const meter = meterOf(options.meterProvider)
    // With a meter, events are counted here, so they cross into JavaScript.
    this._metrics = meter === null ? null : new ServerMetrics(meter)
    // Events cross into JavaScript only while someone listens for them (or decides them).
    this._native.setEventNotices(this._metrics !== null)
    this.on('newListener', (name) => { if (name === 'event') this._native.setEventNotices(true) })
    this.on('removeListener', (name) => {
      if (name === 'event' && this.listenerCount('event') === 0 && this._metrics === null) this._native.setEventNotices(false)
    })
  }

  /** listen([port], [host], [callback]) or listen({port, host}, [callback]). */
  listen (...args) {
    const callback = typeof args[args.length - 1] === 'function' ? args.pop() : undefined
    const { port, host } = this._address(args)
    if (callback) this.once('listening', callback)
    this._start(port, host).then(() => this.emit('listening'), (err) => this.emit('error', err))
    return this
  }

  /**
   * `listen(...)` awaited, with the same arguments but no callback: resolves with the server
   * once it listens (after `listening`), rejects with the error (`EADDRINUSE`, ...), which is
   * emitted as `error` too only if the server has an `error` listener.
   */
  listenAsync (...args) {
    let address
    try {
      address = this._address(args)
    } catch (err) {
      return Promise.reject(err)
    }
    return this._start(address.port, address.host).then(() => {
      this.emit('listening')
      return this
    }, (err) => {
      if (this.listenerCount('error') > 0) this.emit('error', err)
      throw err
    })
  }

  /**
   * `close()` awaited: resolves with the server once every connection is gone (after
   * `close`); rejects with `ERR_SERVER_NOT_RUNNING` if it was not listening, as `close(cb)`.
   */
  closeAsync () {
    return new Promise((resolve, reject) => this.close((err) => err ? reject(err) : resolve(this)))
  }

  // listen()'s `[port], [host]` or `{port, host}`, with the constructor's defaults.
  _address (args) {
    let [port, host] = args
    if (port !== null && typeof port === 'object') ({ port, host } = port)
    port = port === undefined || port === null ? this._port : Number(port)
    host = host === undefined || host === null ? this._host : host
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw gatewayError(`Port should be >= 0 and < 65536. Received ${port}.`, 'ERR_SOCKET_BAD_PORT', RangeError)
    }
    return { port, host }
  }

  /**
   * Replaces the server's TLS material (`key`, `cert`, and `ca`, which when left out stays as
   * it is; each a PEM string or Buffer or `{ path }`, read now). Checked at once: refused
   * material throws an Error with its code (EINVALIDKEY, EINVALIDCERT, EINVALIDCA,
   * EKEYMISMATCH, ENOENT, ...) and the old material stays in force. Connections accepted from
   * then on use it; those open keep theirs. Only for a server made with `key` and `cert`.
   */
  setCredentials (creds) {
    if (creds === null || typeof creds !== 'object') {
      throw gatewayError('setCredentials() expects an object with key and cert.', 'ERR_INVALID_ARG_TYPE', TypeError)
    }
    const sources = tlsSources(creds)
    if (sources.ca === undefined) sources.ca = this._tls.ca
    const { key, cert, ca } = readTls(sources)
    if (key === undefined || cert === undefined) {
      throw gatewayError('setCredentials() requires key and cert.', key === undefined ? 'EINVALIDKEY' : 'EINVALIDCERT', TypeError)
    }
    this._native.setTls(key, cert, ca)
    this._tls = sources
    return this
  }

  // Starts listening; resolves once it does, rejects with the reason it cannot. Material
  // given as files is read again first.
  _start (port, host) {
    if (this._tls.files) {
      try {
        const { key, cert, ca } = readTls(this._tls)
        this._native.setTls(key, cert, ca)
      } catch (err) {
        return Promise.reject(err)
      }
    }
    return this._run(() => this._native.listen(port, host === undefined ? null : String(host), (batch) => this._dispatch(batch)))
      .then((result) => {
        if (result.error) throw gatewayError(result.error.message, result.error.code)
        this._listening = true
        if (this._logger !== null) {
          const address = this.address()
          log(this._logger, 'info', { event: 'listening', address: address && address.address, port: address && address.port }, 'listening')
        }
      })
  }

  get listening () {
    return this._listening
  }

  /** `{address, family, port}` while listening, else null. */
  address () {
    return this._native.address() || null
  }

  /** Sends BYE (without a body) to every connected device and closes their connections. */
  kick () {
    this._native.kick()
    return this
  }

  /** Stops listening and says BYE to every connection; `callback` runs once all are gone. */
  close (callback) {
    return this._shutdown(true, callback, true)
  }

  /** Stops listening and drops every connection at once, without BYE. */
  destroy (callback) {
    return this._shutdown(false, callback, false)
  }

  // The native close resolves apart from the `close` notice, in either order: the callback
  // of the n-th close that stopped a listening server runs on the n-th `close` notice,
  // whichever of the two comes last.
  // destroy() does not wait behind a close() held up by its peers: it makes every close() asked
  // for before it drop the connections too (the one under way at once), then runs as usual.
  _shutdown (graceful, callback, reportNotRunning) {
    let operation = () => this._native.close(false)
    if (graceful) {
      const nth = ++this._gracefulAsked
      operation = () => {
        this._gracefulRunning = true
        return this._native.close(nth > this._dropUpTo).finally(() => { this._gracefulRunning = false })
      }
    } else {
      this._dropUpTo = this._gracefulAsked
      if (this._gracefulRunning) this._native.dropConnections()
    }
    this._run(operation).then((wasListening) => {
      if (!wasListening) {
        if (!callback) return
        if (reportNotRunning) callback(gatewayError('Server is not running.', 'ERR_SERVER_NOT_RUNNING'))
        // A destroy() after a close() that is still finishing calls back once that close() has,
        // so that its callback comes last, as the caller reads the order of the two calls.
        else this._afterClose(this._closesStarted, callback)
        return
      }
      const nth = ++this._closesStarted
      if (callback) this._afterClose(nth, callback)
    })
    return this
  }

  // Runs `callback` on the nth `close` notice, or now if that has come.
  _afterClose (nth, callback) {
    if (this._closeNotices >= nth) return callback()
    const waiting = this._closeCallbacks.get(nth)
    if (waiting) waiting.push(callback)
    else this._closeCallbacks.set(nth, [callback])
  }

  /** The connected peers: `{id, remoteAddress, remotePort, deviceName, subject}`. */
  connections () {
    return this._native.connections()
  }

  /**
   * Queues an action for the device whose HELLO named it `deviceName`: sent at once if it is
   * connected and drained, otherwise held and sent before its next DRAINED. `callback(err)`
   * runs when the device acknowledges it (`err` when it acked with an error).
   */
  queueAction (deviceName, action, callback) {
    if (typeof deviceName !== 'string') throw new TypeError('Device name expected.')
    if (action === null || typeof action !== 'object') throw new TypeError('Action expected.')
    if (typeof action.type !== 'string' || !action.type) throw new TypeError('Invalid action type.')
    if (callback !== undefined && typeof callback !== 'function') throw new TypeError('Invalid callback.')
    const id = action.id === undefined || action.id === null ? newId() : action.id
    const parameters = action.parameters === undefined ? null : action.parameters
    const ticket = this._native.queueAction(deviceName, id, action.type, parameters)
    if (callback) this._actionCallbacks.set(ticket, callback)
    return id
  }

  _run (operation) {
    const result = this._queue.then(operation)
    this._queue = result.catch(() => {})
    return result
  }

  _decide (decision, verdict) {
    if (this._metrics !== null) this._metrics.events[verdict ? 'refused' : 'acked']++
    if (verdict) this._native.decide(decision, verdict.code, verdict.message)
    else this._native.decide(decision)
  }

  _dispatch (batch) {
    for (let at = 0; at < batch.length;) {
      const kind = batch[at]
      const fields = at + 1
      at = fields + WIDTHS[kind]
      this._notice(kind, batch, fields)
    }
  }

  _notice (kind, batch, at) {
    switch (kind) {
      case KINDS.connection:
        if (this._metrics !== null) this._metrics.connected(batch[at])
        if (this._logger !== null) this._log('info', 'connection', batch[at])
        this.emit('connection', batch[at])
        break
      case KINDS.hello:
        this.emit('hello', batch[at])
        break
      case KINDS.disconnect:
        if (this._metrics !== null) this._metrics.disconnected(batch[at])
        if (this._logger !== null) this._log('info', 'disconnect', batch[at])
        this.emit('disconnect', batch[at])
        break
      case KINDS.event: {
        const connection = batch[at]
        const decision = batch[at + 4]
        const event = new Event(batch[at + 2], batch[at + 3], batch[at + 1])
        if (decision !== null) this._handle(decision, event, connection)
        else if (this._metrics !== null) this._metrics.events.acked++
        this.emit('event', event, connection)
        break
      }
      case KINDS.acknowledgement: {
        const status = batch[at + 3]
        const error = status === 0 ? null : gatewayError(batch[at + 5] || 'Action failed.', batch[at + 4])
        if (this._metrics !== null) this._metrics.actions[error ? 'failed' : 'acked']++
        this.emit('acknowledgement', { id: batch[at + 1], status, error }, batch[at])
        this._settleAction(batch[at + 2], error)
        break
      }
      case KINDS.discarded:
        if (this._metrics !== null) this._metrics.actions.failed++
        this._settleAction(batch[at], gatewayError('The server closed before the action was acknowledged.', 'ECLOSED'))
        break
      case KINDS.clientError:
        if (this._metrics !== null) this._metrics.clientError(batch[at])
        if (this._logger !== null) this._log('warn', 'clientError', batch[at], { code: batch[at + 1], message: batch[at + 2] })
        this.emit('clientError', gatewayError(batch[at + 2], batch[at + 1]), batch[at])
        break
      case KINDS.close: {
        this._listening = false
        if (this._logger !== null) log(this._logger, 'info', { event: 'close' }, 'close')
        const nth = ++this._closeNotices
        const callbacks = this._closeCallbacks.get(nth) || []
        this._closeCallbacks.delete(nth)
        this.emit('close')
        for (const callback of callbacks) callback()
        break
      }
    }
  }

  // A record about a connection: `{ event, connection: id, remoteAddress, deviceName, ...more }`.
  _log (level, event, connection, more) {
    const fields = { event }
    if (connection) {
      fields.connection = connection.id
      fields.remoteAddress = connection.remoteAddress
      fields.remotePort = connection.remotePort
      if (connection.deviceName !== undefined && connection.deviceName !== null) fields.deviceName = connection.deviceName
    }
    log(this._logger, level, Object.assign(fields, more), more && more.message ? more.message : event)
  }

  _handle (decision, event, connection) {
    let outcome
    try {
      outcome = this._onEvent(event, connection)
    } catch (err) {
      outcome = Promise.reject(err)
    }
    Promise.resolve(outcome).then(
      (result) => this._decide(decision, verdictOf(result)),
      (err) => this._decide(decision, verdictOf(err instanceof Error || (err && typeof err === 'object') ? err : { message: String(err) }))
    )
  }

  _settleAction (ticket, error) {
    if (ticket === undefined || ticket === null) return
    const callback = this._actionCallbacks.get(ticket)
    if (!callback) return
    this._actionCallbacks.delete(ticket)
    callback(error)
  }
}

module.exports = { Server }
