/**
 * The browser adapter: the same machine as in Node, its effects performed with the page's `fetch`,
 * WebCrypto, `sessionStorage` and `location`. The page leaves for the authorization server and comes
 * back as a new page load, so the waiting machine is persisted just before leaving and restored on
 * the callback route; the persisted flow is consumed before the code is redeemed, so a reload or a
 * replayed callback URL can never redeem a code twice. Imports nothing from node:*.
 */
import { createActor, type Actor, type SnapshotFrom } from 'xstate';
import { resolveOptions, type OAuthSessionOptions, type ResolvedOptions } from '../adapters/options.js';
import { statePath, TraceRecorder, type Trace, type TraceEntry } from '../adapters/trace.js';
import { flowError, OAuthConfigError, OAuthFlowError, OAuthStoreError, toError, type FlowErrorData } from '../machines/errors.js';
import type { HttpRequest } from '../machines/http.js';
import { callbackVerdict } from '../machines/oauth.logic.js';
import { oauthMachine } from '../machines/oauth.machine.js';
import type { EngineEffect, EngineEvent } from '../machines/oauth.types.js';
import type { CallbackParams } from '../machines/steps/authorization.js';
import { needsRefresh } from '../machines/steps/token.js';
import type { CredentialStore, Lease, RecordKind, RecordTypes } from '../machines/store.js';
import { sameOrigin } from '../machines/urls.js';
import { readBearerChallenge } from '../machines/wwwAuthenticate.js';
import { authorizationEntropy, webRandomBytes, type RandomBytes } from './entropy.js';
import { createTargetCheck, performBrowserOAuthRequest } from './oauthFetch.js';
import { createWebStorageStore, type WebStorage } from './webStorageStore.js';
import { secretValues } from '../machines/redact.js';

export type BrowserActor = Actor<typeof oauthMachine>;
type EngineSnapshot = SnapshotFrom<typeof oauthMachine>;
type FetchFunction = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

/** Attempts of one caller request: replays after a refresh, a sibling's flow, step-ups (DESIGN policy 9). */
const MAX_ATTEMPTS = 6;
const FLOW_FORMAT = 'mcp-oauth-flow/1';

export interface BrowserSessionOptions {
  /** The MCP server URL (the resource). */
  serverUrl: string;
  /** The page's own callback route, on the page's origin: the authorization response comes back here. */
  redirect: { uri: string };
  /** Tokens, client and discovery records; default `localStorage` (see `createWebStorageStore`). */
  store?: CredentialStore;
  /** Store key; default the canonical server URL. */
  storeKey?: string;
  /** As in Node; `application_type` defaults to `web` and `token_endpoint_auth_method` to `none` (a page keeps no secret). */
  client?: OAuthSessionOptions['client'];
  deadlines?: { oauthRequestMs?: number; callbackMs?: number; mcpHeadersMs?: number; storeMs?: number };
  maxBodyBytes?: number;
  policy?: OAuthSessionOptions['policy'];
  protocolVersion?: string;
  allowInsecureServerUrl?: boolean;
  /** Where the in-flight machine waits while the page is at the authorization server; default `sessionStorage`. */
  flowStorage?: WebStorage;
  /** Leaves for the authorization server; default `location.assign`. */
  navigate?: (url: string) => void;
  /** The page's `fetch` unless given. */
  fetch?: FetchFunction;
  clock?: () => number;
  randomBytes?: RandomBytes;
  /** Receives each redacted step of the machine as it happens. */
  observe?: (entry: TraceEntry) => void;
}

export interface BrowserSession {
  /** Fetch-compatible: pass it to the MCP SDK's `StreamableHTTPClientTransport({ fetch })`. */
  fetch: FetchFunction;
  actor: BrowserActor;
  /** Resolves once stored records are loaded. */
  ready(): Promise<void>;
  /** Signs in now unless valid tokens are held; when a redirect is needed the page navigates and this rejects with `authorize.redirected`. */
  authorize(): Promise<void>;
  /** On the callback route: finishes the restored flow with the redirect's query (state and iss checked by the machine). */
  handleRedirectCallback(url?: string | URL): Promise<void>;
  /** A sign-in left waiting by an earlier page load of this tab (a reload before or during the redirect). */
  readonly pendingAuthorization: { authorizationUrl: string } | undefined;
  /** Goes back to the authorization server for the pending sign-in (same state and PKCE verifier). */
  resumeAuthorization(): void;
  /** Drops the pending sign-in; the next request starts afresh. */
  cancelAuthorization(): void;
  /** Forgets this server's tokens, client and discovery records in the store. */
  signOut(): Promise<void>;
  /** The machine snapshot while it waits or is settled. It holds secrets: hand it only to a store. */
  persist(): unknown;
  readonly state: string;
  trace(): Trace;
  close(): Promise<void>;
}

interface FlowRecord {
  format: typeof FLOW_FORMAT;
  serverUrl: string;
  storeKey: string;
  /** Epoch ms after which the authorization response is no longer awaited. */
  deadlineAt: number;
  snapshot: unknown;
}

interface Authorization {
  header: string | undefined;
  version: number | null;
}

interface Challenge {
  status: number;
  wwwAuthenticate: string | undefined;
}

export function createBrowserSession(options: BrowserSessionOptions): BrowserSession {
  return new Session(options);
}

function configError(field: string, problem: string): OAuthConfigError {
  return new OAuthConfigError({ code: 'config.invalid_option', message: `${field}: ${problem}` });
}

function browserStorage(name: 'localStorage' | 'sessionStorage'): WebStorage | undefined {
  try {
    return globalThis[name];
  } catch {
    // Reading the property throws when storage is blocked for this origin.
    return undefined;
  }
}

class Session implements BrowserSession {
  readonly actor: BrowserActor;
  private readonly resolved: ResolvedOptions;
  private readonly redirectUri: string;
  private readonly store: CredentialStore;
  private readonly flowStorage: WebStorage;
  private readonly flowKey: string;
  private readonly clock: () => number;
  private readonly randomBytes: RandomBytes;
  private readonly fetchImpl: FetchFunction;
  private readonly navigate: (url: string) => void;
  private readonly checkTarget: (url: string) => string | undefined;
  private readonly recorder: TraceRecorder;
  private readonly lifetime = new AbortController();
  private readonly saves = new Map<RecordKind, Promise<void>>();
  private readonly settleWaiters = new Set<() => void>();
  private restoring: Promise<void> | undefined;
  private isRestored = false;
  private inFlight: Promise<void> | undefined;
  private callbackTimer: ReturnType<typeof setTimeout> | undefined;
  private heldEffects: EngineEffect[] | undefined;
  private lastFlowState: string | undefined;
  private lastNetworkCause: unknown;
  private closed = false;
  /** Set while the machine waits for a callback this page will not receive: `redirected` once we navigated, `pending` after a reload. */
  private parked: 'redirected' | 'pending' | undefined;
  /** The persisted flow in `flowStorage` is this session's to consume or drop. */
  private ownsFlowRecord = false;
  private flowDeadlineAt = 0;
  /** A persisted flow found on load but past its deadline (reported by `handleRedirectCallback`). */
  private expiredFlow = false;

  constructor(options: BrowserSessionOptions) {
    const redirect = options.redirect as { uri?: unknown } | undefined;
    if (typeof redirect?.uri !== 'string') throw configError('redirect.uri', "required in a browser: the page's own callback route");
    const page = globalThis.location?.href;
    if (page !== undefined && !sameOrigin(redirect.uri, page)) {
      throw configError('redirect.uri', "must be on the page's origin: the in-flight sign-in waits in this origin's sessionStorage");
    }
    this.redirectUri = redirect.uri;
    if (options.randomBytes === undefined && globalThis.crypto?.subtle === undefined) {
      throw new OAuthConfigError({ code: 'config.insecure_context', message: 'WebCrypto (PKCE S256) needs a secure context: serve the page over https, or http on loopback' });
    }
    const metadata = { application_type: 'web' as const, token_endpoint_auth_method: 'none' as const, ...options.client?.metadata };
    this.resolved = resolveOptions({
      serverUrl: options.serverUrl,
      redirect: { uri: redirect.uri },
      client: { ...options.client, metadata },
      ...(options.storeKey === undefined ? {} : { storeKey: options.storeKey }),
      ...(options.deadlines === undefined ? {} : { deadlines: options.deadlines }),
      ...(options.maxBodyBytes === undefined ? {} : { maxBodyBytes: options.maxBodyBytes }),
      // The page adapter signs no DPoP proofs (yet): never ask the machine to mark requests for them.
      policy: { ...options.policy, dpop: 'off' },
      ...(options.protocolVersion === undefined ? {} : { protocolVersion: options.protocolVersion }),
      ...(options.allowInsecureServerUrl === undefined ? {} : { allowInsecureServerUrl: options.allowInsecureServerUrl }),
    });
    const flowStorage = options.flowStorage ?? browserStorage('sessionStorage');
    if (!flowStorage) throw configError('flowStorage', 'sessionStorage is unavailable here; pass a Web Storage-like object');
    this.flowStorage = flowStorage;
    this.flowKey = `mcp-oauth:flow:${this.resolved.storeKey}`;
    this.store = options.store ?? createWebStorageStore(browserStorage('localStorage') ? {} : { storage: flowStorage });
    this.clock = options.clock ?? Date.now;
    this.randomBytes = options.randomBytes ?? webRandomBytes;
    const pageFetch = globalThis.fetch?.bind(globalThis);
    this.fetchImpl = options.fetch ?? pageFetch;
    this.navigate = options.navigate ?? ((url) => globalThis.location.assign(url));
    this.checkTarget = createTargetCheck(this.resolved.config.serverUrl);
    this.recorder = new TraceRecorder(2_000, options.observe, () => secretValues(this.actor.getSnapshot().context));

    const pending = this.takePendingFlow();
    this.actor = pending ? createActor(oauthMachine, { snapshot: pending.snapshot as EngineSnapshot, input: this.resolved.config }) : createActor(oauthMachine, { input: this.resolved.config });
    this.actor.on('*', (effect) => {
      // Effects emitted while an event is processed are recorded after that event, in causal order.
      if (this.heldEffects) this.heldEffects.push(effect as EngineEffect);
      else this.recorder.effect(this.clock(), this.state, effect as EngineEffect);
      // Effects run after the transition that emitted them has finished.
      queueMicrotask(() => this.perform(effect as EngineEffect));
    });
    this.actor.subscribe({ next: (snapshot) => this.onSnapshot(snapshot), error: () => undefined });
    this.actor.start();

    if (pending) {
      this.isRestored = true;
      this.ownsFlowRecord = true;
      this.flowDeadlineAt = pending.deadlineAt;
      this.parked = 'pending';
      this.armCallbackDeadline(pending.deadlineAt - this.clock());
    } else {
      this.restoring = this.loadStore();
      this.restoring.catch(() => undefined);
    }
    // Back from the authorization server into a page restored from the back/forward cache: the
    // navigation it was parked on is over, and the persisted sign-in can be resumed from here.
    globalThis.addEventListener?.('pageshow', (event) => {
      if ((event as PageTransitionEvent).persisted && this.parked === 'redirected') this.parked = 'pending';
    });
  }

  get state(): string {
    return statePath(this.actor.getSnapshot().value);
  }

  // ------------------------------------------------------------------ the persisted flow

  /** The waiting machine an earlier load of this page left in `flowStorage`, if it is still usable. */
  private takePendingFlow(): FlowRecord | undefined {
    let record: FlowRecord;
    try {
      const raw = this.flowStorage.getItem(this.flowKey);
      if (raw === null) return undefined;
      record = JSON.parse(raw) as FlowRecord;
    } catch {
      this.removeFlowRecord();
      return undefined;
    }
    if (record?.format !== FLOW_FORMAT || record.storeKey !== this.resolved.storeKey || typeof record.deadlineAt !== 'number') {
      this.removeFlowRecord();
      return undefined;
    }
    // Another configuration under the same key: not ours to resume or to drop.
    if (record.serverUrl !== this.resolved.config.serverUrl) return undefined;
    if (record.deadlineAt <= this.clock()) {
      this.removeFlowRecord();
      this.expiredFlow = true;
      return undefined;
    }
    try {
      // A snapshot that does not restore to a waiting machine (tampered, or written by another version) is dropped.
      const probe = createActor(oauthMachine, { snapshot: record.snapshot as EngineSnapshot, input: this.resolved.config });
      probe.start();
      const waiting = probe.getSnapshot().status === 'active' && probe.getSnapshot().hasTag('waiting');
      probe.stop();
      if (!waiting) throw new Error('not waiting');
    } catch {
      this.removeFlowRecord();
      return undefined;
    }
    return record;
  }

  private writeFlowRecord(deadlineAt: number): void {
    const record: FlowRecord = {
      format: FLOW_FORMAT,
      serverUrl: this.resolved.config.serverUrl,
      storeKey: this.resolved.storeKey,
      deadlineAt,
      snapshot: this.actor.getPersistedSnapshot(),
    };
    this.flowStorage.setItem(this.flowKey, JSON.stringify(record));
    this.ownsFlowRecord = true;
    this.flowDeadlineAt = deadlineAt;
  }

  private removeFlowRecord(): void {
    try {
      this.flowStorage.removeItem(this.flowKey);
    } catch {
      // Storage gone: nothing is left there to replay either.
    }
    this.ownsFlowRecord = false;
  }

  /** Persist, then leave: the snapshot must be in `flowStorage` before the page unloads. */
  private async leaveForAuthorization(url: string): Promise<void> {
    // The client record (and its generation) must be stored before the page goes away.
    await this.drainSaves();
    if (this.closed || !this.actor.getSnapshot().hasTag('waiting')) return;
    try {
      this.writeFlowRecord(this.clock() + this.resolved.deadlines.callbackMs);
    } catch (error) {
      this.lastNetworkCause = error;
      this.send({ type: 'interaction.failed', error: flowError('flow', 'authorize.persist_failed', 'the sign-in in progress could not be saved in sessionStorage; the page did not leave') });
      return;
    }
    this.park('redirected');
    this.armCallbackDeadline(this.resolved.deadlines.callbackMs);
    try {
      this.navigate(url);
    } catch {
      this.removeFlowRecord();
      this.parked = undefined;
      this.send({ type: 'interaction.failed', error: flowError('flow', 'authorize.navigation_failed', 'the page could not navigate to the authorization server') });
    }
  }

  private park(reason: 'redirected' | 'pending'): void {
    this.parked = reason;
    for (const wake of [...this.settleWaiters]) wake();
  }

  get pendingAuthorization(): { authorizationUrl: string } | undefined {
    const snapshot = this.actor.getSnapshot();
    const url = snapshot.context.transaction?.authorizationUrl;
    return this.parked === 'pending' && this.ownsFlowRecord && snapshot.hasTag('waiting') && url !== undefined ? { authorizationUrl: url } : undefined;
  }

  resumeAuthorization(): void {
    const pending = this.pendingAuthorization;
    if (!pending) throw new OAuthFlowError({ code: 'authorize.no_pending', message: 'no sign-in is waiting in this tab' });
    this.park('redirected');
    this.navigate(pending.authorizationUrl);
  }

  cancelAuthorization(): void {
    this.removeFlowRecord();
    this.parked = undefined;
    if (this.actor.getSnapshot().hasTag('waiting')) this.send({ type: 'cancel' });
  }

  async handleRedirectCallback(url?: string | URL): Promise<void> {
    const target = new URL(String(url ?? globalThis.location?.href ?? ''), globalThis.location?.href);
    const expected = new URL(this.redirectUri);
    if (target.origin !== expected.origin || target.pathname !== expected.pathname) {
      throw new OAuthFlowError({ code: 'callback.wrong_route', message: 'this URL is not the redirect URI the sign-in registered' });
    }
    if (!this.ownsFlowRecord || !this.actor.getSnapshot().hasTag('waiting')) {
      throw this.expiredFlow
        ? new OAuthFlowError({ code: 'callback.timeout', message: 'the sign-in this response belongs to passed its deadline; nothing was redeemed' })
        : new OAuthFlowError({ code: 'callback.no_flow', message: 'no sign-in is waiting in this tab (a reloaded, replayed or forged response); nothing was redeemed' });
    }
    // Consumed before the code can be sent anywhere: a reload of this URL finds nothing to redeem.
    const deadlineAt = this.flowDeadlineAt;
    this.removeFlowRecord();
    this.parked = undefined;
    const params = callbackParams(target.searchParams);
    // The machine's own verdict, taken before it digests (and forgets) the response, names the refusal.
    const verdict = callbackVerdict({ ...this.actor.getSnapshot().context, lastCallback: params });
    this.send({ type: 'callback', params, at: this.clock() });
    if (this.actor.getSnapshot().hasTag('waiting')) {
      // DESIGN policy 7: a response without our state is ignored and the genuine one still awaited.
      try {
        this.writeFlowRecord(deadlineAt);
      } catch {
        // Without storage the flow cannot wait across page loads; it stays waiting in this page only.
      }
      this.parked = 'pending';
      const reason = verdict.kind === 'ignore' ? verdict.reason : 'state_mismatch';
      throw new OAuthFlowError({ code: `callback.${reason}`, message: 'the authorization response does not belong to the sign-in in progress; ignored', state: this.state });
    }
    this.inFlight ??= this.settleOrThrow().finally(() => (this.inFlight = undefined));
    await this.inFlight;
    await this.drainSaves();
  }

  // ------------------------------------------------------------------ machine plumbing

  ready(): Promise<void> {
    return this.restored();
  }

  /** Stored records, loaded once; a failed load (store down) is retried by the next caller. */
  private restored(): Promise<void> {
    if (this.isRestored) return Promise.resolve();
    this.restoring ??= this.loadStore();
    return this.restoring;
  }

  private send(event: EngineEvent): void {
    if (this.closed) return;
    const outer = this.heldEffects;
    const held: EngineEffect[] = [];
    this.heldEffects = held;
    try {
      this.actor.send(event);
    } finally {
      this.heldEffects = outer;
    }
    const at = this.clock();
    this.recorder.event(at, this.state, event);
    for (const effect of held) this.recorder.effect(at, this.state, effect);
  }

  private settled(): boolean {
    return this.actor.getSnapshot().hasTag('settled');
  }

  private onSnapshot(snapshot: EngineSnapshot): void {
    if (!snapshot.matches('failed')) this.lastFlowState = statePath(snapshot.value);
    if (!snapshot.hasTag('waiting')) this.disarmCallbackDeadline();
    if (snapshot.hasTag('settled')) {
      // A flow that ended (done, failed, cancelled, timed out) leaves nothing to resume.
      if (this.ownsFlowRecord) this.removeFlowRecord();
      this.parked = undefined;
      for (const wake of [...this.settleWaiters]) wake();
    }
  }

  private waitSettled(): Promise<void> {
    if (this.settled() || this.parked || this.closed) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.settleWaiters.delete(wake);
        resolve();
      };
      this.settleWaiters.add(wake);
    });
  }

  /** Waits for the current flow and turns its outcome into the typed error every waiter receives. */
  private async settleOrThrow(): Promise<void> {
    await this.waitSettled();
    const snapshot = this.actor.getSnapshot();
    if (!snapshot.hasTag('settled')) {
      if (this.parked === 'redirected') {
        throw new OAuthFlowError({ code: 'authorize.redirected', message: 'the page is leaving for the authorization server; the sign-in finishes on the callback route', state: this.state });
      }
      if (this.parked === 'pending') {
        throw new OAuthFlowError({ code: 'authorize.pending', message: 'a sign-in started earlier in this tab is waiting: resume or cancel it', state: this.state });
      }
      throw new OAuthFlowError({ code: 'session.closed', message: 'the session was closed' });
    }
    if (snapshot.matches('failed') && snapshot.context.error) throw this.errorFrom(snapshot.context.error);
  }

  private errorFrom(data: FlowErrorData): OAuthFlowError {
    const cause = data.kind === 'network' ? this.lastNetworkCause : undefined;
    return toError({ ...data, state: data.state ?? this.lastFlowState }, cause);
  }

  private async loadStore(): Promise<void> {
    try {
      const [tokens, client, discovery] = await this.storeCall('load', () => this.readRecords());
      this.send({ type: 'store.loaded', tokens, client, discovery });
      this.isRestored = true;
    } finally {
      this.restoring = undefined;
    }
  }

  private readRecords() {
    const key = this.resolved.storeKey;
    return Promise.all([this.store.get(key, 'tokens'), this.store.get(key, 'client'), this.store.get(key, 'discovery')]);
  }

  /** A store is user code: its calls get a deadline like every other wait. */
  private storeCall<T>(what: string, call: () => Promise<T>): Promise<T> {
    const ms = this.resolved.deadlines.storeMs;
    let timer: ReturnType<typeof setTimeout> | undefined;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new OAuthStoreError({ code: 'store.timeout', message: `store ${what} took longer than ${ms} ms` })), ms);
    });
    const attempt = Promise.resolve()
      .then(call)
      .catch((error: unknown) => {
        if (error instanceof OAuthFlowError) throw error;
        throw new OAuthStoreError({ code: 'store.failed', message: `store ${what} failed` }, { cause: error });
      });
    return Promise.race([attempt, deadline]).finally(() => clearTimeout(timer));
  }

  private armCallbackDeadline(ms: number): void {
    this.disarmCallbackDeadline();
    this.callbackTimer = setTimeout(() => this.send({ type: 'timeout', id: 'callback' }), Math.max(0, ms));
  }

  private disarmCallbackDeadline(): void {
    if (this.callbackTimer !== undefined) clearTimeout(this.callbackTimer);
    this.callbackTimer = undefined;
  }

  // ------------------------------------------------------------------ single-flight triggers

  private trigger(event: EngineEvent): Promise<void> {
    if (this.inFlight) return this.inFlight;
    if (!this.settled()) {
      this.inFlight = this.settleOrThrow().finally(() => (this.inFlight = undefined));
      return this.inFlight;
    }
    this.inFlight = this.runTrigger(event).finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private async runTrigger(event: EngineEvent): Promise<void> {
    let lease: Lease | undefined;
    if (this.store.lease) {
      const waitMs = this.resolved.deadlines.callbackMs + 10 * this.resolved.deadlines.oauthRequestMs;
      // Another tab refreshing or signing in holds it; the browser frees it if that tab goes away.
      lease = await this.store.lease(this.resolved.storeKey, { ttlMs: waitMs, waitMs, signal: this.lifetime.signal });
    }
    try {
      if (lease) await this.adoptNewerRecords();
      this.send({ ...event, ...('at' in event ? { at: this.clock() } : {}) } as EngineEvent);
      await this.settleOrThrow();
    } finally {
      await this.drainSaves();
      await lease?.release().catch(() => undefined);
    }
  }

  /** Under the lease: another tab may have refreshed or signed in while we waited. */
  private async adoptNewerRecords(): Promise<void> {
    const [tokens, client, discovery] = await this.storeCall('reload', () => this.readRecords());
    const known = this.actor.getSnapshot().context.generations.tokens;
    if (tokens && tokens.generation !== known) this.send({ type: 'store.loaded', tokens, client, discovery });
  }

  // ------------------------------------------------------------------ effects

  private perform(effect: EngineEffect): void {
    if (this.closed) return;
    switch (effect.type) {
      case 'http.request':
        void this.performHttp(effect.request);
        return;
      case 'redirect.prepare':
        // The page's callback route is fixed: there is no listener to bind.
        this.send({ type: 'redirect.ready', redirectUri: this.redirectUri });
        return;
      case 'random.needed':
        authorizationEntropy(this.randomBytes).then(
          (entropy) => this.send({ type: 'random', ...entropy }),
          // The machine takes no failure event while redirecting; cancelling keeps the flow bounded.
          () => this.send({ type: 'cancel' }),
        );
        return;
      case 'browser.open':
        void this.leaveForAuthorization(effect.url);
        return;
      case 'store.save':
        this.queueStoreWrite(effect.kind, () => this.save(effect.kind, effect.value));
        return;
      case 'store.clear':
        this.queueStoreWrite(effect.kind, async () => {
          await this.storeCall('delete', () => this.store.delete(this.resolved.storeKey, effect.kind, { ifGeneration: effect.ifGeneration }));
        });
        return;
      default:
        return;
    }
  }

  private async performHttp(request: HttpRequest): Promise<void> {
    const outcome = await performBrowserOAuthRequest(request, {
      fetch: this.fetchImpl,
      deadlineMs: this.resolved.deadlines.oauthRequestMs,
      maxBodyBytes: this.resolved.maxBodyBytes,
      checkTarget: this.checkTarget,
      signal: this.lifetime.signal,
    });
    if (outcome.ok) {
      this.send({ type: 'http.response', id: request.id, ...outcome.response, at: this.clock() });
    } else {
      this.lastNetworkCause = outcome.cause;
      this.send({ type: 'http.failed', id: request.id, reason: outcome.reason, message: outcome.message, at: this.clock() });
    }
  }

  private queueStoreWrite(kind: RecordKind, write: () => Promise<void>): void {
    const previous = this.saves.get(kind) ?? Promise.resolve();
    const next = previous.then(write).catch((error: unknown) => {
      // Tokens stay usable in memory; the failure is visible in the trace, never silently dropped.
      const notice = { code: 'store.write_failed', message: error instanceof Error ? `${kind}: ${error.message}` : `${kind}: write failed` };
      this.recorder.effect(this.clock(), this.state, { type: 'notice', notice });
    });
    this.saves.set(kind, next);
  }

  /** Compare-and-swap on the generation last seen; on a conflict the newer record is written once over the current one. */
  private async save(kind: RecordKind, value: RecordTypes[RecordKind]): Promise<void> {
    const key = this.resolved.storeKey;
    const known = this.actor.getSnapshot().context.generations[kind];
    let result = await this.storeCall('write', () => this.store.set(key, kind, value, { ifGeneration: known }));
    if (!result.ok) {
      const current = result.current?.generation ?? 0;
      result = await this.storeCall('write', () => this.store.set(key, kind, value, { ifGeneration: current }));
    }
    if (result.ok) this.send({ type: 'store.saved', kind, generation: result.generation });
    else throw new Error('the record changed twice while saving');
  }

  private async drainSaves(): Promise<void> {
    await Promise.all([...this.saves.values()]);
  }

  // ------------------------------------------------------------------ the request path

  /** The hot path: a valid token in the snapshot is used at once, without the machine. */
  private currentAuthorization(): Authorization | undefined {
    if (!this.isRestored) return undefined;
    const snapshot = this.actor.getSnapshot();
    const tokens = snapshot.context.tokens;
    if (!tokens) return snapshot.hasTag('settled') ? { header: undefined, version: null } : undefined;
    if (needsRefresh(tokens, this.clock(), this.resolved.config.policy.refreshSkewMs)) return undefined;
    return { header: `Bearer ${tokens.access_token}`, version: snapshot.context.tokenVersion };
  }

  private async authorization(): Promise<Authorization> {
    for (let round = 0; round < MAX_ATTEMPTS; round++) {
      const current = this.currentAuthorization();
      if (current) return current;
      await this.restored();
      if (this.currentAuthorization()) continue;
      // Expired (or a flow is running): one refresh or flow for everybody, then look again.
      await this.trigger({ type: 'token.check', at: this.clock() });
    }
    throw new OAuthFlowError({ code: 'flow.no_token', message: 'no usable access token after refreshing' });
  }

  /** One caller request: send; on a 401 or 403 `insufficient_scope` let the machine recover, then replay. */
  private async authorized(send: (authorization: string | undefined) => Promise<Response>): Promise<Response> {
    let authorizations = 0;
    let refreshes = 0;
    let response: Response | undefined;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      const { header, version } = await this.authorization();
      response = await send(header);
      const challenge = challengeFrom(response.status, response.headers.get('www-authenticate') ?? undefined);
      if (!challenge || attempt === MAX_ATTEMPTS - 1) return response;
      const snapshot = this.actor.getSnapshot();
      await response.body?.cancel().catch(() => undefined);
      // One full authorization per failing request: a 401 to its fresh token is final.
      if (challenge.status === 401 && authorizations > 0 && version === snapshot.context.tokenVersion) {
        throw new OAuthFlowError({ code: 'flow.rejected_after_authorization', message: 'the server rejected the token a fresh authorization just issued', status: 401 });
      }
      const before = snapshot.context;
      await this.trigger({
        type: 'unauthorized',
        status: challenge.status,
        wwwAuthenticate: challenge.wwwAuthenticate,
        tokenVersion: version,
        authorizations,
        refreshes,
        at: this.clock(),
      });
      const after = this.actor.getSnapshot().context;
      authorizations += after.authorizationCount - before.authorizationCount;
      refreshes += after.refreshCount - before.refreshCount;
    }
    return response as Response;
  }

  readonly fetch: FetchFunction = async (input, init) => {
    const raw = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(raw, globalThis.location?.href).href;
    // The token never leaves the MCP server's origin; other requests pass through untouched.
    if (!sameOrigin(url, this.resolved.config.serverUrl)) return this.fetchImpl(input, init);
    const parts = await requestParts(url, input, init);
    return this.authorized((authorization) => this.sendFetch(parts, authorization));
  };

  /** The caller's own request: a deadline on the response headers only, since the body may be a long SSE stream. */
  private async sendFetch(parts: RequestParts, authorization: string | undefined): Promise<Response> {
    const headers = new Headers(parts.headers);
    if (authorization) headers.set('authorization', authorization);
    const ms = this.resolved.deadlines.mcpHeadersMs;
    const headersDeadline = new AbortController();
    const timer = setTimeout(() => headersDeadline.abort(new DOMException(`no response headers within ${ms} ms`, 'TimeoutError')), ms);
    const signal = parts.signal ? AbortSignal.any([parts.signal, headersDeadline.signal]) : headersDeadline.signal;
    try {
      return await this.fetchImpl(parts.url, {
        ...parts.rest,
        method: parts.method,
        headers,
        ...(parts.body === undefined ? {} : { body: parts.body }),
        // A page cannot read a redirect's target, so a request carrying the token is never redirected.
        redirect: 'manual',
        signal,
      });
    } finally {
      clearTimeout(timer);
    }
  }

  // ------------------------------------------------------------------ explicit operations

  async authorize(): Promise<void> {
    await this.restored();
    if (this.currentAuthorization()?.header) return;
    if (this.actor.getSnapshot().context.tokens) {
      await this.authorization();
      if (this.currentAuthorization()?.header) return;
    }
    await this.trigger({ type: 'unauthorized', status: 401, tokenVersion: null, authorizations: 0, at: this.clock() });
  }

  async signOut(): Promise<void> {
    await this.restored();
    if (!this.settled()) throw new OAuthFlowError({ code: 'session.busy', message: `cannot sign out while a sign-in is in progress (${this.state})` });
    await this.drainSaves();
    const { generations } = this.actor.getSnapshot().context;
    const key = this.resolved.storeKey;
    for (const kind of ['tokens', 'client', 'discovery'] as const) {
      if (generations[kind] > 0) await this.storeCall('delete', () => this.store.delete(key, kind, { ifGeneration: generations[kind] }));
    }
    this.send({ type: 'store.loaded' });
  }

  persist(): unknown {
    const snapshot = this.actor.getSnapshot();
    if (!snapshot.hasTag('waiting') && !snapshot.hasTag('settled')) {
      throw new OAuthFlowError({ code: 'session.busy', message: `cannot persist while a request is in flight (${this.state})` });
    }
    return this.actor.getPersistedSnapshot();
  }

  trace(): Trace {
    return this.recorder.toJSON(this.resolved.config.serverUrl, this.actor.getSnapshot().context);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort();
    this.disarmCallbackDeadline();
    for (const wake of [...this.settleWaiters]) wake();
    // A flow persisted for the callback route stays in flowStorage: closing this page is not cancelling it.
    this.actor.stop();
    await this.drainSaves();
  }

  /** Keeps secrets out of `console.log(session)` and `JSON.stringify(session)`. */
  toJSON(): Record<string, unknown> {
    return { serverUrl: this.resolved.config.serverUrl, state: this.state };
  }
}

// -------------------------------------------------------------------- helpers

function callbackParams(params: URLSearchParams): CallbackParams {
  const out: CallbackParams = {};
  for (const [name, value] of params) {
    const existing = out[name];
    out[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
  }
  return out;
}

function challengeFrom(status: number, wwwAuthenticate: string | undefined): Challenge | undefined {
  if (status === 401) return { status, wwwAuthenticate };
  if (status === 403 && readBearerChallenge(wwwAuthenticate)?.error === 'insufficient_scope') return { status, wwwAuthenticate };
  return undefined;
}

interface RequestParts {
  url: string;
  method: string;
  headers: Array<[string, string]>;
  body?: Uint8Array<ArrayBuffer>;
  signal?: AbortSignal;
  /** The caller's other fetch options (credentials, cache, mode, keepalive…), passed on as given. */
  rest: RequestInit;
}

/** Normalises fetch input and buffers the body so that the request can be replayed after a sign-in. */
async function requestParts(url: string, input: RequestInfo | URL, init: RequestInit | undefined): Promise<RequestParts> {
  const request = typeof input === 'object' && !(input instanceof URL) ? input : undefined;
  const { body: initBody, headers: initHeaders, method: initMethod, signal: initSignal, redirect: _redirect, ...rest } = init ?? {};
  const method = initMethod ?? request?.method ?? 'GET';
  const headers = new Headers(request?.headers);
  if (initHeaders) new Headers(initHeaders).forEach((value, name) => headers.set(name, value));
  let body: Uint8Array<ArrayBuffer> | undefined;
  if (initBody !== undefined && initBody !== null) {
    const buffered = new Response(initBody);
    body = new Uint8Array(await buffered.arrayBuffer());
    const type = buffered.headers.get('content-type');
    if (type && !headers.has('content-type')) headers.set('content-type', type);
  } else if (request?.body) {
    body = new Uint8Array(await request.clone().arrayBuffer());
  }
  const signal = initSignal ?? request?.signal ?? undefined;
  const entries: Array<[string, string]> = [];
  headers.forEach((value, name) => entries.push([name, value]));
  return { url, method, headers: entries, ...(body === undefined ? {} : { body }), ...(signal ? { signal } : {}), rest };
}
