#!/usr/bin/env node
'use strict'
// `npm run release:check` (CI, right after `npm run pack`): what a release would publish, checked
// as npm and its users will see it. Exits 1 when any check fails, after running them all.
//
// For each tarball (default: every dist/*.tgz that `npm run pack` wrote):
//   publint                      the package's manifest and files (`--strict`: warnings fail too;
//                                suggestions are printed)
//   attw                         @arethetypeswrong/cli: the types resolve, and match the
//                                JavaScript, under node10, node16 (CJS and ESM) and bundler
//   npm publish --dry-run        npm's own checks, with the dist-tag a prerelease needs; any
//                                warning but the dry run's "not logged in" fails
// And the README's first code block, the two commands a newcomer runs first:
//   the one that runs the demo:  its script (`npm run demo`) exists, names a file that exists,
//                                and runs to exit 0 (the addon must be built or in place)
//   the other, the tests:        .ci/run runs exactly that command
//
//   node scripts/release-check.js [tarball ...] [--no-tarballs] [--no-readme]
//                                 [--readme FILE] [--ci FILE]

const fs = require('fs')
const path = require('path')
const { spawnSync } = require('child_process')

const root = path.join(__dirname, '..')
const args = process.argv.slice(2)
const option = (name, fallback) => { const at = args.indexOf(name); return at === -1 ? fallback : args[at + 1] }
const valued = new Set(['--readme', '--ci'])
const tarballArgs = args.filter((arg, i) => !arg.startsWith('--') && !valued.has(args[i - 1]))

const failures = []
const log = (text) => console.log(`release-check: ${text}`)
function check (name, ok, detail = '') {
  log(`${ok ? 'ok  ' : 'FAIL'} ${name}${detail ? `: ${detail}` : ''}`)
  if (!ok) failures.push(name)
}

/** The command-line script of an installed package (its package.json `bin`). */
function binOf (pkg, name) {
  const dir = path.join(root, 'node_modules', pkg)
  const { bin } = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  return path.join(dir, typeof bin === 'string' ? bin : bin[name])
}

function run (command, commandArgs, options = {}) {
  const result = spawnSync(command, commandArgs, { cwd: root, encoding: 'utf8', env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0' }, ...options })
  const output = `${result.stdout || ''}${result.stderr || ''}`
  return { ok: result.status === 0 && result.signal === null, status: result.status, signal: result.signal, output, error: result.error }
}

const indent = (text) => text.trimEnd().split('\n').map((line) => `    ${line}`).join('\n')

function checkTarball (tarball) {
  const name = path.basename(tarball)
  const publint = run(process.execPath, [binOf('publint', 'publint'), 'run', tarball, '--strict'])
  console.log(indent(publint.output))
  check(`publint ${name}`, publint.ok, publint.ok ? '' : `exit ${publint.status}`)

  const manifest = JSON.parse(run('tar', ['-xzOf', tarball, 'package/package.json']).output)
  const attw = run(process.execPath, [binOf('@arethetypeswrong/cli', 'attw'), tarball, '--format', 'table-flipped', '--no-color'])
  console.log(indent(attw.output))
  // attw passes a package without types; one whose manifest names types must have them.
  const declaresTypes = Boolean(manifest.types || manifest.typings || /"types"/.test(JSON.stringify(manifest.exports || {})))
  const typesMissing = declaresTypes && /does not contain types/.test(attw.output)
  check(`attw ${name}`, attw.ok && !typesMissing, !attw.ok ? `exit ${attw.status}` : typesMissing ? 'its package.json names types the tarball does not hold' : '')

  // npm needs --tag for a prerelease; `next` is the tag the README's install line uses.
  const tag = manifest.version.includes('-') ? 'next' : 'latest'
  const publish = run('npm', ['publish', '--dry-run', '--tag', tag, path.resolve(tarball)])
  const warnings = publish.output.split('\n').filter((line) => /^npm warn/.test(line) && !/requires you to be logged in .*\(dry-run\)/.test(line))
  if (!publish.ok || warnings.length) console.log(indent(publish.output))
  check(`npm publish --dry-run --tag ${tag} ${name}`, publish.ok && warnings.length === 0,
    !publish.ok ? `exit ${publish.status}` : warnings.join('; '))
}

/** The commands of the README's first fenced code block, without their comments. */
function readmeCommands (text) {
  const block = /^```[a-z]*\n([\s\S]*?)^```/m.exec(text)
  if (!block) return []
  return block[1].split('\n').map((line) => line.replace(/\s+#.*$/, '').trim()).filter((line) => line && !line.startsWith('#'))
}

/** The commands .ci/run runs: each line, with `step ...;` prefixes and comments taken off. */
function ciCommands (text) {
  return text.split('\n').flatMap((line) => line.replace(/\s+#.*$/, '').split(';'))
    .map((part) => part.trim()).filter((part) => part && !part.startsWith('#') && !/^step\b/.test(part))
}

function checkReadme (readmePath, ciPath) {
  const commands = readmeCommands(fs.readFileSync(readmePath, 'utf8'))
  const rel = path.relative(root, readmePath) || readmePath
  check(`${rel} starts with a code block of two commands`, commands.length === 2, JSON.stringify(commands))
  if (commands.length !== 2) return
  const demo = commands.find((command) => /npm run demo\b/.test(command))
  const tests = commands.find((command) => command !== demo)
  check(`${rel}: one command runs the demo (npm run demo)`, demo !== undefined, JSON.stringify(commands))
  if (demo !== undefined) {
    const pkg = JSON.parse(fs.readFileSync(path.join(root, 'package.json'), 'utf8'))
    const script = pkg.scripts && pkg.scripts.demo
    const file = script && (/^node\s+(\S+)/.exec(script) || [])[1]
    check('package.json has the demo script and its file exists', Boolean(file && fs.existsSync(path.join(root, file))), `"demo": ${JSON.stringify(script)}`)
    const ran = run('npm', ['run', 'demo'], { timeout: 120000 })
    if (!ran.ok) console.log(indent(ran.output))
    check('npm run demo runs to exit 0', ran.ok, ran.ok ? '' : ran.signal ? `killed by ${ran.signal}` : `exit ${ran.status}`)
  }
  if (tests !== undefined) {
    const ci = ciCommands(fs.readFileSync(ciPath, 'utf8'))
    check(`${path.relative(root, ciPath) || ciPath} runs the README's test command (${tests})`, ci.includes(tests))
  }
}

function main () {
  if (!args.includes('--no-tarballs')) {
    const dist = path.join(root, 'dist')
    const tarballs = tarballArgs.length
      ? tarballArgs
      : fs.existsSync(dist) ? fs.readdirSync(dist).filter((f) => f.endsWith('.tgz')).sort().map((f) => path.join(dist, f)) : []
    check('tarballs to check', tarballs.length > 0, tarballs.length ? tarballs.map((t) => path.basename(t)).join(', ') : 'none in dist/: run `npm run pack` first')
    for (const tarball of tarballs) checkTarball(tarball)
  }
  if (!args.includes('--no-readme')) {
    checkReadme(path.resolve(option('--readme', path.join(root, 'README.md'))), path.resolve(option('--ci', path.join(root, '.ci', 'run'))))
  }
  if (failures.length) {
    log(`${failures.length} check(s) failed: ${failures.join('; ')}`)
    process.exit(1)
  }
  log('every check passed')
}

main()
