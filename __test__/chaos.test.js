'use strict'
// The chaos run (scripts/chaos.js) at CI size: a seeded fault schedule between Client and
// Server, and the at-least-once guarantee checked on its counts. `npm run chaos` is the full
// size (10,000 events, at least 50 forced disconnects).

const test = require('ava')
const { runChaos, runOutboxChaos } = require('../scripts/chaos')
const { scaled } = require('./helpers/time')

test('events survive cuts, stalls, delays and corruption: each delivered, each callback once', async (t) => {
  const result = await runChaos({ events: 1500, seed: 20261127, meanBytes: 20000, minDisconnects: 10 })
  t.log(JSON.stringify(result))
  t.is(result.missing, 0, 'the server received every event id')
  t.true(result.callbacksExactlyOnce, 'every callback ran exactly once')
  t.is(result.callbackFailures, 0, `every callback reported success (first failure: ${JSON.stringify(result.firstFailure)})`)
  t.true(result.disconnects >= 10, `${result.disconnects} disconnects`)
  t.true(result.duplicates <= result.disconnects, `${result.duplicates} duplicates for ${result.disconnects} disconnects`)
})

test('with an outbox, events survive the sender being SIGKILLed and restarted under the same faults', async (t) => {
  // A few seconds alone; four processes started one after another under a fully loaded CI
  // machine have taken over a minute.
  t.timeout(scaled(240000))
  const result = await runOutboxChaos({ events: 900, kills: 3, seed: 20261201, meanBytes: 20000, log: (line) => t.log(line) })
  t.log(JSON.stringify(result))
  t.true(result.events > 0)
  t.is(result.missing, 0, `every event whose send() returned reached the server (first missing: ${result.firstMissing})`)
  t.true(result.duplicates <= result.connections, `${result.duplicates} duplicates for ${result.connections} connections`)
})
