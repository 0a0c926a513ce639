/**
 * The engine's own OAuth calls (discovery, registration, token): a total deadline, a body-size
 * cap, redirects walked by hand with every hop re-checked, and the network-class rule of DESIGN
 * policy 6 enforced at connect time so the address checked is the address used.
 */
import { lookup as dnsLookup } from 'node:dns';
import { isIP, type LookupFunction } from 'node:net';
import { Agent, request, type Dispatcher } from 'undici';
import type { HttpRequest, HttpResponseData } from '../machines/http.js';
import { classifyAddress, isAllowedOAuthUrl, networkClassAllowed, sameOrigin, splitUrl, type NetworkClass } from '../machines/urls.js';

export type OAuthHttpOutcome =
  | { ok: true; response: HttpResponseData }
  | { ok: false; reason: 'timeout' | 'unreachable' | 'too_large' | 'redirect' | 'blocked' | 'aborted'; message: string; cause?: unknown };

export interface OAuthHttpOptions {
  dispatcher: Dispatcher;
  deadlineMs: number;
  maxBodyBytes: number;
  /** GET discovery may follow this many redirects; POSTs never follow one. */
  maxRedirects: number;
  /** Throws a `BlockedTarget` for a URL the policy refuses. */
  checkTarget: (url: string) => void;
  signal?: AbortSignal;
}

export class BlockedTarget extends Error {
  override readonly name = 'BlockedTarget';
}

/** Resolves a host name to addresses; injectable so tests can map public names to loopback. */
export type Resolver = (hostname: string) => Promise<Array<{ address: string; family: number }>>;

export const systemResolver: Resolver = (hostname) =>
  new Promise((resolve, reject) => {
    dnsLookup(hostname, { all: true }, (error, addresses) => (error ? reject(error) : resolve(addresses)));
  });

export interface NetworkPolicy {
  configured: NetworkClass;
  /** Refuses a URL whose scheme, credentials or literal address break the rules. */
  checkTarget(url: string): void;
  /** A `net` lookup that only returns addresses the policy allows: what is checked is what is dialled. */
  lookup: LookupFunction;
}

function hostOf(url: string): string | undefined {
  const raw = splitUrl(url);
  if (!raw) return undefined;
  return raw.host.startsWith('[') ? raw.host.slice(1, -1) : raw.host;
}

/**
 * DESIGN policy 6: a URL learned from a server may not be more internal than the configured
 * server. The configured class is the most internal of the server's addresses.
 */
export async function createNetworkPolicy(serverUrl: string, options: { resolver?: Resolver; classify?: (address: string) => NetworkClass | undefined } = {}): Promise<NetworkPolicy> {
  const resolver = options.resolver ?? systemResolver;
  const classify = options.classify ?? classifyAddress;
  const host = hostOf(serverUrl) ?? '';
  let configured: NetworkClass = classify(host) ?? 'public';
  if (classify(host) === undefined) {
    const addresses = await resolver(host).catch(() => []);
    const classes = addresses.map((entry) => classify(entry.address) ?? 'public');
    configured = classes.includes('loopback') ? 'loopback' : classes.includes('private') ? 'private' : 'public';
  }
  const allowed = (address: string) => networkClassAllowed(configured, classify(address) ?? 'public');

  return {
    configured,
    checkTarget(url) {
      if (!isAllowedOAuthUrl(url)) throw new BlockedTarget('only https URLs (http on loopback) may be used for OAuth calls');
      const target = hostOf(url);
      if (target !== undefined && isIP(target) !== 0 && !allowed(target)) {
        throw new BlockedTarget(`address ${target} is more internal than the configured server (${configured})`);
      }
      if (target !== undefined && isIP(target) === 0 && classify(target) !== undefined && !allowed(target)) {
        throw new BlockedTarget(`host ${target} is more internal than the configured server (${configured})`);
      }
    },
    lookup(hostname, lookupOptions, callback) {
      resolver(hostname).then(
        (addresses) => {
          const permitted = addresses.filter((entry) => allowed(entry.address));
          if (permitted.length === 0) {
            const error = Object.assign(new BlockedTarget(`${hostname} resolves only to addresses more internal than the configured server`), { code: 'EBLOCKED' });
            callback(error, '', 0);
            return;
          }
          const wantsAll = typeof lookupOptions === 'object' && lookupOptions !== null && (lookupOptions as { all?: boolean }).all === true;
          if (wantsAll) (callback as unknown as (e: null, a: typeof permitted) => void)(null, permitted);
          else callback(null, permitted[0]!.address, permitted[0]!.family);
        },
        (error: NodeJS.ErrnoException) => callback(error, '', 0),
      );
    },
  };
}

/** The engine's dispatcher for OAuth calls: every connection goes through the policy's lookup. */
export function createOAuthAgent(policy: NetworkPolicy, connectTimeoutMs: number): Agent {
  return new Agent({ connect: { lookup: policy.lookup, timeout: connectTimeoutMs }, keepAliveTimeout: 4_000 });
}

const REDIRECTS = new Set([301, 302, 303, 307, 308]);

function headerRecord(headers: Record<string, string | string[] | undefined>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

async function readCapped(body: Dispatcher.ResponseData['body'], maxBytes: number): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    const buffer = chunk as Buffer;
    size += buffer.length;
    if (size > maxBytes) {
      body.destroy();
      return undefined;
    }
    chunks.push(buffer);
  }
  return Buffer.concat(chunks).toString('utf8');
}

export async function performOAuthRequest(httpRequest: HttpRequest, options: OAuthHttpOptions): Promise<OAuthHttpOutcome> {
  const deadline = AbortSignal.timeout(options.deadlineMs);
  const signal = options.signal ? AbortSignal.any([deadline, options.signal]) : deadline;
  let url = httpRequest.url;
  try {
    for (let hop = 0; ; hop++) {
      try {
        options.checkTarget(url);
      } catch (error) {
        return { ok: false, reason: 'blocked', message: error instanceof Error ? error.message : 'target refused', cause: error };
      }
      const response = await request(url, {
        method: httpRequest.method,
        headers: httpRequest.headers,
        ...(httpRequest.body === undefined ? {} : { body: httpRequest.body }),
        dispatcher: options.dispatcher,
        signal,
      });
      const location = response.headers.location;
      if (REDIRECTS.has(response.statusCode) && typeof location === 'string') {
        await response.body.dump({ limit: 16_384 }).catch(() => undefined);
        // Credentials and codes are never carried across a redirect (C61: a 307 moved a client secret).
        if (httpRequest.method !== 'GET') {
          return { ok: false, reason: 'redirect', message: `${httpRequest.step} endpoint answered ${response.statusCode} with a redirect; not followed` };
        }
        if (hop >= options.maxRedirects) return { ok: false, reason: 'redirect', message: 'too many redirects' };
        const next = new URL(location, url).href;
        // A discovery redirect stays on the origin that was asked (DESIGN policy 2, REL-3): a hop to
        // another origin would fetch a document the origin rule never approved (C13).
        if (!sameOrigin(next, url)) return { ok: false, reason: 'redirect', message: `${httpRequest.step} redirect to another origin; not followed` };
        url = next;
        continue;
      }
      const body = await readCapped(response.body, options.maxBodyBytes);
      if (body === undefined) return { ok: false, reason: 'too_large', message: `response body exceeds ${options.maxBodyBytes} bytes` };
      return { ok: true, response: { status: response.statusCode, headers: headerRecord(response.headers), body } };
    }
  } catch (error) {
    if (deadline.aborted) return { ok: false, reason: 'timeout', message: `no complete response within ${options.deadlineMs} ms`, cause: error };
    if (options.signal?.aborted) return { ok: false, reason: 'aborted', message: 'cancelled', cause: error };
    const blocked = error instanceof BlockedTarget || (error as { code?: string })?.code === 'EBLOCKED' || (error as { cause?: { code?: string } })?.cause?.code === 'EBLOCKED';
    const code = (error as { code?: string })?.code;
    return {
      ok: false,
      reason: blocked ? 'blocked' : 'unreachable',
      message: blocked ? 'the target resolves to a refused network' : `connection failed${code ? ` (${code})` : ''}`,
      cause: error,
    };
  }
}
