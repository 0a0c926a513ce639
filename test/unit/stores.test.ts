import { execFile } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { chmod, copyFile, mkdir, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { promisify } from 'node:util';

import { afterAll, afterEach, beforeEach, describe, expect, it } from 'vitest';

import { createFileStore, defaultStoreDirectory } from '../../src/adapters/stores/file.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { createRedisStore } from '../../src/adapters/stores/redis.js';
import { redisSkipReason, startRedisServer, type RedisServer } from '../support/redisServer.js';
import { OAuthStoreError } from '../../src/machines/errors.js';
import type { CredentialStore, Lease, LeaseOptions, TokenRecord } from '../../src/machines/store.js';

const execFileAsync = promisify(execFile);
const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const fileStoreModule = path.join(projectRoot, 'src/adapters/stores/file.ts');
const posix = process.platform !== 'win32';

const KEY = 'https://mcp.example.com/mcp';

function tokens(n: number): TokenRecord {
  return {
    access_token: `at-${n}`,
    token_type: 'bearer',
    refresh_token: `rt-${n}`,
    obtained_at: n,
    issuer: 'https://as.example.com',
    resource: KEY,
  };
}

function leaseOf(store: CredentialStore): (key: string, options: LeaseOptions) => Promise<Lease> {
  const lease = store.lease;
  if (!lease) throw new Error('store has no lease');
  return lease.bind(store);
}

function hashOf(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 32);
}

async function tempDir(): Promise<string> {
  return mkdtemp(path.join(os.tmpdir(), 'mcp-oauth-stores-'));
}

async function expectStoreError(promise: Promise<unknown>, code: string): Promise<OAuthStoreError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OAuthStoreError);
  expect((error as OAuthStoreError).code).toBe(code);
  return error as OAuthStoreError;
}

/** Settles with the lease or the error, and tells whether it settled already. */
function track<T>(promise: Promise<T>): { promise: Promise<T>; settled: () => boolean } {
  let done = false;
  promise.then(
    () => (done = true),
    () => (done = true),
  );
  return { promise, settled: () => done };
}

const delay = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

interface Harness {
  store: CredentialStore;
  cleanup(): Promise<void>;
}

const factories: Array<{ name: string; make: () => Promise<Harness> }> = [
  { name: 'memory', make: async () => ({ store: createMemoryStore(), cleanup: async () => undefined }) },
  {
    name: 'file',
    make: async () => {
      const root = await tempDir();
      return {
        store: createFileStore({ directory: path.join(root, 'store') }),
        cleanup: () => rm(root, { recursive: true, force: true }),
      };
    },
  },
];

// One real redis-server for the file; each test gets its own key prefix, so nothing leaks between them.
let redisServer: Promise<RedisServer> | undefined;
afterAll(async () => {
  await (await redisServer?.catch(() => undefined))?.close();
});
if (redisSkipReason === undefined) {
  factories.push({
    name: 'redis',
    make: async () => {
      redisServer ??= startRedisServer();
      const store = createRedisStore({ url: (await redisServer).url, keyPrefix: `contract-${randomUUID()}` });
      return { store, cleanup: () => store.close() };
    },
  });
} else {
  describe.skip(`redis store: contract (${redisSkipReason})`, () => {
    it('needs redis-server', () => undefined);
  });
}

describe.each(factories)('$name store: contract', ({ make }) => {
  let store: CredentialStore;
  let cleanup: () => Promise<void>;

  beforeEach(async () => {
    ({ store, cleanup } = await make());
  });
  afterEach(async () => {
    await cleanup();
  });

  it('reads an absent record as undefined', async () => {
    expect(await store.get(KEY, 'tokens')).toBeUndefined();
  });

  it('ifGeneration 0 writes only if absent, and a refused write returns the current record', async () => {
    expect(await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 })).toEqual({ ok: true, generation: 1 });
    expect(await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 0 })).toEqual({
      ok: false,
      current: { value: tokens(1), generation: 1 },
    });
    expect(await store.get(KEY, 'tokens')).toEqual({ value: tokens(1), generation: 1 });
  });

  it('compare-and-swap refuses a stale generation and returns the current one', async () => {
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    expect(await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 1 })).toEqual({ ok: true, generation: 2 });
    expect(await store.set(KEY, 'tokens', tokens(3), { ifGeneration: 1 })).toEqual({
      ok: false,
      current: { value: tokens(2), generation: 2 },
    });
    expect(await store.set(KEY, 'tokens', tokens(3), { ifGeneration: 5 })).toMatchObject({ ok: false });
    expect((await store.get(KEY, 'tokens'))?.generation).toBe(2);
  });

  it('a write to an absent record with a non-zero generation is refused with current undefined', async () => {
    expect(await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 3 })).toEqual({ ok: false, current: undefined });
  });

  it('keeps generations per key and per kind', async () => {
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 1 });
    const client = {
      client_id: 'c',
      token_endpoint_auth_method: 'none' as const,
      redirect_uris: ['http://127.0.0.1/cb'],
      issuer: 'https://as.example.com',
      source: 'dynamic' as const,
    };
    expect(await store.set(KEY, 'client', client, { ifGeneration: 0 })).toEqual({ ok: true, generation: 1 });
    expect(await store.set('https://other.example/mcp', 'tokens', tokens(9), { ifGeneration: 0 })).toEqual({
      ok: true,
      generation: 1,
    });
    expect(await store.get(KEY, 'client')).toEqual({ value: client, generation: 1 });
  });

  it('concurrent writers on the same generation: exactly one wins', async () => {
    const results = await Promise.all(
      [1, 2, 3, 4, 5].map((n) => store.set(KEY, 'tokens', tokens(n), { ifGeneration: 0 })),
    );
    expect(results.filter((r) => r.ok)).toHaveLength(1);
    expect((await store.get(KEY, 'tokens'))?.generation).toBe(1);
  });

  it('compare-and-delete refuses a newer generation and deletes the one it names', async () => {
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 1 });
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 1 })).toBe(false);
    expect(await store.get(KEY, 'tokens')).toEqual({ value: tokens(2), generation: 2 });
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 2 })).toBe(true);
    expect(await store.get(KEY, 'tokens')).toBeUndefined();
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 2 })).toBe(false);
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 0 })).toBe(false);
  });

  it('never reuses a generation after a delete', async () => {
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 1 });
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 2 })).toBe(true);
    const again = await store.set(KEY, 'tokens', tokens(3), { ifGeneration: 0 });
    expect(again).toEqual({ ok: true, generation: 3 });
    // A process that still holds generation 2 must not delete the new record.
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 2 })).toBe(false);
  });

  it('copies values in and out', async () => {
    const value = tokens(1);
    await store.set(KEY, 'tokens', value, { ifGeneration: 0 });
    value.access_token = 'mutated-after-set';
    const read = await store.get(KEY, 'tokens');
    expect(read?.value.access_token).toBe('at-1');
    if (read) read.value.access_token = 'mutated-after-get';
    const refused = await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 0 });
    if (!refused.ok && refused.current) refused.current.value.access_token = 'mutated-after-refusal';
    expect((await store.get(KEY, 'tokens'))?.value.access_token).toBe('at-1');
  });

  it('rejects malformed conditions instead of never matching', async () => {
    for (const ifGeneration of [-1, 1.5, Number.NaN]) {
      await expectStoreError(store.set(KEY, 'tokens', tokens(1), { ifGeneration }), 'store.invalid_argument');
      await expectStoreError(store.delete(KEY, 'tokens', { ifGeneration }), 'store.invalid_argument');
    }
    await expectStoreError(store.get(KEY, '../x' as 'tokens'), 'store.invalid_argument');
  });

  it('a lease is exclusive; the next holder gets it on release with a larger fencing token', async () => {
    const lease = leaseOf(store);
    const first = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    const second = track(lease(KEY, { ttlMs: 10_000, waitMs: 5_000 }));
    await delay(100);
    expect(second.settled()).toBe(false);
    // Another key is not blocked.
    const other = await lease('https://other.example/mcp', { ttlMs: 10_000, waitMs: 0 });
    await other.release();
    await first.release();
    await first.release();
    const next = await second.promise;
    expect(next.fencingToken).toBeGreaterThan(first.fencingToken);
    await next.release();
  });

  it('a lease wait times out with store.lease_timeout', async () => {
    const lease = leaseOf(store);
    const held = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    const started = Date.now();
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 150 }), 'store.lease_timeout');
    const elapsed = Date.now() - started;
    expect(elapsed).toBeGreaterThanOrEqual(140);
    expect(elapsed).toBeLessThan(3_000);
    await held.release();
  });

  it('a lease wait ends on abort, and a pre-aborted signal never acquires', async () => {
    const lease = leaseOf(store);
    const pre = new AbortController();
    pre.abort(new Error('gone'));
    const early = await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 1_000, signal: pre.signal }), 'store.aborted');
    expect(early.cause).toBe(pre.signal.reason);

    const held = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    const controller = new AbortController();
    const started = Date.now();
    const waiting = lease(KEY, { ttlMs: 10_000, waitMs: 10_000, signal: controller.signal });
    setTimeout(() => controller.abort(), 50);
    await expectStoreError(waiting, 'store.aborted');
    expect(Date.now() - started).toBeLessThan(2_000);
    await held.release();
    // The aborted waiter left nothing behind.
    const after = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    await after.release();
  });

  it("fencing: a lapsed holder's late write or delete is refused; unfenced writes go by generation", async () => {
    const lease = leaseOf(store);
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    const lapsed = await lease(KEY, { ttlMs: 100, waitMs: 0 });
    const successor = await lease(KEY, { ttlMs: 10_000, waitMs: 5_000 });
    const stale = { ifGeneration: 1, fencingToken: lapsed.fencingToken };
    expect(await store.set(KEY, 'tokens', tokens(2), stale)).toEqual({ ok: false, current: { value: tokens(1), generation: 1 } });
    expect(await store.delete(KEY, 'tokens', stale)).toBe(false);
    expect(await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 1, fencingToken: successor.fencingToken })).toEqual({ ok: true, generation: 2 });
    await successor.release();
    // The newest grant is remembered after its holder released: the lapsed token stays refused.
    expect(await store.set(KEY, 'tokens', tokens(3), { ifGeneration: 2, fencingToken: lapsed.fencingToken })).toMatchObject({ ok: false });
    expect(await store.set(KEY, 'tokens', tokens(3), { ifGeneration: 2 })).toEqual({ ok: true, generation: 3 });
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 3, fencingToken: successor.fencingToken })).toBe(true);
    // Fencing is per key: a lease on another key does not fence this one.
    const other = await lease('https://other.example/mcp', { ttlMs: 10_000, waitMs: 0 });
    expect(await store.set(KEY, 'tokens', tokens(4), { ifGeneration: 0, fencingToken: successor.fencingToken })).toMatchObject({ ok: true });
    await other.release();
    for (const fencingToken of [0, -1, 1.5, Number.NaN]) {
      await expectStoreError(store.set(KEY, 'tokens', tokens(5), { ifGeneration: 4, fencingToken }), 'store.invalid_argument');
      await expectStoreError(store.delete(KEY, 'tokens', { ifGeneration: 4, fencingToken }), 'store.invalid_argument');
    }
  });

  it('a lease lapses at its ttl; the lapsed holder cannot release its successor', async () => {
    const lease = leaseOf(store);
    const lapsed = await lease(KEY, { ttlMs: 100, waitMs: 0 });
    const successor = await lease(KEY, { ttlMs: 10_000, waitMs: 5_000 });
    expect(successor.fencingToken).toBeGreaterThan(lapsed.fencingToken);
    await lapsed.release();
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 50 }), 'store.lease_timeout');
    await successor.release();
  });

  it('renew: a short ttl renewed as a heartbeat is never taken by a waiter; release hands it on promptly', async () => {
    const lease = leaseOf(store);
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    const held = await lease(KEY, { ttlMs: 200, waitMs: 0 });
    const token = held.fencingToken;
    const renewals: boolean[] = [];
    const started = Date.now();
    const heartbeat = (async () => {
      while (Date.now() - started < 600) {
        await delay(50);
        renewals.push(await held.renew(200));
      }
    })();
    // Both waits cross the original ttl (and the second one several renewed ones).
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 300 }), 'store.lease_timeout');
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 250 }), 'store.lease_timeout');
    await heartbeat;
    expect(Date.now() - started).toBeGreaterThanOrEqual(600);
    expect(renewals.length).toBeGreaterThanOrEqual(4);
    expect(renewals.every(Boolean)).toBe(true);
    // The fencing token did not move: the holder's fenced write still goes through.
    expect(held.fencingToken).toBe(token);
    expect(await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 1, fencingToken: token })).toEqual({ ok: true, generation: 2 });

    // A renewal may also lengthen the lease; then only the release can let the waiter in early.
    expect(await held.renew(10_000)).toBe(true);
    const waiter = track(lease(KEY, { ttlMs: 10_000, waitMs: 5_000 }));
    await delay(300);
    expect(waiter.settled()).toBe(false);
    const releasedAt = Date.now();
    await held.release();
    const next = await waiter.promise;
    expect(Date.now() - releasedAt).toBeLessThan(1_500);
    expect(next.fencingToken).toBeGreaterThan(token);
    await next.release();
  });

  it("renew: a lapsed holder gets false and leaves its successor's lease untouched", async () => {
    const lease = leaseOf(store);
    const lapsed = await lease(KEY, { ttlMs: 100, waitMs: 0 });
    const token = lapsed.fencingToken;
    const successor = await lease(KEY, { ttlMs: 10_000, waitMs: 5_000 });
    // A short ttl: had it shortened the successor's lease, the third waiter below would get it.
    expect(await lapsed.renew(50)).toBe(false);
    expect(lapsed.fencingToken).toBe(token);
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 300 }), 'store.lease_timeout');
    expect(await successor.renew(10_000)).toBe(true);
    await successor.release();

    // Lapsed with nobody taking over: it cannot be brought back either.
    const alone = await lease(KEY, { ttlMs: 100, waitMs: 0 });
    await delay(250);
    expect(await alone.renew(10_000)).toBe(false);
    const fresh = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    expect(fresh.fencingToken).toBeGreaterThan(alone.fencingToken);
    await fresh.release();
  });

  it('renew after release is false and does not bring the lease back', async () => {
    const lease = leaseOf(store);
    const first = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    await first.release();
    expect(await first.renew(10_000)).toBe(false);
    // Nothing was re-taken: a new holder gets it at once, and the old holder still cannot renew.
    const second = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    expect(await first.renew(50)).toBe(false);
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 200 }), 'store.lease_timeout');
    await second.release();
  });

  it('renew rejects a bad ttlMs with store.invalid_argument and leaves the lease as it was', async () => {
    const lease = leaseOf(store);
    const held = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    for (const ttlMs of [0, -1, Number.NaN, Number.POSITIVE_INFINITY, '1000' as unknown as number, undefined as unknown as number]) {
      await expectStoreError(held.renew(ttlMs), 'store.invalid_argument');
    }
    await expectStoreError(lease(KEY, { ttlMs: 10_000, waitMs: 100 }), 'store.lease_timeout');
    expect(await held.renew(10_000)).toBe(true);
    await held.release();
  });
});

describe('memory store', () => {
  it('hands the lease to waiters in arrival order', async () => {
    const store = createMemoryStore();
    const lease = leaseOf(store);
    const order: number[] = [];
    const held = await lease(KEY, { ttlMs: 10_000, waitMs: 0 });
    const waiters = [1, 2, 3].map((n) =>
      lease(KEY, { ttlMs: 10_000, waitMs: 5_000 }).then(async (l) => {
        order.push(n);
        await delay(5);
        await l.release();
        return l.fencingToken;
      }),
    );
    await held.release();
    const fencing = await Promise.all(waiters);
    expect(order).toEqual([1, 2, 3]);
    expect(fencing).toEqual([...fencing].sort((a, b) => a - b));
  });

  it('snapshot is a copy of the records', async () => {
    const store = createMemoryStore();
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    const snap = store.snapshot() as { records: Record<string, { tokens: { value: TokenRecord; generation: number } }> };
    expect(snap.records[KEY]?.tokens.generation).toBe(1);
    const entry = snap.records[KEY];
    if (entry) entry.tokens.value.access_token = 'x';
    expect((await store.get(KEY, 'tokens'))?.value.access_token).toBe('at-1');
  });
});

describe('defaultStoreDirectory', () => {
  it.each([
    ['linux', { XDG_STATE_HOME: '/xdg/state' }, '/home/a', '/xdg/state/mcp-oauth'],
    ['linux', { XDG_STATE_HOME: 'relative/state' }, '/home/a', '/home/a/.local/state/mcp-oauth'],
    ['linux', {}, '/home/a', '/home/a/.local/state/mcp-oauth'],
    ['freebsd', {}, '/home/a', '/home/a/.local/state/mcp-oauth'],
    ['darwin', { XDG_STATE_HOME: '/ignored' }, '/Users/a', '/Users/a/Library/Application Support/mcp-oauth'],
    ['win32', { LOCALAPPDATA: 'C:\\Users\\a\\AppData\\Local' }, 'C:\\Users\\a', 'C:\\Users\\a\\AppData\\Local\\mcp-oauth'],
    ['win32', {}, 'C:\\Users\\a', 'C:\\Users\\a\\AppData\\Local\\mcp-oauth'],
  ] as const)('%s %j', (platform, env, home, expected) => {
    expect(defaultStoreDirectory(env, platform, home)).toBe(expected);
  });
});

describe('file store', () => {
  let root: string;
  let directory: string;

  beforeEach(async () => {
    root = await tempDir();
    directory = path.join(root, 'store');
  });
  afterEach(async () => {
    await rm(root, { recursive: true, force: true });
  });

  const recordFile = (key: string, kind = 'tokens') => path.join(directory, `${hashOf(key)}.${kind}.json`);

  it.skipIf(!posix)('creates the directory 0700 and files 0600', async () => {
    const store = createFileStore({ directory });
    expect(store.directory).toBe(directory);
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    expect((await stat(directory)).mode & 0o777).toBe(0o700);
    for (const name of await readdir(directory)) {
      expect((await stat(path.join(directory, name))).mode & 0o777).toBe(0o600);
    }
    const stored = JSON.parse(await readFile(recordFile(KEY), 'utf8')) as unknown;
    expect(stored).toEqual({ key: KEY, kind: 'tokens', generation: 1, value: tokens(1) });
  });

  it.skipIf(!posix)('tightens an existing looser directory to 0700', async () => {
    await mkdir(directory, { mode: 0o755 });
    await chmod(directory, 0o755);
    const store = createFileStore({ directory });
    await store.get(KEY, 'tokens');
    expect((await stat(directory)).mode & 0o777).toBe(0o700);
  });

  it('replaces atomically and leaves no temp or lock files', async () => {
    const store = createFileStore({ directory });
    let generation = 0;
    for (let n = 1; n <= 20; n += 1) {
      const result = await store.set(KEY, 'tokens', tokens(n), { ifGeneration: generation });
      if (!result.ok) throw new Error('unexpected refusal');
      generation = result.generation;
    }
    const lease = await leaseOf(store)(KEY, { ttlMs: 10_000, waitMs: 0 });
    await lease.release();
    expect((await readdir(directory)).sort()).toEqual(
      [`${hashOf(KEY)}.counters.json`, `${hashOf(KEY)}.tokens.json`].sort(),
    );
  });

  it('quarantines an unparseable record, reads it as absent, and does not reuse its generation', async () => {
    const store = createFileStore({ directory });
    await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 });
    await writeFile(recordFile(KEY), '{"key": "truncated', { mode: 0o600 });
    expect(await store.get(KEY, 'tokens')).toBeUndefined();
    const names = await readdir(directory);
    expect(names.some((name) => name.startsWith(`${hashOf(KEY)}.tokens.json.corrupt-`))).toBe(true);
    expect(names).not.toContain(`${hashOf(KEY)}.tokens.json`);
    expect(await store.set(KEY, 'tokens', tokens(2), { ifGeneration: 0 })).toEqual({ ok: true, generation: 2 });
  });

  it('quarantines a record of the wrong shape', async () => {
    const store = createFileStore({ directory });
    await store.get(KEY, 'tokens');
    await writeFile(recordFile(KEY), JSON.stringify({ key: KEY, kind: 'tokens', generation: '1', value: {} }));
    expect(await store.get(KEY, 'tokens')).toBeUndefined();
    expect((await readdir(directory)).some((name) => name.includes('.corrupt-'))).toBe(true);
  });

  it("guards against another key's record under this key's file name", async () => {
    const store = createFileStore({ directory });
    const other = 'https://other.example/mcp';
    await store.set(other, 'tokens', tokens(7), { ifGeneration: 0 });
    await copyFile(recordFile(other), recordFile(KEY));
    expect(await store.get(KEY, 'tokens')).toBeUndefined();
    expect((await readdir(directory)).some((name) => name.startsWith(`${hashOf(KEY)}.tokens.json.corrupt-`))).toBe(true);
    expect(await store.get(other, 'tokens')).toEqual({ value: tokens(7), generation: 1 });
    expect(await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 })).toMatchObject({ ok: true });
  });

  it('takes over a lease whose holder died on this host', async () => {
    const store = createFileStore({ directory });
    await store.get(KEY, 'tokens');
    const leaseFile = path.join(directory, `${hashOf(KEY)}.lease`);
    const script = `require('fs').writeFileSync(process.argv[1], JSON.stringify({ pid: process.pid, hostname: require('os').hostname(), nonce: 'dead', expiresAt: Date.now() + 3600000, fencingToken: 41 }), { mode: 0o600 })`;
    await execFileAsync(process.execPath, ['-e', script, leaseFile], { timeout: 10_000 });
    expect(JSON.parse(await readFile(leaseFile, 'utf8'))).toMatchObject({ nonce: 'dead' });
    const started = Date.now();
    const lease = await leaseOf(store)(KEY, { ttlMs: 10_000, waitMs: 2_000 });
    expect(Date.now() - started).toBeLessThan(1_000);
    expect(lease.fencingToken).toBeGreaterThan(41);
    await lease.release();
    expect((await readdir(directory)).some((name) => name.endsWith('.lease'))).toBe(false);
  });

  it('respects a live lease held on another host until it expires', async () => {
    const store = createFileStore({ directory });
    await store.get(KEY, 'tokens');
    const leaseFile = path.join(directory, `${hashOf(KEY)}.lease`);
    const foreign = { pid: 1, hostname: 'elsewhere.invalid', nonce: 'n', fencingToken: 3 };
    await writeFile(leaseFile, JSON.stringify({ ...foreign, expiresAt: Date.now() + 60_000 }));
    await expectStoreError(leaseOf(store)(KEY, { ttlMs: 10_000, waitMs: 100 }), 'store.lease_timeout');
    await writeFile(leaseFile, JSON.stringify({ ...foreign, expiresAt: Date.now() - 1 }));
    const lease = await leaseOf(store)(KEY, { ttlMs: 10_000, waitMs: 100 });
    await lease.release();
  });

  it('breaks a write lock left by a dead process or an old one from another host', async () => {
    const store = createFileStore({ directory });
    await store.get(KEY, 'tokens');
    const lockFile = path.join(directory, `${hashOf(KEY)}.lock`);
    const script = `require('fs').writeFileSync(process.argv[1], JSON.stringify({ pid: process.pid, hostname: require('os').hostname(), nonce: 'dead', createdAt: Date.now() }))`;
    await execFileAsync(process.execPath, ['-e', script, lockFile], { timeout: 10_000 });
    let started = Date.now();
    expect(await store.set(KEY, 'tokens', tokens(1), { ifGeneration: 0 })).toMatchObject({ ok: true });
    expect(Date.now() - started).toBeLessThan(1_000);

    await writeFile(
      lockFile,
      JSON.stringify({ pid: 1, hostname: 'elsewhere.invalid', nonce: 'old', createdAt: Date.now() - 60_000 }),
    );
    started = Date.now();
    expect(await store.delete(KEY, 'tokens', { ifGeneration: 1 })).toBe(true);
    expect(Date.now() - started).toBeLessThan(1_000);
    expect((await readdir(directory)).some((name) => name.endsWith('.lock') || name.includes('.removing-'))).toBe(false);
  });

  it('turns filesystem failures into store.io without record values in the message', async () => {
    const blocker = path.join(root, 'not-a-directory');
    await writeFile(blocker, 'x');
    const store = createFileStore({ directory: blocker });
    const secret = { ...tokens(1), access_token: 'secret-access-token' };
    const error = await expectStoreError(store.set(KEY, 'tokens', secret, { ifGeneration: 0 }), 'store.io');
    expect(error.cause).toBeInstanceOf(Error);
    expect(error.message).not.toContain('secret-access-token');
  });

  it(
    'serialises four processes: 100 leased read-increment-writes, none refused',
    async () => {
      const store = createFileStore({ directory });
      await store.get(KEY, 'tokens');
      const worker = path.join(root, 'worker.mts');
      await writeFile(
        worker,
        `
import { createFileStore } from ${JSON.stringify(pathToFileURL(fileStoreModule).href)};
const [directory, key, iterations] = process.argv.slice(2);
const store = createFileStore({ directory });
const fencing = [];
let refused = 0;
for (let i = 0; i < Number(iterations); i += 1) {
  const lease = await store.lease(key, { ttlMs: 30_000, waitMs: 30_000 });
  fencing.push(lease.fencingToken);
  try {
    const current = await store.get(key, 'tokens');
    const n = (current?.value.obtained_at ?? 0) + 1;
    const result = await store.set(
      key,
      'tokens',
      { access_token: 'at-' + n, token_type: 'bearer', obtained_at: n, issuer: 'https://as.example.com', resource: key },
      { ifGeneration: current?.generation ?? 0 },
    );
    if (!result.ok) refused += 1;
  } finally {
    await lease.release();
  }
}
process.stdout.write(JSON.stringify({ refused, fencing }));
`,
      );
      const runs = await Promise.all(
        [1, 2, 3, 4].map(() =>
          execFileAsync(process.execPath, ['--import', 'tsx', worker, directory, KEY, '25'], {
            cwd: projectRoot,
            timeout: 60_000,
          }),
        ),
      );
      const reports = runs.map((run) => JSON.parse(run.stdout) as { refused: number; fencing: number[] });
      expect(reports.map((r) => r.refused)).toEqual([0, 0, 0, 0]);
      for (const { fencing } of reports) expect(fencing).toEqual([...fencing].sort((a, b) => a - b));
      const allFencing = reports.flatMap((r) => r.fencing);
      expect(new Set(allFencing).size).toBe(100);
      const final = await store.get(KEY, 'tokens');
      expect(final?.value.obtained_at).toBe(100);
      expect(final?.generation).toBe(100);
      expect((await readdir(directory)).sort()).toEqual(
        [`${hashOf(KEY)}.counters.json`, `${hashOf(KEY)}.tokens.json`].sort(),
      );
    },
    90_000,
  );
});
