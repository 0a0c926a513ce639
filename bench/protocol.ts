/** The messages between run.ts and its driver processes. */

export type DriverKind = 'bare-request' | 'bare-fetch' | 'global-fetch' | 'oauth-interceptor' | 'oauth-fetch' | 'sdk-withOAuth' | 'sdk-transport';

export interface CallResult {
  ok: boolean;
  status: number;
  error?: string;
}

export interface BurstResult {
  ms: number;
  ok: number;
  failed: number;
  /** Failure descriptions and how many requests ended with each. */
  errors: Record<string, number>;
}

export interface BlockResult {
  ms: number;
  /** The driver process's CPU time for the block (user + system). */
  cpuMs?: number;
  failures: number;
  firstError?: string;
}

export interface UsageResult {
  /** process.resourceUsage().maxRSS: the process's peak resident set, KiB. */
  maxRssKiB: number;
  rss: number;
  heapUsed: number;
}

export type DriverRequest =
  | { op: 'init'; mcpUrl: string; token?: string }
  /** A fresh client (new session / provider, nothing stored) and its first request, timed together. */
  | { op: 'cold'; body: 'list' | 'admin' }
  /** A fresh client, no request. */
  | { op: 'fresh' }
  /** One request on the current client, timed. */
  | { op: 'call'; body: 'list' | 'admin' }
  /** n sequential requests on the current client. */
  | { op: 'block'; n: number; body: 'list' | 'admin' }
  /** n concurrent requests on the current client. */
  | { op: 'burst'; n: number; body: 'list' | 'admin' }
  | { op: 'usage' }
  | { op: 'exit' };

export interface DriverReply {
  seq: number;
  result?: unknown;
  error?: string;
}
