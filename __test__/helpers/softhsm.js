'use strict'

// A real PKCS#11 token for the hardware-key tests: SoftHSM 2 with its tokens in a temporary
// directory (SOFTHSM2_CONF, set before the module is first loaded in this process), keys
// generated in the token by pkcs11-tool (opensc), certificates for them issued by the test CA
// for the public key read back from the token. Installed by `scripts/toolchains.sh pkcs11`.
const { execFileSync } = require('child_process')
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

// Where `tool` is on PATH, or null.
function which (tool) {
  for (const dir of (process.env.PATH || '').split(path.delimiter)) {
    const file = path.join(dir, tool)
    if (dir && fs.existsSync(file)) return file
  }
  return null
}

// The installed modules built for machine `arch` (every one found where ELF headers cannot be
// read).
function modulesFor (arch) {
  return MODULES.filter((file) => fs.existsSync(file) && (process.platform !== 'linux' || elfArch(file) === arch))
}

// The module this process loads (built for its machine), and the one the command-line tools
// load (built for theirs: the host's, when this process runs under emulation). They share the
// token directory: SoftHSM's object files read the same on every little-endian 64-bit machine.
function modules () {
  const tool = which('pkcs11-tool')
  const toolArch = tool !== null && process.platform === 'linux' ? elfArch(tool) : process.arch
  return { own: modulesFor(process.arch)[0], tools: modulesFor(toolArch)[0] }
}

// Why the tests cannot run here, or null when they can.
function unavailable () {
  if (process.platform === 'win32') return 'SoftHSM tests run on Linux and macOS'
  if (which('softhsm2-util') === null) return 'softhsm2-util is not on PATH (package softhsm2)'
  if (which('pkcs11-tool') === null) return 'pkcs11-tool is not on PATH (package opensc)'
  const { own, tools } = modules()
  const found = MODULES.filter((file) => fs.existsSync(file))
  if (!found.length) return `no SoftHSM 2 module (looked for ${MODULES.join(', ')}; bash scripts/toolchains.sh pkcs11 installs it)`
  if (!own) return `no SoftHSM 2 module built for ${process.arch} (found ${found.join(', ')}; under emulation, set SOFTHSM2_MODULE as scripts/test-emulated.sh does)`
  if (!tools) return `no SoftHSM 2 module for pkcs11-tool's machine (found ${found.join(', ')})`
  return null
}

/**
 * A token directory and configuration of its own; `SOFTHSM2_CONF` is set for this process
 * (the module reads it when it is loaded, once per process).
 */
function createSoftHsm () {
  const { own: module, tools: toolModule } = modules()
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'imt-softhsm-'))
  const tokens = path.join(dir, 'tokens')
  fs.mkdirSync(tokens)
  const conf = path.join(dir, 'softhsm2.conf')
  fs.writeFileSync(conf, `directories.tokendir = ${tokens}\nobjectstore.backend = file\nlog.level = ERROR\n`)
  process.env.SOFTHSM2_CONF = conf
  const env = { ...process.env, SOFTHSM2_CONF: conf }
  const run = (tool, args, input) => execFileSync(tool, args, { env, input, stdio: ['pipe', 'pipe', 'pipe'] })
  const tool = (token, args) => run('pkcs11-tool', ['--module', toolModule, '--token-label', token, ...args])
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
    /**
     * Marks the token's user PIN locked (CKF_USER_PIN_LOCKED in C_GetTokenInfo's flags), as a
     * token reports it after too many wrong PINs (SoftHSM never locks one by itself). Written
     * into the token's file, so it takes effect in a process that has not loaded the module yet.
     */
    lockUserPin (label) {
      const file = path.join(this.tokenDir(label), 'token.object')
      const bytes = fs.readFileSync(file)
      // SoftHSM's object file: attributes as (type, kind, value), 8-byte big-endian fields;
      // the token flags are its vendor attribute 0x8000534B ('SK'), an unsigned long (kind 2).
      const flags = Buffer.from('00000000 8000534b 00000000 00000002'.replace(/ /g, ''), 'hex')
      const at = bytes.indexOf(flags)
      if (at < 0) throw new Error(`no token flags in ${file}`)
      const value = at + flags.length
      bytes.writeBigUInt64BE(bytes.readBigUInt64BE(value) | 0x40000n, value) // CKF_USER_PIN_LOCKED
      fs.writeFileSync(file, bytes)
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
