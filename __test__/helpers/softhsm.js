'use strict'

// A real PKCS#11 token for the hardware-key tests: SoftHSM 2 with its tokens in a temporary
// directory (SOFTHSM2_CONF, set before the module is first loaded in this process), keys
// generated in the token by pkcs11-tool (opensc), certificates for them issued by the test CA
// for the public key read back from the token. Installed by `scripts/toolchains.sh pkcs11`.
const { execFileSync, spawnSync } = require('child_process')
const fs = require('fs')
const os = require('os')
const path = require('path')

const MODULES = [
  process.env.SOFTHSM2_MODULE,
  '/usr/lib/softhsm/libsofthsm2.so',
  '/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so',
  '/usr/local/lib/softhsm/libsofthsm2.so',
  '/opt/homebrew/lib/softhsm/libsofthsm2.so'
].filter(Boolean)

const SO_PIN = '5678'
const PIN = '1234'

function onPath (tool) {
  return spawnSync(tool, ['--help'], { stdio: 'ignore' }).error === undefined
}

// Why the tests cannot run here, or null when they can.
// The machine an ELF shared object is built for (its header's e_machine), as process.arch names
// it; null when the file is no ELF object this knows.
function elfArch (file) {
  const header = Buffer.alloc(20)
  const fd = fs.openSync(file, 'r')
  try {
    fs.readSync(fd, header, 0, 20, 0)
  } finally {
    fs.closeSync(fd)
  }
  if (header.readUInt32BE(0) !== 0x7f454c46) return null
  return { 62: 'x64', 183: 'arm64', 40: 'arm', 3: 'ia32' }[header.readUInt16LE(18)] || null
}

function unavailable () {
  if (process.platform === 'win32') return 'SoftHSM tests run on Linux and macOS'
  const module = MODULES.find((file) => fs.existsSync(file))
  if (!module) return `no SoftHSM 2 module (looked for ${MODULES.join(', ')}; bash scripts/toolchains.sh pkcs11 installs it)`
  const arch = process.platform === 'linux' ? elfArch(module) : process.arch
  if (arch !== process.arch) return `the SoftHSM 2 module ${module} is built for ${arch || 'another machine'}, this process is ${process.arch} (under emulation)`
  if (!onPath('softhsm2-util')) return 'softhsm2-util is not on PATH (package softhsm2)'
  if (!onPath('pkcs11-tool')) return 'pkcs11-tool is not on PATH (package opensc)'
  return null
}

/**
 * A token directory and configuration of its own; `SOFTHSM2_CONF` is set for this process
 * (the module reads it when it is loaded, once per process).
 */
function createSoftHsm () {
  const module = MODULES.find((file) => fs.existsSync(file))
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-softhsm-'))
  const tokens = path.join(dir, 'tokens')
  fs.mkdirSync(tokens)
  const conf = path.join(dir, 'softhsm2.conf')
  fs.writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`)
  process.env.SOFTHSM2_CONF = conf
  const env = { ...process.env, SOFTHSM2_CONF: conf }
  const run = (tool, args, input) => execFileSync(tool, args, { env, input, stdio: ['pipe', 'pipe', 'pipe'] })
  const tool = (token, args) => run('pkcs11-tool', ['--module', module, '--token-label', token, ...args])
  return {
    module,
    dir,
    tokens,
    pin: PIN,
    /** A new token with this label. */
    initToken (label) {
      run('softhsm2-util', ['--init-token', '--free', '--label', label, '--so-pin', SO_PIN, '--pin', PIN])
    },
    /**
     * A key pair generated in the token (`type`: 'rsa:2048', 'EC:prime256v1', ...); returns the
     * public key read back from the token, DER SubjectPublicKeyInfo.
     */
    generateKey (token, type, label, id) {
      tool(token, ['--login', '--pin', PIN, '--keypairgen', '--key-type', type, '--label', label, '--id', id])
      const out = path.join(dir, `${label}.spki.der`)
      tool(token, ['--read-object', '--type', 'pubkey', '--label', label, '--output-file', out])
      const spki = fs.readFileSync(out)
      fs.unlinkSync(out)
      return spki
    },
    /** Stores a PEM certificate in the token as a certificate object. */
    writeCert (token, pem, label, id) {
      const der = Buffer.from(pem.replace(/-----[A-Z ]+-----/g, '').replace(/\s+/g, ''), 'base64')
      const file = path.join(dir, `${label}.cert.der`)
      fs.writeFileSync(file, der)
      tool(token, ['--login', '--pin', PIN, '--write-object', file, '--type', 'cert', '--label', label, '--id', id])
      fs.unlinkSync(file)
    },
    /** The directory of the token with this label (SoftHSM keeps one per token). */
    tokenDir (label) {
      for (const name of fs.readdirSync(tokens)) {
        const object = path.join(tokens, name, 'token.object')
        if (fs.existsSync(object) && fs.readFileSync(object).includes(Buffer.from(label))) return path.join(tokens, name)
      }
      throw new Error(`no token ${label} in ${tokens}`)
    },
    /** A PKCS#11 URI for an object of this token. */
    uri (token, object, { type = 'private', pin = PIN } = {}) {
      const query = [`module-path=${encodeURIComponent(module)}`]
      if (pin !== null) query.push(`pin-value=${encodeURIComponent(pin)}`)
      return `pkcs11:token=${encodeURIComponent(token)};object=${encodeURIComponent(object)};type=${type}?${query.join('&')}`
    },
    remove () {
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
}

module.exports = { unavailable, createSoftHsm, PIN }
