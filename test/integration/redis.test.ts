/**
 * The Redis store across real processes: a real redis-server on loopback, the demo authorization
 * server (rotating refresh tokens with reuse detection) and MCP server in this process, and a fleet
 * of worker processes sharing one identity. Counts, not times: refreshes and invalid_grant as the
 * authorization server saw them, statuses and typed errors as the workers saw them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createServer, type IncomingMessage } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createClient } from 'redis';
import { describe, expect, it } from 'vitest';
import { createOAuthSession } from '../../src/adapters/session.js';
import { createRedisStore } from '../../src/adapters/stores/redis.js';
import { OAuthConfigError, OAuthStoreError } from '../../src/machines/errors.js';
import type { CredentialStore, TokenRecord } from '../../src/machines/store.js';
import { headlessOpener } from '../support/deployment.js';
import { deploy, freePort, listTools, onCleanup } from '../support/harness.js';
import type { ResultMessage, RunMessage } from '../support/redisFleetWorker.js';
import { redisSkipReason, startRedisServer, type RedisServer } from '../support/redisServer.js';

const projectRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const workerScript = path.join(projectRoot, 'test/support/redisFleetWorker.ts');

const WORKERS = 8;
const REQUESTS = 50;
const HOUR = 3600_000;
const WORKER_START_MS = 60_000;
const ROUND_MS = 60_000;
/**
 * The fleet's lease ttl is 3 × oauthRequestMs = 9 s, renewed while its holder lives; a takeover
 * comes one ttl after the holder dies (before lease renewal the ttl covered a whole flow: 31 s).
 */
const TAKEOVER_MS = 25_000;
const TEST_MS = 300_000;

function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 32);
}

function tokens(n: number): TokenRecord {
  return { access_token: `secret-at-${n}`, token_type: 'bearer', refresh_token: `secret-rt-${n}`, obtained_at: n, issuer: 'https://as.example', resource: 'https://mcp.example/mcp' };
}

function deadline<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: no answer within ${ms} ms`)), ms);
  });
  return Promise.race([promise, late]).finally(() => clearTimeout(timer));
}

async function storeError(promise: Promise<unknown>): Promise<OAuthStoreError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OAuthStoreError);
  return error as OAuthStoreError;
}

/** A short-lived inspection connection, so a restarted server never leaves a client behind. */
function inspector(url: string) {
  const client = createClient({ url, socket: { connectTimeout: 2_000, reconnectStrategy: false } });
  client.on('error', () => undefined);
  return client;
}

async function withRedis<T>(url: string, use: (client: ReturnType<typeof inspector>) => Promise<T>): Promise<T> {
  const client = inspector(url);
  await deadline(client.connect(), 5_000, 'inspection connect');
  try {
    return await use(client);
  } finally {
    client.destroy();
  }
}

// ------------------------------------------------------------------ the token endpoint, in between

interface HeldRefresh {
  /** Settles when the caller's connection is gone (its process was killed). */
  closed: Promise<void>;
}

interface TokenProxy {
  url: string;
  /** Refresh requests that reached the authorization server, with the lease owner at that moment. */
  forwardedRefreshes: Array<{ leaseOwner: string | null }>;
  /** The next refresh request is held before the authorization server sees it, and never forwarded. */
  holdNextRefresh(): Promise<HeldRefresh>;
}

/**
 * Sits in front of the authorization server's token endpoint (advertised through its metadata),
 * so a test can stall one refresh before the server has rotated anything.
 */
async function startTokenProxy(target: string, leaseOwner: () => Promise<string | null>): Promise<TokenProxy> {
  let hold: ((held: HeldRefresh) => void) | undefined;
  const forwardedRefreshes: TokenProxy['forwardedRefreshes'] = [];
  const readBody = (req: IncomingMessage): Promise<string> =>
    new Promise((resolve, reject) => {
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
      req.on('error', reject);
    });
  const server = createServer((req, res) => {
    void (async () => {
      const body = await readBody(req);
      const isRefresh = new URLSearchParams(body).get('grant_type') === 'refresh_token';
      if (isRefresh && hold) {
        const release = hold;
        hold = undefined;
        release({ closed: new Promise((resolve) => res.once('close', () => resolve())) });
        return;
      }
      // Looked up while the request is forwarded, and answered only after: the sender still holds the lease.
      const owner = isRefresh ? leaseOwner().catch(() => null) : undefined;
      const headers: Record<string, string> = { 'content-type': req.headers['content-type'] ?? '' };
      if (req.headers.authorization) headers.authorization = req.headers.authorization;
      const answer = await fetch(`${target}/token`, { method: 'POST', headers, body, signal: AbortSignal.timeout(10_000) });
      const out: Record<string, string> = {};
      for (const name of ['content-type', 'cache-control', 'pragma', 'www-authenticate']) {
        const value = answer.headers.get(name);
        if (value !== null) out[name] = value;
      }
      const text = await answer.text();
      if (owner) forwardedRefreshes.push({ leaseOwner: await owner });
      res.writeHead(answer.status, out);
      res.end(text);
    })().catch(() => res.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    forwardedRefreshes,
    holdNextRefresh: () => new Promise((resolve) => (hold = resolve)),
  };
}

// ------------------------------------------------------------------ the fleet

interface FleetWorker {
  child: ChildProcess;
  pid: number;
  exited: Promise<void>;
  stderr(): string;
}

function startWorker(redisUrl: string, mcpUrl: string): Promise<FleetWorker> {
  const child = spawn(process.execPath, ['--import', 'tsx', workerScript, redisUrl, mcpUrl], {
    cwd: projectRoot,
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
  });
  let stderr = '';
  child.stderr?.on('data', (chunk: Buffer) => {
    stderr = (stderr + chunk.toString('utf8')).slice(-4_000);
  });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  onCleanup(async () => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
    await deadline(exited, 10_000, 'worker exit');
  });
  const worker: FleetWorker = { child, pid: child.pid ?? -1, exited, stderr: () => stderr };
  return deadline(
    new Promise<FleetWorker>((resolve, reject) => {
      child.once('message', (message: { type?: string }) => (message.type === 'ready' ? resolve(worker) : reject(new Error('unexpected first message'))));
      child.once('exit', (code) => reject(new Error(`worker exited (${code}) before it was ready:\n${stderr}`)));
    }),
    WORKER_START_MS,
    'worker start',
  );
}

let roundCounter = 0;

function runRound(worker: FleetWorker, offsetMs: number, requests = REQUESTS): Promise<ResultMessage> {
  const round = ++roundCounter;
  return deadline(
    new Promise<ResultMessage>((resolve, reject) => {
      const onMessage = (message: ResultMessage): void => {
        if (message.type !== 'result' || message.round !== round) return;
        worker.child.off('message', onMessage);
        resolve(message);
      };
      worker.child.on('message', onMessage);
      worker.child.once('exit', () => reject(new Error(`worker ${worker.pid} exited during round ${round}`)));
      const run: RunMessage = { type: 'run', round, requests, offsetMs };
      worker.child.send(run);
    }),
    ROUND_MS,
    `round ${round} of worker ${worker.pid}`,
  );
}

interface Totals {
  statuses: Record<string, number>;
  errors: Record<string, number>;
}

function total(results: ResultMessage[]): Totals {
  const statuses: Record<string, number> = {};
  const errors: Record<string, number> = {};
  for (const result of results) {
    for (const [status, n] of Object.entries(result.statuses)) statuses[status] = (statuses[status] ?? 0) + n;
    for (const [error, n] of Object.entries(result.errors)) errors[error] = (errors[error] ?? 0) + n;
  }
  return { statuses, errors };
}

interface Scenario {
  redis: RedisServer;
  d: Awaited<ReturnType<typeof deploy>>;
  proxy: TokenProxy;
  workers: FleetWorker[];
  offsetMs: number;
  round(workers?: FleetWorker[]): Promise<Totals>;
  /** What the authorization server saw since the last call: refreshes, invalid_grant, sign-ins. */
  takeCounts(): { refreshes: number; invalidGrant: number; authorizations: number };
  storedTokens(): Promise<{ generation: number } | undefined>;
  leaseOwner(): Promise<string | null>;
}

/**
 * Redis, the two demo servers with a clock the test moves, one sign-in from this process (the
 * only one the fleet gets), then the workers, which load that identity from Redis.
 */
async function startScenario(): Promise<Scenario> {
  const redis = await startRedisServer();
  onCleanup(() => redis.close());
  let offsetMs = 0;
  const clock = () => Date.now() + offsetMs;
  const d = await deploy({ rotateRefreshTokens: true, clock });
  const leaseKey = `mcp-oauth:{${hashKey(d.mcp.url)}}:lease`;
  // Connected once, before anything is timed: a first connection can take seconds on a loaded machine.
  const inspection = createClient({ url: redis.url, socket: { connectTimeout: 2_000 } });
  inspection.on('error', () => undefined);
  await deadline(inspection.connect(), 10_000, 'inspection connect');
  onCleanup(() => inspection.destroy());
  const leaseOwner = () => deadline(inspection.get(leaseKey), 5_000, 'lease owner');
  const proxy = await startTokenProxy(d.as.url, leaseOwner);
  d.as.options.metadataOverrides = { token_endpoint: `${proxy.url}/token` };

  const store = createRedisStore({ url: redis.url });
  const first = createOAuthSession({ serverUrl: d.mcp.url, store, clock, openAuthorizationUrl: headlessOpener() });
  expect(await listTools(first, d.mcp.url)).toBe(200);
  await first.close();
  await store.close();
  expect(d.as.counts.authorize).toBe(1);
  d.resetCounts();

  const workers = await Promise.all(Array.from({ length: WORKERS }, () => startWorker(redis.url, d.mcp.url)));
  // One request each first, so no worker meets its first expiry while still loading code.
  expect(total(await Promise.all(workers.map((worker) => runRound(worker, offsetMs, 1))))).toEqual({ statuses: { '200': WORKERS }, errors: {} });
  const scenario: Scenario = {
    redis,
    d,
    proxy,
    workers,
    get offsetMs() {
      return offsetMs;
    },
    set offsetMs(value: number) {
      offsetMs = value;
    },
    async round(among = workers) {
      return total(await Promise.all(among.map((worker) => runRound(worker, offsetMs))));
    },
    takeCounts() {
      const counts = {
        refreshes: d.as.counts['token:refresh_token'] ?? 0,
        invalidGrant: d.as.counts['error:invalid_grant'] ?? 0,
        authorizations: d.as.counts.authorize ?? 0,
      };
      d.resetCounts();
      return counts;
    },
    async storedTokens() {
      const reader = createRedisStore({ url: redis.url });
      try {
        return await reader.get(d.mcp.url, 'tokens');
      } finally {
        await reader.close();
      }
    },
    leaseOwner,
  };
  return scenario;
}

const ok = (n: number): Totals => ({ statuses: { '200': n }, errors: {} });
const clean = { refreshes: 0, invalidGrant: 0, authorizations: 0 };
const oneRefresh = { refreshes: 1, invalidGrant: 0, authorizations: 0 };

// ------------------------------------------------------------------ tests

describe.skipIf(redisSkipReason !== undefined)('Redis store: one identity for a fleet of processes', () => {
  it(`${WORKERS} workers × ${REQUESTS} concurrent requests through two expiries: one refresh each, no invalid_grant, no failure`, async () => {
    const s = await startScenario();
    const all = WORKERS * REQUESTS;

    expect(await s.round()).toEqual(ok(all));
    expect(s.takeCounts()).toEqual(clean);

    for (const expiry of [1, 2]) {
      s.offsetMs = expiry * 2 * HOUR;
      const totals = await s.round();
      const counts = s.takeCounts();
      process.stdout.write(`fleet expiry ${expiry}: ${JSON.stringify({ ...counts, ...totals })}\n`);
      expect(totals).toEqual(ok(all));
      expect(counts).toEqual(oneRefresh);
    }
    expect((await s.storedTokens())?.generation).toBe(3);
  }, TEST_MS);

  it('a lease holder killed mid-refresh: another takes over once its lease lapses, and nothing is lost', async () => {
    const s = await startScenario();
    const held = s.proxy.holdNextRefresh();
    s.offsetMs = 2 * HOUR;
    const rounds = s.workers.map((worker) => runRound(worker, s.offsetMs).catch((error: unknown) => error as Error));

    // The refresh is stalled before the authorization server sees it; its sender holds the lease.
    const stalled = await deadline(held, 30_000, 'the first refresh');
    const owner = await s.leaseOwner();
    const victim = s.workers.find((worker) => worker.pid === Number(owner?.split(' ')[1]));
    expect(victim, `lease owner ${owner}`).toBeDefined();
    victim?.child.kill('SIGKILL');
    await deadline(Promise.all([victim?.exited, stalled.closed]), 10_000, 'the kill');

    const survivors = s.workers.filter((worker) => worker !== victim);
    const results = await deadline(Promise.all(rounds), TAKEOVER_MS + ROUND_MS, 'the takeover');
    const survivorResults = results.filter((_, index) => s.workers[index] !== victim) as ResultMessage[];
    const totals = total(survivorResults);
    const counts = s.takeCounts();
    process.stdout.write(`fleet takeover: ${JSON.stringify({ ...counts, ...totals })}\n`);
    expect(totals).toEqual(ok(survivors.length * REQUESTS));
    expect(counts).toEqual(oneRefresh);
    // The one refresh that reached the server was sent under a survivor's lease, after the victim's lapsed.
    expect(s.proxy.forwardedRefreshes).toHaveLength(1);
    const takeoverPid = Number(s.proxy.forwardedRefreshes[0]?.leaseOwner?.split(' ')[1]);
    expect(survivors.map((worker) => worker.pid)).toContain(takeoverPid);

    // What the takeover stored serves everybody: no refresh, no sign-in, no failure.
    expect(await s.round(survivors)).toEqual(ok(survivors.length * REQUESTS));
    expect(s.takeCounts()).toEqual(clean);
    expect((await s.storedTokens())?.generation).toBe(2);
  }, TEST_MS);

  it('Redis restarted mid-run: valid tokens keep working, expiry fails typed while it is down, one refresh after', async () => {
    const s = await startScenario();
    const all = WORKERS * REQUESTS;
    s.offsetMs = 2 * HOUR;
    expect(await s.round()).toEqual(ok(all));
    expect(s.takeCounts()).toEqual(oneRefresh);

    await s.redis.stop({ save: true });
    // Tokens still valid: the hot path never touches the store.
    expect(await s.round()).toEqual(ok(all));
    expect(s.takeCounts()).toEqual(clean);

    // Expired with Redis down: no lease, so no refresh; every request gets the store's typed error.
    s.offsetMs = 4 * HOUR;
    const down = await s.round();
    const downCounts = s.takeCounts();
    process.stdout.write(`fleet redis down: ${JSON.stringify({ ...downCounts, ...down })}\n`);
    expect(down).toEqual({ statuses: {}, errors: { 'OAuthStoreError:store.unavailable': all } });
    expect(downCounts).toEqual(clean);

    await s.redis.start();
    const after = await s.round();
    const afterCounts = s.takeCounts();
    process.stdout.write(`fleet redis back: ${JSON.stringify({ ...afterCounts, ...after })}\n`);
    expect(after).toEqual(ok(all));
    expect(afterCounts).toEqual(oneRefresh);
    expect((await s.storedTokens())?.generation).toBe(3);
  }, TEST_MS);
});

describe.skipIf(redisSkipReason !== undefined)('Redis store: connection and records', () => {
  it('an unreachable Redis is a prompt store.unavailable on every call, with no record value in the message', async () => {
    const port = await freePort();
    const store = createRedisStore({ url: `redis://127.0.0.1:${port}`, connectTimeoutMs: 300, commandTimeoutMs: 300 });
    onCleanup(() => store.close());
    const calls: Array<Promise<unknown>> = [
      store.get('k', 'tokens'),
      store.set('k', 'tokens', tokens(1), { ifGeneration: 0 }),
      store.delete('k', 'tokens', { ifGeneration: 1 }),
      store.lease('k', { ttlMs: 1_000, waitMs: 1_000 }),
    ];
    for (const call of calls) {
      const error = await deadline(storeError(call), 5_000, 'an unreachable store call');
      expect(error.code).toBe('store.unavailable');
      expect(error.message).not.toContain('secret');
      expect(JSON.stringify(error)).not.toContain('secret');
    }
  });

  it("works on the caller's own node-redis client and leaves it open on close", async () => {
    const redis = await startRedisServer();
    onCleanup(() => redis.close());
    const client = createClient({ url: redis.url });
    client.on('error', () => undefined);
    await client.connect();
    onCleanup(() => client.destroy());
    const store = createRedisStore({ client, keyPrefix: 'own' });
    expect(await store.set('k', 'tokens', tokens(1), { ifGeneration: 0 })).toEqual({ ok: true, generation: 1 });
    const lease = await store.lease('k', { ttlMs: 10_000, waitMs: 0 });
    const waiting = store.lease('k', { ttlMs: 10_000, waitMs: 5_000 });
    await lease.release();
    const next = await waiting;
    expect(next.fencingToken).toBeGreaterThan(lease.fencingToken);
    await next.release();
    expect((await client.keys('own:*')).sort()).toEqual([`own:{${hashKey('k')}}:fencing`, `own:{${hashKey('k')}}:generations`, `own:{${hashKey('k')}}:tokens`]);
    await store.close();
    expect(client.isReady).toBe(true);
    await expect(store.get('k', 'tokens')).rejects.toMatchObject({ code: 'store.closed' });
  });

  it('moves aside a record it did not write, reads it as absent and does not reuse its generation', async () => {
    const redis = await startRedisServer();
    onCleanup(() => redis.close());
    const store = createRedisStore({ url: redis.url });
    onCleanup(() => store.close());
    await store.set('k', 'tokens', tokens(1), { ifGeneration: 0 });
    const record = `mcp-oauth:{${hashKey('k')}}:tokens`;
    await withRedis(redis.url, (client) => client.hSet(record, 'value', '{"truncated'));
    expect(await store.get('k', 'tokens')).toBeUndefined();
    const keys = await withRedis(redis.url, (client) => client.keys('mcp-oauth:*'));
    expect(keys.some((key) => key.startsWith(`${record}:corrupt:`))).toBe(true);
    expect(await store.set('k', 'tokens', tokens(2), { ifGeneration: 0 })).toEqual({ ok: true, generation: 2 });
  });

  it('the session fences every write it makes under the lease with that lease\'s token', async () => {
    const redis = await startRedisServer();
    onCleanup(() => redis.close());
    const inner = createRedisStore({ url: redis.url });
    onCleanup(() => inner.close());
    const granted: number[] = [];
    const writes: Array<{ kind: string; fencingToken: number | undefined }> = [];
    const spy: CredentialStore = {
      get: (key, kind) => inner.get(key, kind),
      set: (key, kind, value, condition) => {
        writes.push({ kind, fencingToken: condition.fencingToken });
        return inner.set(key, kind, value, condition);
      },
      delete: (key, kind, condition) => {
        writes.push({ kind: `delete ${kind}`, fencingToken: condition.fencingToken });
        return inner.delete(key, kind, condition);
      },
      lease: async (key, options) => {
        const lease = await inner.lease(key, options);
        granted.push(lease.fencingToken);
        return lease;
      },
    };
    let now = Date.now();
    const d = await deploy({ rotateRefreshTokens: true, clock: () => now });
    const session = createOAuthSession({ serverUrl: d.mcp.url, store: spy, clock: () => now, openAuthorizationUrl: headlessOpener() });
    onCleanup(() => session.close());
    expect(await listTools(session, d.mcp.url)).toBe(200);
    now += 2 * HOUR;
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(granted).toHaveLength(2);
    expect(writes.map((w) => w.kind).sort()).toEqual(['client', 'discovery', 'tokens', 'tokens']);
    expect(writes.filter((w) => w.kind === 'tokens').map((w) => w.fencingToken)).toEqual(granted);
    for (const write of writes) expect(granted).toContain(write.fencingToken);
  });

  it('refuses contradictory options before connecting', () => {
    expect(() => createRedisStore({})).toThrow(OAuthConfigError);
    expect(() => createRedisStore({ url: 'http://127.0.0.1:6379' })).toThrow(OAuthConfigError);
    expect(() => createRedisStore({ url: 'redis://127.0.0.1:6379', keyPrefix: '' })).toThrow(OAuthConfigError);
    expect(() => createRedisStore({ url: 'redis://127.0.0.1:6379', commandTimeoutMs: 0 })).toThrow(OAuthConfigError);
  });
});

describe.skipIf(redisSkipReason !== undefined)('Redis store: lease renewal', () => {
  const leaseKey = (key: string) => `mcp-oauth:{${hashKey(key)}}:lease`;

  it('renew is compare-and-extend: it moves the PTTL of its own lease only, never revives or touches a successor', async () => {
    const redis = await startRedisServer();
    onCleanup(() => redis.close());
    // Two stores, two sets of connections: two processes as far as Redis can tell.
    const first = createRedisStore({ url: redis.url });
    const second = createRedisStore({ url: redis.url });
    onCleanup(() => first.close());
    onCleanup(() => second.close());
    const inspect = inspector(redis.url);
    await deadline(inspect.connect(), 5_000, 'inspection connect');
    onCleanup(() => inspect.destroy());

    const held = await first.lease('k', { ttlMs: 300, waitMs: 0 });
    const owner = await inspect.get(leaseKey('k'));
    expect(await held.renew(60_000)).toBe(true);
    expect(await inspect.pTTL(leaseKey('k'))).toBeGreaterThan(30_000);
    expect(await inspect.get(leaseKey('k'))).toBe(owner);
    expect(await held.renew(300)).toBe(true);
    expect(await inspect.pTTL(leaseKey('k'))).toBeLessThanOrEqual(300);

    // Lapsed: Redis expired the key, and a late renew does not bring it back.
    await new Promise((resolve) => setTimeout(resolve, 450));
    expect(await held.renew(60_000)).toBe(false);
    expect(await inspect.exists(leaseKey('k'))).toBe(0);

    const successor = await second.lease('k', { ttlMs: 60_000, waitMs: 0 });
    expect(successor.fencingToken).toBeGreaterThan(held.fencingToken);
    const successorOwner = await inspect.get(leaseKey('k'));
    expect(successorOwner).not.toBe(owner);
    expect(await held.renew(50)).toBe(false);
    expect(await inspect.get(leaseKey('k'))).toBe(successorOwner);
    expect(await inspect.pTTL(leaseKey('k'))).toBeGreaterThan(50_000);
    await successor.release();
    expect(await successor.renew(60_000)).toBe(false);
    expect(await inspect.exists(leaseKey('k'))).toBe(0);
  });

  it('a crashed holder on a heartbeat is outwaited after one short ttl; waiters re-check on every wake meanwhile', async () => {
    const redis = await startRedisServer();
    onCleanup(() => redis.close());
    const holderStore = createRedisStore({ url: redis.url });
    const waiterStore = createRedisStore({ url: redis.url });
    onCleanup(() => holderStore.close());
    onCleanup(() => waiterStore.close());

    const TTL = 300;
    const held = await holderStore.lease('k', { ttlMs: TTL, waitMs: 0 });
    let granted = false;
    let grantedAt = 0;
    const waiting = waiterStore.lease('k', { ttlMs: 10_000, waitMs: 10_000 }).then((lease) => {
      granted = true;
      grantedAt = Date.now();
      return lease;
    });
    // Three ttls of heartbeats: the waiter's expiry timer fires at each old expiry, finds the
    // lease renewed, and must go back to sleep rather than take it.
    const started = Date.now();
    let lastRenewStartedAt = 0;
    while (Date.now() - started < 3 * TTL) {
      await new Promise((resolve) => setTimeout(resolve, 100));
      lastRenewStartedAt = Date.now();
      expect(await held.renew(TTL)).toBe(true);
      expect(granted).toBe(false);
    }
    // The holder dies: no release, no publish, no more renewals.
    await holderStore.close();
    const next = await deadline(waiting, 5_000, 'the takeover');
    expect(next.fencingToken).toBeGreaterThan(held.fencingToken);
    // Not before the last renewed expiry, and promptly after it (the wait allowed 10 s).
    expect(grantedAt - lastRenewStartedAt).toBeGreaterThanOrEqual(TTL - 20);
    expect(grantedAt - lastRenewStartedAt).toBeLessThan(TTL + 1_000);
    await next.release();
  });
});

if (redisSkipReason !== undefined) {
  describe.skip(`Redis store (${redisSkipReason})`, () => {
    it('needs redis-server', () => undefined);
  });
}
