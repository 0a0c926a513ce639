export { createOAuthSession, type OAuthSession, type OAuthActor } from './adapters/session.js';
export type { OAuthSessionOptions, AuthorizationUrlOpener } from './adapters/options.js';
export { createMemoryStore } from './adapters/stores/memory.js';
export { createFileStore, defaultStoreDirectory } from './adapters/stores/file.js';
export { startLoopbackCallbackServer, type LoopbackCallbackServer } from './adapters/interaction/callbackServer.js';
export { createHeadlessUserAgent, type HeadlessUserAgent } from './adapters/interaction/headlessUserAgent.js';
export { openSystemBrowser } from './adapters/interaction/browser.js';
export type { Trace, TraceEntry } from './adapters/trace.js';
export * from './machines/index.js';
