'use strict'

// Every platform a binary of the addon is built for: its npm package is
// `imt-gateway-<platform>` (under npm/<platform>/ in the repository), its file
// `imt-gateway.<platform>.node`. `os`, `cpu` and `libc` are npm's own fields, so that npm
// installs only the package that fits the machine. `build` says how the binary is made
// (scripts/build.js): `zig` cross-builds from Linux x64 with cargo-zigbuild (against glibc 2.17
// for the gnu targets), `native` needs a machine of that kind (the hosted workflow's runners).
const PLATFORMS = {
  'linux-x64-gnu': { os: 'linux', cpu: 'x64', libc: 'glibc', target: 'x86_64-unknown-linux-gnu', build: 'zig', glibc: '2.17' },
  'linux-arm64-gnu': { os: 'linux', cpu: 'arm64', libc: 'glibc', target: 'aarch64-unknown-linux-gnu', build: 'zig', glibc: '2.17' },
  'linux-arm-gnueabihf': { os: 'linux', cpu: 'arm', libc: 'glibc', target: 'armv7-unknown-linux-gnueabihf', build: 'zig', glibc: '2.17' },
  'linux-x64-musl': { os: 'linux', cpu: 'x64', libc: 'musl', target: 'x86_64-unknown-linux-musl', build: 'zig' },
  'linux-arm64-musl': { os: 'linux', cpu: 'arm64', libc: 'musl', target: 'aarch64-unknown-linux-musl', build: 'zig' },
  'darwin-x64': { os: 'darwin', cpu: 'x64', target: 'x86_64-apple-darwin', build: 'native' },
  'darwin-arm64': { os: 'darwin', cpu: 'arm64', target: 'aarch64-apple-darwin', build: 'native' },
  'win32-x64-msvc': { os: 'win32', cpu: 'x64', target: 'x86_64-pc-windows-msvc', build: 'native' },
  // Built by the hosted workflow as an experiment (allowed to fail there); not published yet.
  'win32-arm64-msvc': { os: 'win32', cpu: 'arm64', target: 'aarch64-pc-windows-msvc', build: 'native', publish: false },
  // Not published: the mingw build that scripts/test-windows.sh runs under wine on Linux, to
  // test the Windows code paths here. Users of official Node get win32-x64-msvc.
  'win32-x64-gnu': { os: 'win32', cpu: 'x64', target: 'x86_64-pc-windows-gnu', build: 'mingw', publish: false }
}

/** The platforms whose binary could run here, best first: the libc that was detected, then the other. */
function candidates (platform = process.platform, arch = process.arch, musl = platform === 'linux' && isMusl()) {
  const fits = Object.keys(PLATFORMS).filter((name) => {
    const p = PLATFORMS[name]
    return p.os === platform && p.cpu === arch
  })
  const rank = (name) => {
    const libc = PLATFORMS[name].libc
    if (libc === undefined) return 0
    return (libc === 'musl') === musl ? 0 : 1
  }
  return fits.sort((a, b) => rank(a) - rank(b))
}

let musl
/** Whether this Linux process runs on musl (Alpine) rather than glibc. */
function isMusl () {
  if (musl !== undefined) return musl
  try {
    // ldd is a script on glibc systems and musl's loader on musl ones: both name their libc.
    const ldd = require('fs').readFileSync('/usr/bin/ldd', 'latin1')
    if (ldd.includes('musl')) return (musl = true)
    if (ldd.includes('GNU C Library') || ldd.includes('glibc')) return (musl = false)
  } catch {}
  try {
    // Node's diagnostic report names the glibc it runs on, and nothing on musl.
    const report = process.report.getReport()
    musl = !(report.header && report.header.glibcVersionRuntime)
  } catch {
    musl = false
  }
  return musl
}

module.exports = { PLATFORMS, candidates, isMusl }
