'use strict'
// The main job, end to end on this machine: a throwaway PKI, the bundled gateway with mutual
// TLS on a free port, and a device that connects with its own certificate, receives an action
// held for it, sends a few events and sees them acknowledged and echoed back.
//
// Until the Rust Client lands, the device side is the tests' small frame-level peer.

const { Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')
const { RawClient } = require('../__test__/helpers/raw-client')

const step = (text) => console.log(`[demo] ${text}`)

async function main () {
  const pki = createPki({ device: 'demo-device' })
  step('made a throwaway root CA, a server certificate and a device certificate')

  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert })
  server.on('event', (event, device) => step(`gateway received event ${event.type} ${JSON.stringify(event.bundle)} from ${device.deviceName}`))
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address()
  step(`gateway listening with mutual TLS on 127.0.0.1:${port}`)

  server.queueAction('demo-device', { id: 'welcome-1', type: 'display', parameters: { text: 'Hello, device' } },
    (err) => step(`gateway: held action acknowledged${err ? ' with error ' + err.message : ''}`))
  step('gateway holds one action for demo-device')

  server.once('connection', (c) => step(`gateway: device connected over TLS with certificate ${c.subject}`))
  const device = await RawClient.connect({ port, tls: { key: pki.client.key, cert: pki.client.cert, ca: pki.caCert } })
  device.hello('demo-device')
  step(`device <- ${(await device.next()).name}`)
  const held = await device.next()
  step(`device <- ACTION ${held.body.type} ${JSON.stringify(held.body.parameters)}`)
  device.send('ACKNOWLEDGEMENT', { correlid: held.body.id, status: 0 })
  step(`device <- ${(await device.next()).name}`)

  for (let i = 1; i <= 3; i++) {
    device.send('EVENT', { id: `event-${i}`, type: 'reading', bundle: { sequence: i, at: new Date() } })
    const ack = await device.next()
    step(`device <- ACKNOWLEDGEMENT for ${ack.body.correlid} (status ${ack.body.status})`)
    const echo = await device.next()
    step(`device <- ACTION ${echo.body.type} (the echo of event-${i})`)
    device.send('ACKNOWLEDGEMENT', { correlid: echo.body.id, status: 0 })
  }

  await new Promise((resolve) => server.close(resolve))
  await device.closed
  step('gateway closed; done')
}

main().catch((err) => {
  console.error('[demo] failed:', err)
  process.exit(1)
})
