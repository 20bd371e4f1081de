// Type definitions for imt-gateway. Every export carries a doc comment: `npm run docs` (TypeDoc,
// warnings as errors) builds the API reference in docs/api/ from them.

/**
 * The client for the Integromat / Make gateway (`Client`), its messages (`Event`, `Action`) and
 * the bundled local gateway (`Server`) for tests, demos and development. Throwaway certificates
 * for tests are in `imt-gateway/testing`.
 * @module imt-gateway
 */

import { EventEmitter } from 'events'

/** Listener signatures by event name: what a typed emitter's event map must look like. */
export type EventSignatures<Events> = { [E in keyof Events]: (...args: any[]) => void }

/** The event names of an event map: its string and symbol keys. */
export type EventName<Events> = keyof Events & (string | symbol)

/**
 * The events every Node `EventEmitter` emits on its own, whatever it is: `newListener` before a
 * listener is added and `removeListener` after one is removed.
 */
export interface EmitterEvents {
  /** Before `listener` is added for `event`. */
  newListener: (event: string | symbol, listener: (...args: any[]) => void) => void
  /** After `listener` was removed from `event`. */
  removeListener: (event: string | symbol, listener: (...args: any[]) => void) => void
}

/**
 * A Node `EventEmitter` typed by one event map (`ClientEvents`, `ServerEvents`): every method
 * that takes an event name takes only the map's names, with the listener (or the `emit`
 * arguments) the map gives for that name. A type only: at run time `Client` and `Server` are
 * plain `EventEmitter`s.
 */
declare class TypedEventEmitter<Events extends EventSignatures<Events>> extends EventEmitter {
  on<E extends EventName<Events>> (event: E, listener: Events[E]): this
  once<E extends EventName<Events>> (event: E, listener: Events[E]): this
  addListener<E extends EventName<Events>> (event: E, listener: Events[E]): this
  prependListener<E extends EventName<Events>> (event: E, listener: Events[E]): this
  prependOnceListener<E extends EventName<Events>> (event: E, listener: Events[E]): this
  off<E extends EventName<Events>> (event: E, listener: Events[E]): this
  removeListener<E extends EventName<Events>> (event: E, listener: Events[E]): this
  removeAllListeners (event?: EventName<Events>): this
  emit<E extends EventName<Events>> (event: E, ...args: Parameters<Events[E]>): boolean
  listeners<E extends EventName<Events>> (event: E): Array<Events[E]>
  listenerCount<E extends EventName<Events>> (event: E, listener?: Events[E]): number
}

export type { TypedEventEmitter }

/**
 * A value as the gateway carries it, written as msgpack-lite writes it: Buffers as bin, typed
 * arrays, DataView, ArrayBuffer, boxed primitives, RegExp, Date and Errors as their extension
 * types (read back as the same classes). A BigInt fails the send.
 */
export type GatewayValue =
  | null
  | undefined
  | boolean
  | number
  | string
  | Buffer
  | Date
  | ArrayBufferView
  | ArrayBuffer
  | RegExp
  | Error
  | Number
  | String
  | Boolean
  | GatewayValue[]
  | { [key: string]: GatewayValue }

/** An `Error` carrying a stable `code`. */
export interface GatewayError extends Error {
  /**
   * The stable code: a socket's (`ECONNREFUSED`, `ETIMEDOUT`, ...), a TLS failure's
   * (`CERT_HAS_EXPIRED`, `ETLSREJECTED`, ...), the gateway's own, or this package's (`ECLOSED`,
   * `EQUEUEFULL`, `EINVALIDBUNDLE`, `IM491`, `EOUTBOXLOCKED`, ...); see docs/PROTOCOL.md
   * section 6.3. Only the original's validation errors of `send()` (`Event expected.`, ...) have none.
   */
  code?: string
  /** On `EPROXY`, when an HTTP proxy refused `CONNECT`: its status (407: the credentials). */
  proxyStatus?: number
  /**
   * On `EPROXY`, when a SOCKS5 proxy refused the connection: its reply code (RFC 1928 section
   * 6; 2: not allowed by its rules, 5: refused by the gateway's host).
   */
  socksReply?: number
}

/** A message from the device to the gateway, sent with `client.send()`. */
export class Event {
  /**
   * Makes an event to `send()`.
   * @param type The event's type, a non-empty string (`send()` refuses an empty one).
   * @param bundle Its data; `null` when left out.
   * @param id Its id; left out, `send()` fills in a random one.
   */
  constructor (type: string, bundle?: Record<string, GatewayValue> | null, id?: string | number | null)
  /** The event's type. */
  type: string
  /** The event's data, `null` when it has none. */
  bundle: Record<string, GatewayValue> | null
  /**
   * The event's id: `null` until `send()` gives it a random one. An event sent again after a
   * reconnect keeps its id, so the gateway can deduplicate by it.
   */
  id: string | number | null
}

/** A message from the gateway to the device, received as the client's `action` event. */
export class Action {
  /**
   * Makes an action, as the client does for each one the gateway sends.
   * @param id The action's id.
   * @param type The action's type.
   * @param parameters Its data.
   */
  constructor (id: string | number, type: string, parameters: GatewayValue)
  /** The action's id, which its acknowledgement names. */
  id: string | number
  /** The action's type. */
  type: string
  /** The action's data. */
  parameters: GatewayValue
}

/** PEM text or bytes. */
export type Pem = string | Buffer

/**
 * A PEM file: the Client reads it at every connection attempt (so a certificate renewed on disk
 * is used at the next connection), the Server at construction, at each `listen()` and at
 * `setCredentials()`. One that cannot be read throws at construction (`ENOENT`, `EACCES`, ...,
 * naming the option and the path); later, the Client's attempt fails with that code.
 */
export interface PemFile {
  /** The file's path. */
  path: string
}

/** PEM text or bytes, or a file holding it. */
export type PemSource = Pem | PemFile

/**
 * A private key (or certificate) held by a hardware token (an HSM, a TPM through tpm2-pkcs11, a
 * secure element, SoftHSM), reached through its PKCS#11 module: the handshake's signature is
 * made by the token, and the key never enters the process. The same as the URI
 * `pkcs11:token=...;object=...;type=private?module-path=...&pin-value=...` (RFC 7512), which
 * `key` and `cert` also take as a string. Errors: `EPKCS11MODULE`, `EPKCS11TOKEN`,
 * `EPKCS11PIN`, `EPKCS11PINLOCKED`, `EPKCS11OBJECT`, `EPKCS11KEYTYPE`, `EPKCS11URI`.
 */
export interface Pkcs11Key {
  /** The module, the token, the object and the PIN. */
  pkcs11: {
    /** The module's path (`/usr/lib/softhsm/libsofthsm2.so`, a `.dylib`, a `.dll`), loaded at run time. */
    module: string
    /** The token's label; or `slot`. */
    token?: string
    /** The slot's id; or `token`. */
    slot?: number
    /** The object's label; or `id`. */
    object?: string
    /** The object's `CKA_ID`, hex or bytes; or `object`. */
    id?: string | Uint8Array
    /** The user PIN, when the token asks for one. */
    pin?: string
  }
}

/** A private key: PEM (text, bytes or a file), or a key in a hardware token (a `pkcs11:` URI string, or {@link Pkcs11Key}). */
export type KeySource = PemSource | Pkcs11Key

/**
 * TLS material for `setCredentials()`: `key` and `cert` are required; `ca` left out keeps the
 * trust anchors in force.
 */
export interface Credentials {
  /** Private key: PEM, a file, or a key in a token (a `pkcs11:` URI, or {@link Pkcs11Key}). */
  key: KeySource
  /** Certificate: PEM, or a file. */
  cert: PemSource
  /** Trust anchors: PEM, a file, or several. */
  ca?: PemSource | PemSource[] | CaPair
}

/** Options of `client.setCredentials()`. */
export interface SetCredentialsOptions {
  /**
   * Close the connection in hand gracefully and connect again at once with the new material
   * (events in flight are sent again on the new connection, as after any reconnect); without it,
   * the material is used from the next handshake.
   */
  reconnect?: boolean
}

/**
 * The device certificate in force (`client.certificate`, `certificateExpiring`), named and
 * formatted as Node's `tls.PeerCertificate`.
 */
export interface ClientCertificate {
  /** Subject attributes by OpenSSL short name (`{ CN: 'device-1', O: '...' }`); a repeated one is an array. */
  subject: Record<string, string | string[]>
  /** Issuer attributes, as `subject`. */
  issuer: Record<string, string | string[]>
  /** Start of validity, as `'Jan  1 00:00:00 2026 GMT'`. */
  validFrom: string
  /** End of validity, as `'Jan  1 00:00:00 2027 GMT'`. */
  validTo: string
  /** SHA-256 of the certificate's DER, as `'AA:BB:...'`. */
  fingerprint256: string
}

/**
 * Options of `new Server()`. Each `@default` is the native table's (src/defaults.rs), checked
 * by `__test__/defaults.test.js`.
 */
export interface ServerOptions {
  /**
   * Default port for `listen()`.
   * @default 7777
   */
  port?: number
  /** Default host for `listen()`; all interfaces. */
  host?: string
  /**
   * Server private key, PEM: with `key` and `cert`, the server speaks TLS. Bad material throws
   * `EINVALIDKEY`; a key that does not match `cert` throws `EKEYMISMATCH`. `{ path }`: a file,
   * read now, at each `listen()` and at `setCredentials()`. A `pkcs11:` URI or
   * {@link Pkcs11Key}: a key in a hardware token, which signs the handshakes (`EPKCS11*` codes).
   */
  key?: KeySource
  /** Server certificate, PEM or `{ path }` (with `key`); bad material throws `EINVALIDCERT`. */
  cert?: PemSource
  /**
   * Trust anchors for client certificates: with `ca`, clients must present one (mutual TLS).
   * Requires `key` and `cert`; one that names no certificate (`[]`, `{}`, a wrong type) throws
   * `EINVALIDCA`. Files (`{ path }`) as for `key`.
   */
  ca?: PemSource | PemSource[] | CaPair
  /**
   * Echo every accepted event back to its device as an action.
   * @default true
   */
  echo?: boolean
  /**
   * Milliseconds a connected peer (past the TLS handshake) may take to say HELLO; then it gets
   * `BYE {error: {code: 'ETIMEDOUT'}}`, is disconnected and reported as `clientError`. 0 for
   * no limit.
   * @default 10000
   */
  helloTimeout?: number
  /**
   * Milliseconds a welcomed peer may send nothing; then it gets `BYE {error: {code:
   * 'ETIMEDOUT'}}`, is disconnected and reported as `clientError`. The protocol has no
   * heartbeat, so a quiet device sends nothing at all: 0, the default, is no limit.
   * @default 0
   */
  idleTimeout?: number
  /**
   * Decides each event's acknowledgement: return nothing (accept), or `{code, message}`, an
   * `Error`, or `false` (reject), or a Promise of one of those; a throw rejects.
   */
  onEvent?: (event: Event, connection: Connection) => unknown
  /**
   * The OpenTelemetry MeterProvider for the `imt_gateway.server.*` instruments (connections,
   * events, actions; docs/server-and-testing.md); the global one of `@opentelemetry/api` when
   * left out. With one, every event crosses into JavaScript to be counted.
   */
  meterProvider?: MeterProviderLike
  /** Structured records of listening, connections, client errors and close (see {@link Logger}). */
  logger?: Logger
}

/** The original's two-part form of `ca`: a root and an intermediate certificate. */
export interface CaPair {
  /** The root certificate, PEM. */
  root?: Pem
  /** An intermediate certificate, PEM. */
  intermediate?: Pem
}

/** A peer connected to a `Server`, as its events and `connections()` describe it. */
export interface Connection {
  /** The connection's number, unique within the server. */
  id: number
  /** The peer's IP address. */
  remoteAddress: string
  /** The peer's port. */
  remotePort: number
  /** `metadata.device_name` from the device's HELLO. */
  deviceName?: string
  /** Subject of the client certificate, under mutual TLS. */
  subject?: string
}

/** Where a `Server` listens, as `net.Server#address()` says it. */
export interface AddressInfo {
  /** The IP address. */
  address: string
  /** `'IPv4'` or `'IPv6'`. */
  family: string
  /** The port (the one picked when `listen(0)` was asked). */
  port: number
}

/** A device's acknowledgement of an action, as the server's `acknowledgement` event gives it. */
export interface ActionAcknowledgement {
  /** The action's id. */
  id: string | number
  /** 0 when the device acknowledged it as done, else non-zero. */
  status: number
  /** The device's error (`message`, `code`) when it acked with one, else `null`. */
  error: GatewayError | null
}

/** An action for `server.queueAction()`. */
export interface ActionInput {
  /** The action's id; a random one when left out. */
  id?: string | number
  /** The action's type, a non-empty string. */
  type: string
  /** Its data; `null` when left out. */
  parameters?: GatewayValue
}

/** The events a `Server` emits, with the arguments of each. */
export interface ServerEvents extends EmitterEvents {
  /** `listen()` succeeded. */
  listening: () => void
  /** A peer connected (after the TLS handshake). */
  connection: (connection: Connection) => void
  /** A peer said HELLO; `connection.deviceName` is set from here on. */
  hello: (connection: Connection) => void
  /** A peer sent an `Event`. */
  event: (event: Event, connection: Connection) => void
  /** A peer acknowledged an action. */
  acknowledgement: (ack: ActionAcknowledgement, connection: Connection) => void
  /**
   * A peer broke the protocol or failed the TLS handshake (`EPROTO`, `IM491`, `ETLS`,
   * `ETIMEDOUT` also for `helloTimeout` and `idleTimeout`, `EQUEUEFULL` for echoes left
   * unacknowledged); it got BYE with the error where possible and was disconnected.
   */
  clientError: (err: GatewayError, connection: Connection | null) => void
  /** A peer's connection ended. */
  disconnect: (connection: Connection) => void
  /** `close()` or `destroy()` finished. */
  close: () => void
  /** `listen()` failed (`err.code` as in Node: `EADDRINUSE`, `EACCES`, ...). */
  error: (err: GatewayError) => void
  /** Node's `events.errorMonitor`: sees every `error` before its listeners, without handling it. */
  [EventEmitter.errorMonitor]: (err: GatewayError) => void
}

/**
 * The bundled local gateway, for tests, demos and development: the original's test server
 * (`new Server().listen(cb)` on port 7777, plain TCP, every event acknowledged and echoed back as
 * an action), with TLS and mutual TLS, any port, per-event decisions (`onEvent`), actions queued
 * for devices, and the list of connected devices. A listening server keeps Node running, like a
 * `net.Server`; a closed or destroyed one does not.
 */
export class Server extends TypedEventEmitter<ServerEvents> {
  /**
   * Throws `TypeError` when `options` is not an object or `onEvent` not a function, the TLS
   * material's code (`EINVALIDKEY`, `EINVALIDCERT`, `EINVALIDCA`, `EKEYMISMATCH`) when it is
   * refused, and `ERR_INVALID_ARG_VALUE` for a timeout that is not a non-negative integer.
   */
  constructor (options?: ServerOptions)
  /** Starts accepting on `options.port` (7777 by default) on all interfaces; `callback` on `listening`. */
  listen (callback?: () => void): this
  /**
   * Starts accepting on `port` (`0` picks a free one); `callback` runs on `listening`, a failure
   * is emitted as `error` (`EADDRINUSE`, ...). A port out of range throws `ERR_SOCKET_BAD_PORT`.
   */
  listen (port?: number, callback?: () => void): this
  /** Starts accepting on `port` and `host` (all interfaces when left out). */
  listen (port?: number, host?: string, callback?: () => void): this
  /** Starts accepting on `options.port` and `options.host`. */
  listen (options: { port?: number, host?: string }, callback?: () => void): this
  /** Whether the server is listening now. */
  readonly listening: boolean
  /** `{address, family, port}` while listening, else `null`. */
  address (): AddressInfo | null
  /** Sends BYE (with no body) to every connected device and closes their connections; keeps listening. */
  kick (): this
  /**
   * Stops listening and says BYE to every connection; `callback` runs once everything is released,
   * within 10 s whatever the peers do, with `ERR_SERVER_NOT_RUNNING` if it was not listening.
   */
  close (callback?: (err?: GatewayError) => void): this
  /** Stops listening and drops every connection at once, without BYE (also during a `close()`). */
  destroy (callback?: () => void): this
  /** The connected peers. */
  connections (): Connection[]
  /**
   * Queues an action for the device whose HELLO named it `deviceName`: sent at once if it is
   * connected and drained, otherwise held and sent (one at a time) before its next DRAINED; one
   * not acknowledged before a disconnect is sent again on the next connection. `callback(err)`
   * runs on the device's acknowledgement (`err` when it acked with an error, `ECLOSED` when the
   * server closed first). Returns the action's id (a random one if none was given). Throws
   * `TypeError` for a bad argument, `ERR_INVALID_ARG_VALUE` or `IM491` for parameters it cannot
   * encode (a `BigInt`, too deep or circular, over 10 MiB).
   */
  queueAction (deviceName: string, action: ActionInput | Action, callback?: (err: GatewayError | null) => void): string | number
  /**
   * `listen()` awaited (same arguments, no callback): resolves with the server once it listens;
   * rejects with the error (`EADDRINUSE`, ...), emitted as `error` too only if there is a listener.
   */
  listenAsync (port?: number, host?: string): Promise<this>
  listenAsync (options: { port?: number, host?: string }): Promise<this>
  /** `close()` awaited: resolves once every connection is gone; rejects with `ERR_SERVER_NOT_RUNNING` if it was not listening. */
  closeAsync (): Promise<this>
  /**
   * Replaces the TLS material of a server made with `key` and `cert` (files read now; `ca` left
   * out stays). Connections accepted from then on use it; those open keep theirs. Refused
   * material throws its code (`EINVALIDKEY`, `EINVALIDCERT`, `EINVALIDCA`, `EKEYMISMATCH`,
   * `ENOENT`, ...) and the old material stays in force; `ETLSCONFIG` on a plain TCP server.
   */
  setCredentials (credentials: Credentials): this
}

/**
 * Options of `new Client()`. Each `@default` is the native table's (src/defaults.rs), checked
 * by `__test__/defaults.test.js`.
 */
export interface ClientOptions {
  /**
   * Device private key, PEM (PKCS#1, PKCS#8 or SEC1/EC), or `{ path }`: a file read at every
   * connection attempt; required unless `host` is `'localhost'`. Or a key held by a hardware
   * token: a PKCS#11 URI (`'pkcs11:token=device;object=gateway-key;type=private?module-path=...&pin-value=...'`)
   * or {@link Pkcs11Key}; the token makes the handshake's signature, the key never enters the
   * process. Checked at construction (`EPKCS11MODULE`, `EPKCS11TOKEN`, `EPKCS11PIN`,
   * `EPKCS11PINLOCKED`, `EPKCS11OBJECT`, `EPKCS11KEYTYPE`, `EPKCS11URI`; `EKEYMISMATCH`); a token
   * removed later fails the next connection attempt with `EPKCS11TOKEN`, then the usual backoff.
   */
  key?: KeySource
  /**
   * Device certificate, PEM or `{ path }` (read at every attempt); required unless `host` is
   * `'localhost'`. A `pkcs11:...;type=cert` URI reads it from the token, once, at construction.
   */
  cert?: PemSource
  /**
   * Gateway host. Exactly `'localhost'` means plain TCP.
   * @default 'gateway.integromat.com'
   */
  host?: string
  /**
   * Gateway port.
   * @default 7777
   */
  port?: number
  /**
   * Trust anchors for the server certificate; the platform's roots when absent. One that names no
   * certificate (`[]`, `{}`, a wrong type) throws `EINVALIDCA`. Files (`{ path }`, also in the
   * array) are read at every attempt.
   */
  ca?: PemSource | PemSource[] | CaPair
  /**
   * Reconnect after a dropped connection.
   * @default true
   */
  autoReconnect?: boolean
  /**
   * Give up after this many failed reconnects; 0 is unlimited.
   * @default 0
   */
  maxReconnectAttempts?: number
  /**
   * Milliseconds between a dropped connection and the next attempt.
   * @default 1000
   */
  reconnectDelay?: number
  /**
   * Events that may await their acknowledgement at once; 1 is the protocol's stop-and-wait.
   * @default 1
   */
  maxInFlight?: number
  /**
   * Above `reconnectDelay`, the wait doubles after each failed attempt up to this many ms,
   * with jitter; at or below it, no backoff.
   * @default reconnectDelay
   */
  maxReconnectDelay?: number
  /**
   * Bound on TCP + TLS + WELCOME in ms (0: none).
   * @default 30000
   */
  connectTimeout?: number
  /**
   * Bound on waiting for an event's acknowledgement in ms (0: none).
   * @default 0
   */
  ackTimeout?: number
  /**
   * TCP keepalive idle time in ms (0: OS defaults).
   * @default 15000
   */
  keepAlive?: number
  /**
   * Events that may wait for their callback (0: unlimited). With `outbox`, also the most events
   * the outbox keeps.
   * @default 100000
   */
  maxQueueSize?: number
  /**
   * Keep every event on disk from `send()` until the gateway answers it, so that events survive
   * the process being killed (and, depending on `sync`, a power cut); the next client that
   * opens the directory sends them first (`restored`). Without it, nothing is written.
   * Opened by the constructor, which throws `EOUTBOXLOCKED` when another client (in this process
   * or another) has the directory open, and `EOUTBOXPERM` (Unix) when the directory belongs to
   * another user or others may write it (it is created 0700, its files 0600).
   */
  outbox?: OutboxOptions
  /**
   * `certificateExpiring` is emitted when less than this many ms of the device certificate's
   * validity remain (30 days).
   * @default 2592000000
   */
  certificateWarning?: number
  /**
   * The proxy to reach the gateway through: `'http://[user:pass@]host:port'` (HTTP `CONNECT`,
   * Basic authentication) or `'socks5://[user:pass@]host:port'` (RFC 1928, with RFC 1929's
   * user and password; the proxy resolves the gateway's name), or `false` for none. Left out,
   * `HTTPS_PROXY`/`https_proxy` and then `ALL_PROXY`/`all_proxy` are honoured for TLS
   * connections, unless `NO_PROXY`/`no_proxy` names the host as curl reads it (suffixes, `*`,
   * ports, addresses and networks); a proxy given here carries plain TCP (`host: 'localhost'`)
   * too. TLS runs end to end through the tunnel: the proxy sees only ciphertext. A URL that
   * cannot be used throws `ERR_INVALID_ARG_VALUE` (the password left out of the message); a
   * proxy that refuses fails the attempt with `EPROXY`, carrying `proxyStatus` or `socksReply`
   * ({@link GatewayError}), then the usual backoff.
   */
  proxy?: string | false
  /**
   * The name sent for SNI and checked in the gateway's certificate, when it is not `host` (as
   * in Node's `tls.connect`): to reach the gateway by IP address, or under another name.
   * @default host
   */
  servername?: string
  /**
   * Resolves the gateway's host name (or the proxy's) instead of the system's resolver, with
   * the signature of Node's `dns.lookup` (which may be passed as it is). The addresses it gives
   * are raced as RFC 8305 says: IPv6 first, alternating families, the next attempt 250 ms after
   * the last (at once after one fails), the first to connect wins; `connectTimeout` covers the
   * whole race. An error it gives fails the attempt with the error's `code` (`ENOTFOUND` when
   * it has none), then the usual backoff.
   */
  lookup?: LookupFunction
  /**
   * The OpenTelemetry MeterProvider to record the client's instruments with (docs/client.md,
   * "Metrics and logs"), instead of the global one of the application's `@opentelemetry/api`
   * (registered before `new Client()`). Without either, nothing is recorded and nothing costs.
   */
  meterProvider?: MeterProviderLike
  /**
   * Any object with `debug`, `info`, `warn` and `error` methods (pino, winston, console): the
   * client reports its connection changes, retries with their delays and errors with their
   * codes to it as structured records, `logger[level](fields, message)` (see {@link LogRecord}).
   * `DEBUG=imt:gateway:*` works as before, with or without it.
   */
  logger?: Logger
}

/**
 * An OpenTelemetry `MeterProvider` (from `@opentelemetry/sdk-metrics`, or any implementation of
 * `@opentelemetry/api`'s), as far as imt-gateway uses it: it asks for the meter `imt-gateway`.
 */
export interface MeterProviderLike {
  /** Called once per client or server (a shared set of instruments per meter). */
  getMeter (name: string, version?: string, options?: object): unknown
}

/** A logger as the `logger` option takes it: pino, winston, console, or any such object. */
export interface Logger {
  /** `connecting`. */
  debug (fields: LogRecord, message: string): unknown
  /** `connected`, `drained`, `closed`; the server's `listening`, `connection`, `disconnect`, `close`. */
  info (fields: LogRecord, message: string): unknown
  /** `backoff`, a recovered `error`; the server's `clientError`. */
  warn (fields: LogRecord, message: string): unknown
  /** An `error` the client emits. */
  error (fields: LogRecord, message: string): unknown
}

/**
 * A record's fields, the logger's first argument (the message, its second, repeats it as text).
 * The client's: `connecting` (debug), `connected`, `drained` and `closed` (info; `failed: true`
 * on a `closed` that ends a failed attempt), `backoff` (warn: `delay` in ms before the next
 * attempt, `reconnects` so far) and `error` (`error` level when emitted as the client's
 * `error`, else warn with `recovered: true`). Each carries `host` and `port`. The server's:
 * `listening`, `connection`, `disconnect`, `close` (info) and `clientError` (warn).
 */
export type LogRecord = ClientStateRecord | ClientBackoffRecord | ClientErrorRecord | ServerLogRecord

/** The client's record of a state it entered. */
export interface ClientStateRecord {
  /** The state entered. */
  event: 'connecting' | 'connected' | 'drained' | 'closed'
  /** The gateway's host, as given. */
  host: string
  /** The gateway's port. */
  port: number
  /** On `closed`: it ends an attempt that failed before the gateway welcomed the client. */
  failed?: true
}

/** The client's record of a wait before reconnecting. */
export interface ClientBackoffRecord {
  /** `backoff`. */
  event: 'backoff'
  /** The gateway's host, as given. */
  host: string
  /** The gateway's port. */
  port: number
  /** Ms until the next attempt. */
  delay: number
  /** Automatic reconnect attempts so far. */
  reconnects: number
}

/** The client's record of a connection error, emitted or recovered from. */
export interface ClientErrorRecord {
  /** `error`. */
  event: 'error'
  /** The gateway's host, as given. */
  host: string
  /** The gateway's port. */
  port: number
  /** The error's stable code (`ECONNREFUSED`, `ETLSREJECTED`, ...). */
  code: string
  /** The error's message. */
  message: string
  /** True when the client recovers by itself (not emitted as `error`). */
  recovered: boolean
}

/** The bundled Server's records. */
export interface ServerLogRecord {
  /** What happened. */
  event: 'listening' | 'connection' | 'disconnect' | 'clientError' | 'close'
  /** On `listening`: the address listened on. */
  address?: string | null
  /** On `listening`: the port listened on. */
  port?: number | null
  /** The connection's id, as in `server.connections()`. */
  connection?: number
  /** The peer's address. */
  remoteAddress?: string
  /** The peer's port. */
  remotePort?: number
  /** The device name its HELLO gave, once it has. */
  deviceName?: string
  /** On `clientError`: its code. */
  code?: string
  /** On `clientError`: its message. */
  message?: string
}

/** One address a {@link LookupFunction} answers with. */
export interface LookupAddress {
  /** An IPv4 or IPv6 address. */
  address: string
  /** 4 or 6. */
  family?: number
}

/**
 * The `lookup` option: called as `lookup(hostname, { all: true, family: 0 }, callback)`; answers
 * with `callback(null, addresses)` or `callback(err)`. A single address (as `dns.lookup` gives
 * without `all`) is taken too.
 */
export type LookupFunction = (
  hostname: string,
  options: { all: true, family: 0 },
  callback: (err: Error | null, addresses?: LookupAddress[] | string, family?: number) => void
) => void

/**
 * `new Client({ outbox })`. Each `@default` is the native table's (src/defaults.rs), checked by
 * `__test__/defaults.test.js`.
 */
export interface OutboxOptions {
  /** The outbox's directory, created if needed; one client at a time. */
  path: string
  /**
   * When writes are forced to stable storage: `'always'` before `send()` returns (a power cut
   * loses nothing; one device flush per event), `'interval'` in groups every `syncInterval` ms
   * (a power cut loses at most the last interval), `'none'` when the OS decides. A killed
   * process loses nothing in any mode.
   * @default 'interval'
   */
  sync?: 'always' | 'interval' | 'none'
  /**
   * Milliseconds between group commits with `sync: 'interval'`.
   * @default 100
   */
  syncInterval?: number
  /**
   * Most bytes of events kept (each event's frame and id, plus 19 bytes); beyond them `send()`
   * fails with `EQUEUEFULL`. The directory holds at most about twice this plus three 4 MiB
   * segment files.
   * @default 67108864
   */
  maxBytes?: number
}

/** A torn or corrupt place the outbox found when it was opened. */
export interface OutboxDamage {
  /** The segment file. */
  segment: string
  /** Where the unreadable bytes start. */
  offset: number
  /** How many bytes, to the end of the file, could not be read. */
  bytes: number
  /** `'torn'` (a write cut short), `'checksum'`, `'invalid'` or `'header'`. */
  kind: 'torn' | 'checksum' | 'invalid' | 'header'
  /** Cut off (the newest segment's tail), rather than left in an older segment. */
  truncated: boolean
}

/** What opening the outbox found: the argument of the `restored` event. */
export interface OutboxRestored {
  /** The outbox's directory. */
  path: string
  /** Events an earlier client or process left unanswered, queued to be sent before anything else. */
  events: number
  /** Their ids, in the order they will be sent (their original order). */
  ids: Array<string | number>
  /** Torn or corrupt places found (a torn tail is cut off; every complete record before it is kept). */
  damage: OutboxDamage[]
  /** Bytes cut off torn tails. */
  truncatedBytes: number
}

/** The body of a server ACKNOWLEDGEMENT for an event. */
export interface EventAcknowledgement {
  /** The acknowledged event's id. */
  correlid: string | number
  /** 0 when the gateway accepted the event, else non-zero. */
  status: number
  /** The gateway's reason when it rejected the event. */
  error?: AcknowledgementError
}

/** The error of a rejecting `EventAcknowledgement`. */
export interface AcknowledgementError {
  /** The gateway's code, when it gave one. */
  code?: string
  /** The gateway's message. */
  message: string
}

/** Acknowledges an action: with no argument as done, with an error as failed. */
export type ActionAck = (err?: Error | { message?: string, code?: string } | string | null) => void

/** Options of `client.close()` and `client.closeAsync()`. */
export interface CloseOptions {
  /** Keep queued events (and their callbacks) for the next `connect()` instead of failing them with `ECLOSED`. */
  keepQueue?: boolean
}

/**
 * What `client.stats()` returns: counters kept by the native core, read in one call. A fresh
 * plain object each call. "Now" fields describe the state as of the core's latest turn; totals
 * count from `new Client()` and never go down. Counts are integers (exact up to 2^53).
 *
 * The core updates the counters once per turn of its own work, so a `send()` made in the
 * current turn of JavaScript may show in `queued` only after it has run (at the latest on the
 * next turn of the event loop); everything a batch of events and callbacks reports is counted
 * by the time its listeners run.
 */
export interface ClientStats {
  /** Events waiting to be written, now: not written yet, or to be re-sent after a reconnect. */
  queued: number
  /** Events written on the current connection and awaiting their acknowledgement, now (at most `maxInFlight`). */
  inFlight: number
  /** Events the gateway accepted (acknowledgement with status 0), total. */
  acknowledged: number
  /** Events the gateway rejected (acknowledgement with an error; the callback got the gateway's code), total. */
  rejected: number
  /** Event frames written again on a new connection because the previous one ended before their acknowledgement, total. */
  resent: number
  /** Events whose callback got `ECLOSED` because `close()` came first, total. */
  failedClosed: number
  /** Events refused at `send()` with `EQUEUEFULL` (`maxQueueSize` reached), total. */
  failedQueueFull: number
  /** Actions received from the gateway, total (each delivery, so an action delivered again after a reconnect counts again). */
  actionsReceived: number
  /** Actions whose acknowledgement (`ack()` or `ack(err)`) was written to the gateway, total. */
  actionsAcked: number
  /** Automatic reconnect attempts started (each `reconnect` event), total. */
  reconnects: number
  /** Bytes written to the socket, total over every connection: the frames, plus TLS records and handshakes under TLS. */
  bytesSent: number
  /** Bytes read from the socket, total over every connection: the frames, plus TLS records and handshakes under TLS. */
  bytesReceived: number
  /** The gateway has welcomed the client on a connection that is open now. */
  connected: boolean
  /** The gateway said DRAINED on the current connection: events flow. */
  drained: boolean
  /**
   * Milliseconds (fractional) between writing the frame of the event acknowledged last and
   * reading its acknowledgement: the last round trip on the wire, gateway time included.
   * `null` before the first acknowledgement.
   */
  rtt: number | null
  /**
   * Milliseconds until the device certificate in force expires (negative once it has); `null`
   * without TLS.
   */
  certificateExpiresIn: number | null
  /** With `outbox` only: events in the outbox now (written, not yet answered by the gateway). */
  outboxPending?: number
  /** With `outbox` only: their bytes, as counted against `outbox.maxBytes`. */
  outboxBytes?: number
  /** With `outbox` only: events found in the outbox when it was opened (`restored`), total. */
  outboxRestored?: number
  /**
   * With `outbox` only: torn or corrupt places found when it was opened, and times another
   * program was found to have shortened or removed its newest file while open, total.
   */
  outboxDamage?: number
  /**
   * With `outbox` only: bytes cut off torn tails when it was opened, and bytes of pending events
   * another program cut off while it was open (still sent from memory), total.
   */
  outboxTruncated?: number
  /** With `outbox` only: syncs (fsync) of the outbox's files since it was last opened. */
  outboxSyncs?: number
  /** With `outbox` only: sends the outbox refused (`EQUEUEFULL`, `ENOSPC`, ...), total. */
  outboxRefused?: number
}

/** The connection's state, as `client.health()` gives it. */
export type ClientState = 'connecting' | 'connected' | 'drained' | 'backoff' | 'closed'

/**
 * What `client.health()` returns: a fresh plain object, from one native call, cheap enough to
 * serve from a health endpoint on every request. Times are ms since the epoch (numbers, as
 * `Date.now()`), ages and durations ms.
 */
export interface ClientHealth {
  /**
   * `connecting` (an attempt, up to the gateway's WELCOME), `connected` (welcomed, the gateway
   * still delivering what it held), `drained` (events flow), `backoff` (waiting to reconnect),
   * `closed` (before `connect()`, after `close()`, or given up).
   */
  state: ClientState
  /** When the client entered `state` (ms since the epoch). */
  since: number
  /** The latest connection error, emitted or recovered from; null before the first. */
  lastError: HealthError | null
  /** Automatic reconnect attempts since `new Client()`. */
  reconnects: number
  /** Events waiting to be written, now. */
  queued: number
  /** Events written and awaiting their acknowledgement, now. */
  inFlight: number
  /** How long the oldest event not yet acknowledged (queued or in flight) has waited, ms; 0 when none. */
  oldestQueuedAge: number
  /** With `outbox`: the events and bytes it holds; null without one. */
  outbox: HealthOutbox | null
  /** Ms until the device certificate expires (negative once it has); null without TLS. */
  certificateExpiresIn: number | null
}

/** `client.health().lastError`. */
export interface HealthError {
  /** Its stable code. */
  code: string
  /** Its message. */
  message: string
  /** When it came (ms since the epoch). */
  at: number
}

/** `client.health().outbox`. */
export interface HealthOutbox {
  /** Events stored and not yet answered by the gateway. */
  events: number
  /** Bytes the outbox holds. */
  bytes: number
}

/** The events a `Client` emits, with the arguments of each. */
export interface ClientEvents extends EmitterEvents {
  /** The first WELCOME after `connect()` (not again after an automatic reconnect). */
  connect: () => void
  /** Every DRAINED: the gateway has delivered the actions it held, and events flow. */
  drain: () => void
  /** Right after every `drain`, as the original README expects. */
  drained: () => void
  /** An action from the gateway; call `ack()` when done or `ack(err)` to report a failure. */
  action: (action: Action, ack: ActionAck) => void
  /**
   * The gateway acknowledged an event, just before that event's callback; also for the events
   * restored from the outbox (which have no callback), with their original ids.
   */
  acknowledgement: (ack: EventAcknowledgement) => void
  /**
   * With `outbox`: the outbox was opened (on the tick after `new Client()`, and after a
   * `connect()` or `send()` that opened it again after `close()`), with what it found: the
   * events an earlier client left, which are sent first, and any damage.
   */
  restored: (info: OutboxRestored) => void
  /** An automatic reconnect attempt starts. */
  reconnect: () => void
  /** Once, when the client is finally disconnected after having been connected. */
  disconnect: () => void
  /**
   * Once per certificate, when less than `certificateWarning` ms of the device certificate's
   * validity remain: at `connect()` or a connection if it is already so, else when it becomes so
   * while the client is active.
   */
  certificateExpiring: (certificate: ClientCertificate) => void
  /**
   * Only as 2.x emits it: a BYE with an error, a wrong acknowledgement, the error that ended the
   * connection with `autoReconnect: false`, and the last error when `maxReconnectAttempts` runs
   * out before any connection. With no listener, an `error` throws. What the client recovers
   * from by itself is counted in `recovered` instead.
   */
  error: (err: GatewayError) => void
  /** Node's `events.errorMonitor`: sees every `error` before its listeners, without handling it. */
  [EventEmitter.errorMonitor]: (err: GatewayError) => void
}

/**
 * A device's connection to the gateway, with 2.x's API (`connect()`, `send()`, `close()` and
 * the events) and promises next to it. Delivery is at least once, each callback exactly once:
 * queued events wait across reconnects, and an event written but not acknowledged when the
 * connection dropped is sent again, in order and with its id. A connecting, connected or
 * reconnecting client keeps Node running (see `unref()`).
 */
export class Client extends TypedEventEmitter<ClientEvents> {
  /**
   * Opens nothing on the network until `connect()`. Throws `Error('Options expected.')` without
   * an options object; unless `host` is `'localhost'`, `EINVALIDKEY` / `EINVALIDCERT` when `key`
   * / `cert` are not PEM and `EKEYMISMATCH` when they do not belong together; `EINVALIDCA`,
   * `ERR_SOCKET_BAD_PORT`, `ERR_INVALID_ARG_TYPE`, `ERR_INVALID_ARG_VALUE` for bad options; with `outbox`,
   * `EOUTBOXLOCKED`, `EOUTBOXPERM`, `EOUTBOX` or the file system's code.
   */
  constructor (options: ClientOptions)
  /** The gateway host, as given (or the default). */
  readonly host: string
  /** The gateway port, as given (or the default). */
  readonly port: number
  /**
   * What the client recovered from by itself, counted by error code: connection errors while
   * reconnecting, undecodable or oversize frames, frames it ignored (an unknown token, a
   * second WELCOME), `connectTimeout` and `ackTimeout`. These are never emitted as `error`.
   */
  readonly recovered: { readonly [code: string]: number }
  /** The client's counters (see `ClientStats`): one native call, cheap enough to poll. */
  stats (): ClientStats
  /** Where the client is (see `ClientHealth`): state, last error, backlog; for health endpoints. */
  health (): ClientHealth
  /**
   * The device certificate in force (the one the next or current handshake presents; from a
   * file, as read at the latest attempt), or `null` without TLS.
   */
  readonly certificate: ClientCertificate | null
  /**
   * Replaces the TLS material, used from the next handshake (at once with `{ reconnect: true }`,
   * which closes the connection in hand gracefully and connects again: nothing queued or in
   * flight is lost). Checked now: refused material throws its code (`EINVALIDKEY`,
   * `EINVALIDCERT`, `EINVALIDCA`, `EKEYMISMATCH`, `ENOENT`, ...) and the old material stays in
   * force; `ETLSCONFIG` for a client without TLS.
   */
  setCredentials (credentials: Credentials, options?: SetCredentialsOptions): this
  /**
   * `setCredentials()` (with `reconnect: true` unless told otherwise), resolved with the client
   * once a connection with the new material has been drained (`drained`); rejects with what
   * `setCredentials()` throws, with `ECLOSED` on `close()`, or with the error that ended the
   * client's attempts.
   */
  setCredentialsAsync (credentials: Credentials, options?: SetCredentialsOptions): Promise<this>
  /**
   * Starts connecting (and reconnecting after a drop, with `autoReconnect`); a no-op while
   * connected or connecting. With `outbox` after `close()`, opens the outbox again first (and
   * throws what opening it throws: `EOUTBOXLOCKED`, ...).
   */
  connect (): this
  /**
   * Closes the connection and stops reconnecting. With `outbox` (unless `keepQueue`), closes the
   * outbox too: events not yet answered stay in it (their callbacks get `ECLOSED`) for the next
   * client that opens it, this one included at its next `connect()` or `send()`.
   */
  close (options?: CloseOptions): this
  /**
   * Queues `event`. With `outbox`, the event is written to the outbox before this returns;
   * the callback (or, without one, a throw) gets `EQUEUEFULL` at the outbox's bounds, the OS's
   * code (`ENOSPC`, ...) when the disk fails, and nothing stored before is lost.
   */
  send (event: Event, callback?: (err: GatewayError | null) => void): this
  /** Keep the process alive while connected or reconnecting (the default). */
  ref (): this
  /** Let the process exit even while connected. */
  unref (): this
  /**
   * `connect()`, resolved with the client at the first `drained` after the call (at once if it is
   * connected and drained). Rejects with the error that ends the client's attempts: the ending
   * error with `autoReconnect: false`, the last one when `maxReconnectAttempts` is used up, or
   * `ECLOSED` when `close()` comes first; that error is emitted as `error` too only if there is a
   * listener.
   */
  connectAsync (): Promise<this>
  /**
   * `send()` awaited: resolves with the event (its `id` filled in) once the gateway accepted it;
   * rejects with the callback's error (the gateway's code, `ECLOSED`, `EQUEUEFULL`, ...).
   */
  sendAsync<E extends Event> (event: E): Promise<E>
  /** `close()` awaited: resolves once `disconnect` (if it was connected) has fired and no socket or timer is left. */
  closeAsync (options?: CloseOptions): Promise<this>
}
