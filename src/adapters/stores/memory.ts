/**
 * In-process credential store: the reference implementation of the store contract, for tests,
 * short-lived tools and callers that persist snapshots elsewhere. Nothing survives the process.
 */
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
import { abortedError, checkCondition, checkKey, checkKeyAndKind, checkLeaseOptions, checkRenewTtl, leaseTimeoutError } from './contract.js';


interface Slot {
  /** Survives deletes so that a deleted generation is never handed out again. */
  lastGeneration: number;
  current: Versioned<unknown> | undefined;
}

interface Waiter {
  grant(): void;
}

interface LeaseState {
  holder: { fencingToken: number; ttlTimer: NodeJS.Timeout } | undefined;
  waiters: Waiter[];
}

export function createMemoryStore(): CredentialStore & { snapshot(): unknown } {
  const slots = new Map<string, Map<RecordKind, Slot>>();
  const leases = new Map<string, LeaseState>();
  // One counter for the whole store: monotonic per key follows, and tokens stay unique in logs.
  let lastFencingToken = 0;
  /** Kept after the lease is gone: a lapsed holder may write long after its successor released. */
  const newestFencingToken = new Map<string, number>();

  function fencedOut(key: string, condition: WriteCondition): boolean {
    return condition.fencingToken !== undefined && condition.fencingToken < (newestFencingToken.get(key) ?? 0);
  }

  function slotOf(key: string, kind: RecordKind, create: true): Slot;
  function slotOf(key: string, kind: RecordKind, create: false): Slot | undefined;
  function slotOf(key: string, kind: RecordKind, create: boolean): Slot | undefined {
    let byKind = slots.get(key);
    if (!byKind) {
      if (!create) return undefined;
      byKind = new Map();
      slots.set(key, byKind);
    }
    let slot = byKind.get(kind);
    if (!slot && create) {
      slot = { lastGeneration: 0, current: undefined };
      byKind.set(kind, slot);
    }
    return slot;
  }

  function copyOut<T>(record: Versioned<unknown> | undefined): Versioned<T> | undefined {
    return record === undefined ? undefined : (structuredClone(record) as Versioned<T>);
  }

  function leaseStateOf(key: string): LeaseState {
    let state = leases.get(key);
    if (!state) {
      state = { holder: undefined, waiters: [] };
      leases.set(key, state);
    }
    return state;
  }

  function grantNext(key: string, state: LeaseState): void {
    state.holder = undefined;
    const next = state.waiters.shift();
    if (next) next.grant();
    else leases.delete(key);
  }

  function issue(key: string, state: LeaseState, ttlMs: number): Lease {
    const fencingToken = ++lastFencingToken;
    newestFencingToken.set(key, fencingToken);
    const lapseAfter = (ms: number): NodeJS.Timeout => {
      const timer = setTimeout(() => {
        // The holder died or forgot to release: the lease lapses and the next waiter moves up.
        if (state.holder?.fencingToken === fencingToken) grantNext(key, state);
      }, ms);
      timer.unref?.();
      return timer;
    };
    state.holder = { fencingToken, ttlTimer: lapseAfter(ttlMs) };
    let released = false;
    return {
      fencingToken,
      async renew(renewTtlMs: number): Promise<boolean> {
        checkRenewTtl(renewTtlMs);
        // Lapsed (the timer fired) or released: the holder now is someone else, or nobody.
        if (released || state.holder?.fencingToken !== fencingToken) return false;
        clearTimeout(state.holder.ttlTimer);
        state.holder.ttlTimer = lapseAfter(renewTtlMs);
        return true;
      },
      async release(): Promise<void> {
        released = true;
        // A lapsed holder must not release the lease a later holder now owns.
        if (state.holder?.fencingToken !== fencingToken) return;
        clearTimeout(state.holder.ttlTimer);
        grantNext(key, state);
      },
    };
  }

  return {
    async get<K extends RecordKind>(key: string, kind: K): Promise<Versioned<RecordTypes[K]> | undefined> {
      checkKeyAndKind(key, kind);
      return copyOut<RecordTypes[K]>(slotOf(key, kind, false)?.current);
    },

    async set<K extends RecordKind>(
      key: string,
      kind: K,
      value: RecordTypes[K],
      condition: WriteCondition,
    ): Promise<WriteResult<RecordTypes[K]>> {
      checkKeyAndKind(key, kind);
      checkCondition(condition);
      // Same rule as the file store, so code tested against memory does not break on disk.
      if (typeof value !== 'object' || value === null || Array.isArray(value)) {
        throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record value must be an object' });
      }
      const slot = slotOf(key, kind, true);
      const currentGeneration = slot.current?.generation ?? 0;
      if (condition.ifGeneration !== currentGeneration || fencedOut(key, condition)) {
        return { ok: false, current: copyOut<RecordTypes[K]>(slot.current) };
      }
      // Cloned before the generation is taken, so an uncloneable value leaves no gap and no change.
      const stored = structuredClone(value) as unknown;
      const generation = slot.lastGeneration + 1;
      slot.lastGeneration = generation;
      slot.current = { value: stored, generation };
      return { ok: true, generation };
    },

    async delete(key: string, kind: RecordKind, condition: WriteCondition): Promise<boolean> {
      checkKeyAndKind(key, kind);
      checkCondition(condition);
      const slot = slotOf(key, kind, false);
      if (!slot?.current || slot.current.generation !== condition.ifGeneration || fencedOut(key, condition)) return false;
      slot.current = undefined;
      return true;
    },

    lease(key: string, options: LeaseOptions): Promise<Lease> {
      return new Promise<Lease>((resolve, reject) => {
        try {
          checkKey(key);
          checkLeaseOptions(options);
        } catch (error) {
          reject(error);
          return;
        }
        const { signal } = options;
        if (signal?.aborted) {
          reject(abortedError(signal));
          return;
        }
        const state = leaseStateOf(key);
        if (!state.holder && state.waiters.length === 0) {
          resolve(issue(key, state, options.ttlMs));
          return;
        }
        if (options.waitMs <= 0) {
          reject(leaseTimeoutError(options.waitMs));
          return;
        }

        const leave = (): void => {
          clearTimeout(deadline);
          signal?.removeEventListener('abort', onAbort);
          const index = state.waiters.indexOf(waiter);
          if (index >= 0) state.waiters.splice(index, 1);
        };
        const waiter: Waiter = {
          grant() {
            leave();
            resolve(issue(key, state, options.ttlMs));
          },
        };
        const onAbort = (): void => {
          leave();
          reject(abortedError(signal));
        };
        const deadline = setTimeout(() => {
          leave();
          reject(leaseTimeoutError(options.waitMs));
        }, options.waitMs);
        // The holder is in this process, so it keeps the loop alive; a waiter alone should not.
        deadline.unref?.();
        signal?.addEventListener('abort', onAbort, { once: true });
        state.waiters.push(waiter);
      });
    },

    snapshot(): unknown {
      const records: Record<string, Partial<Record<RecordKind, Versioned<unknown> & { lastGeneration: number }>>> = {};
      for (const [key, byKind] of slots) {
        const entry: Partial<Record<RecordKind, Versioned<unknown> & { lastGeneration: number }>> = {};
        for (const [kind, slot] of byKind) {
          if (slot.current) entry[kind] = { ...structuredClone(slot.current), lastGeneration: slot.lastGeneration };
        }
        records[key] = entry;
      }
      const leaseView: Record<string, { fencingToken: number | undefined; waiters: number }> = {};
      for (const [key, state] of leases) {
        leaseView[key] = { fencingToken: state.holder?.fencingToken, waiters: state.waiters.length };
      }
      return { records, leases: leaseView };
    },
  };
}






