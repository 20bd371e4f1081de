'use strict'
// The main job, end to end on this machine: a throwaway PKI, the bundled gateway with mutual
// TLS on a free port, and a device Client that connects with its own certificate, receives an
// action the gateway held for it, sends a few events and sees them acknowledged and echoed.

const os = require('os')
const { Client, Event, Server } = require('imt-gateway')
const { createPki } = require('imt-gateway/testing')

const step = (text) => console.log(`[demo] ${text}`)
const EVENTS = 3

async function main () {
  const device = os.hostname()
  const pki = createPki({ device })
  step('made a throwaway root CA, a server certificate and a device certificate')

  const server = new Server({ key: pki.server.key, cert: pki.server.cert, ca: pki.caCert })
  server.on('connection', (c) => step(`gateway: device connected over mutual TLS as ${c.subject}`))
  server.on('event', (event, c) => step(`gateway: received event ${event.type} ${JSON.stringify(event.bundle)} from ${c.deviceName}`))
  await new Promise((resolve, reject) => { server.once('error', reject); server.listen(0, '127.0.0.1', resolve) })
  const { port } = server.address()
  step(`gateway: listening with mutual TLS on 127.0.0.1:${port}`)

  server.queueAction(device, { id: 'welcome-1', type: 'display', parameters: { text: 'Hello, device' } },
    (err) => step(`gateway: held action acknowledged${err ? ` with error ${err.message}` : ''}`))
  step(`gateway: holds one action for ${device}`)

  const client = new Client({ host: '127.0.0.1', port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert })
  const finished = new Promise((resolve, reject) => {
    let echoes = 0
    client.on('error', reject)
    client.on('connect', () => step('device: connected, the gateway said WELCOME'))
    client.on('action', (action, ack) => {
      step(`device: action ${action.id} ${action.type} ${JSON.stringify(action.parameters)}`)
      ack()
      if (action.id !== 'welcome-1' && ++echoes === EVENTS) resolve()
    })
    client.once('drain', () => {
      step('device: drained, sending events')
      for (let i = 1; i <= EVENTS; i++) {
        const event = new Event('reading', { sequence: i, at: new Date() })
        client.send(event, (err) => {
          if (err) return reject(err)
          step(`device: event ${i} (${event.id}) acknowledged`)
        })
      }
    })
  })
  client.connect()
  await finished

  const disconnected = new Promise((resolve) => client.once('disconnect', resolve))
  client.close()
  await disconnected
  step('device: disconnected')
  await new Promise((resolve) => server.close(resolve))
  step('gateway: closed; done')
}

main().catch((err) => {
  console.error('[demo] failed:', err)
  process.exit(1)
})
