/**
 * mcp-oauth in a web page: the same machine module as in Node (src/machines), driven by a browser
 * adapter (the page's fetch, WebCrypto, sessionStorage for the sign-in in flight, localStorage or
 * your own store for credentials). Imports nothing from node:*.
 */
export { createBrowserSession, type BrowserSession, type BrowserSessionOptions, type BrowserActor } from './session.js';
export { createWebStorageStore, type WebStorage, type WebStorageStoreOptions } from './webStorageStore.js';
export { oauthMachine } from '../machines/oauth.machine.js';
export * from '../machines/errors.js';
export type { CredentialStore, Lease, LeaseOptions, RecordKind, RecordTypes, TokenRecord, ClientRecord, DiscoveryRecord, Versioned, WriteCondition, WriteResult } from '../machines/store.js';
export type { Trace, TraceEntry } from '../adapters/trace.js';
