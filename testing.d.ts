// Type definitions for imt-gateway/testing: throwaway certificates for tests, demos and
// benchmarks (never ship or commit what it makes).

/** What to put in a leaf certificate. */
export interface IssueOptions {
  commonName: string
  /** DNS names and IP addresses (subjectAltName). */
  altNames?: string[]
  server?: boolean
  client?: boolean
  /** `'ec'` (P-256, the default) or `'rsa'` (2048 bits). */
  keyType?: 'ec' | 'rsa'
  /** Validity bounds, epoch milliseconds. */
  notBefore?: number
  notAfter?: number
}

/** A PEM certificate and its PEM (PKCS#8) private key. */
export interface IssuedCertificate {
  cert: string
  key: string
}

/** An in-memory root CA. */
export class TestCertificateAuthority {
  constructor (commonName?: string | null)
  /** The root certificate, PEM. */
  readonly cert: string
  issue (options: IssueOptions): IssuedCertificate
}

export interface PkiOptions {
  /** Names the server certificate is valid for; localhost, 127.0.0.1 and ::1. */
  hosts?: string[]
  /** Common name of the device certificate; `'device-1'`. */
  device?: string
  keyType?: 'ec' | 'rsa'
}

export interface Pki {
  ca: TestCertificateAuthority
  /** The root certificate, PEM: the `ca` of both ends. */
  caCert: string
  server: IssuedCertificate
  /** The device's key and certificate. */
  client: IssuedCertificate
}

/** A root CA with a server certificate (for `hosts`) and a device certificate, all PEM strings. */
export function createPki (options?: PkiOptions): Pki

/** Which I/O driver clients made on this thread use. */
export function ioDriver (): 'libuv' | 'tokio'
