'use strict'
// A focused measure of receiving large string actions: a scripted gateway in the same process
// (plain TCP: the host is 'localhost') writes ready-made ACTION frames whose parameters hold one string, and the
// Client acknowledges each from its `action` listener. Prints the time per action and the
// client's throughput for each kind of string, and the page faults per action (of the whole
// process, the gateway's few included). Not part of `npm run bench`:
//
//   node bench/strings.js [megabytes=8] [count=20]

const msgpack = require('msgpack-lite-0126')
const { Client } = require('imt-gateway')
const { fakeGateway, welcome } = require('../__test__/helpers/fake-gateway')

const size = Number(process.argv[2] || 8) * 1024 * 1024
const count = Number(process.argv[3] || 20)
const kinds = {
  ASCII: Buffer.alloc(size, 'x').toString(),
  'Latin-1 range (é)': Buffer.alloc(size, 'é').toString(),
  '2-byte characters (ж)': Buffer.alloc(size, 'ж').toString(),
  '3-byte characters (€)': Buffer.alloc(size - size % 3, '€').toString()
}

async function run (name, text) {
  const teardowns = []
  const gateway = await fakeGateway({ teardown: (f) => teardowns.push(f) })
  const client = new Client({ host: 'localhost', port: gateway.port })
  let seen = 0
  let done
  const all = new Promise((resolve) => { done = resolve })
  client.on('action', (action, ack) => { ack(); if (++seen === count) done() })
  client.connect()
  const peer = await gateway.accept()
  await welcome(peer)
  const body = msgpack.encode({ id: 'a', type: 'bench', parameters: { data: text } })
  const header = Buffer.alloc(6)
  header[0] = 5
  header.writeUInt32LE(body.length, 2)
  const frame = Buffer.concat([header, body])
  const cpu = process.cpuUsage()
  const faults = process.resourceUsage().minorPageFault
  const started = process.hrtime.bigint()
  for (let i = 0; i < count; i++) peer.sendRaw(frame)
  await all
  const ms = Number(process.hrtime.bigint() - started) / 1e6
  const used = process.cpuUsage(cpu)
  const faulted = (process.resourceUsage().minorPageFault - faults) / count
  client.close()
  await Promise.all(teardowns.map((f) => f()))
  const bytes = Buffer.byteLength(text)
  console.log(`${name}: ${(ms / count).toFixed(2)} ms an action, ${(bytes * count / ms / 1e3).toFixed(0)} MB/s, CPU ${((used.user + used.system) / 1e3 / count).toFixed(2)} ms an action, ${faulted.toFixed(0)} page faults an action`)
}

;(async () => {
  for (const [name, text] of Object.entries(kinds)) await run(name, text)
})().catch((err) => { console.error(err); process.exit(1) })
