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
import { Client, EventAcknowledgement } from 'imt-gateway'

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
console.log(refused, new Event('raw', { u8: new Uint8Array(2), n: new Number(1), re: /x/ }))
client.connect().unref()
client.close({ keepQueue: true })

// @ts-expect-error send takes an Event
client.send('reading')
// @ts-expect-error the counts are read-only
client.recovered.EPROTO = 1
// @ts-expect-error no such option type
new Client({ host: 'localhost', port: '7777' })
// @ts-expect-error an action listener gets the action and the ack function
client.on('action', (action: Action, ack: string) => {})
