// Compiled with `tsc --noEmit` by types.test.js under module node16, nodenext and
// moduleResolution bundler: the ES module imports of the package and of imt-gateway/testing.
import { Client, Event, Action, Server, GatewayError, ClientOptions } from 'imt-gateway'
import gateway from 'imt-gateway'
import { createPki, TestCertificateAuthority, ioDriver, Pki } from 'imt-gateway/testing'
import testing from 'imt-gateway/testing'

async function main (): Promise<void> {
  const pki: Pki = createPki({ device: 'kiosk-7', keyType: 'rsa' })
  const server: Server = await new gateway.Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert }).listenAsync(0, '127.0.0.1')
  const address = server.address()
  const options: ClientOptions = { host: '127.0.0.1', port: address ? address.port : 7777, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
  const client: Client = await new Client(options).connectAsync()
  client.on('action', (action: Action, ack) => ack())
  const event: Event = await client.sendAsync(new Event('reading', { celsius: 21 }))
  console.log(event.id, ioDriver(), new TestCertificateAuthority('root').issue({ commonName: 'x', server: true }).key)
  await client.closeAsync()
  await server.closeAsync()
}
main().catch((err: GatewayError) => console.log(err.code))
const again: typeof createPki = testing.createPki
const same: typeof Client = gateway.Client
console.log(again, same, new gateway.Event('x').type, new gateway.Action(1, 't', null).id)

// @ts-expect-error the default export has no such member
console.log(gateway.Device)
// @ts-expect-error createPki takes no string
createPki('kiosk')
// @ts-expect-error ioDriver names one of two drivers
const driver: 'uv' = ioDriver()
