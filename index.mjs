// The ES module face of the package: the CommonJS module, re-exported (one copy of each class,
// so `instanceof` agrees between `import` and `require`).
import gateway from './index.js'

export const { Client, Event, Action, Server } = gateway
export default gateway
