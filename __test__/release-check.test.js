'use strict'

// scripts/release-check.js, which CI runs over the packed tarballs and the README: it passes a
// sound package and fails, naming the check, on a broken one and on a README whose first
// commands are not the ones CI runs.
const test = require('ava')
const fs = require('fs')
const os = require('os')
const path = require('path')
const { execFileSync, spawnSync } = require('child_process')

const root = path.join(__dirname, '..')
const script = path.join(root, 'scripts', 'release-check.js')

function tmpdir (t) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-release-check-'))
  t.teardown(() => fs.rmSync(dir, { recursive: true, force: true }))
  return dir
}

/** Packs a small package made of `files` ({name: text}) in `dir`; returns the tarball's path. */
function pack (dir, files) {
  const source = path.join(dir, 'source')
  fs.mkdirSync(source)
  for (const [name, text] of Object.entries(files)) fs.writeFileSync(path.join(source, name), text)
  const out = execFileSync('npm', ['pack', source, '--pack-destination', dir, '--json', '--silent'], { encoding: 'utf8' })
  return path.join(dir, JSON.parse(out)[0].filename)
}

function releaseCheck (args) {
  const run = spawnSync(process.execPath, [script, ...args], { cwd: root, encoding: 'utf8', timeout: 110000 })
  return { ...run, output: run.stdout + run.stderr }
}

const manifest = (fields) => JSON.stringify({ name: 'imt-gateway-release-check-fixture', version: '1.0.0-rc.0', license: 'MIT', type: 'commonjs', engines: { node: '>= 18' }, ...fields }, null, 2)

test('a sound tarball passes publint, attw and npm publish --dry-run (with the prerelease tag)', (t) => {
  const dir = tmpdir(t)
  const tarball = pack(dir, {
    'package.json': manifest({ main: 'index.js', types: 'index.d.ts', files: ['index.js', 'index.d.ts'] }),
    'index.js': "'use strict'\nexports.answer = 42\n",
    'index.d.ts': 'export declare const answer: number\n'
  })
  const run = releaseCheck(['--no-readme', tarball])
  t.is(run.status, 0, run.output)
  t.regex(run.output, /ok {3}publint imt-gateway-release-check-fixture-1\.0\.0-rc\.0\.tgz/)
  t.regex(run.output, /ok {3}attw /)
  t.regex(run.output, /ok {3}npm publish --dry-run --tag next /)
  t.regex(run.output, /every check passed/)
})

test('a tarball whose manifest names missing files fails publint and attw, and the script exits 1', (t) => {
  const dir = tmpdir(t)
  const tarball = pack(dir, {
    'package.json': manifest({ main: 'missing.js', types: 'missing.d.ts', files: ['index.js'] }),
    'index.js': "'use strict'\n"
  })
  const run = releaseCheck(['--no-readme', tarball])
  t.is(run.status, 1, run.output)
  t.is(run.signal, null)
  t.regex(run.output, /FAIL publint imt-gateway-release-check-fixture/)
  t.regex(run.output, /FAIL attw imt-gateway-release-check-fixture.*names types the tarball does not hold/)
  t.regex(run.output, /check\(s\) failed/)
})

test('the README check: its two first commands must be the demo (which runs) and the command CI runs', (t) => {
  const dir = tmpdir(t)
  const readme = (commands) => {
    const file = path.join(dir, `README-${Math.random().toString(36).slice(2)}.md`)
    fs.writeFileSync(file, `# x\n\n\`\`\`sh\n${commands.join('\n')}\n\`\`\`\n\nText.\n\n\`\`\`sh\nnpm run other\n\`\`\`\n`)
    return file
  }
  const ci = path.join(dir, 'run')
  fs.writeFileSync(ci, '#!/usr/bin/env bash\nstep lint; npm run lint\nstep test; npm test   # the README\'s command\n')

  const good = releaseCheck(['--no-tarballs', '--readme', readme(['npm ci && npm run demo   # the demo', 'npm test   # the tests']), '--ci', ci])
  t.is(good.status, 0, good.output)
  t.regex(good.output, /ok {3}npm run demo runs to exit 0/)
  t.regex(good.output, /ok {3}.* runs the README's test command \(npm test\)/)

  const otherTests = releaseCheck(['--no-tarballs', '--readme', readme(['npm run demo', 'npm run test:all']), '--ci', ci])
  t.is(otherTests.status, 1, otherTests.output)
  t.regex(otherTests.output, /FAIL .* runs the README's test command \(npm run test:all\)/)

  const noDemo = releaseCheck(['--no-tarballs', '--readme', readme(['npm start', 'npm test']), '--ci', ci])
  t.is(noDemo.status, 1, noDemo.output)
  t.regex(noDemo.output, /FAIL .*one command runs the demo/)

  const three = releaseCheck(['--no-tarballs', '--readme', readme(['npm ci', 'npm run demo', 'npm test']), '--ci', ci])
  t.is(three.status, 1, three.output)
  t.regex(three.output, /FAIL .*starts with a code block of two commands/)
})
