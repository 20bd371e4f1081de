'use strict'
// The benchmark's chart: a horizontal bar chart, as plain SVG text, of each figure's ratio to
// the floor (the median of the rounds' ratios), on a log scale around the 1.0 line, from the
// results JSON that `npm run bench` writes (.bench/results.json). When the results carry
// figures of imt-gateway 2.0.8 (`reference`, below), each row gets a second bar: 2.0.8's figure
// over the same floor.
//
//   node bench/chart.js [results.json] [out.svg]     (defaults: .bench/results.json, docs/images/bench.svg)
//   npm run bench -- --chart FILE                    the same, right after a run
//
// `reference` (optional; `npm run bench -- --reference FILE` copies it in from FILE, since 2.0.8
// is not in the npm registry for the bench to install and measure):
//   { "name": "2.0.8", "values": { "<row name>": <the figure, in the row's unit>, ... } }
// A row without a value in `reference.values` gets no second bar.
//
// The chart has its own background, so it reads the same in light and dark themes.

const fs = require('fs')
const path = require('path')

const FONT = 'font-family="-apple-system, BlinkMacSystemFont, \'Segoe UI\', Helvetica, Arial, sans-serif"'
const COLORS = { background: '#ffffff', text: '#1f2328', muted: '#59636e', grid: '#d1d9e0', one: '#1f2328', client: '#0969da', reference: '#bc4c00' }
const CHAR = 6.4 // average width of a 12 px character, for laying out labels
const ROW = 22 // height of one bar's line

/** Text made safe for SVG content and attribute values. */
function escape (text) {
  return String(text).replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;')
}

/** Whether more is better for a row, from its unit: rates (`.../s`) yes, times and bytes no. */
function higherIsBetter (row) {
  return /\/s$/.test(String(row.unit))
}

/** The rows that can be drawn: a finite positive ratio to the floor. */
function chartRows (report) {
  const values = (report.reference && report.reference.values) || {}
  return (report.rows || []).filter((row) => Number.isFinite(row.ratio) && row.ratio > 0).map((row) => {
    const value = values[row.name]
    const reference = Number.isFinite(value) && value > 0 && Number.isFinite(row.floor) && row.floor > 0 ? value / row.floor : null
    return { name: row.name, ratio: row.ratio, reference, higher: higherIsBetter(row) }
  })
}

/** The 1-2-5 steps (0.1, 0.2, 0.5, 1, 2, 5, 10, ...) from the one at or below `min` to the one at or above `max`. */
function steps (min, max) {
  const all = []
  for (let decade = Math.floor(Math.log10(min)) - 1; decade <= Math.ceil(Math.log10(max)); decade++) {
    for (const m of [1, 2, 5]) all.push(Number((m * 10 ** decade).toPrecision(1)))
  }
  const first = all.filter((tick) => tick <= min).pop()
  const last = all.find((tick) => tick >= max)
  return all.filter((tick) => tick >= first && tick <= last)
}

/** Ratio formatted as the chart prints it. */
function fmt (ratio) {
  return ratio >= 10 ? ratio.toFixed(1) : ratio.toFixed(2)
}

/** The SVG text of the chart of `report` (the parsed results JSON). */
function chartSvg (report) {
  const rows = chartRows(report)
  if (rows.length === 0) throw new Error('The results have no row with a ratio to the floor.')
  const referenceName = report.reference && report.reference.name ? String(report.reference.name) : '2.0.8'
  const withReference = rows.some((row) => row.reference !== null)

  // The axis: log scale over 1-2-5 steps (…, 0.1, 0.2, 0.5, 1, 2, 5, 10, …) from the step at or
  // below the smallest ratio to the step at or above the largest, 0.5 and 2 at least.
  const all = rows.flatMap((row) => row.reference === null ? [row.ratio] : [row.ratio, row.reference])
  const ticks = steps(Math.min(0.5, ...all), Math.max(2, ...all))
  const low = Math.log10(ticks[0])
  const high = Math.log10(ticks[ticks.length - 1])
  const labelWidth = Math.ceil(Math.max(...rows.map((row) => row.name.length + 2)) * CHAR) + 16
  const plotWidth = Math.max(360, ticks.length * 60)
  const valueWidth = 56
  const width = Math.max(labelWidth + plotWidth + valueWidth + 16, 720)
  const top = 72
  const group = (withReference ? 2 : 1) * ROW + 10
  const plotHeight = rows.length * group
  const height = top + plotHeight + 70
  const x = (ratio) => labelWidth + (Math.log10(ratio) - low) / (high - low) * plotWidth
  const one = x(1)

  const out = []
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" role="img" aria-labelledby="title">`)
  out.push('<title id="title">imt-gateway benchmark: each figure as a ratio to the floor</title>')
  out.push(`<rect x="0" y="0" width="${width}" height="${height}" fill="${COLORS.background}"/>`)
  out.push(`<g ${FONT} font-size="12" fill="${COLORS.text}">`)
  const run = [report.date ? String(report.date).slice(0, 10) : null, report.node ? `Node ${report.node}` : null,
    report.rounds ? `${report.rounds} round${report.rounds === 1 ? '' : 's'}` : null,
    report.pin !== null && report.pin !== undefined ? `pinned to CPU ${report.pin}` : null, report.quick ? 'quick run' : null].filter(Boolean).join(', ')
  out.push('<text x="16" y="22" font-size="15" font-weight="600">imt-gateway: each figure as a ratio to its floor (log scale)</text>')
  out.push(`<text x="16" y="40" fill="${COLORS.muted}">npm run bench${run ? ` (${escape(run)})` : ''}. 1.0 = the floor: a bare Rust client; for the outbox rows, the client without an outbox</text>`)

  // Grid lines and tick labels; the 1.0 line is drawn over the bars, below.
  for (const tick of ticks) {
    const at = x(tick).toFixed(1)
    out.push(`<line x1="${at}" y1="${top - 4}" x2="${at}" y2="${top + plotHeight}" stroke="${COLORS.grid}" stroke-width="1"/>`)
    out.push(`<text x="${at}" y="${top + plotHeight + 16}" text-anchor="middle" fill="${COLORS.muted}">${String(tick)}×</text>`)
  }

  rows.forEach((row, i) => {
    const y = top + i * group + 5
    out.push(`<text x="${labelWidth - 10}" y="${y + ROW / 2 + 4}" text-anchor="end">${escape(row.name)} ${row.higher ? '↑' : '↓'}</text>`)
    const bars = [[row.ratio, COLORS.client, '3.x']]
    if (withReference) bars.push([row.reference, COLORS.reference, referenceName])
    bars.forEach(([ratio, color, who], j) => {
      const barY = y + j * ROW + 3
      if (ratio === null) {
        out.push(`<text x="${(one + 6).toFixed(1)}" y="${barY + 12}" fill="${COLORS.muted}" font-size="11">${escape(who)}: not measured</text>`)
        return
      }
      const end = x(ratio)
      const from = Math.min(one, end)
      const barWidth = Math.max(1, Math.abs(end - one))
      out.push(`<rect x="${from.toFixed(1)}" y="${barY}" width="${barWidth.toFixed(1)}" height="${ROW - 6}" fill="${color}"><title>${escape(`${row.name}, ${who}: ${fmt(ratio)} × the floor`)}</title></rect>`)
      out.push(`<text x="${(Math.max(one, end) + 5).toFixed(1)}" y="${barY + 12}" font-size="11">${fmt(ratio)}</text>`)
    })
  })
  out.push(`<line x1="${one.toFixed(1)}" y1="${top - 8}" x2="${one.toFixed(1)}" y2="${top + plotHeight}" stroke="${COLORS.one}" stroke-width="2" stroke-dasharray="5 3"/>`)
  out.push(`<text x="${one.toFixed(1)}" y="${top - 12}" text-anchor="middle" font-weight="600">1.0</text>`)

  // Legend.
  const legendY = top + plotHeight + 38
  out.push(`<rect x="16" y="${legendY - 10}" width="12" height="12" fill="${COLORS.client}"/>`)
  out.push(`<text x="34" y="${legendY}">imt-gateway 3.x</text>`)
  let legendX = 150
  if (withReference) {
    out.push(`<rect x="${legendX}" y="${legendY - 10}" width="12" height="12" fill="${COLORS.reference}"/>`)
    out.push(`<text x="${legendX + 18}" y="${legendY}">imt-gateway ${escape(referenceName)}</text>`)
    legendX += 170
  }
  out.push(`<text x="${legendX}" y="${legendY}" fill="${COLORS.muted}">↑ a rate: higher is better. ↓ a time or memory: lower is better.</text>`)
  out.push('</g>')
  out.push('</svg>')
  return out.join('\n') + '\n'
}

/** Reads `results` (a results JSON file), writes the chart to `svgPath`. */
function writeChart (results, svgPath) {
  const report = typeof results === 'string' ? JSON.parse(fs.readFileSync(results, 'utf8')) : results
  fs.mkdirSync(path.dirname(path.resolve(svgPath)), { recursive: true })
  fs.writeFileSync(svgPath, chartSvg(report))
}

module.exports = { chartSvg, writeChart }

if (require.main === module) {
  const root = path.join(__dirname, '..')
  const [input = path.join(root, '.bench', 'results.json'), output = path.join(root, 'docs', 'images', 'bench.svg')] = process.argv.slice(2)
  try {
    writeChart(input, output)
    console.log(`chart: ${output}`)
  } catch (err) {
    console.error(`bench/chart.js: ${err.message}`)
    process.exit(1)
  }
}
