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
