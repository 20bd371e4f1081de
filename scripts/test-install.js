#!/usr/bin/env node
'use strict'

// `npm run test:install`: installs imt-gateway by name, as a user does, and runs it.
//  1. starts a local npm registry (verdaccio, from the npm registry, no uplinks) on 127.0.0.1;
//  2. publishes every tarball in dist/ (`npm run pack` writes them) to it;
//  3. in a fresh temporary project, `npm install imt-gateway` from it;
//  4. checks that npm chose the platform package that fits this machine, and only that one;
//  5. runs the README's quick example, exactly as the README has it, against the bundled Server
//     from the installed package, then the demo, from the installed package.
// Exits non-zero on any failure. With --keep, leaves the project folder for a look.
//   --platform linux-arm64-gnu --node /path/to/arm64/node   installs for another machine (npm's
//   --os/--cpu/--libc) and runs the examples with that machine's node (under qemu-user, see
//   scripts/test-emulated.sh); by default, this machine and this node.

const fs = require('fs')
const os = require('os')
const net = require('net')
const path = require('path')
const http = require('http')
const { spawn, execFileSync } = require('child_process')
const { PLATFORMS, candidates } = require('../lib/platforms')

const root = path.join(__dirname, '..')
const dist = path.join(root, 'dist')
const { version } = require('../package.json')
const VERDACCIO = '6.8.0'
const cacheDir = path.join(root, 'target', 'verdaccio')

const log = (text) => console.log(`test:install: ${text}`)

function option (name, fallback) {
  const at = process.argv.indexOf(name)
  return at === -1 ? fallback : process.argv[at + 1]
}
const platform = option('--platform', candidates()[0])
const nodeBinary = path.resolve(option('--node', process.execPath))

function sh (cmd, args, options = {}) {
  return execFileSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], ...options })
}

function installVerdaccio () {
  const bin = path.join(cacheDir, 'node_modules', 'verdaccio', 'bin', 'verdaccio')
  if (fs.existsSync(bin)) return bin
  fs.mkdirSync(cacheDir, { recursive: true })
  // verdaccio 6.8 pulls node-fetch 2.6 through an old dependency; 2.7.0 is the one that works on
  // Node 20 (newer verdaccio wants Node 22).
  fs.writeFileSync(path.join(cacheDir, 'package.json'), JSON.stringify({
    private: true,
    dependencies: { verdaccio: VERDACCIO },
    overrides: { 'node-fetch': '2.7.0' }
  }, null, 2))
  log(`installing verdaccio ${VERDACCIO}`)
  sh('npm', ['install', '--no-audit', '--no-fund', '--loglevel=error'], { cwd: cacheDir, stdio: 'inherit' })
  return bin
}

function freePort () {
  return new Promise((resolve, reject) => {
    const server = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = server.address()
      server.close(() => resolve(port))
    }).on('error', reject)
  })
}

function get (url) {
  return new Promise((resolve, reject) => {
    http.get(url, (res) => { res.resume(); res.on('end', () => resolve(res.statusCode)) }).on('error', reject)
  })
}

async function startRegistry (work) {
  const bin = installVerdaccio()
  const port = await freePort()
  const config = path.join(work, 'verdaccio.yaml')
  fs.writeFileSync(config, [
    `storage: ${path.join(work, 'storage')}`,
    'uplinks: {}',
    'packages:',
    "  '**':",
    '    access: $all',
    '    publish: $anonymous',
    'log: { type: stdout, format: pretty, level: warn }',
    ''
  ].join('\n'))
  const child = spawn(process.execPath, [bin, '--config', config, '--listen', `127.0.0.1:${port}`], { stdio: ['ignore', 'pipe', 'pipe'] })
  let output = ''
  child.stdout.on('data', (d) => { output += d })
  child.stderr.on('data', (d) => { output += d })
  const url = `http://127.0.0.1:${port}/`
  for (let i = 0; i < 300; i++) {
    if (child.exitCode !== null) throw new Error(`verdaccio exited:\n${output}`)
    try {
      if (await get(`${url}-/ping`) === 200) return { url, port, child }
    } catch {}
    await new Promise((resolve) => setTimeout(resolve, 100))
  }
  child.kill()
  throw new Error(`verdaccio did not answer on ${url}:\n${output}`)
}

// Runs node on `file` in `cwd`, resolving with its output; fails after `ms`.
function runNode (file, cwd, ms, env = {}) {
  return new Promise((resolve, reject) => {
    const child = spawn(nodeBinary, [file], { cwd, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
    let out = ''
    child.stdout.on('data', (d) => { out += d })
    child.stderr.on('data', (d) => { out += d })
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${file} did not finish in ${ms} ms:\n${out}`)) }, ms)
    // 'close', not 'exit': only then has all of the child's output been read.
    child.on('close', (code, signal) => {
      clearTimeout(timer)
      if (code === 0) resolve(out)
      else reject(new Error(`${file} exited with ${code ?? signal}:\n${out}`))
    })
  })
}

/** The folders in node_modules of the package's dependencies, and theirs, each once. */
function runtimeDependencies () {
  const found = new Map()
  const visit = (deps) => {
    for (const name of Object.keys(deps || {})) {
      if (found.has(name)) continue
      const dir = path.join(root, 'node_modules', name)
      const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
      found.set(name, dir)
      visit(manifest.dependencies)
    }
  }
  visit(require('../package.json').dependencies)
  return [...found.values()]
}

// The README's quick example: the first ```js block that makes a Client for 'localhost'.
function readmeExample () {
  const readme = fs.readFileSync(path.join(root, 'README.md'), 'utf8')
  const block = [...readme.matchAll(/```js\n([\s\S]*?)```/g)].map((m) => m[1])
    .find((code) => code.includes("new Client({ host: 'localhost' })"))
  if (!block) throw new Error('README.md has no quick example (a js block with new Client({ host: \'localhost\' }))')
  return block
}

async function main () {
  const tarballs = fs.existsSync(dist) ? fs.readdirSync(dist).filter((f) => f.endsWith('.tgz')) : []
  const main = `imt-gateway-${version}.tgz`
  if (!tarballs.includes(main)) throw new Error(`dist/${main} is missing: run npm run pack first`)
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-gateway-install-'))
  const registry = await startRegistry(work)
  log(`verdaccio ${VERDACCIO} on ${registry.url}; installing for ${platform}, running ${nodeBinary}`)
  const auth = `--//127.0.0.1:${registry.port}/:_authToken=test-install`
  const npmrc = ['--registry', registry.url, auth, '--cache', path.join(work, 'npm-cache'), '--no-audit', '--no-fund', '--loglevel=error']
  try {
    // The registry has no uplinks: the package's own dependencies (debug, and what it needs)
    // are published to it first, packed from this checkout's node_modules.
    for (const dir of runtimeDependencies()) {
      const packed = JSON.parse(sh('npm', ['pack', dir, '--pack-destination', work, '--json', '--silent']))[0]
      sh('npm', ['publish', path.join(work, packed.filename), '--tag', 'latest', ...npmrc])
      log(`published ${packed.name}@${packed.version} (a dependency)`)
    }
    // Platform packages first, as a real release does, so the main package never points at a
    // version that is not there yet.
    for (const file of tarballs.sort((a, b) => (a === main) - (b === main))) {
      sh('npm', ['publish', path.join(dist, file), '--tag', 'latest', ...npmrc])
      log(`published ${file}`)
    }

    const project = path.join(work, 'project')
    fs.mkdirSync(project)
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'imt-gateway-user', version: '1.0.0', private: true }, null, 2))
    const started = Date.now()
    const p = PLATFORMS[platform]
    const machine = [`--os=${p.os}`, `--cpu=${p.cpu}`, ...(p.libc ? [`--libc=${p.libc}`] : [])]
    sh('npm', ['install', 'imt-gateway', ...machine, ...npmrc], { cwd: project, stdio: 'inherit' })
    log(`npm install imt-gateway: ${((Date.now() - started) / 1000).toFixed(1)} s`)

    const installed = fs.readdirSync(path.join(project, 'node_modules')).filter((d) => d.startsWith('imt-gateway-'))
    const want = `imt-gateway-${platform}`
    if (installed.length !== 1 || installed[0] !== want) {
      throw new Error(`npm installed ${installed.join(', ') || 'no platform package'}; this machine needs ${want} alone`)
    }
    const pkgDir = path.join(project, 'node_modules', 'imt-gateway')
    const manifest = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8'))
    if (manifest.version !== version) throw new Error(`installed imt-gateway ${manifest.version}, expected ${version}`)
    log(`installed imt-gateway ${manifest.version} with ${installed[0]}; optionalDependencies: ${Object.keys(manifest.optionalDependencies).join(', ')}`)
    if (fs.readdirSync(pkgDir).some((f) => f.endsWith('.node'))) throw new Error('the main package carries a binary')

    // The README example runs unchanged; a bundled Server on 7777 (as in the original's tests)
    // plays the gateway, and the run ends when the event is acknowledged.
    fs.writeFileSync(path.join(project, 'readme-example.js'), readmeExample())
    fs.writeFileSync(path.join(project, 'run-readme.js'), `'use strict'
const { Server } = require('imt-gateway')
console.log(\`machine: \${process.platform} \${process.arch} node \${process.version}\`)
const server = new Server()
server.listen(() => {
  const log = console.log
  console.log = (...args) => {
    log(...args)
    if (args[0] === 'event acknowledged') process.exit(0)
  }
  require('./readme-example.js')
})
`)
    const readme = await runNode('run-readme.js', project, 120000)
    console.log(readme.trimEnd().replace(/^/gm, '  readme> '))
    if (!readme.includes(`machine: ${p.os} ${p.cpu} `)) throw new Error(`the README example did not run on ${p.os} ${p.cpu}`)
    if (!readme.includes('event acknowledged')) throw new Error('the README example did not see its event acknowledged')
    log('the README quick example ran from the installed package')

    const demo = await runNode(path.join(pkgDir, 'examples', 'demo.js'), project, 120000)
    console.log(demo.trimEnd().replace(/^/gm, '  demo> '))
    log('the demo ran from the installed package')
    console.log('test:install: 2 passed, 0 failed')
  } finally {
    registry.child.kill()
    if (process.argv.includes('--keep')) log(`kept ${work}`)
    else fs.rmSync(work, { recursive: true, force: true })
  }
}

main().catch((err) => {
  console.error(`test:install: ${err.stack || err.message}`)
  console.log('test:install: 0 passed, 1 failed')
  process.exit(1)
})
