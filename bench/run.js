'use strict'
// npm run bench: the Node Client against its floor, a bare Rust stop-and-wait client
// (bench/floor), both talking to the same bundled Server (mutual TLS, throwaway
// certificates) in the same run. Prints a table and JSON (also written to .bench/results.json).
//
//   npm run bench               every figure, full size, 7 rounds
//   npm run bench -- --quick    smaller counts, 1 round, no 10,000-client run
//   --rounds N                  rounds for the floor-vs-client figures
//   --pin CPU                   run the Server, the floor and the clients on that one CPU
//                               (taskset): no cross-CPU wake-ups, far steadier figures
//   --only TEXT                 only the figures whose name contains TEXT (may be repeated;
//                               `--only outbox`: the durable outbox rows, without the floor;
//                               `--only metrics`: the OpenTelemetry rows)
//   --chart FILE                also write the chart of the ratios (SVG, bench/chart.js) to FILE
//   --reference FILE            carry imt-gateway 2.0.8's figures, measured elsewhere, into the
//                               results as `reference` ({name, values: {row name: figure}}),
//                               drawn beside 3.x's by the chart
//
// The small events, small actions and the awaited round trip are measured again against the
// lean gateway (`floor gateway`: the crate's Server alone on one thread, no Node), whose own
// CPU per message is small, so that pinned they show the client's CPU per message rather
// than the bundled Server's; those rows print each side's CPU per message (and the
// gateway's) too.
//
// Each floor-vs-client figure is measured in rounds, floor then client back to back. The
// client and floor columns are each side's median over the rounds; the ratio is the median of
// the rounds' own ratios. On a shared VM the machine's speed drifts, by half or more, over
// seconds: within a round both sides see about the same machine, so a slow stretch moves one
// round's ratio rather than one side's median.

const { execFileSync, execFile, fork, spawn } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { createPki } = require('imt-gateway/testing')

const root = path.join(__dirname, '..')
const quick = process.argv.includes('--quick')
const scale = (n) => quick ? Math.max(1, Math.round(n / 5)) : n
const roundsArg = process.argv.indexOf('--rounds')
const rounds = roundsArg > 0 ? Math.max(1, Number(process.argv[roundsArg + 1]) || 1) : quick ? 1 : 7
const pinArg = process.argv.indexOf('--pin')
const pin = pinArg > 0 ? String(process.argv[pinArg + 1]) : null
const only = process.argv.flatMap((arg, i) => process.argv[i - 1] === '--only' ? [arg] : [])
/** Whether the figure named `name` is wanted (`--only`). */
const wanted = (name) => only.length === 0 || only.some((text) => name.includes(text))
const MB = 1024 * 1024
const argAfter = (flag) => { const at = process.argv.indexOf(flag); return at > 0 ? process.argv[at + 1] : undefined }
const chartFile = argAfter('--chart')
// Read now, so that a bad file fails before the run rather than after it.
const reference = argAfter('--reference') === undefined ? undefined : JSON.parse(fs.readFileSync(argAfter('--reference'), 'utf8'))

/** `[command, args]` to run `command args`, on the `--pin` CPU when one is given. */
function pinned (command, args) {
  return pin === null ? [command, args] : ['taskset', ['-c', pin, command, ...args]]
}

// In a target directory of its own: the crate is a cdylib too, so its library's file names carry
// no hash, and a release build of the addon (`--features node`) in the main target directory
// and the floor's build (without it) would each overwrite the other's `libimt_gateway.rlib`
// and `.so` there (the floor then fails to compile, or the addon's file is the floor's).
function buildFloor () {
  const target = path.join(root, 'target', 'floor')
  execFileSync('cargo', ['build', '--release', '--quiet', '--target-dir', target], { cwd: path.join(__dirname, 'floor'), stdio: 'inherit' })
  return path.join(target, 'release', process.platform === 'win32' ? 'floor.exe' : 'floor')
}

function startServer (pki) {
  const [execPath, execArgv] = pinned(process.execPath, [])
  const child = fork(path.join(__dirname, 'server.js'), [], { execPath, execArgv, stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  const request = (message, key) => new Promise((resolve) => {
    const onMessage = (reply) => {
      if (key in reply) { child.off('message', onMessage); resolve(reply[key]) }
    }
    child.on('message', onMessage)
    child.send(message)
  })
  return request({ start: { key: pki.server.key, cert: pki.server.cert, ca: pki.caCert } }, 'port').then((port) => ({
    port,
    queue: (device, count, size, text) => request({ queue: { device, count, size, text } }, 'queued'),
    stop: () => new Promise((resolve) => { child.on('exit', resolve); child.send({ stop: true }) })
  }))
}

// A local HTTP CONNECT proxy for the `connect via HTTP proxy` row: the floor's lean relay
// (`floor proxy`, one thread, on the `--pin` CPU like the rest), so that the row measures what
// the client adds and not a slow relay; `tunnelUs(port, n)` is the median time to open a tunnel
// to `port` through it alone.
async function startProxy (floor) {
  const net = require('net')
  const [command, args] = pinned(floor, ['proxy'])
  const child = spawn(command, args, { stdio: ['ignore', 'pipe', 'inherit'] })
  const port = await new Promise((resolve, reject) => {
    let buffered = ''
    child.stdout.on('data', (chunk) => {
      buffered += chunk
      const at = buffered.indexOf('\n')
      if (at >= 0) resolve(JSON.parse(buffered.slice(0, at)).port)
    })
    child.once('exit', (code) => reject(new Error(`floor proxy exited (${code})`)))
  })
  const tunnel = (target) => new Promise((resolve, reject) => {
    const started = process.hrtime.bigint()
    const socket = net.connect(port, '127.0.0.1', () => socket.write(`CONNECT 127.0.0.1:${target} HTTP/1.1\r\nHost: 127.0.0.1:${target}\r\n\r\n`))
    socket.setNoDelay(true)
    socket.once('data', (chunk) => {
      const us = Number(process.hrtime.bigint() - started) / 1000
      socket.destroy()
      if (!/^HTTP\/1\.1 200/.test(chunk.toString('latin1'))) return reject(new Error(`proxy answered ${chunk}`))
      resolve(us)
    })
    socket.once('error', reject)
  })
  return {
    url: `http://127.0.0.1:${port}`,
    tunnelUs: async (target, n) => {
      const times = []
      for (let i = 0; i < n; i++) times.push(await tunnel(target))
      times.sort((a, b) => a - b)
      return times[Math.floor(times.length / 2)]
    },
    stop: () => new Promise((resolve) => { child.once('exit', resolve); child.kill() })
  }
}

// The lean gateway (`floor gateway`, see bench/floor): the crate's Server alone, on one thread,
// without Node. Pinned, every CPU cycle of a run is the gateway's or the client's, so the
// bundled Server's own cost (a Node process and its runtime threads) would dilute the
// client-to-floor ratio; these rows measure against this one instead.
function startLeanGateway (floor, files) {
  const [command, args] = pinned(floor, ['gateway', '--key', files.serverKey, '--cert', files.serverCert, '--ca', files.ca])
  const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'inherit'] })
  const replies = []
  const waiting = []
  let buffered = ''
  child.stdout.on('data', (chunk) => {
    buffered += chunk
    let at
    while ((at = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, at)
      buffered = buffered.slice(at + 1)
      const reply = JSON.parse(line)
      if (waiting.length) waiting.shift().resolve(reply)
      else replies.push(reply)
    }
  })
  let exited = null
  child.once('exit', (code) => {
    exited = new Error(`lean gateway exited (${code})`)
    for (const waiter of waiting.splice(0)) waiter.reject(exited)
  })
  const next = () => new Promise((resolve, reject) => {
    if (replies.length) return resolve(replies.shift())
    if (exited) return reject(exited)
    waiting.push({ resolve, reject })
  })
  // Nanoseconds of CPU the gateway has used, all threads (Linux; 0 elsewhere).
  const cpu = () => {
    try {
      return fs.readdirSync(`/proc/${child.pid}/task`)
        .reduce((sum, task) => sum + Number(fs.readFileSync(`/proc/${child.pid}/task/${task}/schedstat`, 'latin1').split(' ')[0]), 0)
    } catch (_) {
      return 0
    }
  }
  return next().then(({ port }) => ({
    port,
    // `run()`'s result, with the gateway's CPU per message (µs) over it as `gatewayCpuUs`.
    measured: async (messages, run) => {
      const before = cpu()
      const result = await run()
      return { ...result, gatewayCpuUs: (cpu() - before) / 1e3 / messages }
    },
    queue: (device, count, size, text) => {
      child.stdin.write(`queue ${device} ${count} ${size}${text ? ` ${text}` : ''}\n`)
      return next().then((reply) => reply.queued)
    },
    stop: () => new Promise((resolve) => {
      if (exited) return resolve()
      child.on('exit', resolve)
      child.stdin.end()
    })
  }))
}

function runFloor (floor, files, port, mode, options) {
  const args = [mode, '--port', String(port), '--key', files.key, '--cert', files.cert, '--ca', files.ca]
  for (const [name, value] of Object.entries(options)) args.push(`--${name}`, String(value))
  return new Promise((resolve, reject) => {
    execFile(...pinned(floor, args), { maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
      if (err) return reject(new Error(`floor ${mode}: ${stderr || err.message}`))
      resolve(JSON.parse(stdout))
    })
  })
}

// The Node floor (bench/node-floor.js): a minimal client on Node's own `tls`, for the lean rows.
function runNodeFloor (scenario) {
  return new Promise((resolve, reject) => {
    execFile(...pinned(process.execPath, [path.join(__dirname, 'node-floor.js'), JSON.stringify(scenario)]),
      { cwd: root, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`node floor ${scenario.kind}: ${stderr || err.message}`))
        resolve(JSON.parse(stdout))
      })
  })
}

function runClient (scenario) {
  return new Promise((resolve, reject) => {
    execFile(...pinned(process.execPath, ['--expose-gc', path.join(__dirname, 'client.js'), JSON.stringify(scenario)]),
      { cwd: root, maxBuffer: 1 << 20 }, (err, stdout, stderr) => {
        if (err) return reject(new Error(`client ${scenario.kind}: ${stderr || err.message}`))
        resolve(JSON.parse(stdout))
      })
  })
}

async function main () {
  console.log(`imt-gateway benchmark${quick ? ' (quick)' : ''}: ${os.cpus().length} cores, ${os.cpus()[0].model}, Node ${process.version}, ${rounds} round${rounds === 1 ? '' : 's'} per figure${pin === null ? '' : `, all on CPU ${pin}`}`)
  // Built when a figure first needs it (not for `--only outbox`).
  let floorBinary = null
  const floor = () => floorBinary || (floorBinary = buildFloor())
  const pki = createPki({ hosts: ['localhost', '127.0.0.1'] })
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-bench-'))
  const files = {
    key: path.join(dir, 'key.pem'),
    cert: path.join(dir, 'cert.pem'),
    ca: path.join(dir, 'ca.pem'),
    serverKey: path.join(dir, 'server-key.pem'),
    serverCert: path.join(dir, 'server-cert.pem')
  }
  fs.writeFileSync(files.key, pki.client.key)
  fs.writeFileSync(files.cert, pki.client.cert)
  fs.writeFileSync(files.ca, pki.caCert)
  fs.writeFileSync(files.serverKey, pki.server.key)
  fs.writeFileSync(files.serverCert, pki.server.cert)
  const server = await startServer(pki)
  const base = { port: server.port, key: pki.client.key, cert: pki.client.cert, ca: pki.caCert }
  const device = os.hostname()
  const rows = []
  const results = {}
  const row = (name, metric, unit, client, floorValue, target, higherIsBetter = true, spread = null) => {
    const ratio = spread ? median(spread) : floorValue ? client / floorValue : null
    const met = target === null || ratio === null ? null : higherIsBetter ? ratio >= target : ratio <= target
    rows.push({ name, metric, unit, client, floor: floorValue, ratio, target, met, rounds: spread })
    const range = spread && spread.length > 1 ? ` [rounds ${Math.min(...spread).toFixed(2)}-${Math.max(...spread).toFixed(2)}]` : ''
    console.log(`  ${name}: client ${fmt(client)} ${unit}, floor ${fmt(floorValue)} ${unit}, ratio ${ratio === null ? '-' : ratio.toFixed(2)}${range}${target === null ? '' : ` (target ${higherIsBetter ? '>=' : '<='} ${target})`}`)
  }
  // Floor, then client (and any further client runs, against the same floor), `rounds` times;
  // `clients[j]` and `floor` are the medians over the rounds, and `ratios(metric, j)` gives
  // the per-round ratios of client run `j` (default the first) to the floor.
  const paired = async (runFloorRound, ...runClientRounds) => {
    const floors = []
    const clients = runClientRounds.map(() => [])
    for (let i = 0; i < rounds; i++) {
      floors.push(await runFloorRound())
      for (const [j, runClientRound] of runClientRounds.entries()) clients[j].push(await runClientRound())
    }
    return {
      floor: medians(floors),
      clients: clients.map(medians),
      ratios: (metric, j = 0) => clients[j].map((c, i) => c[metric] / floors[i][metric])
    }
  }

  // Events sent, then actions received (queued on the Server first, under a device name of
  // each side's own), each small and in 1 MB and 8 MB bundles.
  for (const kind of ['events', 'actions']) {
    const actions = kind === 'actions'
    for (const [label, size, count] of [['small', 0, scale(20000)], ['1 MB', MB, scale(100)], ['8 MB', 8 * MB, scale(20)]]) {
      if (!wanted(`${kind} ${label}`)) continue
      // Small events are also sent with maxInFlight 64, in the same rounds, against the same
      // stop-and-wait floor.
      const pipelined = !actions && size === 0
      const extra = pipelined ? [() => runClient({ ...base, kind, count: scale(50000), size, maxInFlight: 64 })] : []
      const { clients: [c, pipelinedClient], floor: f, ratios } = await paired(
        async () => {
          if (actions) await server.queue('floor-actions', count, size)
          return runFloor(floor(), files, server.port, kind, { count, size, ...(actions ? { device: 'floor-actions' } : {}) })
        },
        async () => {
          if (actions) await server.queue(device, count, size)
          return runClient({ ...base, kind, count, size })
        },
        ...extra)
      results[`${kind} ${label}`] = { client: c, floor: f }
      const target = label === 'small' || label === '8 MB' ? (actions ? 0.8 : 0.9) : null
      const metric = size ? 'mbPerSecond' : 'perSecond'
      row(`${kind} ${label}`, metric, size ? 'MB/s' : `${kind}/s`, c[metric], f[metric], target, true, ratios(metric))
      if (pipelined) {
        results['events small, maxInFlight 64'] = { client: pipelinedClient, floor: f }
        row('events small, maxInFlight 64 (vs stop-and-wait floor)', 'perSecond', 'events/s', pipelinedClient.perSecond, f.perSecond, 8, true, ratios('perSecond', 1))
      }
    }
  }

  // The same 8 MB, as one string instead of a Buffer: `text` is `ascii` (one byte a character)
  // or `wide` (Cyrillic, two bytes of UTF-8 a character), so what is measured is making the
  // JavaScript string of a received action, or reading the UTF-8 of one sent.
  for (const [name, kind, text, target] of [
    ['actions 8 MB ASCII string', 'actions', 'ascii', 0.8],
    ['actions 8 MB non-ASCII string (2-byte characters)', 'actions', 'wide', 0.6],
    ['events 8 MB ASCII string', 'events', 'ascii', 0.9],
    ['events 8 MB non-ASCII string (2-byte characters)', 'events', 'wide', null]
  ]) {
    if (!wanted(name)) continue
    const actions = kind === 'actions'
    const size = 8 * MB
    const count = scale(20)
    const { clients: [c], floor: f, ratios } = await paired(
      async () => {
        if (actions) await server.queue('floor-actions', count, size, text)
        return runFloor(floor(), files, server.port, kind, { count, size, text, ...(actions ? { device: 'floor-actions' } : {}) })
      },
      async () => {
        if (actions) await server.queue(device, count, size, text)
        return runClient({ ...base, kind, count, size, text })
      })
    results[name] = { client: c, floor: f }
    row(name, 'mbPerSecond', 'MB/s', c.mbPerSecond, f.mbPerSecond, target, true, ratios('mbPerSecond'))
  }

  // Small events through a durable outbox (`outbox: { sync }`), stop-and-wait and with
  // maxInFlight 64, against the same client without one (in the floor's column; the floor
  // keeps no outbox), in rounds of in-memory then outbox. Each event is appended before send()
  // returns and removed when acknowledged; with 'always' every append waits for a device
  // flush, so it runs fewer events. Target: 'interval' at 0.8 of in-memory.
  for (const sync of ['none', 'interval', 'always']) {
    for (const maxInFlight of [1, 64]) {
      const name = `events small, outbox sync '${sync}'${maxInFlight === 1 ? '' : ', maxInFlight 64'} (vs in-memory)`
      if (!wanted(name)) continue
      const count = sync === 'always' ? scale(2000) : scale(maxInFlight === 1 ? 20000 : 50000)
      const run = (outbox) => runClient({ ...base, kind: 'events', count, size: 0, maxInFlight, ...(outbox ? { outbox } : {}) })
      const { clients: [c], floor: memory, ratios } = await paired(() => run(null), () => run({ sync }))
      results[name] = { client: c, inMemory: memory }
      row(name, 'perSecond', 'events/s', c.perSecond, memory.perSecond, sync === 'interval' ? 0.8 : null, true, ratios('perSecond'))
    }
  }

  // Small events with OpenTelemetry metrics on (an SDK MeterProvider given as `meterProvider`,
  // its in-memory exporter collecting every second) against the same client with none (in the
  // floor's column), stop-and-wait and with maxInFlight 64, in rounds of off then on. Target
  // (issue 27): 0.9 of the client without metrics.
  for (const maxInFlight of [1, 64]) {
    const name = `events small, metrics on${maxInFlight === 1 ? '' : ', maxInFlight 64'} (vs off)`
    if (!wanted(name)) continue
    const count = scale(maxInFlight === 1 ? 20000 : 50000)
    const run = (metrics) => runClient({ ...base, kind: 'events', count, size: 0, maxInFlight, metrics })
    const { clients: [c], floor: off, ratios } = await paired(() => run(false), () => run(true))
    results[name] = { client: c, metricsOff: off }
    row(name, 'perSecond', 'events/s', c.perSecond, off.perSecond, 0.9, true, ratios('perSecond'))
  }

  // Small events, small actions and the round trip of one awaited event again, against the
  // lean gateway (see startLeanGateway): pinned, these measure the client's CPU per message.
  // In the same rounds, the Node floor (bench/node-floor.js) against the same gateway: its
  // rows (`..., Node floor`) give its ratio to the same floor, where pure JavaScript stops.
  const leanRows = [['events small, lean gateway', 'events'], ['actions small, lean gateway', 'actions'],
    ['event round trip, lean gateway', 'rtt']].filter(([name]) => wanted(name))
  let lean = null
  for (const [name, kind] of leanRows) {
    lean = lean || await startLeanGateway(floor(), files)
    const leanBase = { ...base, port: lean.port }
    // CPU per message of each side and of the gateway serving it (µs; the connection's
    // setup is included, a few hundredths of a µs a message): where the ratio's time goes.
    const cpuLine = (c, f, n) => console.log(`    CPU per message: client ${c.cpuUs.toFixed(1)} µs (gateway ${c.gatewayCpuUs.toFixed(1)} µs), floor ${f.cpuUs.toFixed(1)} µs (gateway ${f.gatewayCpuUs.toFixed(1)} µs), Node floor ${n.cpuUs.toFixed(1)} µs (gateway ${n.gatewayCpuUs.toFixed(1)} µs)`)
    if (kind === 'rtt') {
      // After as many untimed round trips on each side: the client's JavaScript compiled, as in
      // a process that has run a while (a fresh one's first thousands are slower).
      const count = scale(5000)
      const warmup = scale(5000)
      const { clients: [c, n], floor: f, ratios } = await paired(
        () => lean.measured(count + warmup, () => runFloor(floor(), files, lean.port, 'events', { count, size: 0, warmup })),
        () => lean.measured(count + warmup, () => runClient({ ...leanBase, kind: 'rtt', count, warmup })),
        () => lean.measured(count + warmup, () => runNodeFloor({ ...leanBase, kind: 'rtt', count, warmup })))
      results[name] = { client: c, floor: f, nodeFloor: n }
      row(`${name}, median`, 'rttMedianUs', 'µs', c.rttMedianUs, f.rttMedianUs, pin === null ? null : 1.2, false, ratios('rttMedianUs'))
      row(`${name}, p99`, 'rttP99Us', 'µs', c.rttP99Us, f.rttP99Us, null, false, ratios('rttP99Us'))
      row(`${name}, median, Node floor`, 'rttMedianUs', 'µs', n.rttMedianUs, f.rttMedianUs, null, false, ratios('rttMedianUs', 1))
      cpuLine(c, f, n)
      continue
    }
    const actions = kind === 'actions'
    const count = scale(20000)
    // After as many untimed messages first, as the round trip: a process that has run a while
    // (see docs/performance.md). For actions, a connection of its own before the timed one,
    // as DEVICE-warmup. The gateway's CPU per message is over both, as the round trip's.
    const warmup = count
    const warm = async (name) => { if (actions) await lean.queue(`${name}-warmup`, warmup, 0) }
    const timed = (run) => lean.measured(count + warmup, run)
    const { clients: [c, n], floor: f, ratios } = await paired(
      async () => {
        await warm('floor-actions')
        if (actions) await lean.queue('floor-actions', count, 0)
        return timed(() => runFloor(floor(), files, lean.port, kind, { count, size: 0, warmup, ...(actions ? { device: 'floor-actions' } : {}) }))
      },
      async () => {
        await warm(`${device}`)
        if (actions) await lean.queue(device, count, 0)
        return timed(() => runClient({ ...leanBase, kind, count, size: 0, warmup, warmupDevice: `${device}-warmup` }))
      },
      async () => {
        await warm('node-floor-actions')
        if (actions) await lean.queue('node-floor-actions', count, 0)
        return timed(() => runNodeFloor({ ...leanBase, kind, count, warmup, device: 'node-floor-actions' }))
      })
    results[name] = { client: c, floor: f, nodeFloor: n }
    row(name, 'perSecond', `${kind}/s`, c.perSecond, f.perSecond, 0.85, true, ratios('perSecond'))
    row(`${name}, Node floor`, 'perSecond', `${kind}/s`, n.perSecond, f.perSecond, null, true, ratios('perSecond', 1))
    cpuLine(c, f, n)
  }
  if (lean) await lean.stop()

  if (wanted('event round trip')) {
    const count = scale(5000)
    const { clients: [c], floor: f, ratios } = await paired(
      () => runFloor(floor(), files, server.port, 'events', { count, size: 0 }),
      () => runClient({ ...base, kind: 'rtt', count }))
    results.rtt = { client: c, floor: f }
    row('event round trip, median', 'rttMedianUs', 'µs', c.rttMedianUs, f.rttMedianUs, null, false, ratios('rttMedianUs'))
    row('event round trip, p99', 'rttP99Us', 'µs', c.rttP99Us, f.rttP99Us, null, false, ratios('rttP99Us'))
  }

  if (wanted('connect')) {
    const count = scale(200)
    const { clients: [c], floor: f, ratios } = await paired(
      () => runFloor(floor(), files, server.port, 'connect', { count }),
      () => runClient({ ...base, kind: 'connect', count }))
    results.connect = { client: c, floor: f }
    row('connect (TCP + TLS + WELCOME + DRAINED), median', 'medianUs', 'µs', c.medianUs, f.medianUs, 1.2, false, ratios('medianUs'))
  }

  // A full handshake (a new client each time, so no resumption) with the device's EC P-256 key
  // generated in a SoftHSM token, against the same with an EC P-256 key in memory, in the same
  // rounds: the token's signature (through its PKCS#11 module) should cost at most 2x. Also the
  // memory of idle clients with the token key against the key in memory. Skipped, with a note,
  // where SoftHSM is not installed (scripts/toolchains.sh pkcs11).
  if (wanted('connect with a PKCS#11 key')) {
    const { unavailable, createSoftHsm } = require('../__test__/helpers/softhsm')
    const why = unavailable()
    if (why) {
      console.log(`  connect with a PKCS#11 key: skipped, ${why}`)
    } else {
      const hsm = createSoftHsm()
      try {
        hsm.initToken('bench')
        const spki = hsm.generateKey('bench', 'EC:prime256v1', 'bench-key', '01')
        const tokenCert = pki.ca.issue({ commonName: 'bench-hsm', client: true, publicKey: spki }).cert
        const token = { ...base, key: hsm.uri('bench', 'bench-key'), cert: tokenCert }
        const count = scale(200)
        const memories = []
        const tokens = []
        for (let i = 0; i < rounds; i++) {
          memories.push(await runClient({ ...base, kind: 'connect', count, fresh: true }))
          tokens.push(await runClient({ ...token, kind: 'connect', count, fresh: true }))
        }
        const memory = medians(memories)
        const inToken = medians(tokens)
        // Idle memory, with one client and with many: the difference between the two runs is
        // what each further client costs; what one client costs beyond that is fixed (for the
        // token, the module's own: SoftHSM and its crypto library).
        const clients = scale(500)
        const idle = async (options) => {
          const one = await runClient({ ...options, kind: 'idle', clients: 1 })
          const many = await runClient({ ...options, kind: 'idle', clients })
          const each = (many.bytesPerClient * clients - one.bytesPerClient) / (clients - 1)
          return { fixed: one.bytesPerClient - each, each }
        }
        const idleMemory = await idle(base)
        const idleToken = await idle(token)
        results.connectPkcs11 = { client: inToken, memory, idle: { memory: idleMemory, token: idleToken } }
        row('connect with a PKCS#11 key (vs key in memory, full handshakes), median', 'medianUs', 'µs', inToken.medianUs, memory.medianUs, 2, false,
          tokens.map((v, i) => v.medianUs / memories[i].medianUs))
        console.log(`    idle clients (1 and ${clients}, RSS between forced GCs): each further client ${fmt(idleToken.each / 1024)} KB with the token key, ${fmt(idleMemory.each / 1024)} KB with the key in memory; fixed ${fmt(idleToken.fixed / 1024)} KB and ${fmt(idleMemory.fixed / 1024)} KB (the module's own in the difference)`)
      } finally {
        hsm.remove()
      }
    }
  }

  // The same connect, through a local HTTP CONNECT proxy (the floor's relay, `floor proxy`), against
  // the client's own direct connect in the same rounds (the "floor" column of this row): the
  // tunnel should cost one round trip to the proxy (CONNECT and its answer, with the proxy's
  // own connect to the gateway inside it) and nothing more. Opening a tunnel alone, measured
  // here too (TCP connect to the proxy, CONNECT, its answer), is printed beside it.
  if (wanted('connect via HTTP proxy')) {
    const count = scale(200)
    const proxy = await startProxy(floor())
    const directs = []
    const vias = []
    for (let i = 0; i < rounds; i++) {
      directs.push(await runClient({ ...base, kind: 'connect', count, proxy: false }))
      vias.push(await runClient({ ...base, kind: 'connect', count, proxy: proxy.url }))
    }
    const direct = medians(directs)
    const via = medians(vias)
    const tunnelUs = await proxy.tunnelUs(server.port, count)
    results.connectViaProxy = { client: via, direct, tunnelUs }
    row('connect via HTTP proxy (vs direct), median', 'medianUs', 'µs', via.medianUs, direct.medianUs, null, false,
      vias.map((v, i) => v.medianUs / directs[i].medianUs))
    console.log(`    ${fmt(via.medianUs - direct.medianUs)} µs more than direct; a tunnel opened alone (TCP connect, CONNECT, answer): ${fmt(tunnelUs)} µs median`)
    await proxy.stop()
  }

  // Two figures from one run of `clients` idle clients (bench/client.js, `idle`): the RSS
  // growth between two forced garbage collections, divided by the clients, and the growth
  // from the process's start with no collection forced (garbage not yet collected counts).
  // The floor has no garbage collector: its one figure, from before its first connection,
  // stands beside both. docs/ARCHITECTURE.md section 7 says where an idle client's bytes go.
  if (wanted('memory per idle') || wanted('RSS growth per idle')) {
    const clients = 1000
    const f = await runFloor(floor(), files, server.port, 'idle', { clients })
    const c = await runClient({ ...base, kind: 'idle', clients })
    results.idle = { client: c, floor: f }
    const KB = 1024
    for (const [name, metric, target] of [
      [`memory per idle TLS client (${clients} in one process)`, 'bytesPerClient', 40 * KB],
      [`RSS growth per idle TLS client (${clients} in one process, from start, no forced GC)`, 'rssGrowthPerClient', 48 * KB]
    ]) {
      row(name, metric, 'bytes', c[metric], f.bytesPerClient, null, false)
      console.log(`    target: client at most ${target} bytes: ${c[metric] <= target ? 'met' : 'NOT met'}`)
    }
  }

  if (!quick && wanted('idle TLS clients')) {
    const clients = 10000
    const c = await runClient({ ...base, kind: 'idle', clients })
    results.idle10k = { client: c }
    console.log(`  ${clients} idle TLS clients in one process: ${c.clients} connected, ${fmt(c.bytesPerClient)} bytes each (${fmt(c.rssGrowthPerClient)} from start, no forced GC)`)
  }

  if (wanted('server')) {
    const clients = 100
    const count = scale(500)
    const f = await runFloor(floor(), files, server.port, 'load', { clients, count, device: 'load' })
    results.serverLoad = { floor: f }
    console.log(`  server: ${fmt(f.perSecond)} events/s acknowledged across ${clients} concurrent clients`)
  }

  await server.stop()
  fs.rmSync(dir, { recursive: true, force: true })

  console.log('\n| figure | client (median) | floor (median) | ratio (median of rounds) | ratio per round | target |\n|---|---|---|---|---|---|')
  for (const r of rows) {
    const target = r.target === null ? '' : `${r.metric.startsWith('rtt') || r.metric === 'medianUs' ? '≤' : '≥'} ${r.target} ${r.met ? '(met)' : '(NOT met)'}`
    const perRound = r.rounds ? r.rounds.map((x) => x.toFixed(2)).join(', ') : ''
    console.log(`| ${r.name} | ${fmt(r.client)} ${r.unit} | ${fmt(r.floor)} ${r.unit} | ${r.ratio === null ? '' : r.ratio.toFixed(2)} | ${perRound} | ${target} |`)
  }
  const report = { date: new Date().toISOString(), quick, rounds, pin, cpus: os.cpus().length, node: process.version, rows, results }
  if (reference) report.reference = reference
  fs.mkdirSync(path.join(root, '.bench'), { recursive: true })
  fs.writeFileSync(path.join(root, '.bench', 'results.json'), JSON.stringify(report, null, 2))
  if (chartFile) {
    require('./chart').writeChart(report, chartFile)
    console.log(`\nchart: ${chartFile}`)
  }
  console.log('\n' + JSON.stringify(report))
}

/** The median of every numeric field over a list of results with the same fields. */
function median (values) {
  const sorted = values.slice().sort((a, b) => a - b)
  return sorted[Math.floor(sorted.length / 2)]
}

function medians (list) {
  const out = {}
  for (const key of Object.keys(list[0])) {
    const values = list.map((r) => r[key]).filter((v) => typeof v === 'number')
    if (values.length) out[key] = median(values)
  }
  return out
}

function fmt (n) {
  if (n === null || n === undefined) return '-'
  return n >= 100 ? Math.round(n).toLocaleString('en-US') : n.toFixed(1)
}

main().catch((err) => {
  console.error(err)
  process.exit(1)
})
