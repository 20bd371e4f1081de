// Compiled with `tsc --noEmit` by types.test.js: typical usage must type-check, and misuse
// marked with @ts-expect-error must not.
import { Server, Event, Action, Connection, GatewayError } from 'imt-gateway'

const server = new Server({
  port: 0,
  echo: false,
  onEvent: async (event: Event, connection: Connection) => {
    if (event.type === 'bad') return { code: 'E_BAD', message: `refused from ${connection.deviceName}` }
    return undefined
  }
})
server.listen(0, '127.0.0.1', () => {
  const address = server.address()
  if (address) console.log(address.port.toFixed(0))
})
server.on('event', (event, connection) => console.log(event.bundle, connection.subject))
server.on('clientError', (err: GatewayError) => console.log(err.code))
const id: string | number = server.queueAction('kiosk', new Action('a1', 'display', { text: 'hi' }), (err) => {
  if (err) console.log(err.code)
})
console.log(id, new Event('reading', { n: 1, at: new Date(), raw: Buffer.alloc(1) }))
server.kick().close((err) => console.log(err && err.code))

// @ts-expect-error the device name is required
server.queueAction({ type: 'x' })
// @ts-expect-error no such event
server.on('connect', () => {})

// The client, as a device uses it.
import { Client, ClientStats, EventAcknowledgement } from 'imt-gateway'

const client = new Client({ key: Buffer.from('k'), cert: 'c', ca: { root: 'r', intermediate: 'i' }, maxReconnectAttempts: 3 })
client.on('drained', () => {
  client.send(new Event('reading', { celsius: 21.5 }), (err) => {
    if (err) console.log(err.code, err.message)
  })
})
client.on('action', (action, ack) => {
  if (action.type === 'reboot') ack(new Error('Not now.'))
  else ack()
})
client.on('acknowledgement', (ack: EventAcknowledgement) => console.log(ack.correlid, ack.status))
client.on('error', (err) => console.log(err.code))
const refused: number | undefined = client.recovered.ECONNREFUSED
const stats: ClientStats = client.stats()
const rtt: number | null = stats.rtt
console.log(stats.queued + stats.inFlight + stats.bytesSent, stats.connected && stats.drained, rtt)
console.log(refused, new Event('raw', { u8: new Uint8Array(2), n: new Number(1), re: /x/ }))
client.connect().unref()
client.close({ keepQueue: true })

// The durable outbox.
import { OutboxRestored } from 'imt-gateway'
const durable = new Client({ host: 'localhost', outbox: { path: '/var/lib/app/outbox', sync: 'always', maxBytes: 1 << 20 } })
durable.on('restored', (info: OutboxRestored) => {
  console.log(info.events, info.ids.join(), info.damage.map((d) => d.kind + d.offset), info.truncatedBytes)
})
const pending: number | undefined = durable.stats().outboxPending
console.log(pending)
// @ts-expect-error no such sync mode
new Client({ host: 'localhost', outbox: { path: 'x', sync: 'sometimes' } })
// @ts-expect-error the path is required
new Client({ host: 'localhost', outbox: { sync: 'none' } })

// Proxies, the name checked in the certificate, and a resolver of the application's.
import { lookup as dnsLookup } from 'dns'
import { LookupFunction } from 'imt-gateway'
const fixed: LookupFunction = (hostname, options, callback) => callback(null, [{ address: '127.0.0.1', family: 4 }])
new Client({ host: '10.0.0.5', proxy: 'socks5://proxy:1080', servername: 'gateway.example', lookup: fixed })
new Client({ host: 'gateway.example', proxy: false, lookup: dnsLookup })
client.on('error', (err: GatewayError) => console.log(err.proxyStatus ?? err.socksReply))
// @ts-expect-error proxy is a URL or false
new Client({ host: 'localhost', proxy: true })

// @ts-expect-error send takes an Event
client.send('reading')
// @ts-expect-error the counts are read-only
client.recovered.EPROTO = 1
// @ts-expect-error no such option type
new Client({ host: 'localhost', port: '7777' })
// @ts-expect-error an action listener gets the action and the ack function
client.on('action', (action: Action, ack: string) => {})

// Events are typed through one event map per class (ClientEvents, ServerEvents), so every
// listener method and emit agree on the names and the arguments.
import { once as onceEvent, errorMonitor, EventEmitter } from 'events'
import { ClientEvents, ServerEvents, ActionAck, ActionAcknowledgement, TypedEventEmitter } from 'imt-gateway'

const onAction = (action: Action, ack: ActionAck): void => {
  const type: string = action.type
  ack(type === 'x' ? { code: 'E_X', message: 'no' } : null)
}
client.once('action', onAction)
client.prependListener('action', onAction)
client.prependOnceListener('action', (action, ack) => ack(action.type))
client.addListener('acknowledgement', (ack) => {
  const status: number = ack.status
  const code: string | undefined = ack.error && ack.error.code
  console.log(status, code)
})
client.once('connect', () => {}).once('reconnect', () => {}).once('disconnect', () => {})
client.once('drain', () => {}).once('error', (err) => console.log(err.code))
client.off('action', onAction)
client.removeListener('action', onAction)
client.removeAllListeners('acknowledgement').removeAllListeners()
const actionListeners: Array<ClientEvents['action']> = client.listeners('action')
const countOfAction: number = client.listenerCount('action') + client.listenerCount('action', onAction)
console.log(actionListeners.length, countOfAction)
const hadListeners: boolean = client.emit('action', new Action(1, 't', null), () => {})
client.emit('acknowledgement', { correlid: 'e1', status: 0 })
client.emit('error', Object.assign(new Error('x'), { code: 'EPROTO' }))
client.emit('connect')
console.log(hadListeners)
client.on(errorMonitor, (err) => console.log(err.code))
client.on('newListener', (name: string | symbol) => console.log(String(name)))
// A Client is still a Node EventEmitter: the events helpers take it.
const emitter: EventEmitter = client
onceEvent(client, 'connect').then((args: unknown[]) => console.log(args.length, emitter))

const onServerEvent: ServerEvents['event'] = (event, connection) => console.log(event.id, connection.id)
server.on('event', onServerEvent).off('event', onServerEvent).removeListener('event', onServerEvent)
server.once('acknowledgement', (ack: ActionAcknowledgement, connection) => console.log(ack.error, connection.deviceName))
server.on('clientError', (err, connection) => console.log(err.code, connection ? connection.id : null))
server.prependListener('hello', (connection) => console.log(connection.deviceName))
server.on('listening', () => {}).on('close', () => {}).on('error', (err) => console.log(err.code))
server.emit('disconnect', { id: 1, remoteAddress: '::1', remotePort: 1 })
server.emit('clientError', new Error('x'), null)
const eventListeners: number = server.listeners('event').length + server.listenerCount('event')
console.log(eventListeners)

// A function that takes any typed emitter of the client's events.
function watch (source: TypedEventEmitter<ClientEvents>): void {
  source.on('disconnect', () => {})
}
watch(client)

// @ts-expect-error an action listener gets an Action, not a number
client.on('action', (a: number) => {})
// @ts-expect-error once is typed as on is
client.once('acknowledgement', (ack: string) => {})
// @ts-expect-error off is typed: the ack is a function, not a string
client.off('action', (action: Action, ack: string) => {})
// @ts-expect-error removeListener is typed
client.removeListener('error', (err: number) => {})
// @ts-expect-error prependListener is typed
client.prependListener('connect', (x: string) => {})
// @ts-expect-error off rejects an unknown event
client.off('connection', () => {})
// @ts-expect-error emit checks the arguments: an action event carries an Action
client.emit('action', 'reboot', () => {})
// @ts-expect-error emit checks the arguments: connect carries none
client.emit('connect', 1)
// @ts-expect-error emit checks the arguments: acknowledgement needs its body
client.emit('acknowledgement')
// @ts-expect-error emit rejects an unknown event
client.emit('hello')
// @ts-expect-error the error monitor gets the error
client.on(errorMonitor, (err: number) => {})
// @ts-expect-error listeners are typed by the map
const wrongListeners: Array<(n: number) => void> = client.listeners('acknowledgement')
// @ts-expect-error a server event listener gets the Event first
server.on('event', (event: string, connection: Connection) => {})
// @ts-expect-error a server acknowledgement carries an ActionAcknowledgement, not an EventAcknowledgement
server.off('acknowledgement', (ack: EventAcknowledgement) => {})
// @ts-expect-error emit checks the server's arguments too: the connection is required
server.emit('hello')
// @ts-expect-error the typed emitter is a type only: nothing of that name exists at run time
new TypedEventEmitter<ClientEvents>()

// The promise API: an await chain.
async function roundTrip (port: number): Promise<string | number | null> {
  const gateway: Server = await new Server({ echo: false }).listenAsync(0, '127.0.0.1')
  await new Server().listenAsync({ port: 0 })
  const device: Client = await new Client({ host: 'localhost', port }).connectAsync()
  const sent: Event = await device.sendAsync(new Event('reading', { celsius: 21 }))
  try {
    await device.sendAsync(new Event('bad'))
  } catch (err) {
    console.log((err as GatewayError).code)
  }
  const closed: Client = await device.closeAsync({ keepQueue: false })
  closed.removeAllListeners()
  await gateway.closeAsync()
  return sent.id
}
roundTrip(7777).then((id) => console.log(id))
// @ts-expect-error sendAsync takes an Event
client.sendAsync({ type: 'reading' })
// @ts-expect-error listenAsync takes no callback
server.listenAsync(0, () => {})
// @ts-expect-error connectAsync resolves with the client, not a boolean
const connected: Promise<boolean> = client.connectAsync()

// imt-gateway/testing, as CommonJS sees it.
import { createPki, TestCertificateAuthority } from 'imt-gateway/testing'
const testPki = createPki({ hosts: ['localhost'], device: 'kiosk-7' })
new Server({ key: testPki.server.key, cert: testPki.server.cert, ca: testPki.caCert })
console.log(new TestCertificateAuthority().cert.length)
// @ts-expect-error issue needs a common name
testPki.ca.issue({ server: true })

// Credentials from files, rotation and the certificate's lifetime.
import { ClientCertificate, Credentials, Pkcs11Key } from 'imt-gateway'
const rotating = new Client({
  key: { path: '/etc/device/key.pem' },
  cert: { path: '/etc/device/cert.pem' },
  ca: [{ path: '/etc/device/ca.pem' }, 'PEM'],
  certificateWarning: 7 * 24 * 3600 * 1000
})
rotating.on('certificateExpiring', (certificate: ClientCertificate) => console.log(certificate.validTo, certificate.subject.CN))
const inForce: ClientCertificate | null = rotating.certificate
const expiresIn: number | null = rotating.stats().certificateExpiresIn
const renewal: Credentials = { key: { path: '/etc/device/key.pem' }, cert: 'PEM' }
rotating.setCredentials(renewal, { reconnect: true }).setCredentialsAsync(renewal).then((c: Client) => c.close())
new Server({ key: { path: 'k' }, cert: { path: 'c' } }).setCredentials({ key: 'k', cert: { path: 'c' } })
console.log(inForce, expiresIn)
// @ts-expect-error setCredentials needs a certificate
rotating.setCredentials({ key: 'k' })
// Keys held by a hardware token: a PKCS#11 URI, or the object form.
const hardware: Pkcs11Key = { pkcs11: { module: '/usr/lib/softhsm/libsofthsm2.so', token: 'device', object: 'gateway-key', pin: '1234' } }
new Client({ host: 'gateway.example.com', key: hardware, cert: 'pkcs11:token=device;object=gateway-cert;type=cert?module-path=/usr/lib/softhsm/libsofthsm2.so' })
new Server({ key: 'pkcs11:token=gw;object=k;type=private?module-path=/m.so', cert: 'PEM' }).setCredentials({ key: { pkcs11: { module: '/m.so', slot: 0, id: '01' } }, cert: 'PEM' })
// @ts-expect-error a token key names its module
new Client({ host: 'gateway.example.com', key: { pkcs11: { token: 'device', object: 'k' } }, cert: 'PEM' })

// Health, OpenTelemetry metrics and structured logs.
import { ClientHealth, ClientState, LogRecord, Logger } from 'imt-gateway'
import { MeterProvider } from '@opentelemetry/sdk-metrics'
const observed = new Client({ meterProvider: new MeterProvider(), logger: console })
const health: ClientHealth = observed.health()
const state: ClientState = health.state
const backlog: number = health.queued + health.inFlight + health.oldestQueuedAge
const lastCode: string | undefined = health.lastError?.code
const stored: number | null = health.outbox === null ? null : health.outbox.bytes
const records: LogRecord[] = []
const keeping: Logger = {
  debug: (fields) => records.push(fields),
  info: (fields) => records.push(fields),
  warn: (fields) => records.push(fields),
  error: (fields) => records.push(fields)
}
new Server({ meterProvider: new MeterProvider(), logger: keeping })
console.log(state, backlog, lastCode, stored, health.since, health.certificateExpiresIn)
// @ts-expect-error a logger needs all four levels
new Client({ logger: { info: () => {} } })
