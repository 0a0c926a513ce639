export * from './authorization.js';
export * from './discovery.js';
export * from './registration.js';
export * from './scope.js';
export * from './token.js';
export * from './revocation.js';
export * from './grants.js';
export * from './device.js';
