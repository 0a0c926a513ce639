/**
 * What every store checks and throws, so memory, file and Redis stores answer a bad call and a
 * lapsed wait the same way (the contract suite runs against all of them).
 */
import { OAuthStoreError } from '../../machines/errors.js';
import type { LeaseOptions, RecordKind, WriteCondition } from '../../machines/store.js';

export const KINDS: ReadonlySet<string> = new Set<RecordKind>(['tokens', 'client', 'discovery']);

export function isGeneration(value: unknown): value is number {
  return typeof value === 'number' && Number.isSafeInteger(value) && value > 0;
}

export function checkKey(key: unknown): void {
  if (typeof key !== 'string') {
    throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'store key must be a string' });
  }
}

export function checkKeyAndKind(key: unknown, kind: unknown): void {
  checkKey(key);
  // The kind becomes part of a file name or a Redis key, so only the three known values may get there.
  if (typeof kind !== 'string' || !KINDS.has(kind)) {
    throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'record kind must be tokens, client or discovery' });
  }
}

export function checkCondition(condition: WriteCondition | undefined): void {
  const generation = condition?.ifGeneration;
  // A NaN or negative generation would silently never match: that is a caller bug, so say so.
  if (typeof generation !== 'number' || !Number.isSafeInteger(generation) || generation < 0) {
    throw new OAuthStoreError({
      code: 'store.invalid_argument',
      message: 'ifGeneration must be a non-negative integer (0 = only if absent)',
    });
  }
  const fencing = condition?.fencingToken;
  if (fencing !== undefined && !isGeneration(fencing)) {
    throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'fencingToken must be a positive integer' });
  }
}

function isTtl(value: unknown): value is number {
  return typeof value === 'number' && Number.isFinite(value) && value > 0;
}

/** `Lease.renew(ttlMs)`: the same rule as a lease's own ttl, checked before any store call. */
export function checkRenewTtl(ttlMs: unknown): void {
  if (!isTtl(ttlMs)) {
    throw new OAuthStoreError({ code: 'store.invalid_argument', message: 'lease renew needs a finite ttlMs > 0' });
  }
}

export function checkLeaseOptions(options: LeaseOptions | undefined): void {
  const ttlOk = isTtl(options?.ttlMs);
  const waitOk = typeof options?.waitMs === 'number' && Number.isFinite(options.waitMs) && options.waitMs >= 0;
  if (!ttlOk || !waitOk) {
    throw new OAuthStoreError({
      code: 'store.invalid_argument',
      message: 'lease needs a finite ttlMs > 0 and a finite waitMs >= 0',
    });
  }
}

export function abortedError(signal: AbortSignal | undefined): OAuthStoreError {
  return new OAuthStoreError({ code: 'store.aborted', message: 'lease wait aborted' }, { cause: signal?.reason });
}

export function leaseTimeoutError(waitMs: number): OAuthStoreError {
  return new OAuthStoreError({
    code: 'store.lease_timeout',
    message: `lease still held by another holder after waiting ${waitMs} ms`,
  });
}
