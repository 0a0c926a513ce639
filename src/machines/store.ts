/**
 * The credential-store contract, defined once for every store (memory, file, Redis, a user's keychain).
 *
 * Records are versioned by a generation the store assigns. Writes are compare-and-swap on the
 * generation the writer last saw, and invalidation is compare-and-delete of the generation that
 * failed: a process whose refresh lost a race can never delete the tokens the winner just stored.
 * A lease (optional) lets one holder refresh or run a flow while other processes wait and then
 * re-read what it stored; without one, the session's in-process single-flight still holds.
 */

/** What a record holds. `discovery` keeps the metadata a refresh needs after a restart. */
export type RecordKind = 'tokens' | 'client' | 'discovery';

export interface TokenRecord {
  access_token: string;
  /** Lower-cased `bearer` (or `dpop`). */
  token_type: string;
  refresh_token?: string;
  /** Absolute expiry, epoch milliseconds; absent when the server gave no `expires_in`. */
  expires_at?: number;
  /** When the token response was received, epoch milliseconds. */
  obtained_at: number;
  /** Scope granted (the response's `scope`, else the scope requested). */
  scope?: string;
  /** Issuer of the authorization server that issued the tokens: tokens are bound to it. */
  issuer: string;
  /** The `resource` the tokens were requested for (sent again on refresh). */
  resource: string;
}

export type ClientSource = 'dynamic' | 'cimd' | 'preregistered';

export interface ClientRecord {
  client_id: string;
  client_secret?: string;
  /** Epoch seconds; 0 or absent = never (RFC 7591 §3.2.1). */
  client_secret_expires_at?: number;
  token_endpoint_auth_method: 'none' | 'client_secret_basic' | 'client_secret_post';
  redirect_uris: string[];
  /** The issuer this identity is bound to (SEP-2352). */
  issuer: string;
  source: ClientSource;
  /**
   * The scope registered (RFC 7591 `scope`: what the client may ever request). Servers such as
   * oidc-provider enforce it, so a dynamic client is registered again before asking for more.
   */
  scope?: string;
  /** RFC 7591 `grant_types` registered; absent in records written before the device grant. */
  grant_types?: string[];
}

/** Authorization-server facts kept with the tokens so that a refresh works after a restart. */
export interface DiscoveryRecord {
  issuer: string;
  token_endpoint: string;
  revocation_endpoint?: string;
  resource: string;
  resource_metadata_url?: string;
  legacy: boolean;
}

export interface RecordTypes {
  tokens: TokenRecord;
  client: ClientRecord;
  discovery: DiscoveryRecord;
}

export interface Versioned<T> {
  value: T;
  /** Positive integer assigned by the store; it grows with every write of the same key and kind. */
  generation: number;
}

/** `ifGeneration: 0` means "only if absent". */
export interface WriteCondition {
  ifGeneration: number;
  /**
   * The writer's lease, when it holds one. A token older than the newest the store has granted for
   * this key means the writer's lease lapsed and another holder took over: its late write (or
   * delete) is refused as if the generation had moved (`{ ok: false, current }`, or `false`).
   * Without a token the write is judged on its generation alone.
   */
  fencingToken?: number;
}

export type WriteResult<T> =
  | { ok: true; generation: number }
  | { ok: false; current: Versioned<T> | undefined };

export interface Lease {
  /** Monotonic fencing token: a later holder always has a larger one. */
  readonly fencingToken: number;
  /**
   * Heartbeat: extends the lease to `ttlMs` from now, if this holder still holds it (same owner,
   * same fencing token), so a holder can take a short ttl and renew it while it works, and a
   * holder that dies is outwaited after one short ttl instead of a long one. Resolves `false`,
   * touching nothing, when the lease already lapsed (whether or not another holder took it since)
   * or was released: a holder that sees `false` no longer holds the lease and must stop. The
   * fencing token never changes. Takes at most one store call, never a wait for the lease.
   * A `ttlMs` that is not a finite number > 0 fails with `store.invalid_argument`.
   */
  renew(ttlMs: number): Promise<boolean>;
  release(): Promise<void>;
}

export interface LeaseOptions {
  /** How long the lease lives if its holder dies without releasing it. */
  ttlMs: number;
  /** How long to wait for another holder before failing with `store.lease_timeout`. */
  waitMs: number;
  signal?: AbortSignal;
}

export interface CredentialStore {
  get<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined>;
  set<K extends RecordKind>(
    key: string,
    kind: K,
    value: RecordTypes[K],
    condition: WriteCondition,
  ): Promise<WriteResult<RecordTypes[K]>>;
  /** Deletes only if the stored generation is still `ifGeneration`; returns whether it deleted. */
  delete(key: string, kind: RecordKind, condition: WriteCondition): Promise<boolean>;
  /** Optional: serialises refreshes and flows for one key across processes or hosts. */
  lease?(key: string, options: LeaseOptions): Promise<Lease>;
}
