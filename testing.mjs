// `import ... from 'imt-gateway/testing'`: lib/testing.js, loaded with require() and re-exported.
import { createRequire } from 'node:module'

const testing = createRequire(import.meta.url)('./lib/testing.js')

export const { TestCertificateAuthority, createPki, ioDriver } = testing
export default testing
