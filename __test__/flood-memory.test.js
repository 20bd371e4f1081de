'use strict'
// A gateway floods actions while the application's JavaScript is busy for seconds: the client
// must stop reading (TCP pushes back on the gateway) instead of buffering the flood, on both I/O
// drivers: the libuv one (Node's default) and the tokio one (Windows, Bun, Deno,
// IMT_GATEWAY_IO=tokio).

const test = require('ava')
const { fakeGateway, welcome } = require('./helpers/fake-gateway')
const { frame } = require('./helpers/raw-client')
const { startNode } = require('./helpers/child')
const { scaled } = require('./helpers/time')

const BUSY_MS = 4000
const ACTION = frame(5, { id: 'x', type: 'flood', parameters: { text: 'x'.repeat(64 * 1024) } })

// Serial: the flood keeps this process busy writing, which would upset other tests' timing.
for (const io of ['libuv', 'tokio']) {
  test.serial(`a flood of actions while JavaScript is busy keeps the client's memory bounded (${io} driver)`, async (t) => {
    const gateway = await fakeGateway(t)
    let written = 0
    let flooding = true
    gateway.accept().then(async (peer) => {
      await welcome(peer)
      const socket = peer.socket
      // Writes as fast as the client reads: a write that the socket does not take at once waits
      // for 'drain', so `written` counts what the client's side took, plus the kernel's buffers.
      const pump = () => {
        while (flooding && !socket.destroyed) { // eslint-disable-line no-unmodified-loop-condition -- cleared once the child has ended
          written += ACTION.length
          if (!socket.write(ACTION)) return socket.once('drain', pump)
        }
      }
      pump()
    })
    const { child, ended } = startNode(`
      const fs = require('fs')
      const { Client } = require('imt-gateway')
      const peak = () => Number(/VmHWM:\\s+(\\d+)/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024
      const before = process.memoryUsage().rss
      const client = new Client({ host: 'localhost', port: ${gateway.port}, autoReconnect: false })
      let seen = 0
      client.on('action', (action, ack) => {
        seen++
        ack()
        if (seen === 1) {
          console.log('busy')
          const until = Date.now() + ${BUSY_MS}
          while (Date.now() < until) {}
        } else if (seen === 300) {
          // Reported from a listener, not a timer: the flood goes on meanwhile.
          console.log(JSON.stringify({ before, peak: peak(), seen }))
          client.close()
        }
      })
      client.on('error', (err) => { console.error(err); process.exit(3) })
      client.connect()
    `, { env: { IMT_GATEWAY_IO: io === 'tokio' ? 'tokio' : '' }, timeout: BUSY_MS + 20000 })
    // What the gateway got to write while the client's JavaScript was busy, from the moment it
    // said so to shortly before it ends (stdout to a pipe is written synchronously).
    let during = null
    child.stdout.once('data', () => {
      const start = written
      setTimeout(() => { during = written - start }, BUSY_MS - 500)
    })
    const result = await ended
    flooding = false
    t.is(result.signal, null, result.err)
    t.is(result.code, 0, result.err)
    const { before, peak, seen } = JSON.parse(result.out.slice(result.out.indexOf('{')))
    const grown = (peak - before) / 2 ** 20
    t.log(`${io}: the gateway wrote ${(during / 2 ** 20).toFixed(1)} MB while JavaScript was busy, ${seen} actions delivered in all; peak RSS ${(peak / 2 ** 20).toFixed(1)} MB, ${grown.toFixed(1)} MB over the start`)
    t.is(seen, 300, 'actions kept coming after the busy spell')
    // What crosses the socket while JavaScript is busy is bounded by the client's read-ahead and
    // the kernel's buffers: a few MB, against gigabytes that loopback carries in 4 s unchecked.
    t.true(during !== null && during < scaled(64) * 2 ** 20, `the gateway wrote ${during} bytes`)
    // Scaled like the other limits: under qemu-user the emulator's own memory grows with the work.
    t.true(grown < scaled(100), `peak RSS grew by ${grown.toFixed(1)} MB`)
  })
}
