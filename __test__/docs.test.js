'use strict'
// The documentation: scripts/check-links.js (CI's link check) finds what it must and nothing
// else, and the examples of the guides that no other file runs print what they say.

const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { spawnSync } = require('child_process')
const { checkLinks, documents } = require('../scripts/check-links')
const { runNode } = require('./helpers/child')

const ROOT = path.join(__dirname, '..')
const CHECK = path.join(ROOT, 'scripts', 'check-links.js')

/** A directory holding `files` ({relative path: text}), removed after the test. */
function tree (t, files) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-gateway-links-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const [name, text] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), text)
  }
  return dir
}

test('the link check passes links to existing files, directories and headings (GitHub slugs)', (t) => {
  const dir = tree(t, {
    'README.md': [
      '# Title',
      '[guide](docs/guide.md) [section](docs/guide.md#counters-clientstats) [again](docs/guide.md#counters-clientstats-1)',
      '[here](#title) [dir](docs/) ![chart](docs/images/chart.svg) [web](https://example.com/x#y) [mail](mailto:a@b.c)',
      '[apostrophe](docs/guide.md#the-outboxs-engine) [numbered](docs/guide.md#8-departures-from-208)'
    ].join('\n'),
    'docs/guide.md': '# Guide\n\n## Counters: `client.stats()`\n\n## Counters: `client.stats()`\n\n## The outbox\'s engine\n\n## 8. Departures from 2.0.8\n\n[back](../README.md#title)\n',
    'docs/images/chart.svg': '<svg/>'
  })
  t.deepEqual(checkLinks(['README.md', 'docs/guide.md'], dir), [])
})

test('the link check reports a missing file, a missing anchor and a link out of the repository', (t) => {
  const dir = tree(t, {
    'README.md': [
      '# Title',
      '[gone](docs/gone.md)',
      '[no such heading](docs/guide.md#nowhere) [nor here](#elsewhere)',
      '![no image](docs/images/bench.svg)',
      '[outside](../outside/NOTES.md)',
      '`[in code](missing.md)`',
      '```',
      '[in a fence](missing.md)',
      '```'
    ].join('\n'),
    'docs/guide.md': '# Guide\n'
  })
  const problems = checkLinks(['README.md'], dir)
  t.deepEqual(problems.map((p) => [p.line, p.target]), [
    [2, 'docs/gone.md'],
    [3, 'docs/guide.md#nowhere'],
    [3, '#elsewhere'],
    [4, 'docs/images/bench.svg'],
    [5, '../outside/NOTES.md']
  ])
  t.regex(problems[1].message, /#nowhere is not a heading of docs\/guide\.md/)
})

test('the command exits 1 and names each broken link, and 0 when all resolve', (t) => {
  const dir = tree(t, { 'a.md': '# A\n[b](b.md#b) [c](c.md)\n', 'b.md': '# B\n' })
  const good = tree(t, { 'README.md': '# A\n[b](docs/b.md#b)\n', 'docs/b.md': '# B\n' })
  const bad = spawnSync(process.execPath, [CHECK, '--root', dir, 'a.md'], { encoding: 'utf8' })
  t.is(bad.status, 1)
  t.regex(bad.stderr, /a\.md:2: c\.md: c\.md does not exist/)
  t.notRegex(bad.stderr, /b\.md#b/)
  const passed = spawnSync(process.execPath, [CHECK, '--root', good], { encoding: 'utf8' })
  t.is(passed.status, 0, passed.stderr)
  t.regex(passed.stdout, /every link in 2 files resolves/)
})

test('the link check covers the README, the root documents and every guide', (t) => {
  const files = documents()
  for (const name of ['README.md', 'SECURITY.md', 'docs/client.md', 'docs/outbox.md', 'docs/migrating-from-2.md']) {
    t.true(files.includes(name), name)
  }
})

test("docs/server-and-testing.md's example runs and prints what it says", async (t) => {
  const guide = fs.readFileSync(path.join(ROOT, 'docs', 'server-and-testing.md'), 'utf8')
  const section = guide.slice(guide.indexOf('## Testing a device'))
  const result = await runNode(/```js\n([\s\S]*?)```/.exec(section)[1])
  t.is(result.err, '')
  t.is(result.code, 0)
  t.is(result.out, 'the device acknowledged the action\ntrue reading { celsius: 21.5 }\n')
})

test("docs/getting-started.md's Promise example runs and prints what it says", async (t) => {
  const guide = fs.readFileSync(path.join(ROOT, 'docs', 'getting-started.md'), 'utf8')
  const section = guide.slice(guide.indexOf('## The same with Promises'))
  const result = await runNode(/```js\n([\s\S]*?)```/.exec(section)[1])
  t.is(result.err, '')
  t.is(result.code, 0)
  t.regex(result.out, /^acknowledged [0-9a-f]{32}\nrejected E_BAD Refused\.\n$/)
})
