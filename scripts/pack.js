#!/usr/bin/env node
'use strict'

// `npm run pack`: builds whatever Linux binary is missing (on Linux x64; not with --no-build),
// checks every platform package, and writes the npm tarballs to dist/:
//   imt-gateway-<version>.tgz             the main package, which lists every platform package
//                                         in optionalDependencies at its own version
//   imt-gateway-<platform>-<version>.tgz  each platform package whose binary is in npm/<platform>/
// The repository's package.json has no optionalDependencies (npm ci here would look them up in
// the registry); they are written into the packed copy only, as napi-rs's prepublish does.
// Every manifest (package.json and npm/*/package.json) names the same `repository`, `homepage`,
// `bugs` and `type`, which npm's provenance requires. In the hosted workflow of another repository
// (a fork: GITHUB_REPOSITORY names another one), the packed manifests name that one instead, in
// the same form, since provenance refuses a package that names a repository other than its own.

const fs = require('fs')
const os = require('os')
const path = require('path')
const { execFileSync } = require('child_process')
const { PLATFORMS } = require('../lib/platforms')
const { LINUX, binaryPath, inspect, describe } = require('./build')

const root = path.join(__dirname, '..')
const dist = path.join(root, 'dist')
const pkg = require('../package.json')

function run (cmd, args, options = {}) {
  return execFileSync(cmd, args, { cwd: root, stdio: 'inherit', ...options })
}

function buildMissing () {
  const missing = LINUX.filter((name) => !fs.existsSync(binaryPath(name)))
  if (missing.length === 0) return
  if (process.platform !== 'linux' || process.arch !== 'x64') {
    console.log(`pack: not building ${missing.join(', ')} (only Linux x64 builds them)`)
    return
  }
  run('bash', [path.join(__dirname, 'toolchains.sh'), 'linux'])
  run(process.execPath, [path.join(__dirname, 'build.js'), ...missing])
}

/** npm/<name>/package.json must say what lib/platforms.js says, at the main package's version. */
function checkManifest (name) {
  const p = PLATFORMS[name]
  const manifest = JSON.parse(fs.readFileSync(path.join(root, 'npm', name, 'package.json'), 'utf8'))
  const want = {
    name: `imt-gateway-${name}`,
    version: pkg.version,
    os: [p.os],
    cpu: [p.cpu],
    libc: p.libc ? [p.libc] : undefined,
    main: `imt-gateway.${name}.node`,
    license: pkg.license,
    repository: pkg.repository,
    homepage: pkg.homepage,
    bugs: pkg.bugs,
    type: pkg.type
  }
  for (const [key, value] of Object.entries(want)) {
    if (JSON.stringify(manifest[key]) !== JSON.stringify(value)) {
      throw new Error(`npm/${name}/package.json: ${key} is ${JSON.stringify(manifest[key])}, expected ${JSON.stringify(value)}`)
    }
  }
}

/** `repository`, `homepage` and `bugs` for the GitHub repository `slug` (owner/name). */
function repositoryFields (slug) {
  return {
    repository: { type: 'git', url: `git+https://github.com/${slug}.git` },
    homepage: `https://github.com/${slug}#readme`,
    bugs: { url: `https://github.com/${slug}/issues` }
  }
}

/** Packs a copy of `entries` (paths relative to `from`) with `manifest` as its package.json. */
function packStaged (from, entries, manifest) {
  const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-gateway-pack-'))
  try {
    for (const entry of entries) fs.cpSync(path.join(from, entry), path.join(stage, entry), { recursive: true })
    const slug = process.env.GITHUB_REPOSITORY
    if (slug && JSON.stringify(repositoryFields(slug).repository) !== JSON.stringify(manifest.repository)) {
      manifest = { ...manifest, ...repositoryFields(slug) }
    }
    fs.writeFileSync(path.join(stage, 'package.json'), JSON.stringify(manifest, null, 2) + '\n')
    const out = execFileSync('npm', ['pack', stage, '--pack-destination', dist, '--json', '--silent'], { cwd: root, encoding: 'utf8' })
    return path.join(dist, JSON.parse(out)[0].filename)
  } finally {
    fs.rmSync(stage, { recursive: true, force: true })
  }
}

function packPlatform (name) {
  const dir = path.join(root, 'npm', name)
  const manifest = JSON.parse(fs.readFileSync(path.join(dir, 'package.json'), 'utf8'))
  return packStaged(dir, [...manifest.files, 'README.md', 'LICENSE'], manifest)
}

function packMain (published) {
  const manifest = { ...pkg }
  delete manifest.devDependencies
  delete manifest.scripts
  delete manifest.ava
  delete manifest.napi
  manifest.optionalDependencies = Object.fromEntries(published.map((name) => [`imt-gateway-${name}`, pkg.version]))
  return packStaged(root, [...pkg.files, 'README.md', 'LICENSE'], manifest)
}

function main () {
  const own = /^git\+https:\/\/github\.com\/([^/]+\/[^/]+)\.git$/.exec((pkg.repository || {}).url || '')
  if (!own) throw new Error(`package.json: repository.url ${JSON.stringify((pkg.repository || {}).url)} is not git+https://github.com/OWNER/NAME.git`)
  for (const [key, value] of Object.entries(repositoryFields(own[1]))) {
    if (JSON.stringify(pkg[key]) !== JSON.stringify(value)) throw new Error(`package.json: ${key} is ${JSON.stringify(pkg[key])}, expected ${JSON.stringify(value)}`)
  }
  if (!process.argv.includes('--no-build')) buildMissing()
  fs.rmSync(dist, { recursive: true, force: true })
  fs.mkdirSync(dist)
  const published = Object.keys(PLATFORMS).filter((name) => PLATFORMS[name].publish !== false)
  const written = []
  for (const name of published) {
    checkManifest(name)
    if (!fs.existsSync(binaryPath(name))) {
      console.log(`pack: ${name}: no binary in npm/${name}/, not packed`)
      continue
    }
    console.log(`pack: ${describe(inspect(name))}`)
    written.push(packPlatform(name))
  }
  written.unshift(packMain(published))
  for (const file of written) console.log(`pack: wrote dist/${path.basename(file)} (${(fs.statSync(file).size / 1024).toFixed(0)} KiB)`)
}

try {
  main()
} catch (err) {
  console.error(`pack: ${err.message}`)
  process.exit(1)
}
