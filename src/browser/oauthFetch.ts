/**
 * The engine's own OAuth calls (discovery, registration, token) over the page's `fetch`: a total
 * deadline, a body-size cap, no cookies, and the network-class rule of DESIGN policy 6 applied to
 * every URL the browser will contact. A page cannot resolve names, so only literal addresses and
 * `localhost` are classified here; the browser's own Private Network Access rules cover the rest.
 */
import type { HttpRequest } from '../machines/http.js';
import { classifyAddress, isAllowedOAuthUrl, networkClassAllowed, splitUrl, type NetworkClass } from '../machines/urls.js';
import type { OAuthHttpOutcome } from '../adapters/oauthHttp.js';

export type { OAuthHttpOutcome };

export interface BrowserOAuthHttpOptions {
  fetch: typeof fetch;
  deadlineMs: number;
  maxBodyBytes: number;
  checkTarget: (url: string) => string | undefined;
  signal?: AbortSignal;
}

function hostOf(url: string): string | undefined {
  const raw = splitUrl(url);
  return raw?.host;
}

/** Returns a reason when the URL may not be used for an OAuth call, else undefined. */
export function createTargetCheck(serverUrl: string): (url: string) => string | undefined {
  const serverHost = hostOf(serverUrl) ?? '';
  const configured: NetworkClass = classifyAddress(serverHost) ?? 'public';
  return (url) => {
    if (!isAllowedOAuthUrl(url)) return 'only https URLs (http on loopback) may be used for OAuth calls';
    const host = hostOf(url);
    const target = host === undefined ? undefined : classifyAddress(host);
    if (target !== undefined && !networkClassAllowed(configured, target)) {
      return `host ${host} is more internal than the configured server (${configured})`;
    }
    return undefined;
  };
}

async function readCapped(response: Response, maxBytes: number): Promise<string | undefined> {
  const declared = Number(response.headers.get('content-length') ?? NaN);
  if (Number.isFinite(declared) && declared > maxBytes) {
    await response.body?.cancel().catch(() => undefined);
    return undefined;
  }
  if (!response.body) return '';
  const reader = response.body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => undefined);
      return undefined;
    }
    chunks.push(value);
  }
  const joined = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    joined.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return new TextDecoder().decode(joined);
}

function headerRecord(headers: Headers): Record<string, string> {
  const out: Record<string, string> = {};
  headers.forEach((value, name) => {
    out[name.toLowerCase()] = value;
  });
  return out;
}

export async function performBrowserOAuthRequest(httpRequest: HttpRequest, options: BrowserOAuthHttpOptions): Promise<OAuthHttpOutcome> {
  const blocked = options.checkTarget(httpRequest.url);
  if (blocked !== undefined) return { ok: false, reason: 'blocked', message: blocked };
  const deadline = AbortSignal.timeout(options.deadlineMs);
  const signal = options.signal ? AbortSignal.any([deadline, options.signal]) : deadline;
  try {
    const response = await options.fetch(httpRequest.url, {
      method: httpRequest.method,
      headers: httpRequest.headers,
      ...(httpRequest.body === undefined ? {} : { body: httpRequest.body }),
      // Codes, verifiers and secrets are never carried across a redirect, and no cookie rides along.
      redirect: httpRequest.method === 'GET' ? 'follow' : 'manual',
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
      signal,
    });
    if (response.type === 'opaqueredirect') {
      return { ok: false, reason: 'redirect', message: `${httpRequest.step} endpoint answered with a redirect; not followed` };
    }
    if (response.redirected) {
      // The browser walked the hops itself; the final one must still pass the rule the first did.
      const refused = options.checkTarget(response.url);
      if (refused !== undefined) {
        await response.body?.cancel().catch(() => undefined);
        return { ok: false, reason: 'blocked', message: `redirected: ${refused}` };
      }
    }
    const body = await readCapped(response, options.maxBodyBytes);
    if (body === undefined) return { ok: false, reason: 'too_large', message: `response body exceeds ${options.maxBodyBytes} bytes` };
    return { ok: true, response: { status: response.status, headers: headerRecord(response.headers), body } };
  } catch (error) {
    if (deadline.aborted) return { ok: false, reason: 'timeout', message: `no complete response within ${options.deadlineMs} ms`, cause: error };
    if (options.signal?.aborted) return { ok: false, reason: 'aborted', message: 'cancelled', cause: error };
    // A page sees a refused connection and a CORS refusal as the same TypeError.
    return { ok: false, reason: 'unreachable', message: 'connection failed or refused by CORS', cause: error };
  }
}
