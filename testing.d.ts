// Type definitions for imt-gateway/testing: throwaway certificates for tests, demos and
// benchmarks (never ship or commit what it makes).

/**
 * Throwaway certificates, made in memory, for tests, demos and benchmarks against the bundled
 * `Server`: never ship or commit what it makes.
 * @module imt-gateway/testing
 */

/** What to put in a leaf certificate. */
export interface IssueOptions {
  /** The subject's common name (a device's name, or a server's host name). */
  commonName: string
  /** DNS names and IP addresses (subjectAltName). */
  altNames?: string[]
  /** Make it good for a TLS server (extended key usage `serverAuth`). */
  server?: boolean
  /** Make it good for a TLS client, a device (extended key usage `clientAuth`). */
  client?: boolean
  /** `'ec'` (P-256, the default) or `'rsa'` (2048 bits). */
  keyType?: 'ec' | 'rsa'
  /** Start of validity, epoch milliseconds; by default an hour ago. */
  notBefore?: number
  /** End of validity, epoch milliseconds; by default a year from now. */
  notAfter?: number
  /**
   * The certificate's public key, a DER SubjectPublicKeyInfo, for a key whose private half is
   * held elsewhere (a hardware token, read with `pkcs11-tool --read-object --type pubkey`): no
   * key is made, and the result's `key` is empty. RSA, EC P-256 or P-384.
   */
  publicKey?: Buffer
}

/** A PEM certificate and its PEM (PKCS#8) private key. */
export interface IssuedCertificate {
  /** The certificate, PEM. */
  cert: string
  /** Its private key, PEM (PKCS#8); empty when the certificate was issued for `publicKey`. */
  key: string
}

/** An in-memory root CA. */
export class TestCertificateAuthority {
  /**
   * Makes a new root key and self-signed certificate.
   * @param commonName The root's common name; a default one when left out.
   */
  constructor (commonName?: string | null)
  /** The root certificate, PEM. */
  readonly cert: string
  /**
   * Issues a leaf certificate signed by this root, with a fresh key. Throws
   * `ERR_INVALID_ARG_VALUE` for options it cannot make a certificate of.
   */
  issue (options: IssueOptions): IssuedCertificate
}

/** Options of `createPki()`. */
export interface PkiOptions {
  /** Names the server certificate is valid for; localhost, 127.0.0.1 and ::1. */
  hosts?: string[]
  /** Common name of the device certificate; `'device-1'`. */
  device?: string
  /** The keys' type: `'ec'` (P-256, the default) or `'rsa'` (2048 bits). */
  keyType?: 'ec' | 'rsa'
}

/** What `createPki()` makes. */
export interface Pki {
  /** The root CA, to issue more certificates with. */
  ca: TestCertificateAuthority
  /** The root certificate, PEM: the `ca` of both ends. */
  caCert: string
  /** The server's key and certificate, valid for `hosts`. */
  server: IssuedCertificate
  /** The device's key and certificate. */
  client: IssuedCertificate
}

/** A root CA with a server certificate (for `hosts`) and a device certificate, all PEM strings. */
export function createPki (options?: PkiOptions): Pki

/**
 * Which I/O driver clients made on this thread use: `'libuv'` (Node's own event loop, the
 * default) or `'tokio'` (set with `IMT_GATEWAY_IO=tokio`).
 */
export function ioDriver (): 'libuv' | 'tokio'
