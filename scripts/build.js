#!/usr/bin/env node
'use strict'

// Builds the release addon for each platform named (default: the five Linux ones, all from a
// Linux x64 machine) into npm/<platform>/imt-gateway.<platform>.node, then checks the file:
// its machine, and for glibc builds that no symbol needs a glibc newer than the baseline.
//   node scripts/build.js [--if-missing] [platform ...]
// Linux platforms build with cargo-zigbuild (scripts/toolchains.sh linux installs it); macOS and
// Windows ones with plain cargo on a machine of that kind (the hosted workflow's runners).

const fs = require('fs')
const path = require('path')
const { execFileSync } = require('child_process')
const { PLATFORMS } = require('../lib/platforms')

const root = path.join(__dirname, '..')
const LINUX = Object.keys(PLATFORMS).filter((name) => PLATFORMS[name].build === 'zig')

// What `readelf -h` says of each CPU, to check that a binary is for its machine.
const MACHINES = { x64: 'X86-64', arm64: 'AArch64', arm: 'ARM' }

function binaryPath (name) {
  return path.join(root, 'npm', name, `imt-gateway.${name}.node`)
}

function cargoOutput (target) {
  const dir = path.join(process.env.CARGO_TARGET_DIR || path.join(root, 'target'), target, 'release')
  if (target.includes('windows')) return path.join(dir, 'imt_gateway.dll')
  if (target.includes('apple')) return path.join(dir, 'libimt_gateway.dylib')
  return path.join(dir, 'libimt_gateway.so')
}

function build (name) {
  const p = PLATFORMS[name]
  if (!p) throw new Error(`unknown platform ${name}; known: ${Object.keys(PLATFORMS).join(', ')}`)
  const env = { ...process.env }
  let args
  if (p.build === 'zig') {
    // The `.2.17` suffix makes zig link against glibc 2.17's symbol versions.
    args = ['zigbuild', '--release', '--features', 'node', '--target', p.glibc ? `${p.target}.${p.glibc}` : p.target]
    // Rust links musl statically by default, and a static binary cannot be a shared library:
    // the addon links musl's libc.so dynamically, as Alpine's node does.
    if (p.libc === 'musl') env[`CARGO_TARGET_${p.target.toUpperCase().replace(/-/g, '_')}_RUSTFLAGS`] = '-C target-feature=-crt-static'
  } else if (p.build === 'native') {
    args = ['build', '--release', '--features', 'node', '--target', p.target]
  } else {
    throw new Error(`${name} is built by scripts/test-windows.sh, not here`)
  }
  const started = Date.now()
  console.log(`build: ${name}: cargo ${args.join(' ')}`)
  execFileSync('cargo', args, { cwd: root, env, stdio: 'inherit' })
  fs.mkdirSync(path.dirname(binaryPath(name)), { recursive: true })
  fs.copyFileSync(cargoOutput(p.target), binaryPath(name))
  console.log(`build: ${name}: built in ${((Date.now() - started) / 1000).toFixed(0)} s`)
}

/** Checks that npm/<name>'s binary is for its machine; returns its facts. Throws if not. */
function inspect (name) {
  const p = PLATFORMS[name]
  const file = binaryPath(name)
  const facts = { name, file, size: fs.statSync(file).size }
  if (p.os !== 'linux') return facts
  const header = execFileSync('readelf', ['-h', file], { encoding: 'utf8' })
  facts.machine = /Machine:\s+(.*)/.exec(header)[1].trim()
  if (!facts.machine.includes(MACHINES[p.cpu])) throw new Error(`${file} is for ${facts.machine}, not ${p.cpu}`)
  const versions = execFileSync('readelf', ['-V', '-W', file], { encoding: 'utf8' })
  const needed = execFileSync('readelf', ['-d', '-W', file], { encoding: 'utf8' })
  const libs = [...needed.matchAll(/\(NEEDED\)\s+Shared library: \[(.+?)\]/g)].map((m) => m[1])
  facts.needs = libs
  if (p.libc === 'glibc') {
    const glibc = [...versions.matchAll(/GLIBC_(\d+)\.(\d+)(?:\.(\d+))?/g)].map((m) => [+m[1], +m[2], +(m[3] || 0)])
    glibc.sort((a, b) => a[0] - b[0] || a[1] - b[1] || a[2] - b[2])
    const newest = glibc[glibc.length - 1]
    facts.glibc = newest ? newest.filter((n, i) => i < 2 || n).join('.') : 'none'
    const [maxMajor, maxMinor] = p.glibc.split('.').map(Number)
    if (newest && (newest[0] > maxMajor || (newest[0] === maxMajor && newest[1] > maxMinor))) {
      throw new Error(`${file} needs GLIBC_${facts.glibc}, newer than the ${p.glibc} baseline`)
    }
  } else if (p.libc === 'musl') {
    if (libs.some((lib) => /^libc\.so\.6$|^ld-linux/.test(lib))) throw new Error(`${file} links glibc: ${libs.join(', ')}`)
    if (/GLIBC_/.test(versions)) throw new Error(`${file} has glibc symbol versions`)
    facts.glibc = 'musl'
  }
  return facts
}

function describe (facts) {
  const parts = [`${(facts.size / 1024 / 1024).toFixed(2)} MiB`]
  if (facts.machine) parts.push(facts.machine)
  if (facts.glibc) parts.push(facts.glibc === 'musl' ? 'musl' : `newest glibc symbol ${facts.glibc}`)
  if (facts.needs) parts.push(`needs ${facts.needs.join(' ')}`)
  return `${facts.name}: ${parts.join(', ')}`
}

function main (argv) {
  const ifMissing = argv.includes('--if-missing')
  const names = argv.filter((a) => !a.startsWith('--'))
  for (const name of names.length ? names : LINUX) {
    if (!(ifMissing && fs.existsSync(binaryPath(name)))) build(name)
    console.log(`build: ${describe(inspect(name))}`)
  }
}

module.exports = { LINUX, binaryPath, inspect, describe }

if (require.main === module) {
  try {
    main(process.argv.slice(2))
  } catch (err) {
    console.error(`build: ${err.message}`)
    process.exit(1)
  }
}
