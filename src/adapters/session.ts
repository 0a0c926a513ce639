/**
 * The session: the machine's effects performed over real HTTP, a fetch-compatible function and an
 * undici interceptor that add the token. The hot path reads the token from the snapshot with no
 * await on the machine; only a 401/403 or an expired token reaches it, and concurrent requests
 * share one flow (single-flight), across processes too when the store offers a lease.
 */
import { Agent, fetch as undiciFetch, util as undiciUtil, type Dispatcher } from 'undici';
import { createActor, type Actor } from 'xstate';
import { flowError, OAuthFlowError } from '../machines/errors.js';
import { CREDENTIAL_UNAVAILABLE, type HttpRequest } from '../machines/http.js';
import { oauthMachine } from '../machines/oauth.machine.js';
import type { CredentialStore, TokenRecord } from '../machines/store.js';
import { isAmbiguousUrlCode, sameOrigin, splitUrl } from '../machines/urls.js';
import { readBearerChallenge } from '../machines/wwwAuthenticate.js';
import { authorizationEntropy, systemRandomBytes, type RandomBytes } from './entropy.js';
import { openSystemBrowser } from './interaction/browser.js';
import { startLoopbackCallbackServer, type LoopbackCallbackServer } from './interaction/callbackServer.js';
import { createNetworkPolicy, createOAuthAgent, performOAuthRequest, type NetworkPolicy } from './oauthHttp.js';
import { loopbackUri, resolveOptions, type AuthorizationUrlOpener, type OAuthSessionOptions, type ResolvedOptions } from './options.js';
import { createMemoryStore } from './stores/memory.js';
import { CredentialUnavailable, GrantSigner } from './grantCredentials.js';
import { DpopProver } from './dpop.js';
import { statePath, TraceRecorder, type Trace } from './trace.js';
import { secretValues } from '../machines/redact.js';
import { callbackParams, challengeFrom, flowBudget, MAX_ATTEMPTS, SessionCore, type Authorization, type Challenge, type EngineSnapshot, type LeaseTerms, type RuntimeEffect } from '../session/core.js';

export type OAuthActor = Actor<typeof oauthMachine>;
const MAX_SAME_ORIGIN_REDIRECTS = 5;
const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);

export interface OAuthSession {
  /** Fetch-compatible: pass it to the MCP SDK's `StreamableHTTPClientTransport({ fetch })`. */
  fetch: (input: string | URL | Request, init?: RequestInit) => Promise<Response>;
  /** An undici interceptor: `agent.compose(session.interceptor)`. */
  interceptor: Dispatcher.DispatcherComposeInterceptor;
  actor: OAuthActor;
  /** Resolves once stored records are loaded. */
  ready(): Promise<void>;
  /** Runs a full authorization now (a CLI `login`), unless valid tokens are held. */
  authorize(): Promise<void>;
  /** A valid access token, refreshing or authorizing when needed. */
  getAccessToken(): Promise<string>;
  /**
   * Signs out: revokes at the authorization server (RFC 7009) when it advertised a revocation
   * endpoint, then deletes the stored tokens (compare-and-delete). A refused or failed revocation
   * still deletes them and is reported in the result.
   */
  logout(): Promise<LogoutResult>;
  /** Delivers an authorization response (the redirect's query) to a waiting flow. */
  handleCallback(params: URLSearchParams | Record<string, string | string[]>): 'accepted' | 'rejected';
  /** The machine snapshot while it waits or is settled. It holds secrets: hand it only to a store. */
  persist(): unknown;
  /** The dotted state path, e.g. `flow.authorize.awaitingCallback`. */
  readonly state: string;
  trace(): Trace;
  close(): Promise<void>;
}

export interface LogoutResult {
  /** Tokens were held (locally or in the store) when the sign-out ran. */
  hadTokens: boolean;
  /** A revocation request was sent. */
  revocationAttempted: boolean;
  /** The server confirmed the revocation (HTTP 200). */
  revoked: boolean;
  /** Why a revocation that was attempted did not succeed (`revocation.refused`, `network.timeout`…). */
  problem?: { code: string; message: string };
}

export function createOAuthSession(options: OAuthSessionOptions): OAuthSession {
  return new Session(options, resolveOptions(options));
}

class Session extends SessionCore implements OAuthSession {
  readonly actor: OAuthActor;
  protected readonly store: CredentialStore;
  protected readonly clock: () => number;
  private readonly randomBytes: RandomBytes;
  private readonly opener: AuthorizationUrlOpener;
  protected readonly recorder: TraceRecorder;
  private readonly mcpDispatcher: Dispatcher;
  private readonly ownsMcpDispatcher: boolean;
  private readonly policy: Promise<NetworkPolicy>;
  private oauthAgent: Agent | undefined;
  private callbackServer: LoopbackCallbackServer | undefined;
  /** Timers the machine asked for (`timer.start`), by id: RFC 8628 polling. */
  private readonly timers = new Map<string, NodeJS.Timeout>();
  private interaction: AbortController | undefined;
  private readonly networkCauses = new Map<string, unknown>();
  private readonly grantSigner: GrantSigner;
  /** One DPoP key pair per session (RFC 9449), created on first use; nonces per origin. */
  private readonly dpop: DpopProver;

  constructor(
    private readonly options: OAuthSessionOptions,
    protected readonly resolved: ResolvedOptions,
  ) {
    super();
    this.store = options.store ?? createMemoryStore();
    this.clock = options.clock ?? Date.now;
    this.randomBytes = options.randomBytes ?? systemRandomBytes;
    this.opener = options.openAuthorizationUrl ?? defaultOpener;
    this.grantSigner = new GrantSigner(resolved.grantCredentials, this.randomBytes, this.clock);
    this.dpop = new DpopProver(this.randomBytes, this.clock);
    this.recorder = new TraceRecorder(2_000, options.observe, () => secretValues(this.actor.getSnapshot().context));
    this.ownsMcpDispatcher = options.dispatcher === undefined;
    this.mcpDispatcher =
      options.dispatcher ??
      new Agent({ headersTimeout: resolved.deadlines.mcpHeadersMs, bodyTimeout: 0, connect: { timeout: resolved.deadlines.connectMs } });
    this.policy = createNetworkPolicy(resolved.config.serverUrl, {
      ...(options.resolver ? { resolver: options.resolver } : {}),
      ...(options.classifyAddress ? { classify: options.classifyAddress } : {}),
    });
    this.policy.catch(() => undefined);

    const resume = options.resume as EngineSnapshot | undefined;
    this.actor = resume
      ? createActor(oauthMachine, { snapshot: resume, input: resolved.config })
      : createActor(oauthMachine, { input: resolved.config });
    this.attach(this.actor);
    // Resolved before any OAuth request is sent (each awaits the same promise, registered later).
    this.policy.then((policy) => this.send({ type: 'network.classified', networkClass: policy.configured }), () => undefined);

    if (resume) {
      this.isRestored = true;
      if (this.actor.getSnapshot().hasTag('waiting')) this.armCallbackDeadline();
      if (!this.settled()) void this.joinFlow();
    } else {
      this.startLoading();
    }

    this.interceptor = this.interceptor.bind(this);
    this.fetch = this.fetch.bind(this);
  }

  get state(): string {
    return statePath(this.actor.getSnapshot().value);
  }

  protected snapshotChanged(snapshot: EngineSnapshot): void {
    if (!snapshot.hasTag('waiting') && !snapshot.hasTag('awaitingDevice')) this.disarmCallbackDeadline();
    if (!snapshot.hasTag('awaitingDevice')) this.clearTimer('device.poll');
    if (snapshot.hasTag('settled')) {
      this.interaction?.abort();
      this.interaction = undefined;
      const server = this.callbackServer;
      this.callbackServer = undefined;
      void server?.close();
    }
  }

  // ------------------------------------------------------------------ single-flight triggers

  protected leaseTerms(): LeaseTerms {
    const flowBudgetMs = flowBudget(this.resolved.deadlines);
    // Short, renewed while the flow runs: a holder that crashed frees its siblings after one ttl,
    // not after the longest flow could have taken. A waiter must outwait a holder's whole flow and
    // then the successor's own flow, or it fails exactly when the lease becomes free. The store
    // call deadline only guards a store that never answers. Writes under the lease are fenced.
    return { ttlMs: LEASE_TTL_REQUESTS * this.resolved.deadlines.oauthRequestMs, waitMs: 2 * flowBudgetMs, renewForMs: flowBudgetMs, fenced: true };
  }

  // ------------------------------------------------------------------ effects

  protected performEffect(effect: RuntimeEffect): void {
    switch (effect.type) {
      case 'redirect.prepare':
        void this.prepareRedirect(effect.preferredRedirectUri, effect.fixed);
        return;
      case 'random.needed':
        void authorizationEntropy(this.randomBytes).then(
          (entropy) => this.send({ type: 'random', ...entropy }),
          () => this.send({ type: 'interaction.failed', error: flowError('flow', 'entropy.unavailable', 'no randomness source for PKCE and state') }),
        );
        return;
      case 'browser.open':
        this.openAuthorization(effect.url, effect.redirectUri);
        return;
      case 'device.prompt': {
        this.armCallbackDeadline();
        const { type: _type, ...prompt } = effect;
        try {
          this.options.onDeviceAuthorization?.(prompt);
        } catch {
          this.send({ type: 'interaction.failed', error: flowError('flow', 'interaction.failed', 'the device authorization prompt could not be shown') });
        }
        return;
      }
      case 'timer.start': {
        this.clearTimer(effect.id);
        // The wait may already be over (the prompt failed, a cancel): no timer outlives its state.
        if (!this.actor.getSnapshot().hasTag('awaitingDevice')) return;
        const timer = setTimeout(() => {
          this.timers.delete(effect.id);
          this.send({ type: 'timeout', id: effect.id });
        }, effect.delayMs);
        timer.unref?.();
        this.timers.set(effect.id, timer);
        return;
      }
      default:
        return;
    }
  }

  protected async performHttp(request: HttpRequest): Promise<void> {
    let policy: NetworkPolicy;
    try {
      policy = await this.policy;
    } catch (error) {
      this.lastNetworkCause = error;
      this.send({ type: 'http.failed', id: request.id, reason: 'unreachable', message: 'network policy unavailable', at: this.clock() });
      return;
    }
    const agent = (this.oauthAgent ??= createOAuthAgent(policy, this.resolved.deadlines.connectMs));
    let outcome: Awaited<ReturnType<typeof performOAuthRequest>> | undefined;
    // DESIGN policy 9: one DPoP nonce retry per request, then the answer goes to the machine as it came.
    for (let attempt = 0; attempt < 2; attempt++) {
      let wire: HttpRequest;
      try {
        // Requests the machine marked get their client assertion, grant assertion and DPoP proof here, never earlier.
        wire = await this.grantSigner.complete(request);
        if (request.dpop) {
          const { dpop: _marked, ...rest } = wire;
          wire = { ...rest, headers: { ...rest.headers, dpop: await this.dpop.proof(request.method, request.url) } };
        }
      } catch (error) {
        const message = error instanceof CredentialUnavailable ? error.message : 'the request could not be signed';
        const reason = error instanceof CredentialUnavailable ? error.reason : CREDENTIAL_UNAVAILABLE;
        this.send({ type: 'http.failed', id: request.id, reason, message, at: this.clock() });
        return;
      }
      outcome = await performOAuthRequest(wire, {
        dispatcher: agent,
        deadlineMs: this.resolved.deadlines.oauthRequestMs,
        maxBodyBytes: this.resolved.maxBodyBytes,
        maxRedirects: 3,
        checkTarget: policy.checkTarget,
        signal: this.lifetime.signal,
      });
      if (!request.dpop || !outcome.ok) break;
      const nonce = outcome.response.headers['dpop-nonce'];
      if (attempt === 0 && isUseDpopNonce(outcome.response) && this.dpop.rememberNonce(request.url, nonce)) continue;
      // RFC 9449 §8.2: a server may hand out the next nonce with any answer.
      if (nonce !== undefined) this.dpop.rememberNonce(request.url, nonce);
      break;
    }
    if (outcome === undefined) return;
    if (!outcome.ok) this.networkCauses.set(request.id, outcome.cause);
    this.answerHttp(request, outcome);
  }

  private async prepareRedirect(preferred: string | undefined, fixed: boolean): Promise<void> {
    const redirect = this.resolved.redirect;
    if (redirect.kind === 'fixed') {
      this.send({ type: 'redirect.ready', redirectUri: redirect.uri });
      return;
    }
    if (this.callbackServer && (preferred === undefined || preferred === this.callbackServer.redirectUri)) {
      this.send({ type: 'redirect.ready', redirectUri: this.callbackServer.redirectUri });
      return;
    }
    const remembered = rememberedPort(preferred, redirect);
    const ports = remembered === undefined ? [redirect.port] : fixed ? [remembered] : [remembered, redirect.port];
    let lastError: unknown;
    for (const port of ports) {
      try {
        await this.callbackServer?.close();
        this.callbackServer = await startLoopbackCallbackServer({
          host: redirect.host,
          port,
          path: redirect.path,
          onCallback: (params) => this.handleCallback(params),
        });
        this.send({ type: 'redirect.ready', redirectUri: this.callbackServer.redirectUri });
        return;
      } catch (error) {
        lastError = error;
      }
    }
    const code = lastError instanceof OAuthFlowError ? lastError.code : 'callback.port_unavailable';
    this.send({
      type: 'redirect.failed',
      error: flowError('flow', code, `cannot listen for the authorization response on ${preferred ?? loopbackUri(redirect, redirect.port)}`),
    });
  }

  private openAuthorization(url: string, redirectUri: string): void {
    this.armCallbackDeadline();
    const interaction = new AbortController();
    this.interaction = interaction;
    Promise.resolve()
      .then(() => this.opener(url, { redirectUri, signal: interaction.signal }))
      .then(
        (params) => {
          if (params instanceof URLSearchParams && !interaction.signal.aborted) this.handleCallback(params);
        },
        (error: unknown) => {
          if (interaction.signal.aborted) return;
          const code = error instanceof OAuthFlowError ? error.code : 'interaction.failed';
          const message = error instanceof OAuthFlowError ? error.message : 'the authorization URL could not be opened';
          this.send({ type: 'interaction.failed', error: flowError('flow', code, message) });
        },
      );
  }

  private clearTimer(id: string): void {
    const timer = this.timers.get(id);
    if (timer) clearTimeout(timer);
    this.timers.delete(id);
  }

  handleCallback(params: URLSearchParams | Record<string, string | string[]>): 'accepted' | 'rejected' {
    if (!this.actor.getSnapshot().hasTag('waiting')) return 'rejected';
    this.send({ type: 'callback', params: callbackParams(params), at: this.clock() });
    return this.actor.getSnapshot().hasTag('waiting') ? 'rejected' : 'accepted';
  }

  // ------------------------------------------------------------------ the request path

  /** The same tokens give the same header: built once per token set, not per request. */
  protected authorizationFor(tokens: TokenRecord, version: number): Authorization {
    const memo = this.authorizationMemo;
    if (memo !== undefined && memo.tokens === tokens && memo.value.version === version) return memo.value;
    const value: Authorization =
      tokens.token_type === 'dpop' ? { header: `DPoP ${tokens.access_token}`, version, dpopToken: tokens.access_token } : { header: `Bearer ${tokens.access_token}`, version };
    this.authorizationMemo = { tokens, value };
    return value;
  }

  private authorizationMemo: { tokens: object; value: Authorization } | undefined;

  /** RFC 9449 §9: the MCP server wants a nonce in the proof: exactly one retry with it, no flow. */
  protected override nonceRetry(current: Authorization, challenge: Challenge): boolean | undefined {
    if (current.dpopToken === undefined || challenge.dpopNonce === undefined || !isDpopNonceChallenge(challenge.wwwAuthenticate)) return undefined;
    return this.dpop.rememberNonce(this.resolved.config.serverUrl, challenge.dpopNonce);
  }

  /** `sameOrigin(·, serverUrl)` with the verdict cached per origin string (no URL parsing per request). */
  private originCheck: ServerOriginCheck | undefined;

  private get origins(): ServerOriginCheck {
    return (this.originCheck ??= new ServerOriginCheck(this.resolved.config.serverUrl));
  }

  readonly fetch: OAuthSession['fetch'] = async (input, init) => {
    const quick = requestParts(input, init);
    const parts = quick instanceof Promise ? await quick : quick;
    if (!this.origins.matches(parts.url)) {
      // The token never leaves the MCP server's origin; other requests pass through untouched.
      return undiciFetch(parts.url, {
        method: parts.method,
        headers: parts.headers,
        body: parts.body,
        signal: parts.signal,
        dispatcher: this.mcpDispatcher,
      } as Parameters<typeof undiciFetch>[1]) as unknown as Response;
    }
    // Fast path: with a token at hand the request goes at once; the retry loop runs only for a challenge.
    const current = this.currentAuthorization();
    if (current !== undefined) {
      const response = await this.sendFetch(parts, current);
      if (fetchChallenge(response) === undefined) return response as unknown as Response;
      const first = { authorization: current, response };
      return (await this.authorized((authorization) => this.sendFetch(parts, authorization), fetchChallenge, cancelBody, first)) as unknown as Response;
    }
    return (await this.authorized((authorization) => this.sendFetch(parts, authorization), fetchChallenge, cancelBody)) as unknown as Response;
  };

  private async sendFetch(parts: RequestParts, authorization: Authorization): Promise<import('undici').Response> {
    let url = parts.url;
    let method = parts.method;
    let body = parts.body;
    for (let hop = 0; ; hop++) {
      // A proof per request and per hop: htm and htu are this hop's.
      const proof = authorization.dpopToken === undefined ? undefined : await this.dpop.proof(method, url, authorization.dpopToken);
      // Without a token (nothing held yet) the caller's headers go as they are, as before.
      const headers = authorization.header ? fetchHeadersWith(parts.headers, authorization.header, proof) : parts.headers;
      const response = await undiciFetch(url, {
        method,
        headers,
        body,
        signal: parts.signal,
        redirect: 'manual',
        dispatcher: this.mcpDispatcher,
      } as Parameters<typeof undiciFetch>[1]);
      if (!REDIRECT_STATUSES.has(response.status)) return response;
      const location = response.headers.get('location');
      if (location === null || hop >= MAX_SAME_ORIGIN_REDIRECTS) return response;
      const next = new URL(location, url).href;
      // Credentials follow a redirect only within the MCP server's origin; otherwise the caller decides.
      if (!sameOrigin(next, this.resolved.config.serverUrl)) return response;
      await response.body?.cancel().catch(() => undefined);
      if (response.status === 303 || ((response.status === 301 || response.status === 302) && method === 'POST')) {
        method = 'GET';
        body = undefined;
      }
      url = next;
    }
  }

  interceptor(dispatch: Dispatcher['dispatch']): Dispatcher['dispatch'] {
    return (opts, handler) => {
      const origin = typeof opts.origin === 'string' ? opts.origin : opts.origin?.toString() ?? '';
      if (!this.origins.matches(origin, typeof opts.path === 'string' ? opts.path : `${opts.path}`)) return dispatch(opts, handler);
      const replayable = opts.body == null || typeof opts.body === 'string' || opts.body instanceof Uint8Array;
      const target = handler as Dispatcher.DispatchHandler;
      const legacy = isLegacyHandler(target) ? (target as unknown as LegacyHandler) : undefined;
      const relay = new RelayController();
      // Fast path: a fresh bearer token (or the settled "none held yet") is at hand, so the request
      // goes now; the async loop is entered only when the answer is a 401 or 403 to recover from.
      const current = this.currentAuthorization();
      if (current !== undefined && current.dpopToken === undefined) {
        const first = (response: AttemptOutcome): void => {
          if (response.kind === 'challenge') this.interceptLoop(dispatch, opts, origin, target, legacy, relay, replayable, { authorization: current, response });
        };
        try {
          const headers = withAuthorization(opts.headers, current.header, undefined);
          dispatch({ ...opts, headers }, legacy ? (new LegacyAttemptHandler(legacy, relay, replayable, first) as never) : new AttemptHandler(target, relay, replayable, first));
        } catch (error) {
          this.interceptLoop(dispatch, opts, origin, target, legacy, relay, replayable, undefined, { error });
        }
        return true;
      }
      this.interceptLoop(dispatch, opts, origin, target, legacy, relay, replayable);
      return true;
    };
  }

  /** The interceptor's async part: `authorized()` with its attempts, then the outcome to the caller's handler. */
  private interceptLoop(
    dispatch: Dispatcher['dispatch'],
    opts: Dispatcher.DispatchOptions,
    origin: string,
    target: Dispatcher.DispatchHandler,
    legacy: LegacyHandler | undefined,
    relay: RelayController,
    replayable: boolean,
    first?: { authorization: Authorization; response: AttemptOutcome },
    thrown?: { error: unknown },
  ): void {
    const send = async (authorization: Authorization): Promise<AttemptOutcome> => {
      const proof = authorization.dpopToken === undefined ? undefined : await this.dpop.proof(opts.method, `${origin}${opts.path}`, authorization.dpopToken);
      return new Promise<AttemptOutcome>((resolve) => {
        const headers = withAuthorization(opts.headers, authorization.header, proof);
        dispatch({ ...opts, headers }, legacy ? (new LegacyAttemptHandler(legacy, relay, replayable, resolve) as never) : new AttemptHandler(target, relay, replayable, resolve));
      });
    };
    const run = thrown === undefined ? this.authorized(send, attemptChallenge, releaseNothing, first) : Promise.reject(thrown.error);
    run.then(forwardChallenge, (error: unknown) => {
      const reason = error instanceof Error ? error : new Error(String(error));
      const notStarted = !relay.started;
      relay.started = true;
      if (legacy) {
        if (notStarted) legacy.onConnect(relay.abortLegacy, {});
        legacy.onError(reason);
        return;
      }
      if (notStarted) target.onRequestStart?.(relay, {});
      target.onResponseError?.(relay, reason);
    });
  }

  // ------------------------------------------------------------------ explicit operations

  async getAccessToken(): Promise<string> {
    await this.authorize();
    const current = this.currentAuthorization();
    if (!current?.header) throw new OAuthFlowError({ code: 'flow.no_token', message: 'no access token is held' });
    return current.dpopToken ?? current.header.slice('Bearer '.length);
  }

  async logout(): Promise<LogoutResult> {
    await this.restored();
    // A running flow or refresh finishes first (its outcome is what gets revoked); its writes land first too.
    for (let round = 0; round < MAX_ATTEMPTS && this.inFlight; round++) await this.inFlight.catch(() => undefined);
    await this.drainSaves();
    let revocationAttempted = false;
    const listener = this.actor.on('http.request', (effect) => {
      if (effect.request.step === 'revocation') revocationAttempted = true;
    });
    const before = this.actor.getSnapshot().context;
    const noticesBefore = before.notices.length;
    try {
      await this.trigger({ type: 'logout', at: this.clock() });
    } finally {
      listener.unsubscribe();
    }
    const after = this.actor.getSnapshot().context;
    const problem = revocationAttempted ? after.notices.slice(noticesBefore).find((n) => n.code.startsWith('revocation.') || n.code.startsWith('network.')) : undefined;
    return {
      hadTokens: revocationAttempted || before.tokens !== undefined,
      revocationAttempted,
      revoked: revocationAttempted && problem === undefined,
      ...(problem === undefined ? {} : { problem: { code: problem.code, message: problem.message } }),
    };
  }

  trace(): Trace {
    return this.recorder.toJSON(this.resolved.config.serverUrl, this.actor.getSnapshot().context);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.send({ type: 'cancel' });
    this.closed = true;
    this.lifetime.abort();
    this.disarmCallbackDeadline();
    for (const id of [...this.timers.keys()]) this.clearTimer(id);
    this.interaction?.abort();
    this.wakeSettleWaiters();
    await this.callbackServer?.close();
    this.actor.stop();
    await this.drainSaves();
    await this.oauthAgent?.close();
    if (this.ownsMcpDispatcher) await this.mcpDispatcher.close();
  }

  [Symbol.for('nodejs.util.inspect.custom')](): string {
    return `OAuthSession { serverUrl: ${JSON.stringify(this.resolved.config.serverUrl)}, state: ${JSON.stringify(this.state)} }`;
  }
}

// -------------------------------------------------------------------- helpers

/** A lease lives this many OAuth request deadlines unless renewed (30 s by default). */
const LEASE_TTL_REQUESTS = 3;

const defaultOpener: AuthorizationUrlOpener = async (url) => {
  try {
    await openSystemBrowser(url);
  } catch (error) {
    // No browser here: the person can still open the URL by hand while the flow waits.
    process.stderr.write(`Open this URL to authorize:\n${url}\n`);
    if (!(error instanceof OAuthFlowError && error.code === 'browser.unavailable')) throw error;
  }
};

function rememberedPort(preferred: string | undefined, redirect: { host: string; path: string }): number | undefined {
  if (preferred === undefined) return undefined;
  const raw = splitUrl(preferred);
  if (!raw || raw.port === '') return undefined;
  const host = raw.host.startsWith('[') ? raw.host.slice(1, -1) : raw.host;
  if (host !== redirect.host || raw.path !== redirect.path) return undefined;
  const port = Number(raw.port);
  return Number.isInteger(port) && port > 0 ? port : undefined;
}

/** RFC 9449 §8: the authorization server's 400 `use_dpop_nonce`. */
function isUseDpopNonce(response: { status: number; body: string }): boolean {
  if (response.status !== 400 && response.status !== 401) return false;
  try {
    return (JSON.parse(response.body) as { error?: unknown }).error === 'use_dpop_nonce';
  } catch {
    return false;
  }
}

/** RFC 9449 §9: `WWW-Authenticate: DPoP error="use_dpop_nonce"`. */
function isDpopNonceChallenge(wwwAuthenticate: string | undefined): boolean {
  const challenge = readBearerChallenge(wwwAuthenticate);
  return challenge?.scheme === 'dpop' && challenge.error === 'use_dpop_nonce';
}

interface RequestParts {
  url: string;
  method: string;
  /**
   * Built once per call: the caller's own record when that is all there is (copied per attempt
   * only to set `authorization`), otherwise one normalised list of pairs.
   */
  headers: HeaderPairs | Record<string, string> | undefined;
  /** Replayable as is: a string, bytes, or `URLSearchParams`; anything else was buffered. */
  body: string | ArrayBuffer | ArrayBufferView | URLSearchParams | undefined;
  signal: AbortSignal | undefined;
}

type HeaderPairs = Array<[string, string]>;

/** Bodies undici's fetch serialises afresh on every send: nothing to buffer for a replay. */
function isReplayableBody(body: unknown): body is string | ArrayBuffer | ArrayBufferView | URLSearchParams {
  return typeof body === 'string' || body instanceof ArrayBuffer || ArrayBuffer.isView(body) || body instanceof URLSearchParams;
}

function isPlainRecord(value: unknown): value is Record<string, string> {
  if (typeof value !== 'object' || value === null) return false;
  const proto = Object.getPrototypeOf(value) as unknown;
  return proto === Object.prototype || proto === null;
}

/**
 * Normalises fetch input (string, URL or a Request of any realm). Streams, `Blob`, `FormData` and a
 * Request's body are buffered for replay; strings, bytes and `URLSearchParams` are kept as they are.
 */
function requestParts(input: string | URL | Request, init: RequestInit | undefined): RequestParts | Promise<RequestParts> {
  const isRequest = typeof input === 'object' && !(input instanceof URL) && 'url' in input;
  const request = isRequest ? (input as Request) : undefined;
  const url = request ? request.url : typeof input === 'string' ? input : input.toString();
  const method = init?.method ?? (request ? request.method : 'GET');
  const initBody = init?.body ?? undefined;
  const signal = init?.signal ?? request?.signal ?? undefined;
  // The common call (a URL, a record of headers, a string or bytes): nothing to build or wait for.
  if (request === undefined && (initBody === undefined || isReplayableBody(initBody)) && (init?.headers === undefined || isPlainRecord(init.headers))) {
    return { url, method, headers: init?.headers as Record<string, string> | undefined, body: initBody, signal };
  }
  return bufferedRequestParts(request, init, url, method, initBody, signal);
}

async function bufferedRequestParts(
  request: Request | undefined,
  init: RequestInit | undefined,
  url: string,
  method: string,
  initBody: RequestInit['body'] | undefined,
  signal: AbortSignal | undefined,
): Promise<RequestParts> {
  const headers = new Headers(request?.headers ?? (init?.headers as HeadersInit | undefined));
  if (request && init?.headers) for (const [name, value] of new Headers(init.headers as HeadersInit)) headers.set(name, value);
  let body: RequestParts['body'];
  if (initBody !== undefined) {
    if (isReplayableBody(initBody)) body = initBody;
    else {
      const buffered = new Response(initBody as BodyInit);
      body = new Uint8Array(await buffered.arrayBuffer());
      const type = buffered.headers.get('content-type');
      if (type && !headers.has('content-type')) headers.set('content-type', type);
    }
  } else if (request?.body) {
    body = new Uint8Array(await request.clone().arrayBuffer());
  }
  return { url, method, headers: [...headers] as HeaderPairs, body, signal };
}

function isAuthorizationName(name: unknown): boolean {
  return typeof name === 'string' && name.length === 13 && name.toLowerCase() === 'authorization';
}

function isDpopName(name: unknown): boolean {
  return typeof name === 'string' && name.length === 4 && name.toLowerCase() === 'dpop';
}

/** A copy of a header record without the caller's `authorization` (and `dpop` when a proof replaces it), then ours. */
function recordWith(headers: Record<string, unknown>, authorization: string | undefined, proof: string | undefined): Record<string, string | string[]> {
  let clean = true;
  for (const key of Object.keys(headers)) {
    if (isAuthorizationName(key) || (proof !== undefined && isDpopName(key))) {
      clean = false;
      break;
    }
  }
  if (clean && proof === undefined) {
    // Nothing to drop: a plain clone (V8's fast object copy), then our header.
    const copy: Record<string, unknown> = { ...headers };
    if (authorization !== undefined) copy.authorization = authorization;
    return copy as Record<string, string | string[]>;
  }
  const out: Record<string, unknown> = {};
  for (const key of Object.keys(headers)) {
    if (isAuthorizationName(key) || (proof !== undefined && isDpopName(key))) continue;
    out[key] = headers[key];
  }
  if (authorization !== undefined) out.authorization = authorization;
  if (proof !== undefined) out.dpop = proof;
  return out as Record<string, string | string[]>;
}

/**
 * The interceptor's headers for one attempt: the caller's, in the form and case they came in
 * (flat array, object, or an iterable of pairs read into a flat array), with any `authorization`
 * of theirs replaced by ours (or removed when none is held yet) and `dpop` replaced by the proof.
 */
export function withAuthorization(headers: Dispatcher.DispatchOptions['headers'], authorization: string | undefined, proof: string | undefined): Dispatcher.DispatchOptions['headers'] {
  if (headers == null) {
    if (authorization === undefined && proof === undefined) return headers;
    return recordWith({}, authorization, proof);
  }
  if (Array.isArray(headers) && (headers.length === 0 || !Array.isArray(headers[0]))) {
    const flat = headers as unknown[];
    const out: unknown[] = [];
    for (let i = 0; i < flat.length; i += 2) {
      const name = flat[i];
      if (isAuthorizationName(name) || (proof !== undefined && isDpopName(name))) continue;
      out.push(name, flat[i + 1]);
    }
    if (authorization !== undefined) out.push('authorization', authorization);
    if (proof !== undefined) out.push('dpop', proof);
    return out as string[];
  }
  if (typeof (headers as Iterable<unknown>)[Symbol.iterator] === 'function') {
    const out: unknown[] = [];
    for (const [name, value] of headers as Iterable<[string, unknown]>) {
      if (isAuthorizationName(name) || (proof !== undefined && isDpopName(name))) continue;
      out.push(name, value);
    }
    if (authorization !== undefined) out.push('authorization', authorization);
    if (proof !== undefined) out.push('dpop', proof);
    return out as string[];
  }
  let present = false;
  for (const key of Object.keys(headers)) if (isAuthorizationName(key) || (proof !== undefined && isDpopName(key))) present = true;
  if (!present && authorization === undefined && proof === undefined) return headers;
  return recordWith(headers as Record<string, unknown>, authorization, proof);
}

/** fetch's headers for one attempt with a token: `authorization` replaced, `dpop` too when a proof is sent. */
export function fetchHeadersWith(headers: RequestParts['headers'], authorization: string, proof: string | undefined): HeaderPairs | Record<string, string | string[]> {
  if (headers === undefined) return proof === undefined ? { authorization } : { authorization, dpop: proof };
  if (!Array.isArray(headers)) return recordWith(headers, authorization, proof);
  // The list came from `Headers`: names are lower-case already.
  const out: HeaderPairs = [];
  for (const pair of headers) if (pair[0] !== 'authorization' && (proof === undefined || pair[0] !== 'dpop')) out.push(pair);
  out.push(['authorization', authorization]);
  if (proof !== undefined) out.push(['dpop', proof]);
  return out;
}

function isAuthorityEnd(c: number): boolean {
  return c === 0x2f || c === 0x3f || c === 0x23;
}

/**
 * Where the authority of `scheme://authority…` ends in `s` (`s.length` when nothing follows it),
 * or -1 when `s` is not of that form or holds an ambiguous character anywhere.
 */
function authorityEnd(s: string): number {
  const colon = s.indexOf(':');
  if (colon <= 0 || s.charCodeAt(colon + 1) !== 0x2f || s.charCodeAt(colon + 2) !== 0x2f) return -1;
  let end = -1;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (isAmbiguousUrlCode(c)) return -1;
    if (end < 0 && i > colon + 2 && isAuthorityEnd(c)) end = i;
  }
  return end < 0 ? s.length : end;
}

function hasAmbiguousCode(s: string): boolean {
  for (let i = 0; i < s.length; i++) if (isAmbiguousUrlCode(s.charCodeAt(i))) return true;
  return false;
}

/**
 * `sameOrigin(head + tail, serverUrl)` without parsing per request. When the URL is
 * `scheme://authority` followed by nothing or by `/`, `?` or `#`, and holds no ambiguous
 * character, only that prefix can decide the verdict (scheme, userinfo, host and port are all in
 * it), so the verdict is computed once per prefix by `sameOrigin` itself and cached; any other
 * input takes the full check.
 */
export class ServerOriginCheck {
  private readonly verdicts = new Map<string, boolean>();
  private lastKey = '';
  private lastVerdict = false;

  constructor(private readonly serverUrl: string) {}

  matches(head: string, tail = ''): boolean {
    // The interceptor's case: the same origin string as last time (a prefix already checked) and a path.
    if (head === this.lastKey && (tail === '' || isAuthorityEnd(tail.charCodeAt(0))) && !hasAmbiguousCode(tail)) return this.lastVerdict;
    const end = authorityEnd(head);
    if (end < 0 || (end === head.length && tail !== '' && !isAuthorityEnd(tail.charCodeAt(0))) || hasAmbiguousCode(tail)) {
      return sameOrigin(`${head}${tail}`, this.serverUrl);
    }
    if (end === this.lastKey.length && head.startsWith(this.lastKey)) return this.lastVerdict;
    const key = end === head.length ? head : head.slice(0, end);
    let verdict = this.verdicts.get(key);
    if (verdict === undefined) {
      verdict = sameOrigin(`${key}/`, this.serverUrl);
      if (this.verdicts.size >= 64) this.verdicts.clear();
      this.verdicts.set(key, verdict);
    }
    this.lastKey = key;
    this.lastVerdict = verdict;
    return verdict;
  }
}

function fetchChallenge(res: import('undici').Response): Challenge | undefined {
  if (res.status !== 401 && res.status !== 403) return undefined;
  return challengeFrom(res.status, res.headers.get('www-authenticate') ?? undefined, res.headers.get('dpop-nonce') ?? undefined);
}

async function cancelBody(res: import('undici').Response): Promise<void> {
  await res.body?.cancel().catch(() => undefined);
}

function attemptChallenge(outcome: AttemptOutcome): Challenge | undefined {
  return outcome.kind === 'challenge' ? outcome.challenge : undefined;
}

async function releaseNothing(): Promise<void> {}

function forwardChallenge(outcome: AttemptOutcome): void {
  if (outcome.kind === 'challenge') outcome.forward();
}

/** A challenge in a parsed header record (a 401, or a 403 `insufficient_scope`), with the DPoP nonce as it came. */
function headerChallenge(status: number, headers: Record<string, string | string[] | undefined>): Challenge | undefined {
  const www = headers['www-authenticate'];
  const wwwAuthenticate = Array.isArray(www) ? www.join(', ') : www;
  const nonce = headers['dpop-nonce'];
  const dpopNonce = Array.isArray(nonce) ? nonce[0] : nonce;
  if (!challengeFrom(status, wwwAuthenticate, dpopNonce)) return undefined;
  return { status, wwwAuthenticate, ...(dpopNonce === undefined ? {} : { dpopNonce }) };
}

type AttemptOutcome = { kind: 'forwarded' } | { kind: 'challenge'; challenge: Challenge; forward: () => void };

/** One controller the caller keeps across attempts, pointing at the live request. */
class RelayController implements Dispatcher.DispatchController {
  target: Dispatcher.DispatchController | undefined;
  /** The caller's handler has seen `onRequestStart` (once, whatever the attempts). */
  started = false;
  /** In the original handler style: the live attempt's abort, and the one function the caller holds. */
  legacyAbort: ((reason?: Error) => void) | undefined;
  private abortLive: ((reason?: Error) => void) | undefined;
  get abortLegacy(): (reason?: Error) => void {
    return (this.abortLive ??= (reason?: Error): void => this.legacyAbort?.(reason));
  }
  get aborted() {
    return this.target?.aborted ?? false;
  }
  get paused() {
    return this.target?.paused ?? false;
  }
  get reason() {
    return this.target?.reason ?? null;
  }
  abort(reason: Error) {
    this.target?.abort(reason);
  }
  pause() {
    this.target?.pause();
  }
  resume() {
    this.target?.resume();
  }
}

/**
 * Forwards a response to the caller's handler, except a 401 or a 403 `insufficient_scope` on a
 * replayable request: that one is swallowed and reported, so the request can be sent again.
 */
class AttemptHandler implements Dispatcher.DispatchHandler {
  private swallowed: { status: number; headers: Record<string, string | string[] | undefined>; challenge: Challenge } | undefined;
  private settledOutcome = false;

  constructor(
    private readonly target: Dispatcher.DispatchHandler,
    private readonly relay: RelayController,
    private readonly replayable: boolean,
    private readonly resolve: (outcome: AttemptOutcome) => void,
  ) {}

  onRequestStart(controller: Dispatcher.DispatchController, context: unknown): void {
    this.relay.target = controller;
    if (!this.relay.started) {
      this.relay.started = true;
      this.target.onRequestStart?.(this.relay, context);
    }
  }

  onRequestUpgrade(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, socket: import('node:stream').Duplex): void {
    this.target.onRequestUpgrade?.(this.relay, statusCode, headers as never, socket);
  }

  onResponseStart(_controller: Dispatcher.DispatchController, statusCode: number, headers: Record<string, string | string[] | undefined>, statusMessage?: string): void {
    // Only a 401 or a 403 can be a challenge (challengeFrom): other answers go straight through.
    if ((statusCode === 401 || statusCode === 403) && this.replayable) {
      const challenge = headerChallenge(statusCode, headers);
      if (challenge) {
        this.swallowed = { status: statusCode, headers, challenge };
        return;
      }
    }
    this.target.onResponseStart?.(this.relay, statusCode, headers as never, statusMessage);
  }

  onResponseData(_controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (!this.swallowed) this.target.onResponseData?.(this.relay, chunk);
  }

  onResponseEnd(_controller: Dispatcher.DispatchController, trailers: Record<string, string | string[] | undefined>): void {
    if (this.settledOutcome) return;
    this.settledOutcome = true;
    const swallowed = this.swallowed;
    if (swallowed) {
      this.resolve({
        kind: 'challenge',
        challenge: swallowed.challenge,
        // When the attempts are spent the caller still receives the final challenge as it came.
        forward: () => {
          this.target.onResponseStart?.(this.relay, swallowed.status, swallowed.headers as never, '');
          this.target.onResponseEnd?.(this.relay, trailers as never);
        },
      });
      return;
    }
    this.target.onResponseEnd?.(this.relay, trailers as never);
    this.resolve({ kind: 'forwarded' });
  }

  onResponseError(_controller: Dispatcher.DispatchController, error: Error): void {
    if (this.settledOutcome) return;
    this.settledOutcome = true;
    this.target.onResponseError?.(this.relay, error);
    this.resolve({ kind: 'forwarded' });
  }
}

/** The callbacks of undici's original handler style, which `undici.request`'s handler uses (through compose's WrapHandler). */
interface LegacyHandler {
  onConnect(abort: (reason?: Error) => void, context?: unknown): void;
  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean | void;
  onData(chunk: Buffer): boolean | void;
  onComplete(rawTrailers: Buffer[] | null): void;
  onError(error: Error): void;
  onUpgrade?(statusCode: number, rawHeaders: Buffer[], socket: import('node:stream').Duplex): void;
}

/**
 * The caller's handler speaks the original style too (undici's compose hands interceptors a
 * WrapHandler that keeps those callbacks): attempts are then dispatched in that style, so the
 * response reaches the caller as raw headers without being parsed and re-serialised twice.
 */
function isLegacyHandler(handler: object): boolean {
  const h = handler as Partial<LegacyHandler>;
  return typeof h.onConnect === 'function' && typeof h.onHeaders === 'function' && typeof h.onData === 'function' && typeof h.onComplete === 'function' && typeof h.onError === 'function';
}

const resumeNothing = (): void => undefined;

/** AttemptHandler in the original handler style: the same swallowing of a replayable challenge. */
class LegacyAttemptHandler implements LegacyHandler {
  private swallowed: { status: number; rawHeaders: Buffer[]; challenge: Challenge } | undefined;
  private settledOutcome = false;

  constructor(
    private readonly target: LegacyHandler,
    private readonly relay: RelayController,
    private readonly replayable: boolean,
    private readonly resolve: (outcome: AttemptOutcome) => void,
  ) {}

  onConnect(abort: (reason?: Error) => void, context?: unknown): void {
    this.relay.legacyAbort = abort;
    if (!this.relay.started) {
      this.relay.started = true;
      this.target.onConnect(this.relay.abortLegacy, context);
    }
  }

  onUpgrade(statusCode: number, rawHeaders: Buffer[], socket: import('node:stream').Duplex): void {
    this.target.onUpgrade?.(statusCode, rawHeaders, socket);
  }

  onHeaders(statusCode: number, rawHeaders: Buffer[], resume: () => void, statusText: string): boolean | void {
    if ((statusCode === 401 || statusCode === 403) && this.replayable) {
      const headers = undiciUtil.parseHeaders(rawHeaders) as Record<string, string | string[] | undefined>;
      const challenge = headerChallenge(statusCode, headers);
      if (challenge) {
        this.swallowed = { status: statusCode, rawHeaders, challenge };
        return true;
      }
    }
    return this.target.onHeaders(statusCode, rawHeaders, resume, statusText);
  }

  onData(chunk: Buffer): boolean | void {
    if (this.swallowed) return true;
    return this.target.onData(chunk);
  }

  onComplete(rawTrailers: Buffer[] | null): void {
    if (this.settledOutcome) return;
    this.settledOutcome = true;
    const swallowed = this.swallowed;
    if (swallowed) {
      this.resolve({
        kind: 'challenge',
        challenge: swallowed.challenge,
        // When the attempts are spent the caller still receives the final challenge as it came.
        forward: () => {
          this.target.onHeaders(swallowed.status, swallowed.rawHeaders, resumeNothing, '');
          this.target.onComplete(rawTrailers);
        },
      });
      return;
    }
    this.target.onComplete(rawTrailers);
    this.resolve({ kind: 'forwarded' });
  }

  onError(error: Error): void {
    if (this.settledOutcome) return;
    this.settledOutcome = true;
    this.target.onError(error);
    this.resolve({ kind: 'forwarded' });
  }
}
