/**
 * Redis credential store: one identity shared by many processes on many hosts. Every
 * read-compare-write is one Lua script, so the contract's atomicity comes from Redis itself, not
 * from clocks or locks on the client side. The lease is a key with a TTL and a fencing token; a
 * waiter sleeps on pub/sub (a release publishes) and on one timer set to the holder's remaining
 * TTL (a dead holder never publishes), never on a polling loop. A holder renews with a
 * compare-and-extend script; a waiter whose timer fires re-checks atomically and, finding the
 * lease renewed, re-arms on the new remaining TTL, so a renewed lease is never taken over.
 *
 * Layout, for h = first 32 hex chars of sha256(key); the braces are a Redis Cluster hash tag, so
 * every key a script touches for one store key lives in one slot:
 *   <prefix>:{h}:tokens | :client | :discovery   hash { key, generation, value (JSON) }
 *   <prefix>:{h}:generations                      hash kind → last generation, kept across deletes
 *   <prefix>:{h}:fencing                          the newest fencing token granted (INCR)
 *   <prefix>:{h}:lease                            "<host> <pid> <nonce>" of the holder, PX ttl
 *   <prefix>:{h}:released                         pub/sub channel, one message per release
 *
 * The `redis` package (node-redis) is loaded only when the store creates its own client, so the
 * library does not need it unless this store is used.
 */
import { createHash, randomBytes } from 'node:crypto';
import os from 'node:os';

import { OAuthConfigError, OAuthStoreError } from '../../machines/errors.js';
import type {
  CredentialStore,
  Lease,
  LeaseOptions,
  RecordKind,
  RecordTypes,
  Versioned,
  WriteCondition,
  WriteResult,
} from '../../machines/store.js';
import { abortedError, checkCondition, checkKey, checkKeyAndKind, checkLeaseOptions, checkRenewTtl, leaseTimeoutError } from './contract.js';

const DEFAULT_TIMEOUT_MS = 2_000;
/** Redis rounds a TTL to whole milliseconds; a waiter that wakes this much later finds it gone. */
const EXPIRY_MARGIN_MS = 2;
const RECONNECT_MAX_MS = 1_000;

/** The part of a node-redis (v5+) client this store uses; `createClient()` results fit it. */
export interface RedisClientLike {
  readonly isOpen: boolean;
  readonly isReady: boolean;
  connect(): Promise<unknown>;
  sendCommand(args: string[], options?: { timeout?: number }): Promise<unknown>;
  duplicate(): RedisClientLike;
  subscribe(channel: string, listener: (message: string, channel: string) => unknown): Promise<unknown>;
  unsubscribe(channel: string, listener: (message: string, channel: string) => unknown): Promise<unknown>;
  // EventEmitter's own listener type: a narrower one would not accept node-redis clients.
  on(event: string, listener: (...args: any[]) => void): unknown;
  close(): Promise<unknown>;
  destroy(): void;
}

export interface RedisStoreOptions {
  /** `redis://[[user]:password@]host[:port][/db]` or `rediss://…`: the store creates, connects and closes its clients. */
  url?: string;
  /** A node-redis client you own; the store duplicates it for its subscription and never closes it. */
  client?: RedisClientLike;
  /** Prefix of every key and channel; default `mcp-oauth`. */
  keyPrefix?: string;
  /** Bounds a connection attempt, and how long a call waits for a reconnect in progress. Default 2000. */
  connectTimeoutMs?: number;
  /** Bounds every command. Default 2000. */
  commandTimeoutMs?: number;
}

export interface RedisCredentialStore extends CredentialStore {
  lease(key: string, options: LeaseOptions): Promise<Lease>;
  /** Ends pending lease waits and closes the clients the store created. */
  close(): Promise<void>;
}

// ---------------------------------------------------------------------------------------------
// Scripts. Numbers cross into Lua as strings and are compared after tonumber; generations and
// fencing tokens stay far below 2^53, where Lua's doubles are exact.

/** KEYS record, generations, fencing. ARGV kind, ifGeneration, fencingToken or '', key, value. */
const SET_SCRIPT = `
local current = redis.call('HMGET', KEYS[1], 'generation', 'value', 'key')
local generation = tonumber(current[1]) or 0
local refused = generation ~= tonumber(ARGV[2])
if not refused and ARGV[3] ~= '' then
  refused = tonumber(ARGV[3]) < (tonumber(redis.call('GET', KEYS[3])) or 0)
end
if refused then return {0, current[1] or '', current[2] or '', current[3] or ''} end
if (tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0) < generation then
  redis.call('HSET', KEYS[2], ARGV[1], current[1])
end
local nextGeneration = redis.call('HINCRBY', KEYS[2], ARGV[1], 1)
redis.call('HSET', KEYS[1], 'key', ARGV[4], 'generation', nextGeneration, 'value', ARGV[5])
return {1, nextGeneration}
`;

/** KEYS record, generations, fencing. ARGV kind, ifGeneration, fencingToken or ''. */
const DELETE_SCRIPT = `
local generation = redis.call('HGET', KEYS[1], 'generation')
if not generation or tonumber(generation) ~= tonumber(ARGV[2]) then return 0 end
if ARGV[3] ~= '' and tonumber(ARGV[3]) < (tonumber(redis.call('GET', KEYS[3])) or 0) then return 0 end
if (tonumber(redis.call('HGET', KEYS[2], ARGV[1])) or 0) < tonumber(generation) then
  redis.call('HSET', KEYS[2], ARGV[1], generation)
end
redis.call('DEL', KEYS[1])
return 1
`;

/**
 * KEYS lease, fencing. ARGV owner, ttlMs. The token is taken only when the lease is granted, so
 * "newest granted" never runs ahead of a real holder. A missing counter starts from the server's
 * clock in microseconds: if Redis lost its data in a restart, new tokens still exceed old ones.
 */
const ACQUIRE_SCRIPT = `
if redis.call('EXISTS', KEYS[1]) == 1 then return {0, redis.call('PTTL', KEYS[1])} end
if redis.call('EXISTS', KEYS[2]) == 0 then
  local now = redis.call('TIME')
  redis.call('SET', KEYS[2], now[1] .. string.sub('000000' .. now[2], -6))
end
local token = redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return {1, token}
`;

/** KEYS lease. ARGV owner, channel. */
const RELEASE_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('PUBLISH', ARGV[2], 'released')
return 1
`;

/**
 * KEYS lease, fencing. ARGV owner, ttlMs, fencingToken. Compare-and-extend: only the holder that
 * the lease key still names, and whose token is still the newest granted, moves its expiry. A
 * lapsed key is gone (Redis expired it), so a lapsed holder can never bring its lease back.
 */
const RENEW_SCRIPT = `
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(redis.call('GET', KEYS[2])) ~= tonumber(ARGV[3]) then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
`;

/** KEYS record, quarantine. ARGV the generation field as read. */
const QUARANTINE_SCRIPT = `
if redis.call('HGET', KEYS[1], 'generation') == ARGV[1] then
  redis.call('RENAME', KEYS[1], KEYS[2])
  return 1
end
return 0
`;

interface Script {
  source: string;
  sha: string;
}

function script(source: string): Script {
  return { source, sha: createHash('sha1').update(source, 'utf8').digest('hex') };
}

const SCRIPTS = {
  set: script(SET_SCRIPT),
  delete: script(DELETE_SCRIPT),
  acquire: script(ACQUIRE_SCRIPT),
  release: script(RELEASE_SCRIPT),
  renew: script(RENEW_SCRIPT),
  quarantine: script(QUARANTINE_SCRIPT),
};

// ---------------------------------------------------------------------------------------------

export function createRedisStore(options: RedisStoreOptions): RedisCredentialStore {
  const { url, client: given } = options;
  const keyPrefix = options.keyPrefix ?? 'mcp-oauth';
  const connectTimeoutMs = options.connectTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  const commandTimeoutMs = options.commandTimeoutMs ?? DEFAULT_TIMEOUT_MS;
  if ((url === undefined) === (given === undefined)) throw configError('url', 'give exactly one of url and client');
  if (url !== undefined && (typeof url !== 'string' || !/^rediss?:\/\//.test(url))) {
    throw configError('url', 'must be a redis:// or rediss:// URL');
  }
  if (typeof keyPrefix !== 'string' || keyPrefix === '') throw configError('keyPrefix', 'must be a non-empty string');
  for (const [field, value] of [
    ['connectTimeoutMs', connectTimeoutMs],
    ['commandTimeoutMs', commandTimeoutMs],
  ] as const) {
    if (typeof value !== 'number' || !Number.isFinite(value) || value <= 0) throw configError(field, 'must be a positive number of milliseconds');
  }

  let closed = false;
  let main: Promise<Connection> | undefined;
  let subscriber: Promise<Connection> | undefined;
  const waits = new Set<(error: OAuthStoreError) => void>();
  const owned: RedisClientLike[] = [];

  function connection(): Promise<Connection> {
    main ??= (given ? Promise.resolve(given) : createOwnClient(url as string, connectTimeoutMs)).then(
      (client) => {
        if (!given) adopt(client);
        return new Connection(client, connectTimeoutMs);
      },
      (error: unknown) => {
        main = undefined;
        throw storeError('connect', error);
      },
    );
    return main;
  }

  function subscriberConnection(): Promise<Connection> {
    subscriber ??= connection().then((base) => {
      // A connection in subscribe mode cannot run scripts, so waiting gets a connection of its own.
      const client = base.client.duplicate();
      // An unhandled 'error' would crash the process; outages surface as typed errors on calls instead.
      client.on('error', () => undefined);
      adopt(client);
      return new Connection(client, connectTimeoutMs);
    });
    subscriber.catch(() => (subscriber = undefined));
    return subscriber;
  }

  /** Clients made after `close()` began are dropped at once, so none outlives the store. */
  function adopt(client: RedisClientLike): void {
    if (closed) {
      client.destroy();
      throw closedError();
    }
    owned.push(client);
  }

  async function command(operation: string, args: string[]): Promise<unknown> {
    if (closed) throw closedError();
    const connected = await connection();
    try {
      await connected.whenReady();
      return await connected.client.sendCommand(args, { timeout: commandTimeoutMs });
    } catch (error) {
      throw storeError(operation, error);
    }
  }

  async function evaluate(operation: string, { source, sha }: Script, keys: string[], args: string[]): Promise<unknown> {
    try {
      return await command(operation, ['EVALSHA', sha, String(keys.length), ...keys, ...args]);
    } catch (error) {
      // A restarted or flushed server has an empty script cache; EVAL reloads it.
      if (!(error instanceof OAuthStoreError && messageOf(error.cause).startsWith('NOSCRIPT'))) throw error;
      return command(operation, ['EVAL', source, String(keys.length), ...keys, ...args]);
    }
  }

  const names = (key: string) => {
    const base = `${keyPrefix}:{${createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 32)}}`;
    return {
      record: (kind: RecordKind) => `${base}:${kind}`,
      generations: `${base}:generations`,
      fencing: `${base}:fencing`,
      lease: `${base}:lease`,
      released: `${base}:released`,
    };
  };

  async function tryAcquire(key: string, owner: string, ttlMs: number): Promise<{ granted: true; fencingToken: number } | { granted: false; ttlMs: number }> {
    const n = names(key);
    let reply: unknown;
    try {
      reply = await evaluate('lease', SCRIPTS.acquire, [n.lease, n.fencing], [owner, String(Math.ceil(ttlMs))]);
    } catch (error) {
      // The script may have run although its answer never came: free what we may now hold.
      if (error instanceof OAuthStoreError && error.code === 'store.unavailable') void releaseOwned(key, owner).catch(() => undefined);
      throw error;
    }
    const [granted, value] = asArray(reply);
    if (toInteger(granted) === 1) return { granted: true, fencingToken: positiveInteger(value, 'fencing token') };
    return { granted: false, ttlMs: toInteger(value) ?? -1 };
  }

  async function releaseOwned(key: string, owner: string): Promise<void> {
    const n = names(key);
    await evaluate('release', SCRIPTS.release, [n.lease], [owner, n.released]);
  }

  function makeLease(key: string, owner: string, fencingToken: number): Lease {
    let released: Promise<void> | undefined;
    let releaseCalled = false;
    return {
      fencingToken,
      async renew(ttlMs: number): Promise<boolean> {
        checkRenewTtl(ttlMs);
        if (releaseCalled) return false;
        // One script call. Waiters need no message: one whose expiry timer fires re-runs the
        // acquire script, finds the key alive, and re-arms on the new PTTL.
        const n = names(key);
        const reply = await evaluate('renew', SCRIPTS.renew, [n.lease, n.fencing], [owner, String(Math.ceil(ttlMs)), String(fencingToken)]);
        return toInteger(reply) === 1;
      },
      release(): Promise<void> {
        releaseCalled = true;
        // Compare-and-delete: a holder whose lease lapsed cannot free its successor's.
        released ??= releaseOwned(key, owner).catch((error: unknown) => {
          // A failed release may be retried; the lease lapses at its ttl if it never succeeds.
          released = undefined;
          throw error;
        });
        return released;
      },
    };
  }

  function waitForLease(key: string, owner: string, ttlMs: number, waitMs: number, firstTtlMs: number, signal: AbortSignal | undefined): Promise<Lease> {
    const channel = names(key).released;
    return new Promise<Lease>((resolve, reject) => {
      let settled = false;
      let attempting = false;
      let wokenDuringAttempt = false;
      let expiryTimer: NodeJS.Timeout | undefined;
      let subscribedOn: Connection | undefined;

      const finish = (error: OAuthStoreError | undefined, lease?: Lease): void => {
        if (settled) {
          // Granted after the caller stopped waiting: nobody will use it, so give it back now.
          if (lease) void lease.release().catch(() => undefined);
          return;
        }
        settled = true;
        clearTimeout(deadline);
        clearTimeout(expiryTimer);
        signal?.removeEventListener('abort', onAbort);
        waits.delete(finish);
        if (subscribedOn) void subscribedOn.client.unsubscribe(channel, onReleased).catch(() => undefined);
        if (error) reject(error);
        else resolve(lease as Lease);
      };
      const onAbort = (): void => finish(abortedError(signal));
      const onReleased = (): void => attempt();
      // Wakes once the holder's TTL has run out, for a holder that died without publishing.
      const armExpiry = (remainingMs: number): void => {
        clearTimeout(expiryTimer);
        if (remainingMs >= 0) expiryTimer = setTimeout(attempt, remainingMs + EXPIRY_MARGIN_MS);
      };

      function attempt(): void {
        if (settled) return;
        if (attempting) {
          wokenDuringAttempt = true;
          return;
        }
        attempting = true;
        wokenDuringAttempt = false;
        tryAcquire(key, owner, ttlMs).then(
          (outcome) => {
            attempting = false;
            if (outcome.granted) {
              finish(undefined, makeLease(key, owner, outcome.fencingToken));
              return;
            }
            if (wokenDuringAttempt) attempt();
            else armExpiry(outcome.ttlMs);
          },
          (error: unknown) => {
            attempting = false;
            finish(storeError('lease', error));
          },
        );
      }

      const deadline = setTimeout(() => finish(leaseTimeoutError(waitMs)), waitMs);
      signal?.addEventListener('abort', onAbort, { once: true });
      waits.add(finish);
      armExpiry(firstTtlMs);
      // Subscribed before the next attempt, so a release between the two cannot go unheard.
      subscriberConnection()
        .then(async (connected) => {
          if (settled) return;
          await connected.whenReady();
          try {
            await withDeadline(connected.client.subscribe(channel, onReleased), commandTimeoutMs, 'subscribe');
          } catch (error) {
            // A subscription that completes after its deadline must not keep a dead listener.
            void connected.client.unsubscribe(channel, onReleased).catch(() => undefined);
            throw error;
          }
          if (settled) {
            void connected.client.unsubscribe(channel, onReleased).catch(() => undefined);
            return;
          }
          subscribedOn = connected;
          attempt();
        })
        .catch((error: unknown) => finish(storeError('subscribe', error)));
    });
  }

  async function readRecord<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined> {
    const n = names(key);
    const reply = asArray(await command('get', ['HMGET', n.record(kind), 'key', 'generation', 'value']));
    const [storedKey, generationField, valueField] = reply.map(asText);
    if (storedKey === undefined && generationField === undefined && valueField === undefined) return undefined;
    const generation = Number(generationField);
    const value = parseJson(valueField);
    if (storedKey === key && Number.isSafeInteger(generation) && generation > 0 && isObject(value)) {
      return { value: value as unknown as RecordTypes[K], generation };
    }
    // Not written by this store (or for another key): moved aside, so writers are not wedged on it.
    await evaluate('quarantine', SCRIPTS.quarantine, [n.record(kind), `${n.record(kind)}:corrupt:${Date.now()}`], [generationField ?? '']);
    return undefined;
  }

  return {
    async get<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined> {
      checkKeyAndKind(key, kind);
      return readRecord(key, kind);
    },

    async set<K extends RecordKind>(key: string, kind: K, value: RecordTypes[K], condition: WriteCondition): Promise<WriteResult<RecordTypes[K]>> {
      checkKeyAndKind(key, kind);
      checkCondition(condition);
      if (!isObject(value)) throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record value must be an object' });
      const serialised = JSON.stringify(value);
      if (serialised === undefined) throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record value is not JSON-serialisable' });
      const n = names(key);
      const reply = asArray(
        await evaluate('set', SCRIPTS.set, [n.record(kind), n.generations, n.fencing], [kind, String(condition.ifGeneration), fencingArg(condition), key, serialised]),
      );
      if (toInteger(reply[0]) === 1) return { ok: true, generation: positiveInteger(reply[1], 'generation') };
      const generation = Number(asText(reply[1]));
      const current = parseJson(asText(reply[2]));
      if (!(Number.isSafeInteger(generation) && generation > 0 && isObject(current) && asText(reply[3]) === key)) return { ok: false, current: undefined };
      return { ok: false, current: { value: current as unknown as RecordTypes[K], generation } };
    },

    async delete(key: string, kind: RecordKind, condition: WriteCondition): Promise<boolean> {
      checkKeyAndKind(key, kind);
      checkCondition(condition);
      const n = names(key);
      const reply = await evaluate('delete', SCRIPTS.delete, [n.record(kind), n.generations, n.fencing], [kind, String(condition.ifGeneration), fencingArg(condition)]);
      return toInteger(reply) === 1;
    },

    async lease(key: string, leaseOptions: LeaseOptions): Promise<Lease> {
      checkKey(key);
      checkLeaseOptions(leaseOptions);
      const { signal, ttlMs, waitMs } = leaseOptions;
      if (signal?.aborted) throw abortedError(signal);
      if (closed) throw closedError();
      const owner = `${os.hostname()} ${process.pid} ${randomBytes(12).toString('hex')}`;
      const first = await tryAcquire(key, owner, ttlMs);
      if (first.granted) return makeLease(key, owner, first.fencingToken);
      if (waitMs <= 0) throw leaseTimeoutError(waitMs);
      return waitForLease(key, owner, ttlMs, waitMs, first.ttlMs, signal);
    },

    async close(): Promise<void> {
      if (closed) return;
      closed = true;
      for (const finish of [...waits]) finish(closedError());
      await Promise.all(
        owned.splice(0).map(async (client) => {
          try {
            if (client.isOpen) await withDeadline(client.close(), commandTimeoutMs, 'close');
          } catch {
            // Unreachable server: a graceful QUIT cannot be sent, so the socket is simply dropped.
          }
          client.destroy();
        }),
      );
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Connections

/**
 * One client and its readiness. node-redis reconnects in the background; a call waits for that
 * at most `connectTimeoutMs` and then fails, so an outage is a prompt typed error, never a hang.
 */
class Connection {
  private gate: { promise: Promise<void>; resolve: () => void } | undefined;
  private connecting = false;

  constructor(
    readonly client: RedisClientLike,
    private readonly connectTimeoutMs: number,
  ) {
    client.on('ready', () => {
      this.gate?.resolve();
      this.gate = undefined;
    });
  }

  async whenReady(): Promise<void> {
    if (this.client.isReady) return;
    if (!this.client.isOpen && !this.connecting) {
      this.connecting = true;
      // Settles only once connected or closed: the retries run in the background, not in a call.
      this.client.connect().then(
        () => (this.connecting = false),
        () => (this.connecting = false),
      );
    }
    if (!this.gate) {
      let resolve!: () => void;
      const promise = new Promise<void>((r) => (resolve = r));
      this.gate = { promise, resolve };
    }
    await withDeadline(this.gate.promise, this.connectTimeoutMs, 'connect');
  }
}

async function createOwnClient(url: string, connectTimeoutMs: number): Promise<RedisClientLike> {
  let redis: typeof import('redis');
  try {
    redis = await import('redis');
  } catch (error) {
    throw new OAuthStoreError({ code: 'store.unavailable', message: 'redis store: the `redis` package could not be loaded' }, { cause: error });
  }
  const client = redis.createClient({
    url,
    // Without this a command sent during an outage would sit in a queue until Redis returns.
    disableOfflineQueue: true,
    socket: {
      connectTimeout: connectTimeoutMs,
      reconnectStrategy: (retries: number) => Math.min(50 * 2 ** retries, RECONNECT_MAX_MS) + Math.floor(Math.random() * 100),
    },
  });
  // An unhandled 'error' would crash the process; outages surface as typed errors on calls instead.
  client.on('error', () => undefined);
  return client as unknown as RedisClientLike;
}

function withDeadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new OAuthStoreError({ code: 'store.unavailable', message: `redis store: ${what} took longer than ${ms} ms` })), ms);
  });
  return Promise.race([promise, deadline]).finally(() => clearTimeout(timer));
}

// ---------------------------------------------------------------------------------------------
// Replies and errors

function asArray(reply: unknown): unknown[] {
  if (Array.isArray(reply)) return reply;
  throw new OAuthStoreError({ code: 'store.io', message: 'redis store: unexpected reply shape' });
}

function asText(value: unknown): string | undefined {
  if (typeof value === 'string') return value;
  if (value instanceof Uint8Array) return Buffer.from(value).toString('utf8');
  if (typeof value === 'number') return String(value);
  return undefined;
}

function toInteger(value: unknown): number | undefined {
  const n = typeof value === 'number' ? value : typeof value === 'bigint' ? Number(value) : Number(asText(value));
  return Number.isSafeInteger(n) ? n : undefined;
}

function positiveInteger(value: unknown, what: string): number {
  const n = toInteger(value);
  if (n === undefined || n <= 0) throw new OAuthStoreError({ code: 'store.io', message: `redis store: ${what} in the reply is not a positive integer` });
  return n;
}

function fencingArg(condition: WriteCondition): string {
  return condition.fencingToken === undefined ? '' : String(condition.fencingToken);
}

function parseJson(raw: string | undefined): unknown {
  if (raw === undefined) return undefined;
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : '';
}

/** A reply Redis itself sent back as an error, as opposed to a connection that failed. */
function isErrorReply(error: unknown): boolean {
  let proto: unknown = error === null || typeof error !== 'object' ? undefined : Object.getPrototypeOf(error);
  while (proto && proto !== Error.prototype) {
    const name = (proto as { constructor?: { name?: string } }).constructor?.name;
    if (name === 'ErrorReply') return true;
    proto = Object.getPrototypeOf(proto);
  }
  return false;
}

function storeError(operation: string, error: unknown): OAuthStoreError {
  if (error instanceof OAuthStoreError) return error;
  // Error class names only: a message could echo a script argument, and arguments hold records.
  const name = error instanceof Error ? error.constructor.name : 'unknown error';
  if (isErrorReply(error)) {
    return new OAuthStoreError({ code: 'store.io', message: `redis store: ${operation} refused by the server (${name})` }, { cause: error });
  }
  return new OAuthStoreError({ code: 'store.unavailable', message: `redis store: ${operation} failed, Redis unreachable (${name})` }, { cause: error });
}

function configError(field: string, problem: string): OAuthConfigError {
  return new OAuthConfigError({ code: 'config.invalid_option', message: `createRedisStore ${field}: ${problem}` });
}

function closedError(): OAuthStoreError {
  return new OAuthStoreError({ code: 'store.closed', message: 'redis store: closed' });
}






