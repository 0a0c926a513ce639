/**
 * File credential store: one JSON file per (key, kind) in a private directory, shared safely by
 * every process on the host (and by hosts sharing the directory, within the limits of their
 * clocks). Node has no portable advisory locking, so exclusion is built from O_EXCL creation and
 * atomic rename, the two primitives every local filesystem gives us.
 *
 * Layout, for h = first 32 hex chars of sha256(key):
 *   h.<kind>.json      the record: { key, kind, generation, value }
 *   h.counters.json    last generation per kind and last fencing token, kept across deletes
 *   h.lock             short write lock around every read-compare-write
 *   h.lease            the optional lease of the contract: holder, expiry (a renewal rewrites it), token
 */
import { createHash, randomBytes } from 'node:crypto';
import type { FileHandle } from 'node:fs/promises';
import * as fs from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';

import { OAuthStoreError } from '../../machines/errors.js';
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
import { KINDS, abortedError, checkCondition, checkKey, checkKeyAndKind, checkLeaseOptions, checkRenewTtl, isGeneration, leaseTimeoutError } from './contract.js';

const APP_DIRECTORY = 'mcp-oauth';

/** A write lock is held for a few file operations; one this old belongs to a stuck or dead writer. */
const LOCK_STALE_MS = 10_000;
/** Longer than LOCK_STALE_MS so that a writer that died holding the lock is always outwaited. */
const LOCK_WAIT_MS = 15_000;
const LOCK_BACKOFF_MIN_MS = 2;
const LOCK_BACKOFF_MAX_MS = 50;
const LEASE_BACKOFF_MIN_MS = 10;
const LEASE_BACKOFF_MAX_MS = 200;
/** Even `waitMs: 0` gets this long to pass a write lock another process holds for a moment. */
const LEASE_MIN_LOCK_WAIT_MS = 1_000;

/**
 * The platform's place for per-user state: `$XDG_STATE_HOME/mcp-oauth` or
 * `~/.local/state/mcp-oauth` on Linux and other Unixes, `~/Library/Application Support/mcp-oauth`
 * on macOS, `%LOCALAPPDATA%\mcp-oauth` on Windows. `$MCP_OAUTH_STORE_DIR` overrides all of them.
 */
export function defaultStoreDirectory(
  env: NodeJS.ProcessEnv = process.env,
  platform: NodeJS.Platform = process.platform,
  home: string = os.homedir(),
): string {
  // An explicit choice wins (the CLI's tests, containers, several identities side by side).
  const explicit = nonEmpty(env.MCP_OAUTH_STORE_DIR);
  if (explicit !== undefined) return path.resolve(explicit);
  if (platform === 'win32') {
    const local = nonEmpty(env.LOCALAPPDATA) ?? path.win32.join(home, 'AppData', 'Local');
    return path.win32.join(local, APP_DIRECTORY);
  }
  if (platform === 'darwin') {
    return path.posix.join(home, 'Library', 'Application Support', APP_DIRECTORY);
  }
  const xdg = nonEmpty(env.XDG_STATE_HOME);
  // The XDG spec says relative values are invalid and must be ignored.
  if (xdg !== undefined && path.posix.isAbsolute(xdg)) return path.posix.join(xdg, APP_DIRECTORY);
  return path.posix.join(home, '.local', 'state', APP_DIRECTORY);
}

export function createFileStore(options: { directory?: string } = {}): CredentialStore & { directory: string } {
  const directory = path.resolve(options.directory ?? defaultStoreDirectory());
  const files = (key: string) => {
    const base = path.join(directory, hashKey(key));
    return {
      record: (kind: RecordKind) => `${base}.${kind}.json`,
      counters: `${base}.counters.json`,
      lock: `${base}.lock`,
      lease: `${base}.lease`,
    };
  };

  let ready: Promise<void> | undefined;
  const ensureDirectory = (): Promise<void> => {
    ready ??= prepareDirectory(directory).catch((error: unknown) => {
      // Let a later call retry, e.g. once the user has fixed the permissions.
      ready = undefined;
      throw error;
    });
    return ready;
  };

  async function withWriteLock<T>(key: string, deadline: number, fn: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    const lockFile = files(key).lock;
    const nonce = await acquireLock(lockFile, deadline, signal);
    try {
      return await fn();
    } finally {
      await removeIf(lockFile, (raw) => parseOwner(raw)?.nonce === nonce);
    }
  }

  /** Under the write lock: quarantines what cannot be trusted, so only a lock holder renames. */
  async function readTrusted<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined> {
    const file = files(key).record(kind);
    const outcome = await readRecord<RecordTypes[K]>(file, key, kind);
    if (outcome.state === 'invalid') {
      await quarantine(file);
      return undefined;
    }
    return outcome.state === 'ok' ? outcome.record : undefined;
  }

  async function readCounters(key: string): Promise<Counters> {
    const file = files(key).counters;
    const raw = await readText(file);
    if (raw === undefined) return emptyCounters(key);
    const parsed = parseJson(raw);
    if (isCounters(parsed, key)) return parsed;
    await quarantine(file);
    return emptyCounters(key);
  }

  return {
    directory,

    async get<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined> {
      checkKeyAndKind(key, kind);
      await ensureDirectory();
      const outcome = await readRecord<RecordTypes[K]>(files(key).record(kind), key, kind);
      if (outcome.state === 'ok') return outcome.record;
      if (outcome.state === 'absent') return undefined;
      // Renaming without the lock could move aside a good file a writer has just put in place.
      return withWriteLock(key, Date.now() + LOCK_WAIT_MS, () => readTrusted(key, kind));
    },

    async set<K extends RecordKind>(
      key: string,
      kind: K,
      value: RecordTypes[K],
      condition: WriteCondition,
    ): Promise<WriteResult<RecordTypes[K]>> {
      checkKeyAndKind(key, kind);
      checkCondition(condition);
      if (!isObject(value)) {
        throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record value must be an object' });
      }
      // Serialised before taking the lock: a value JSON cannot hold fails without touching disk.
      const serialisedValue = JSON.stringify(value);
      if (serialisedValue === undefined) {
        throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record value is not JSON-serialisable' });
      }
      await ensureDirectory();
      return withWriteLock(key, Date.now() + LOCK_WAIT_MS, async () => {
        const current = await readTrusted<K>(key, kind);
        if ((current?.generation ?? 0) !== condition.ifGeneration) return { ok: false, current };
        const counters = await readCounters(key);
        if (fencedOut(condition, counters)) return { ok: false, current };
        // The max guards against a lost or quarantined counters file handing out a used number.
        const generation = Math.max(counters.generations[kind] ?? 0, current?.generation ?? 0) + 1;
        counters.generations[kind] = generation;
        // Counters first: a crash between the two renames leaves a gap, never a reused number.
        await writeAtomic(files(key).counters, JSON.stringify(counters));
        await writeAtomic(
          files(key).record(kind),
          `{"key":${JSON.stringify(key)},"kind":${JSON.stringify(kind)},"generation":${generation},"value":${serialisedValue}}`,
        );
        await syncDirectory(directory);
        return { ok: true, generation };
      });
    },

    async delete(key: string, kind: RecordKind, condition: WriteCondition): Promise<boolean> {
      checkKeyAndKind(key, kind);
      checkCondition(condition);
      await ensureDirectory();
      return withWriteLock(key, Date.now() + LOCK_WAIT_MS, async () => {
        const current = await readTrusted(key, kind);
        if (!current || current.generation !== condition.ifGeneration) return false;
        const counters = await readCounters(key);
        if (fencedOut(condition, counters)) return false;
        if ((counters.generations[kind] ?? 0) < current.generation) {
          // The record is about to be the only other witness of this generation.
          counters.generations[kind] = current.generation;
          await writeAtomic(files(key).counters, JSON.stringify(counters));
        }
        await unlinkIfPresent(files(key).record(kind));
        await syncDirectory(directory);
        return true;
      });
    },

    async lease(key: string, leaseOptions: LeaseOptions): Promise<Lease> {
      checkKey(key);
      checkLeaseOptions(leaseOptions);
      const { signal, ttlMs, waitMs } = leaseOptions;
      throwIfAborted(signal);
      await ensureDirectory();
      const leaseFile = files(key).lease;
      const deadline = Date.now() + waitMs;
      let backoff = LEASE_BACKOFF_MIN_MS;

      // Bounded by the deadline: every pass either returns, throws, or sleeps towards it.
      for (;;) {
        throwIfAborted(signal);
        let granted: Lease | undefined;
        try {
          granted = await withWriteLock(
            key,
            Math.max(deadline, Date.now() + LEASE_MIN_LOCK_WAIT_MS),
            // Token and lease file are made under one write lock, so tokens grow in grant order.
            async () => {
              const raw = await readText(leaseFile);
              let staleToken = 0;
              if (raw !== undefined) {
                const holder = parseLeaseHolder(raw);
                if (!(await isLeaseStale(leaseFile, raw, holder))) return undefined;
                staleToken = holder?.fencingToken ?? 0;
                await removeIf(leaseFile, (seen) => seen === raw);
              }
              const counters = await readCounters(key);
              const fencingToken = Math.max(counters.fencing, staleToken) + 1;
              counters.fencing = fencingToken;
              await writeAtomic(files(key).counters, JSON.stringify(counters));
              await syncDirectory(directory);
              const nonce = newNonce();
              const body: LeaseHolder = {
                pid: process.pid,
                hostname: os.hostname(),
                nonce,
                expiresAt: Date.now() + ttlMs,
                fencingToken,
              };
              if (!(await createExclusive(leaseFile, JSON.stringify(body)))) return undefined;
              return makeLease(key, leaseFile, nonce, fencingToken);
            },
            signal,
          );
        } catch (error) {
          if (error instanceof OAuthStoreError && error.code === 'store.lock_timeout') throw leaseTimeoutError(waitMs);
          throw error;
        }
        if (granted) return granted;
        const remaining = deadline - Date.now();
        if (remaining <= 0) throw leaseTimeoutError(waitMs);
        await sleep(Math.min(jitter(backoff), remaining), signal);
        backoff = Math.min(backoff * 2, LEASE_BACKOFF_MAX_MS);
      }
    },
  };

  function makeLease(key: string, leaseFile: string, nonce: string, fencingToken: number): Lease {
    let released: Promise<void> | undefined;
    let releaseCalled = false;
    return {
      fencingToken,
      async renew(ttlMs: number): Promise<boolean> {
        checkRenewTtl(ttlMs);
        if (releaseCalled) return false;
        // Under the write lock, like a grant or a release: a waiter judges staleness and replaces
        // the file only under it, so it sees either the old expiry or the new one, never a gap.
        return withWriteLock(key, Date.now() + LOCK_WAIT_MS, async () => {
          if (releaseCalled) return false;
          const raw = await readText(leaseFile);
          if (raw === undefined) return false;
          const holder = parseLeaseHolder(raw);
          if (holder?.nonce !== nonce || holder.fencingToken !== fencingToken) return false;
          // Lapsed by the rules a waiter applies: a waiter may break it at any moment, so it is not ours to extend.
          if (await isLeaseStale(leaseFile, raw, holder)) return false;
          const body: LeaseHolder = { ...holder, expiresAt: Date.now() + ttlMs };
          await writeAtomic(leaseFile, JSON.stringify(body));
          return true;
        });
      },
      release(): Promise<void> {
        releaseCalled = true;
        // Under the write lock, so a waiter cannot break and replace the file between read and unlink.
        released ??= withWriteLock(key, Date.now() + LOCK_WAIT_MS, async () => {
          const raw = await readText(leaseFile);
          if (raw !== undefined && parseLeaseHolder(raw)?.nonce === nonce) await unlinkIfPresent(leaseFile);
        }).catch((error: unknown) => {
          // A failed release may be retried; the lease lapses at its ttl if it never succeeds.
          released = undefined;
          throw error;
        });
        return released;
      },
    };
  }
}

// ---------------------------------------------------------------------------------------------
// Records

type ReadOutcome<T> = { state: 'absent' } | { state: 'ok'; record: Versioned<T> } | { state: 'invalid' };

async function readRecord<T>(file: string, key: string, kind: RecordKind): Promise<ReadOutcome<T>> {
  const raw = await readText(file);
  if (raw === undefined) return { state: 'absent' };
  const parsed = parseJson(raw);
  // A foreign key means a hash collision or a copied file: either way not this key's record.
  if (
    !isObject(parsed) ||
    parsed.key !== key ||
    parsed.kind !== kind ||
    !isGeneration(parsed.generation) ||
    !isObject(parsed.value)
  ) {
    return { state: 'invalid' };
  }
  return { state: 'ok', record: { value: parsed.value as T, generation: parsed.generation } };
}

interface Counters {
  key: string;
  generations: Partial<Record<RecordKind, number>>;
  fencing: number;
}

/** The counters hold the newest fencing token granted for the key, under the same write lock. */
function fencedOut(condition: WriteCondition, counters: Counters): boolean {
  return condition.fencingToken !== undefined && condition.fencingToken < counters.fencing;
}

function emptyCounters(key: string): Counters {
  return { key, generations: {}, fencing: 0 };
}

function isCounters(value: unknown, key: string): value is Counters {
  if (!isObject(value) || value.key !== key || !isObject(value.generations)) return false;
  if (!(value.fencing === 0 || isGeneration(value.fencing))) return false;
  return Object.entries(value.generations).every(([kind, n]) => KINDS.has(kind) && isGeneration(n));
}

async function quarantine(file: string): Promise<void> {
  try {
    await fs.rename(file, `${file}.corrupt-${Date.now()}`);
  } catch (error) {
    if (codeOf(error) !== 'ENOENT') throw ioError('quarantine', file, error);
  }
}

// ---------------------------------------------------------------------------------------------
// Locks and leases

interface Owner {
  pid: number;
  hostname: string;
  nonce: string;
}

interface LockHolder extends Owner {
  createdAt: number;
}

interface LeaseHolder extends Owner {
  expiresAt: number;
  fencingToken: number;
}

function parseOwner(raw: string): Owner | undefined {
  const parsed = parseJson(raw);
  if (!isObject(parsed)) return undefined;
  const { pid, hostname, nonce } = parsed;
  // pid 0 or below would make `process.kill` signal a whole process group.
  if (!isGeneration(pid) || typeof hostname !== 'string' || typeof nonce !== 'string') return undefined;
  return { pid, hostname, nonce };
}

function parseLockHolder(raw: string): LockHolder | undefined {
  const owner = parseOwner(raw);
  const createdAt = (parseJson(raw) as { createdAt?: unknown } | undefined)?.createdAt;
  return owner && typeof createdAt === 'number' && Number.isFinite(createdAt) ? { ...owner, createdAt } : undefined;
}

function parseLeaseHolder(raw: string): LeaseHolder | undefined {
  const owner = parseOwner(raw);
  const parsed = parseJson(raw) as { expiresAt?: unknown; fencingToken?: unknown } | undefined;
  const expiresAt = parsed?.expiresAt;
  const fencingToken = parsed?.fencingToken;
  if (!owner || typeof expiresAt !== 'number' || !Number.isFinite(expiresAt) || !isGeneration(fencingToken)) return undefined;
  return { ...owner, expiresAt, fencingToken };
}

/** A holder on this host whose process is gone will never release; elsewhere only time tells. */
function ownerIsDead(owner: Owner): boolean {
  return owner.hostname === os.hostname() && !processAlive(owner.pid);
}

async function isLockStale(file: string, raw: string): Promise<boolean> {
  const holder = parseLockHolder(raw);
  if (holder) return ownerIsDead(holder) || Date.now() - holder.createdAt > LOCK_STALE_MS;
  return olderThan(file, LOCK_STALE_MS);
}

async function isLeaseStale(file: string, raw: string, holder: LeaseHolder | undefined): Promise<boolean> {
  if (holder) return ownerIsDead(holder) || Date.now() >= holder.expiresAt;
  // Unreadable: its creator died between creating and writing it. Give it the lock's grace.
  return olderThan(file, LOCK_STALE_MS);
}

async function olderThan(file: string, ms: number): Promise<boolean> {
  try {
    const stat = await fs.stat(file);
    return Date.now() - stat.mtimeMs > ms;
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return true;
    throw ioError('stat', file, error);
  }
}

/** Takes the write lock at `file`, breaking a stale one; returns the nonce that proves ownership. */
async function acquireLock(file: string, deadline: number, signal?: AbortSignal): Promise<string> {
  let backoff = LOCK_BACKOFF_MIN_MS;
  // Bounded by the deadline, which every pass checks before it retries or sleeps.
  for (;;) {
    throwIfAborted(signal);
    const nonce = newNonce();
    const holder: LockHolder = { pid: process.pid, hostname: os.hostname(), nonce, createdAt: Date.now() };
    if (await createExclusive(file, JSON.stringify(holder))) return nonce;
    const raw = await readText(file);
    let retryNow = raw === undefined;
    if (raw !== undefined && (await isLockStale(file, raw))) {
      await removeIf(file, (seen) => seen === raw);
      retryNow = true;
    }
    const remaining = deadline - Date.now();
    if (remaining <= 0) {
      throw new OAuthStoreError({
        code: 'store.lock_timeout',
        message: `file store: write lock ${file} still held after waiting`,
      });
    }
    if (retryNow) continue;
    await sleep(Math.min(jitter(backoff), remaining), signal);
    backoff = Math.min(backoff * 2, LOCK_BACKOFF_MAX_MS);
  }
}

/** O_EXCL create: false if the file exists. A file left empty by a failed write is removed. */
async function createExclusive(file: string, content: string): Promise<boolean> {
  let handle: FileHandle;
  try {
    handle = await fs.open(file, 'wx', 0o600);
  } catch (error) {
    if (codeOf(error) === 'EEXIST') return false;
    throw ioError('create', file, error);
  }
  try {
    await handle.writeFile(content, 'utf8');
  } catch (error) {
    await handle.close().catch(() => undefined);
    await fs.unlink(file).catch(() => undefined);
    throw ioError('write', file, error);
  }
  await handle.close();
  return true;
}

/**
 * Removes `file` only if its content passes `owned`, without a read-then-unlink race: the file is
 * renamed aside first (only one remover can win that rename) and checked there. If it turns out
 * to be someone else's, it is linked back, which cannot overwrite a newer file. The one residual
 * case, a third process creating a fresh file in the instant the path is empty, needs three
 * parties racing within microseconds and ends with the displaced holder losing its lock.
 */
async function removeIf(file: string, owned: (raw: string) => boolean): Promise<void> {
  const aside = `${file}.removing-${newNonce()}`;
  try {
    await fs.rename(file, aside);
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return;
    throw ioError('rename', file, error);
  }
  try {
    const raw = await readText(aside);
    if (raw !== undefined && !owned(raw)) await fs.link(aside, file).catch(() => undefined);
  } finally {
    await unlinkIfPresent(aside);
  }
}

function processAlive(pid: number): boolean {
  if (pid === process.pid) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    // EPERM: the process exists but belongs to someone else.
    return codeOf(error) !== 'ESRCH';
  }
}

// ---------------------------------------------------------------------------------------------
// Filesystem primitives

async function prepareDirectory(directory: string): Promise<void> {
  try {
    await fs.mkdir(directory, { recursive: true, mode: 0o700 });
    if (process.platform === 'win32') return;
    const stat = await fs.stat(directory);
    if (!stat.isDirectory()) throw Object.assign(new Error('not a directory'), { code: 'ENOTDIR' });
    // An existing directory is tightened rather than refused: it holds secrets, and a looser mode
    // lets others list, plant or swap files. Pointing the store at a shared directory is a misuse.
    if ((stat.mode & 0o077) !== 0) await fs.chmod(directory, 0o700);
  } catch (error) {
    throw ioError('prepare directory', directory, error);
  }
}

async function writeAtomic(file: string, content: string): Promise<void> {
  const temp = `${file}.tmp-${process.pid}-${newNonce()}`;
  let handle: FileHandle | undefined;
  try {
    handle = await fs.open(temp, 'wx', 0o600);
    await handle.writeFile(content, 'utf8');
    await handle.sync();
    await handle.close();
    handle = undefined;
    await renameOver(temp, file);
  } catch (error) {
    await handle?.close().catch(() => undefined);
    await fs.unlink(temp).catch(() => undefined);
    throw ioError('write', file, error);
  }
}

async function renameOver(from: string, to: string): Promise<void> {
  // Windows refuses to replace a file another process has open for a moment (a reader).
  for (let attempt = 0; ; attempt += 1) {
    try {
      await fs.rename(from, to);
      return;
    } catch (error) {
      const code = codeOf(error);
      if (process.platform !== 'win32' || (code !== 'EPERM' && code !== 'EBUSY' && code !== 'EACCES') || attempt >= 5) {
        throw error;
      }
      await sleep(10 * 2 ** attempt);
    }
  }
}

async function syncDirectory(directory: string): Promise<void> {
  // Makes the renames durable. Windows cannot open a directory for fsync; its rename is durable enough.
  if (process.platform === 'win32') return;
  let handle: FileHandle | undefined;
  try {
    handle = await fs.open(directory, 'r');
    await handle.sync();
  } catch (error) {
    const code = codeOf(error);
    if (code !== 'EINVAL' && code !== 'ENOTSUP' && code !== 'EISDIR') throw ioError('sync', directory, error);
  } finally {
    await handle?.close().catch(() => undefined);
  }
}

async function readText(file: string): Promise<string | undefined> {
  try {
    return await fs.readFile(file, 'utf8');
  } catch (error) {
    if (codeOf(error) === 'ENOENT') return undefined;
    throw ioError('read', file, error);
  }
}

async function unlinkIfPresent(file: string): Promise<void> {
  try {
    await fs.unlink(file);
  } catch (error) {
    if (codeOf(error) !== 'ENOENT') throw ioError('delete', file, error);
  }
}

function sleep(ms: number, signal?: AbortSignal): Promise<void> {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortedError(signal));
      return;
    }
    // Not unref'd: the holder is usually another process, so nothing else may keep this one alive.
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    const onAbort = (): void => {
      clearTimeout(timer);
      reject(abortedError(signal));
    };
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

// ---------------------------------------------------------------------------------------------
// Small helpers

function hashKey(key: string): string {
  return createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 32);
}

function newNonce(): string {
  return randomBytes(12).toString('hex');
}

/** Spreads waiters that started together so they do not retry in lockstep. */
function jitter(ms: number): number {
  return Math.max(1, Math.round(ms * (0.5 + Math.random() / 2)));
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === '' ? undefined : value;
}

function parseJson(raw: string): unknown {
  try {
    return JSON.parse(raw) as unknown;
  } catch {
    return undefined;
  }
}

function isObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}


function codeOf(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : undefined;
}

function ioError(operation: string, file: string, cause: unknown): OAuthStoreError {
  if (cause instanceof OAuthStoreError) return cause;
  // Paths and error codes only: record values hold secrets and never reach a message.
  return new OAuthStoreError(
    { code: 'store.io', message: `file store: ${operation} ${file} failed (${codeOf(cause) ?? 'unknown error'})` },
    { cause },
  );
}

function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortedError(signal);
}






