'use strict'

// bench/chart.js: the SVG chart of a results JSON (the shape bench/run.js writes), run as the
// command a user runs, on fixtures made here.
const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawnSync } = require('child_process')

const script = path.join(__dirname, '..', 'bench', 'chart.js')

function row (name, unit, client, floor, ratio) {
  return { name, metric: unit.endsWith('/s') ? 'perSecond' : 'rttMedianUs', unit, client, floor, ratio, target: null, met: null, rounds: [ratio] }
}

const ROWS = [
  row('events small', 'events/s', 9000, 10000, 0.9),
  row('actions 8 MB (ASCII string) <&>', 'actions/s', 42, 50, 0.84),
  row('events small, maxInFlight 64', 'events/s', 180000, 10000, 18),
  row('event round trip, median', 'µs', 95, 100, 0.95),
  row('memory per idle TLS client', 'bytes', 32000, 16000, 2),
  // No floor, no ratio: not drawn.
  row('server load', 'events/s', 50000, null, null)
]

function runChart (t, report) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-chart-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  const input = path.join(dir, 'results.json')
  const output = path.join(dir, 'charts', 'bench.svg')
  fs.writeFileSync(input, JSON.stringify(report))
  const run = spawnSync(process.execPath, [script, input, output], { encoding: 'utf8' })
  return { run, svg: fs.existsSync(output) ? fs.readFileSync(output, 'utf8') : null }
}

// Well-formed XML, as far as an SVG file needs: one root <svg>, every tag closed in order,
// attributes quoted, only the five predefined entities.
function assertWellFormed (t, svg) {
  t.regex(svg, /^<svg xmlns="http:\/\/www\.w3\.org\/2000\/svg"/)
  const stack = []
  const tag = /<(\/?)([a-zA-Z][\w:-]*)((?:\s+[\w:-]+="[^"<]*")*)\s*(\/?)>/g
  let at = 0
  let match
  while ((match = tag.exec(svg)) !== null) {
    const between = svg.slice(at, match.index)
    t.false(/[<>]/.test(between), `stray < or > before ${match[0]}`)
    t.false(/&(?!(amp|lt|gt|quot|apos);)/.test(between), `bad entity in ${JSON.stringify(between)}`)
    at = tag.lastIndex
    const [, closing, name, , selfClosing] = match
    if (closing) t.is(stack.pop(), name, `</${name}> closes the open tag`)
    else if (!selfClosing) stack.push(name)
    if (stack.length === 0) break
  }
  t.deepEqual(stack, [], 'every tag is closed')
  t.is(svg.slice(at).trim(), '', 'nothing after the root element')
}

const escaped = (text) => text.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;')
// The value printed beside a bar: `>0.84</text>`.
const valueText = (ratio) => `>${ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)}</text>`

test('bench/chart.js writes a well-formed SVG with each figure\'s label and ratio, and the 1.0 line', (t) => {
  const { run, svg } = runChart(t, { date: '2026-12-01T00:00:00.000Z', quick: false, rounds: 7, pin: '0', node: 'v20.0.0', rows: ROWS, results: {} })
  t.is(run.status, 0, run.stderr)
  assertWellFormed(t, svg)
  for (const r of ROWS.filter((r) => r.ratio !== null)) {
    t.true(svg.includes(escaped(r.name)), `label of ${r.name}`)
    t.true(svg.includes(valueText(r.ratio)), `ratio of ${r.name}`)
  }
  t.false(svg.includes('server load'), 'a row without a ratio is not drawn')
  t.regex(svg, /font-weight="600">1\.0<\/text>/, 'the 1.0 line is labelled')
  t.regex(svg, /<rect x="0" y="0" width="\d+" height="\d+" fill="#ffffff"\/>/, 'an explicit background, for dark themes')
  t.false(svg.includes('2.0.8'), 'no 2.0.8 bars without reference figures')
  t.true(svg.includes('7 rounds') && svg.includes('pinned to CPU 0'), 'the run is described')
})

test('bench/chart.js draws 2.0.8\'s figures over the same floor when the results carry them', (t) => {
  const reference = { name: '2.0.8', values: { 'events small': 4000, 'event round trip, median': 250 } }
  const { run, svg } = runChart(t, { rows: ROWS, results: {}, reference })
  t.is(run.status, 0, run.stderr)
  assertWellFormed(t, svg)
  t.true(svg.includes('imt-gateway 2.0.8'), 'legend')
  t.true(svg.includes('events small, 2.0.8: 0.40 × the floor'), '4000 / 10000')
  t.true(svg.includes('event round trip, median, 2.0.8: 2.50 × the floor'), '250 / 100')
  t.true(svg.includes(valueText(0.4)) && svg.includes(valueText(2.5)))
  t.true(svg.includes('2.0.8: not measured'), 'rows without a 2.0.8 figure say so')
})

test('bench/chart.js fails with a message, and writes nothing, when no row has a ratio', (t) => {
  const { run, svg } = runChart(t, { rows: [ROWS[5]], results: {} })
  t.is(run.status, 1)
  t.is(run.signal, null)
  t.regex(run.stderr, /no row with a ratio to the floor/)
  t.is(svg, null)
})
