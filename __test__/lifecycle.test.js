'use strict'
// The native side over a process's life: many connect/close cycles, garbage collection,
// worker threads and exiting while connected never crash, leak or keep Node alive.

const test = require('ava')
const { runNode } = require('./helpers/child')
const { scaled } = require('./helpers/time')

// Shared by the child scripts: a dual-stack Server on a free port and a connect/close cycle.
const prelude = `
  const { Client, Event, Server } = require('imt-gateway')
  const listen = () => new Promise((resolve) => { const s = new Server(); s.listen(0, () => resolve(s)) })
  const cycle = (client) => new Promise((resolve) => {
    client.once('drain', () => { client.once('disconnect', resolve); client.close() })
    client.connect()
  })
  const snapshot = () => { global.gc(); global.gc(); return { rss: process.memoryUsage().rss, heap: process.memoryUsage().heapUsed, resources: process.getActiveResourcesInfo().length } }
`

// Limits are for this machine, stretched by IMT_TEST_TIME_SCALE like every other (the byte limits
// too: under qemu or wine more is allocated before the collector and the allocator catch up).

test('1,000 connect/close cycles leave memory and handles flat, and the process exits within 1 s', async (t) => {
  const result = await runNode(`${prelude}
    ;(async () => {
      const server = await listen()
      const client = new Client({ host: 'localhost', port: server.address().port })
      for (let i = 0; i < 300; i++) await cycle(client)
      const before = snapshot()
      for (let i = 0; i < 1000; i++) await cycle(client)
      const after = snapshot()
      console.log(JSON.stringify({ before, after }))
      await new Promise((resolve) => server.close(resolve))
      const closed = Date.now()
      process.on('exit', () => console.log(JSON.stringify({ exitAfter: Date.now() - closed })))
    })()
  `, { timeout: 60000, node: ['--expose-gc'] })
  t.is(result.signal, null, result.err)
  t.is(result.code, 0, result.err)
  const [first, second] = result.out.trim().split('\n').map((line) => JSON.parse(line))
  const { before, after } = first
  t.log(`rss ${(before.rss / 1e6).toFixed(1)} -> ${(after.rss / 1e6).toFixed(1)} MB, heap ${(before.heap / 1e6).toFixed(1)} -> ${(after.heap / 1e6).toFixed(1)} MB, resources ${before.resources} -> ${after.resources}, exit ${second.exitAfter} ms after close`)
  t.true(after.resources <= before.resources, 'no handle left behind')
  t.true(after.heap - before.heap < scaled(2e6), 'the JS heap stays flat')
  t.true(after.rss - before.rss < scaled(16e6), 'native memory stays flat')
  t.true(second.exitAfter < scaled(1000), `exited ${second.exitAfter} ms after close`)
})

test('closed clients are garbage-collected; a connected one nobody references keeps working', async (t) => {
  const result = await runNode(`${prelude}
    ;(async () => {
      const server = await listen()
      const port = server.address().port
      let collected = 0
      const registry = new FinalizationRegistry(() => { collected++ })
      for (let i = 0; i < 50; i++) {
        const client = new Client({ host: 'localhost', port })
        registry.register(client, i)
        await cycle(client)
      }
      // Connected, and referenced by nothing but its own listeners.
      const echoed = new Promise((resolve) => {
        const orphan = new Client({ host: 'localhost', port })
        orphan.on('action', (action, ack) => { ack(); resolve(action.type); orphan.close() })
        orphan.once('drain', () => setTimeout(() => orphan.send(new Event('still-alive')), 50))
        orphan.connect()
      })
      for (let i = 0; i < 10; i++) { global.gc(); await new Promise((resolve) => setTimeout(resolve, 10)) }
      console.log(JSON.stringify({ collected, echoed: await echoed }))
      server.close()
    })()
  `, { timeout: 30000, node: ['--expose-gc'] })
  t.is(result.code, 0, result.err)
  const { collected, echoed } = JSON.parse(result.out)
  t.true(collected >= 45, `${collected} of 50 closed clients collected`)
  t.is(echoed, 'still-alive')
})

test('clients in two worker_threads work, and terminating a connected worker does not crash', async (t) => {
  const result = await runNode(`${prelude}
    const { Worker } = require('worker_threads')
    ;(async () => {
      const server = await listen()
      const port = server.address().port
      const source = \`
        const { parentPort, workerData } = require('worker_threads')
        const { Client, Event } = require('imt-gateway')
        const client = new Client({ host: 'localhost', port: workerData.port })
        let done = 0
        client.on('action', (action, ack) => ack())
        client.once('drain', () => {
          for (let i = 0; i < 20; i++) client.send(new Event('from-worker', { worker: workerData.name, i }), (err) => {
            if (err) throw err
            if (++done === 20) { parentPort.postMessage(done); if (!workerData.stay) client.close() }
          })
        })
        client.connect()
      \`
      const run = (name, stay) => new Promise((resolve, reject) => {
        const worker = new Worker(source, { eval: true, workerData: { port, name, stay } })
        const exited = new Promise((resolve) => worker.on('exit', resolve))
        worker.on('error', reject)
        worker.on('message', (n) => resolve({ worker, n, exited }))
      })
      const [a, b] = await Promise.all([run('a', false), run('b', true)])
      const exitA = await a.exited
      const exitB = await b.worker.terminate()
      console.log(JSON.stringify({ a: a.n, b: b.n, exitA, exitB }))
      server.close()
    })()
  `, { timeout: 30000 })
  t.is(result.signal, null, result.err)
  t.is(result.code, 0, result.err)
  t.deepEqual(JSON.parse(result.out), { a: 20, b: 20, exitA: 0, exitB: 1 })
})

test('large strings from actions outlive the client and garbage collection, and their memory is returned', async (t) => {
  // Strings of 256 KiB and more reach JavaScript as external strings over memory the addon
  // made, which the garbage collector frees. This checks both halves: the characters stay
  // right after everything else is gone, and 240 MB of strings that nobody keeps do not stay
  // in memory (V8 would not collect them for the memory they hold unless told of it).
  const result = await runNode(`${prelude}
    const { Worker } = require('worker_threads')
    const text = (unit, bytes, n) => unit.repeat(Math.floor(bytes / Buffer.byteLength(unit))) + ':' + n
    const echo = (client, bundle) => new Promise((resolve) => {
      client.once('action', (action, ack) => { ack(); resolve(action.parameters.text) })
      client.send(new Event('big', bundle))
    })
    ;(async () => {
      const server = await listen()
      const port = server.address().port
      const client = new Client({ host: 'localhost', port })
      await new Promise((resolve) => { client.once('drain', resolve); client.connect() })
      const units = ['x', 'é', 'ж', '€', '😀', 'aé€😀ж']
      const kept = []
      for (const [n, unit] of units.entries()) kept.push(await echo(client, { text: text(unit, 300000 + n, n) }))
      const sent = [0, 1, 2, 3].map((i) => text(i % 2 ? 'ж' : 'x', 4e6, i))
      for (let i = 0; i < 4; i++) await echo(client, { text: sent[i] })
      const before = process.memoryUsage().rss
      let peak = before
      for (let i = 0; i < 60; i++) {
        const got = await echo(client, { text: sent[i % 4] })
        if (got.length !== sent[i % 4].length) throw new Error('wrong length ' + got.length)
        peak = Math.max(peak, process.memoryUsage().rss)
      }
      await new Promise((resolve) => { client.once('disconnect', resolve); client.close() })
      for (let i = 0; i < 5; i++) { global.gc(); await new Promise((resolve) => setTimeout(resolve, 10)) }
      const intact = kept.map((got, n) => got === text(units[n], 300000 + n, n))
      // A worker that holds a large string when it is terminated.
      const worker = new Worker(\`
        const { parentPort, workerData } = require('worker_threads')
        const { Client, Event } = require('imt-gateway')
        const client = new Client({ host: 'localhost', port: workerData.port })
        globalThis.held = []
        client.on('action', (action, ack) => { ack(); globalThis.held.push(action.parameters.text); parentPort.postMessage(action.parameters.text.length) })
        client.once('drain', () => client.send(new Event('big', { text: 'ж'.repeat(500000) })))
        client.connect()
      \`, { eval: true, workerData: { port } })
      const length = await new Promise((resolve, reject) => { worker.on('message', resolve); worker.on('error', reject) })
      const exit = await worker.terminate()
      console.log(JSON.stringify({ intact, growth: peak - before, length, exit }))
      server.close()
    })()
  `, { timeout: 120000, node: ['--expose-gc'] })
  t.is(result.signal, null, result.err)
  t.is(result.code, 0, result.err)
  const { intact, growth, length, exit } = JSON.parse(result.out)
  t.log(`peak rss growth over 60 strings of 4 MB (half ASCII, half two-byte): ${(growth / 1e6).toFixed(1)} MB`)
  t.deepEqual(intact, [true, true, true, true, true, true])
  t.true(growth < scaled(160e6), 'strings nobody keeps are collected for the memory they hold')
  t.deepEqual({ length, exit }, { length: 500000, exit: 1 })
})

test('process.exit() while connected exits cleanly', async (t) => {
  const result = await runNode(`${prelude}
    ;(async () => {
      const server = await listen()
      const clients = [1, 2, 3].map(() => new Client({ host: 'localhost', port: server.address().port }))
      let drained = 0
      for (const client of clients) {
        client.on('drain', () => { if (++drained === 3) { console.log('exiting'); process.exit(7) } })
        client.send(new Event('pending'))
        client.connect()
      }
    })()
  `, { timeout: 20000 })
  t.is(result.signal, null, result.err)
  t.is(result.code, 7, result.err)
  t.is(result.out, 'exiting\n')
})
