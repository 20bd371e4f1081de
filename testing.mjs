// `import ... from 'imt-gateway/testing'`: lib/testing.js, re-exported.
import testing from './lib/testing.js'

export const { TestCertificateAuthority, createPki, ioDriver } = testing
export default testing
