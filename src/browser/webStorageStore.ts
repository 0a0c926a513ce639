/**
 * A credential store over Web Storage (`localStorage` by default) implementing the store contract of
 * src/machines/store.ts: generations, compare-and-swap writes, compare-and-delete, and a lease built
 * on the Web Locks API so that two tabs never refresh the same rotating refresh token at once.
 *
 * Web Storage offers no cross-tab transaction, so the compare-and-swap is exact within a tab and
 * best effort across tabs; the lease is what serialises refreshes and flows between tabs. Records
 * hold tokens: anything able to run script in the page can read them, as with any browser storage.
 */
import { OAuthStoreError } from '../machines/errors.js';
import type { CredentialStore, Lease, LeaseOptions, RecordKind, RecordTypes, Versioned, WriteCondition, WriteResult } from '../machines/store.js';

export type WebStorage = Pick<Storage, 'getItem' | 'setItem' | 'removeItem'>;

export interface WebStorageStoreOptions {
  /** Default `localStorage`. */
  storage?: WebStorage;
  /** Prefix of every key this store writes; default `mcp-oauth:`. */
  prefix?: string;
  /** Default `navigator.locks` when the page has it; without it the store offers no lease. */
  locks?: LockManager;
}

const KINDS: ReadonlySet<string> = new Set<RecordKind>(['tokens', 'client', 'discovery']);

interface Slot {
  /** Survives deletes so that a deleted generation is never handed out again. */
  last: number;
  current?: Versioned<unknown>;
}

export function createWebStorageStore(options: WebStorageStoreOptions = {}): CredentialStore {
  const storage = options.storage ?? globalThis.localStorage;
  if (!storage) throw new OAuthStoreError({ code: 'store.unavailable', message: 'no Web Storage in this context' });
  const prefix = options.prefix ?? 'mcp-oauth:';
  const locks = options.locks ?? (typeof navigator !== 'undefined' ? navigator.locks : undefined);
  const slotKey = (key: string, kind: RecordKind) => `${prefix}record:${kind}:${key}`;

  function read(key: string, kind: RecordKind): Slot {
    const raw = storage.getItem(slotKey(key, kind));
    if (raw === null) return { last: 0 };
    try {
      const slot = JSON.parse(raw) as Slot;
      if (Number.isSafeInteger(slot.last) && slot.last >= 0) return slot;
    } catch {
      // falls through: a corrupt slot is dropped rather than served.
    }
    storage.removeItem(slotKey(key, kind));
    return { last: 0 };
  }

  function write(key: string, kind: RecordKind, slot: Slot): void {
    try {
      storage.setItem(slotKey(key, kind), JSON.stringify(slot));
    } catch (error) {
      throw new OAuthStoreError({ code: 'store.write_failed', message: 'Web Storage refused the write (quota or disabled storage)' }, { cause: error });
    }
  }

  const store: CredentialStore = {
    async get<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined> {
      check(key, kind);
      return read(key, kind).current as Versioned<RecordTypes[K]> | undefined;
    },

    async set<K extends RecordKind>(key: string, kind: K, value: RecordTypes[K], condition: WriteCondition): Promise<WriteResult<RecordTypes[K]>> {
      check(key, kind, condition);
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record value must be an object' });
      }
      const slot = read(key, kind);
      const current = slot.current as Versioned<RecordTypes[K]> | undefined;
      if (condition.ifGeneration !== (current?.generation ?? 0)) return { ok: false, current };
      const generation = slot.last + 1;
      write(key, kind, { last: generation, current: { value, generation } });
      return { ok: true, generation };
    },

    async delete(key: string, kind: RecordKind, condition: WriteCondition): Promise<boolean> {
      check(key, kind, condition);
      const slot = read(key, kind);
      if (slot.current?.generation !== condition.ifGeneration) return false;
      write(key, kind, { last: slot.last });
      return true;
    },
  };

  if (locks) {
    store.lease = (key: string, lease: LeaseOptions) => acquireLease(locks, storage, `${prefix}lease:${key}`, lease);
  }
  return store;
}

/** Holds a Web Lock until `release()`; the browser frees it by itself when the tab goes away. */
function acquireLease(locks: LockManager, storage: WebStorage, name: string, options: LeaseOptions): Promise<Lease> {
  const deadline = AbortSignal.timeout(Math.max(1, options.waitMs));
  const signal = options.signal ? AbortSignal.any([deadline, options.signal]) : deadline;
  return new Promise<Lease>((resolve, reject) => {
    locks
      .request(name, { mode: 'exclusive', signal }, () => {
        let free!: () => void;
        const held = new Promise<void>((done) => (free = done));
        let over = false;
        const release = () => {
          over = true;
          free();
        };
        const fencingToken = nextFencingToken(storage, `${name}:fence`);
        // A holder that never releases (a hung flow) lets go after its time-to-live.
        let lapse = setTimeout(release, options.ttlMs);
        resolve({
          fencingToken,
          async release() {
            clearTimeout(lapse);
            release();
          },
          async renew(ttlMs: number) {
            if (typeof ttlMs !== 'number' || !Number.isFinite(ttlMs) || ttlMs <= 0) {
              throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'lease renew needs a finite ttlMs > 0' });
            }
            if (over) return false;
            clearTimeout(lapse);
            lapse = setTimeout(release, ttlMs);
            return true;
          },
        });
        return held;
      })
      .catch((error: unknown) => {
        const data = options.signal?.aborted
          ? { code: 'store.aborted', message: 'lease wait aborted' }
          : deadline.aborted
            ? { code: 'store.lease_timeout', message: `lease still held by another tab after waiting ${options.waitMs} ms` }
            : { code: 'store.failed', message: 'the Web Locks request failed' };
        reject(new OAuthStoreError(data, { cause: error }));
      });
  });
}

function nextFencingToken(storage: WebStorage, key: string): number {
  const previous = Number(storage.getItem(key) ?? '0');
  const next = (Number.isSafeInteger(previous) && previous > 0 ? previous : 0) + 1;
  try {
    storage.setItem(key, String(next));
  } catch {
    // The lock itself still serialises holders; only the fencing number is not persisted.
  }
  return next;
}

function check(key: unknown, kind: unknown, condition?: WriteCondition): void {
  if (typeof key !== 'string') throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'store key must be a string' });
  if (typeof kind !== 'string' || !KINDS.has(kind)) {
    throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record kind must be tokens, client or discovery' });
  }
  if (condition !== undefined) {
    const generation = condition.ifGeneration;
    if (typeof generation !== 'number' || !Number.isSafeInteger(generation) || generation < 0) {
      throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'ifGeneration must be a non-negative integer (0 = only if absent)' });
    }
  }
}
