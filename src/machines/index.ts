/** The pure core: runs unchanged in Node, a browser or a worker. */
export { oauthMachine, type OAuthMachine } from './oauth.machine.js';
export type * from './oauth.types.js';
export type * from './store.js';
export * from './errors.js';
export * from './redact.js';
export { parseWWWAuthenticate, readBearerChallenge, type BearerChallenge, type Challenge } from './wwwAuthenticate.js';
export * as urls from './urls.js';
export * as steps from './steps/index.js';
export * from './schemas.js';
export { DEFAULT_POLICY } from './policy.js';
