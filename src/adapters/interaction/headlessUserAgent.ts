/**
 * A browser stand-in for tests, the demo and the conformance client: it walks the authorization
 * server's redirects (an auto-approving AS answers with nothing but redirects and cookies) until
 * one points at the redirect URI, then hands that redirect to the callback server as a browser
 * would. Never use it against an AS that expects a person to log in.
 */
import { request, type Dispatcher } from 'undici';
import { OAuthFlowError, quoteUntrusted } from '../../machines/errors.js';

export interface HeadlessUserAgentOptions {
  dispatcher?: Dispatcher;
  /** Redirects followed before the one to the redirect URI; default 10. */
  maxRedirects?: number;
  /** For the whole authorization, delivery included; default 10 s. */
  deadlineMs?: number;
  /** Default true: GET the redirect URI so a real loopback callback server receives it. */
  deliver?: boolean;
}

export interface HeadlessUserAgent {
  authorize(authorizationUrl: string, redirectUri: string, signal?: AbortSignal): Promise<URLSearchParams>;
}

const REDIRECT_STATUSES = new Set([301, 302, 303, 307, 308]);
/** Pages are discarded; a huge one should not be downloaded just to be thrown away. */
const BODY_DUMP_LIMIT = 64 * 1024;
const TIMEOUT = Symbol('deadline');

export function createHeadlessUserAgent(options: HeadlessUserAgentOptions = {}): HeadlessUserAgent {
  const maxRedirects = options.maxRedirects ?? 10;
  const deadlineMs = options.deadlineMs ?? 10_000;
  const deliver = options.deliver ?? true;
  const dispatcher = options.dispatcher;

  return {
    async authorize(authorizationUrl, redirectUri, signal) {
      const start = httpUrl(authorizationUrl, 'authorization URL');
      const target = httpUrl(redirectUri, 'redirect URI');
      signal?.throwIfAborted();

      const controller = new AbortController();
      const timer = setTimeout(() => controller.abort(TIMEOUT), deadlineMs);
      const onAbort = (): void => controller.abort(signal?.reason);
      signal?.addEventListener('abort', onAbort, { once: true });
      // Cookies live only as long as this one authorization, like a private browsing window.
      const jar = new CookieJar();

      const get = async (url: URL): Promise<Dispatcher.ResponseData> => {
        const cookie = jar.header(url);
        const response = await request(url, {
          method: 'GET',
          headers: { accept: 'text/html,*/*', 'user-agent': 'mcp-oauth-headless', ...(cookie ? { cookie } : {}) },
          signal: controller.signal,
          ...(dispatcher ? { dispatcher } : {}),
        });
        jar.store(url, response.headers['set-cookie']);
        await response.body.dump({ limit: BODY_DUMP_LIMIT, signal: controller.signal });
        return response;
      };

      try {
        let current = start;
        for (let followed = 0; ; followed++) {
          const response = await get(current);
          const next = nextLocation(response, current);
          if (sameEndpoint(next, target)) {
            // The fragment stays in the browser; only the query reaches the callback server.
            next.hash = '';
            if (deliver) await get(next);
            return new URLSearchParams(next.search);
          }
          if (followed >= maxRedirects) {
            throw new OAuthFlowError({
              code: 'useragent.too_many_redirects',
              message: `The authorization server redirected more than ${maxRedirects} times`,
            });
          }
          current = next;
        }
      } catch (error) {
        if (controller.signal.aborted) {
          if (controller.signal.reason === TIMEOUT) {
            throw new OAuthFlowError(
              { code: 'useragent.timeout', message: `The authorization did not complete within ${deadlineMs} ms` },
              { cause: error },
            );
          }
          throw signal?.reason ?? error;
        }
        if (error instanceof OAuthFlowError) throw error;
        throw new OAuthFlowError(
          { code: 'useragent.request_failed', message: `A request of the headless user agent failed: ${describe(error)}` },
          { cause: error },
        );
      } finally {
        clearTimeout(timer);
        signal?.removeEventListener('abort', onAbort);
      }
    },
  };
}

function nextLocation(response: Dispatcher.ResponseData, base: URL): URL {
  const location = response.headers.location;
  if (!REDIRECT_STATUSES.has(response.statusCode) || location === undefined) {
    throw new OAuthFlowError({
      code: 'useragent.no_redirect',
      message: `The authorization server answered ${response.statusCode} without a redirect`,
      status: response.statusCode,
    });
  }
  if (typeof location !== 'string') {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: 'The redirect carried several Location headers' });
  }
  let next: URL;
  try {
    next = new URL(location, base);
  } catch {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: 'The redirect Location is not a URL' });
  }
  // A Location could name file:, javascript: or an OS handler; a browser stand-in must not act on it.
  if (next.protocol !== 'http:' && next.protocol !== 'https:') {
    throw new OAuthFlowError({
      code: 'useragent.bad_location',
      message: `Refusing to follow a redirect to scheme ${quoteUntrusted(next.protocol)}`,
    });
  }
  return next;
}

function httpUrl(value: string, what: string): URL {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new OAuthFlowError({ code: 'useragent.bad_location', message: `The ${what} is not a URL` });
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new OAuthFlowError({
      code: 'useragent.bad_location',
      message: `The ${what} has scheme ${quoteUntrusted(url.protocol)}; only http and https are used`,
    });
  }
  return url;
}

/** Scheme, host, port and path; the query is what the AS adds. `origin` normalises case and default ports. */
function sameEndpoint(a: URL, b: URL): boolean {
  return a.origin === b.origin && a.pathname === b.pathname;
}

function describe(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : error instanceof Error ? error.name : 'unknown error';
}

/** Name=value per origin; Domain, Path and Secure are ignored because one origin is one login. */
class CookieJar {
  private readonly byOrigin = new Map<string, Map<string, string>>();

  store(url: URL, setCookie: string | string[] | undefined): void {
    if (setCookie === undefined) return;
    const cookies = this.byOrigin.get(url.origin) ?? new Map<string, string>();
    this.byOrigin.set(url.origin, cookies);
    for (const line of Array.isArray(setCookie) ? setCookie : [setCookie]) {
      const [pair = '', ...attributes] = line.split(';');
      const eq = pair.indexOf('=');
      if (eq < 1) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      if (name === '') continue;
      if (attributes.some(isExpiry)) cookies.delete(name);
      else cookies.set(name, value);
    }
  }

  header(url: URL): string | undefined {
    const cookies = this.byOrigin.get(url.origin);
    if (!cookies || cookies.size === 0) return undefined;
    return [...cookies].map(([name, value]) => `${name}=${value}`).join('; ');
  }
}

/** True for the attributes that delete a cookie: `Max-Age<=0` or an `Expires` in the past. */
function isExpiry(attribute: string): boolean {
  const eq = attribute.indexOf('=');
  if (eq === -1) return false;
  const key = attribute.slice(0, eq).trim().toLowerCase();
  const value = attribute.slice(eq + 1).trim();
  if (key === 'max-age') return /^-?\d+$/.test(value) && Number(value) <= 0;
  if (key === 'expires') {
    const at = Date.parse(value);
    return !Number.isNaN(at) && at <= Date.now();
  }
  return false;
}
