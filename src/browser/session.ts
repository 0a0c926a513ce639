/**
 * The browser adapter: the same machine as in Node, its effects performed with the page's `fetch`,
 * WebCrypto, `sessionStorage` and `location`. The page leaves for the authorization server and comes
 * back as a new page load, so the waiting machine is persisted just before leaving and restored on
 * the callback route; the persisted flow is consumed before the code is redeemed, so a reload or a
 * replayed callback URL can never redeem a code twice. Imports nothing from node:*.
 */
import { createActor, type Actor } from 'xstate';
import { resolveOptions, type OAuthSessionOptions, type ResolvedOptions } from '../adapters/options.js';
import { statePath, TraceRecorder, type Trace, type TraceEntry } from '../adapters/trace.js';
import { flowError, OAuthConfigError, OAuthFlowError } from '../machines/errors.js';
import type { HttpRequest } from '../machines/http.js';
import { callbackVerdict } from '../machines/oauth.logic.js';
import { oauthMachine } from '../machines/oauth.machine.js';
import type { CredentialStore, TokenRecord } from '../machines/store.js';
import { sameOrigin } from '../machines/urls.js';
import { authorizationEntropy, webRandomBytes, type RandomBytes } from './entropy.js';
import { createTargetCheck, performBrowserOAuthRequest } from './oauthFetch.js';
import { createWebStorageStore, type WebStorage } from './webStorageStore.js';
import { secretValues } from '../machines/redact.js';
import { callbackParams, challengeFrom, flowBudget, SessionCore, type Authorization, type EngineSnapshot, type LeaseTerms, type RuntimeEffect } from '../session/core.js';

export type BrowserActor = Actor<typeof oauthMachine>;
type FetchFunction = (input: RequestInfo | URL, init?: RequestInit) => Promise<Response>;

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

class Session extends SessionCore implements BrowserSession {
  readonly actor: BrowserActor;
  protected readonly resolved: ResolvedOptions;
  private readonly redirectUri: string;
  protected readonly store: CredentialStore;
  private readonly flowStorage: WebStorage;
  private readonly flowKey: string;
  protected readonly clock: () => number;
  private readonly randomBytes: RandomBytes;
  private readonly fetchImpl: FetchFunction;
  private readonly navigate: (url: string) => void;
  private readonly checkTarget: (url: string) => string | undefined;
  protected readonly recorder: TraceRecorder;
  /** Set while the machine waits for a callback this page will not receive: `redirected` once we navigated, `pending` after a reload. */
  private parked: 'redirected' | 'pending' | undefined;
  /** The persisted flow in `flowStorage` is this session's to consume or drop. */
  private ownsFlowRecord = false;
  private flowDeadlineAt = 0;
  /** A persisted flow found on load but past its deadline (reported by `handleRedirectCallback`). */
  private expiredFlow = false;

  constructor(options: BrowserSessionOptions) {
    super();
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
    this.attach(this.actor);

    if (pending) {
      this.isRestored = true;
      this.ownsFlowRecord = true;
      this.flowDeadlineAt = pending.deadlineAt;
      this.parked = 'pending';
      this.armCallbackDeadline(pending.deadlineAt - this.clock());
    } else {
      this.startLoading();
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
    this.wakeSettleWaiters();
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
    await this.joinFlow();
    await this.drainSaves();
  }

  // ------------------------------------------------------------------ machine plumbing

  protected snapshotChanged(snapshot: EngineSnapshot): void {
    if (!snapshot.hasTag('waiting')) this.disarmCallbackDeadline();
    if (snapshot.hasTag('settled')) {
      // A flow that ended (done, failed, cancelled, timed out) leaves nothing to resume.
      if (this.ownsFlowRecord) this.removeFlowRecord();
      this.parked = undefined;
    }
  }

  /** A page that left (or a sign-in parked by a reload) will not see the flow settle here. */
  protected override stopsWaiting(): boolean {
    return this.parked !== undefined || this.closed;
  }

  protected override unsettledError(): OAuthFlowError {
    if (this.parked === 'redirected') {
      return new OAuthFlowError({ code: 'authorize.redirected', message: 'the page is leaving for the authorization server; the sign-in finishes on the callback route', state: this.state });
    }
    if (this.parked === 'pending') {
      return new OAuthFlowError({ code: 'authorize.pending', message: 'a sign-in started earlier in this tab is waiting: resume or cancel it', state: this.state });
    }
    return new OAuthFlowError({ code: 'session.closed', message: 'the session was closed' });
  }

  // ------------------------------------------------------------------ single-flight triggers

  protected leaseTerms(): LeaseTerms {
    // Another tab refreshing or signing in holds it; the browser frees it if that tab goes away.
    const waitMs = flowBudget(this.resolved.deadlines);
    return { ttlMs: waitMs, waitMs, fenced: false };
  }

  // ------------------------------------------------------------------ effects

  protected performEffect(effect: RuntimeEffect): void {
    switch (effect.type) {
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
      default:
        return;
    }
  }

  protected async performHttp(request: HttpRequest): Promise<void> {
    const outcome = await performBrowserOAuthRequest(request, {
      fetch: this.fetchImpl,
      deadlineMs: this.resolved.deadlines.oauthRequestMs,
      maxBodyBytes: this.resolved.maxBodyBytes,
      checkTarget: this.checkTarget,
      signal: this.lifetime.signal,
    });
    this.answerHttp(request, outcome);
  }

  // ------------------------------------------------------------------ the request path

  /** The page signs no DPoP proofs: a bearer header. */
  protected authorizationFor(tokens: TokenRecord, version: number): Authorization {
    return { header: `Bearer ${tokens.access_token}`, version };
  }

  readonly fetch: FetchFunction = async (input, init) => {
    const raw = typeof input === 'string' ? input : input instanceof URL ? input.href : input.url;
    const url = new URL(raw, globalThis.location?.href).href;
    // The token never leaves the MCP server's origin; other requests pass through untouched.
    if (!sameOrigin(url, this.resolved.config.serverUrl)) return this.fetchImpl(input, init);
    const parts = await requestParts(url, input, init);
    return this.authorized((authorization) => this.sendFetch(parts, authorization.header), responseChallenge, cancelBody);
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

  trace(): Trace {
    return this.recorder.toJSON(this.resolved.config.serverUrl, this.actor.getSnapshot().context);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.lifetime.abort();
    this.disarmCallbackDeadline();
    this.wakeSettleWaiters();
    // A flow persisted for the callback route stays in flowStorage: closing this page is not cancelling it.
    this.actor.stop();
    await this.drainSaves();
  }
}

// -------------------------------------------------------------------- helpers

function responseChallenge(response: Response): ReturnType<typeof challengeFrom> {
  return challengeFrom(response.status, response.headers.get('www-authenticate') ?? undefined);
}

async function cancelBody(response: Response): Promise<void> {
  await response.body?.cancel().catch(() => undefined);
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
