/**
 * What both sessions do the same way around the one machine, whatever runtime performs the I/O:
 * the Node session (src/adapters/session.ts) and the web-page session (src/browser/session.ts)
 * extend `SessionCore` and supply HTTP, entropy, interaction and their own lease terms.
 *
 * Here: recording events with the effects they emitted, single-flight triggers under an optional
 * store lease, waiting for the machine to settle, loading and reloading the stored records, the
 * store write queue (compare-and-swap on generations, fenced by the lease when asked), the
 * effect-dispatch skeleton, classifying a 401/403 as a challenge, and the per-request retry loop
 * (`authorized`). Imports only from src/machines and web-standard globals: the browser bundle
 * includes it, so nothing from node:* or undici.
 */
import type { Actor, SnapshotFrom } from 'xstate';
import { OAuthFlowError, OAuthStoreError, toError, type FlowErrorData } from '../machines/errors.js';
import type { HttpRequest, HttpResponseData } from '../machines/http.js';
import type { oauthMachine } from '../machines/oauth.machine.js';
import type { EngineConfig, EngineEffect, EngineEvent } from '../machines/oauth.types.js';
import type { CallbackParams } from '../machines/steps/authorization.js';
import { needsRefresh } from '../machines/steps/token.js';
import type { CredentialStore, Lease, RecordKind, RecordTypes, TokenRecord } from '../machines/store.js';
import { readBearerChallenge } from '../machines/wwwAuthenticate.js';

export type EngineActor = Actor<typeof oauthMachine>;
export type EngineSnapshot = SnapshotFrom<typeof oauthMachine>;

/** Attempts of one caller request: replays after a refresh, a sibling's flow, step-ups (DESIGN policy 9). */
export const MAX_ATTEMPTS = 6;

/** The header a request carries and the token version it came from (`null`: none held yet). */
export interface Authorization {
  header: string | undefined;
  version: number | null;
  /** A DPoP-bound token (RFC 9449): each request carries a fresh proof with `ath` of it. */
  dpopToken?: string;
}

/** A 401, or a 403 `insufficient_scope`: an answer the machine can recover from before a replay. */
export interface Challenge {
  status: number;
  wwwAuthenticate: string | undefined;
  /** The resource server's `DPoP error="use_dpop_nonce"` with its `DPoP-Nonce`. */
  dpopNonce?: string | undefined;
}

export function challengeFrom(status: number, wwwAuthenticate: string | undefined, dpopNonce?: string): Challenge | undefined {
  if (status === 401) return { status, wwwAuthenticate, ...(dpopNonce === undefined ? {} : { dpopNonce }) };
  if (status === 403 && readBearerChallenge(wwwAuthenticate)?.error === 'insufficient_scope') return { status, wwwAuthenticate };
  return undefined;
}

/** The authorization response's query as the machine takes it: a repeated name becomes a list. */
export function callbackParams(params: URLSearchParams | Record<string, string | string[]>): CallbackParams {
  if (!(params instanceof URLSearchParams)) return { ...params };
  const out: CallbackParams = {};
  for (const [name, value] of params) {
    const existing = out[name];
    out[name] = existing === undefined ? value : Array.isArray(existing) ? [...existing, value] : [existing, value];
  }
  return out;
}

/** The slice of the resolved options the shared logic reads (both adapters' resolved options fit it). */
export interface CoreOptions {
  config: EngineConfig;
  storeKey: string;
  deadlines: { oauthRequestMs: number; callbackMs: number; storeMs: number };
}

/** Where redacted events and effects go (the adapters' `TraceRecorder`). */
export interface SessionRecorder {
  event(at: number, state: string, event: EngineEvent): void;
  effect(at: number, state: string, effect: EngineEffect): void;
}

/** How a trigger takes the store's lease, when the store offers one. */
export interface LeaseTerms {
  ttlMs: number;
  waitMs: number;
  /** Renew the lease every third of its ttl while the flow runs, for at most this long. */
  renewForMs?: number;
  /** Writes made under the lease carry its fencing token. */
  fenced: boolean;
}

/** The outcome of one OAuth request as both adapters' HTTP layers report it. */
export type HttpOutcome = { ok: true; response: HttpResponseData } | { ok: false; reason: string; message: string; cause?: unknown };

/** The effects a runtime performs itself: everything but OAuth HTTP and store writes, which go through here. */
export type RuntimeEffect = Exclude<EngineEffect, { type: 'http.request' | 'store.save' | 'store.clear' }>;

/** The longest a flow may run: the person's approval, then a handful of OAuth calls. */
export function flowBudget(deadlines: { callbackMs: number; oauthRequestMs: number }): number {
  return deadlines.callbackMs + 10 * deadlines.oauthRequestMs;
}

type Timer = ReturnType<typeof setTimeout>;

export abstract class SessionCore {
  abstract readonly actor: EngineActor;
  /** The dotted state path, e.g. `flow.authorize.awaitingCallback`. */
  abstract get state(): string;
  protected abstract readonly resolved: CoreOptions;
  protected abstract readonly store: CredentialStore;
  protected abstract readonly clock: () => number;
  protected abstract readonly recorder: SessionRecorder;

  protected readonly lifetime = new AbortController();
  private readonly settleWaiters = new Set<() => void>();
  private readonly saves = new Map<RecordKind, Promise<void>>();
  private restoring: Promise<void> | undefined;
  protected isRestored = false;
  protected inFlight: Promise<void> | undefined;
  protected closed = false;
  protected lastNetworkCause: unknown;
  private lastFlowState: string | undefined;
  private heldEffects: EngineEffect[] | undefined;
  /** The lease the running trigger holds when its writes are fenced by it. */
  private heldLease: Lease | undefined;
  private callbackTimer: Timer | undefined;

  // ------------------------------------------------------------------ runtime-specific parts

  /** The header for a usable token set (called on the hot path: no await, allocate only when the tokens change). */
  protected abstract authorizationFor(tokens: TokenRecord, version: number): Authorization;
  /** How this runtime takes the store's lease for a trigger. */
  protected abstract leaseTerms(): LeaseTerms;
  /** Sends one OAuth request the machine asked for and answers it with `answerHttp`. */
  protected abstract performHttp(request: HttpRequest): Promise<void>;
  /** Performs the effects not handled here (entropy, the redirect, interaction, timers). */
  protected abstract performEffect(effect: RuntimeEffect): void;
  /** Extra reactions to a new snapshot, before the settle waiters are woken. */
  protected abstract snapshotChanged(snapshot: EngineSnapshot): void;

  /** True when waiters should stop waiting although the machine has not settled (the page left). */
  protected stopsWaiting(): boolean {
    return false;
  }

  /** The error a waiter receives when it stopped waiting before the machine settled. */
  protected unsettledError(): OAuthFlowError | undefined {
    return undefined;
  }

  /**
   * A challenge answered without a flow (RFC 9449 §9, a DPoP nonce): `undefined` when this is not
   * one, otherwise whether the request should simply be sent again. Asked once per caller request.
   */
  protected nonceRetry(_current: Authorization, _challenge: Challenge): boolean | undefined {
    return undefined;
  }

  // ------------------------------------------------------------------ machine plumbing

  /** Wires the subclass's actor: effects recorded in causal order and performed after their transition. */
  protected attach(actor: EngineActor): void {
    actor.on('*', (effect) => {
      // Effects emitted while an event is processed are recorded after that event, in causal order.
      if (this.heldEffects) this.heldEffects.push(effect as EngineEffect);
      else this.recorder.effect(this.clock(), this.state, effect as EngineEffect);
      // Effects run after the transition that emitted them has finished.
      queueMicrotask(() => this.perform(effect as EngineEffect));
    });
    actor.subscribe({ next: (snapshot) => this.onSnapshot(snapshot), error: () => undefined });
    actor.start();
  }

  ready(): Promise<void> {
    return this.restored();
  }

  /** Stored records, loaded once; a failed load (store down) is retried by the next caller. */
  protected restored(): Promise<void> {
    if (this.isRestored) return Promise.resolve();
    this.restoring ??= this.loadStore();
    return this.restoring;
  }

  protected send(event: EngineEvent): void {
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

  protected settled(): boolean {
    return this.actor.getSnapshot().hasTag('settled');
  }

  private onSnapshot(snapshot: EngineSnapshot): void {
    // The state a failure happened in is the last one seen before `failed` (the actor holds `snapshot` already).
    if (!snapshot.matches('failed')) this.lastFlowState = this.state;
    this.snapshotChanged(snapshot);
    if (snapshot.hasTag('settled')) this.wakeSettleWaiters();
  }

  protected wakeSettleWaiters(): void {
    for (const wake of [...this.settleWaiters]) wake();
  }

  private waitSettled(): Promise<void> {
    if (this.settled() || this.stopsWaiting()) return Promise.resolve();
    return new Promise((resolve) => {
      const wake = () => {
        this.settleWaiters.delete(wake);
        resolve();
      };
      this.settleWaiters.add(wake);
    });
  }

  /** Waits for the current flow and turns its outcome into the typed error every waiter receives. */
  protected async settleOrThrow(): Promise<void> {
    await this.waitSettled();
    const snapshot = this.actor.getSnapshot();
    if (!snapshot.hasTag('settled')) {
      const error = this.unsettledError();
      if (error) throw error;
    }
    if (snapshot.matches('failed') && snapshot.context.error) throw this.errorFrom(snapshot.context.error);
  }

  /** Joins the flow already running (a restored or resumed machine) as the single flight, if none is. */
  protected joinFlow(): Promise<void> {
    this.inFlight ??= this.settleOrThrow().finally(() => (this.inFlight = undefined));
    return this.inFlight;
  }

  private errorFrom(data: FlowErrorData): OAuthFlowError {
    const cause = data.kind === 'network' ? this.lastNetworkCause : undefined;
    return toError({ ...data, state: data.state ?? this.lastFlowState }, cause);
  }

  /** Waiting for the authorization response (or the device approval), bounded by `callbackMs` unless told otherwise. */
  protected armCallbackDeadline(ms = this.resolved.deadlines.callbackMs): void {
    this.disarmCallbackDeadline();
    const timer = setTimeout(() => this.send({ type: 'timeout', id: 'callback' }), Math.max(0, ms));
    (timer as { unref?: () => void }).unref?.();
    this.callbackTimer = timer;
  }

  protected disarmCallbackDeadline(): void {
    if (this.callbackTimer !== undefined) clearTimeout(this.callbackTimer);
    this.callbackTimer = undefined;
  }

  // ------------------------------------------------------------------ the store

  /** Starts loading the stored records now; a failure is reported to the first caller that waits. */
  protected startLoading(): void {
    this.restoring = this.loadStore();
    this.restoring.catch(() => undefined);
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
  protected storeCall<T>(what: string, call: () => Promise<T>): Promise<T> {
    const ms = this.resolved.deadlines.storeMs;
    let timer: Timer | undefined;
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

  /** Under the lease: a sibling (process or tab) may have refreshed or signed in while we waited. */
  private async adoptNewerRecords(): Promise<void> {
    const [tokens, client, discovery] = await this.storeCall('reload', () => this.readRecords());
    const known = this.actor.getSnapshot().context.generations.tokens;
    if (tokens && tokens.generation !== known) this.send({ type: 'store.loaded', tokens, client, discovery });
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

  /**
   * Compare-and-swap on the generation this session last saw. On a conflict the record just
   * obtained is the newest (it came from the server after the other write), so it is written over
   * the current generation once; a deletion, by contrast, never overrides (compare-and-delete).
   */
  private async save(kind: RecordKind, value: RecordTypes[RecordKind], fencing: { fencingToken?: number }): Promise<void> {
    const key = this.resolved.storeKey;
    const known = this.actor.getSnapshot().context.generations[kind];
    let result = await this.storeCall('write', () => this.store.set(key, kind, value, { ifGeneration: known, ...fencing }));
    if (!result.ok) {
      // A fenced-out write is refused again here: a later lease holder owns the record now.
      const current = result.current?.generation ?? 0;
      result = await this.storeCall('write', () => this.store.set(key, kind, value, { ifGeneration: current, ...fencing }));
    }
    if (result.ok) this.send({ type: 'store.saved', kind, generation: result.generation });
    else throw new Error(this.leaseTerms().fenced ? 'the record changed twice while saving, or a later lease holder owns it' : 'the record changed twice while saving');
  }

  /** Taken when the effect is performed, so a write queued under the lease stays fenced by it. */
  private fencing(): { fencingToken?: number } {
    return this.heldLease ? { fencingToken: this.heldLease.fencingToken } : {};
  }

  protected async drainSaves(): Promise<void> {
    await Promise.all([...this.saves.values()]);
  }

  // ------------------------------------------------------------------ effects

  private perform(effect: EngineEffect): void {
    if (this.closed) return;
    switch (effect.type) {
      case 'http.request':
        void this.performHttp(effect.request);
        return;
      case 'store.save': {
        const fencing = this.fencing();
        this.queueStoreWrite(effect.kind, () => this.save(effect.kind, effect.value, fencing));
        return;
      }
      case 'store.clear': {
        const fencing = this.fencing();
        this.queueStoreWrite(effect.kind, async () => {
          await this.storeCall('delete', () => this.store.delete(this.resolved.storeKey, effect.kind, { ifGeneration: effect.ifGeneration, ...fencing }));
        });
        return;
      }
      default:
        this.performEffect(effect);
    }
  }

  /** Hands the machine the outcome of one OAuth request. */
  protected answerHttp(request: HttpRequest, outcome: HttpOutcome): void {
    if (outcome.ok) {
      this.send({ type: 'http.response', id: request.id, ...outcome.response, at: this.clock() });
    } else {
      this.lastNetworkCause = outcome.cause;
      this.send({ type: 'http.failed', id: request.id, reason: outcome.reason, message: outcome.message, at: this.clock() });
    }
  }

  // ------------------------------------------------------------------ single-flight triggers

  protected trigger(event: EngineEvent): Promise<void> {
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
    let stopHeartbeat: (() => void) | undefined;
    let fenced = false;
    if (this.store.lease) {
      const terms = this.leaseTerms();
      lease = await this.store.lease(this.resolved.storeKey, { ttlMs: terms.ttlMs, waitMs: terms.waitMs, signal: this.lifetime.signal });
      fenced = terms.fenced;
      if (fenced) this.heldLease = lease;
      if (terms.renewForMs !== undefined) stopHeartbeat = keepLease(lease, terms.ttlMs, terms.renewForMs);
    }
    try {
      if (lease) await this.adoptNewerRecords();
      this.send({ ...event, ...('at' in event ? { at: this.clock() } : {}) } as EngineEvent);
      await this.settleOrThrow();
    } finally {
      // What this flow stored must be visible before another holder may start its own.
      await this.drainSaves();
      stopHeartbeat?.();
      if (fenced) this.heldLease = undefined;
      await lease?.release().catch(() => undefined);
    }
  }

  // ------------------------------------------------------------------ the request path

  /**
   * The hot path: a valid token in the snapshot is used at once, without the machine. `undefined`
   * when the machine must be asked first (records not loaded, token expiring, a flow running);
   * no header when the session is settled without tokens (the first request goes without one).
   */
  protected currentAuthorization(): Authorization | undefined {
    if (!this.isRestored) return undefined;
    const snapshot = this.actor.getSnapshot();
    const tokens = snapshot.context.tokens;
    if (!tokens) return snapshot.hasTag('settled') ? { header: undefined, version: null } : undefined;
    if (needsRefresh(tokens, this.clock(), this.resolved.config.policy.refreshSkewMs)) return undefined;
    return this.authorizationFor(tokens, snapshot.context.tokenVersion);
  }

  /** A usable authorization: the one at hand, or after one refresh or flow shared by every caller. */
  protected async authorization(): Promise<Authorization> {
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

  /**
   * One caller request: send, and on a 401 or a 403 `insufficient_scope` let the machine recover
   * (replay with a newer token, refresh, authorize, step up), then replay. Bounded per request.
   */
  protected async authorized<R>(
    send: (authorization: Authorization) => Promise<R>,
    challengeOf: (response: R) => Challenge | undefined,
    release: (response: R) => Promise<void>,
    /** The first attempt when the caller already sent it (a fast path). */
    first?: { authorization: Authorization; response: R },
  ): Promise<R> {
    let authorizations = 0;
    let refreshes = 0;
    let nonceRetried = false;
    let response: R | undefined;
    let pending = first;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      let current: Authorization;
      if (pending) {
        current = pending.authorization;
        response = pending.response;
        pending = undefined;
      } else {
        // The token at hand is used without another async hop; `authorization()` looks at it first too.
        current = this.currentAuthorization() ?? (await this.authorization());
        response = await send(current);
      }
      const { version } = current;
      const challenge = challengeOf(response);
      if (!challenge || attempt === MAX_ATTEMPTS - 1) return response;
      if (!nonceRetried) {
        const retry = this.nonceRetry(current, challenge);
        if (retry !== undefined) {
          // Exactly one retry with the nonce, no flow.
          nonceRetried = true;
          if (retry) {
            await release(response);
            attempt--;
            continue;
          }
        }
      }
      const snapshot = this.actor.getSnapshot();
      await release(response);
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
    return response as R;
  }

  // ------------------------------------------------------------------ explicit operations

  /** Signs in now unless valid tokens are held (refreshing them first when they can be). */
  async authorize(): Promise<void> {
    await this.restored();
    if (this.currentAuthorization()?.header) return;
    if (this.actor.getSnapshot().context.tokens) {
      await this.authorization();
      if (this.currentAuthorization()?.header) return;
    }
    await this.trigger({ type: 'unauthorized', status: 401, tokenVersion: null, authorizations: 0, at: this.clock() });
  }

  /** The machine snapshot while it waits or is settled. It holds secrets: hand it only to a store. */
  persist(): unknown {
    const snapshot = this.actor.getSnapshot();
    if (!snapshot.hasTag('waiting') && !snapshot.hasTag('settled')) {
      throw new OAuthFlowError({ code: 'session.busy', message: `cannot persist while a request is in flight (${this.state})` });
    }
    return this.actor.getPersistedSnapshot();
  }

  /** Keeps secrets out of `console.log(session)` and `JSON.stringify(session)`. */
  toJSON(): Record<string, unknown> {
    return { serverUrl: this.resolved.config.serverUrl, state: this.state };
  }
}

/**
 * Renews a held lease every third of its ttl until stopped, for at most `maxMs` (a hung flow does
 * not hold it forever), and stops early once a renewal says it lapsed: the writes made after that
 * carry a stale fencing token and the store refuses them.
 */
function keepLease(lease: Lease, ttlMs: number, maxMs: number): () => void {
  const everyMs = Math.max(1, Math.floor(ttlMs / 3));
  let beats = Math.ceil(maxMs / everyMs);
  const timer = setInterval(() => {
    if (beats-- <= 0) {
      clearInterval(timer);
      return;
    }
    // A lease from a store written before renewal existed simply keeps its first ttl.
    void lease.renew?.(ttlMs).then(
      (held) => {
        if (!held) clearInterval(timer);
      },
      () => undefined,
    );
  }, everyMs);
  (timer as { unref?: () => void }).unref?.();
  return () => clearInterval(timer);
}
