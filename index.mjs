// The ES module face of the package: the CommonJS module, loaded with require() and re-exported
// (one copy of each class, so `instanceof` agrees between `import` and `require`). createRequire
// rather than `import ... from './index.js'`: every runtime then loads ./index.js as CommonJS.
import { createRequire } from 'node:module'

const gateway = createRequire(import.meta.url)('./index.js')

export const { Client, Event, Action, Server } = gateway
export default gateway
