/**
 * The benchmark's loopback deployment: the demo authorization server (strict OAuth 2.1, rotating
 * refresh tokens with reuse detection) and a minimal raw node:http MCP resource endpoint on its own
 * port. The resource endpoint is deliberately tiny, and the same for every driver, so the hot path
 * measures the clients rather than an MCP server framework.
 */
import { createHash, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { request } from 'undici';
import { startAuthorizationServer, type AuthorizationServer } from '../examples/demo/authorizationServer.js';

export interface FixtureOptions {
  /** Added before answering every request, on both servers. */
  latencyMs?: number;
  /** `expires_in` of every access token issued from now on. */
  expiresInSeconds?: number;
  /** Every refresh returns a new refresh token and retires the old one (RFC 9700 §4.14). */
  rotateRefreshTokens?: boolean;
}

export interface Fixture {
  /** http://127.0.0.1:<port>/mcp */
  mcpUrl: string;
  issuer: string;
  /** Requests each server received, by `METHOD path`, plus the AS's own tallies (register, authorize, token:<grant>, error:<code>). */
  counts(): { mcp: Record<string, number>; as: Record<string, number> };
  /** Every request both servers received. */
  total(): number;
  /** The `scope` of each authorization request since the last reset, in order. */
  authorizeScopes(): string[];
  reset(): void;
  setLatency(ms: number): void;
  setExpiresIn(seconds: number): void;
  /** A token for the bare drivers, obtained through a real code + PKCE flow (then the counts are reset). */
  mintToken(scope?: string): Promise<string>;
  close(): Promise<void>;
}

/** The resource's scopes: every call needs READ; the `admin-reset` tool also needs WRITE (step-up on demand). */
export const READ = 'mcp:read';
export const WRITE = 'mcp:write';
export const ADMIN_TOOL = 'admin-reset';
/** A redirect URI nobody listens on: every driver reads the code from the authorization response itself. */
export const REDIRECT_URI = 'http://127.0.0.1:9/callback';

export async function startFixture(options: FixtureOptions = {}): Promise<Fixture> {
  const as: AuthorizationServer = await startAuthorizationServer({
    accessTokenTtlSeconds: options.expiresInSeconds ?? 3600,
    rotateRefreshTokens: options.rotateRefreshTokens ?? true,
    revokeFamilyOnRefreshReuse: true,
    latencyMs: options.latencyMs ?? 0,
    scopesSupported: [READ, WRITE, 'offline_access'],
  });
  let latencyMs = options.latencyMs ?? 0;
  const counts: Record<string, number> = {};
  let total = 0;

  const server: Server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500);
      res.end();
    });
  });
  // Between two blocks of one driver the others run (seconds, under load): an idle keep-alive must
  // outlive that, or some blocks would pay a reconnect the others do not.
  server.keepAliveTimeout = 60_000;
  server.on('connection', () => void (counts.connections = (counts.connections ?? 0) + 1));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const mcpUrl = `${origin}/mcp`;
  const prmUrl = `${origin}/.well-known/oauth-protected-resource/mcp`;
  const prm = JSON.stringify({ resource: mcpUrl, authorization_servers: [as.issuer], scopes_supported: [READ, WRITE], bearer_methods_supported: ['header'] });

  function challenge(res: ServerResponse, status: 401 | 403, error: string | undefined, scope: string): void {
    counts[`status:${status}`] = (counts[`status:${status}`] ?? 0) + 1;
    const parts = [...(error ? [`error="${error}"`] : []), `resource_metadata="${prmUrl}"`, `scope="${scope}"`];
    res.writeHead(status, { 'www-authenticate': `Bearer ${parts.join(', ')}`, 'content-type': 'application/json' });
    res.end(`{"error":"${error ?? 'unauthorized'}"}`);
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const path = (req.url ?? '/').split('?')[0] ?? '/';
    const key = `${req.method} ${path}`;
    counts[key] = (counts[key] ?? 0) + 1;
    total += 1;
    if (latencyMs > 0) await new Promise((resolve) => setTimeout(resolve, latencyMs));

    if (path === '/.well-known/oauth-protected-resource/mcp') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(prm);
      return;
    }
    if (path !== '/mcp' || req.method !== 'POST') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end('{"error":"not_found"}');
      return;
    }
    const header = req.headers.authorization;
    if (header === undefined || !header.startsWith('Bearer ')) return challenge(res, 401, undefined, READ);
    const info = as.verifyAccessToken(header.slice(7));
    // Audience binding (RFC 8707): a token for another resource counts as none.
    if (info === undefined || info.resource !== mcpUrl) return challenge(res, 401, 'invalid_token', READ);
    if (!info.scopes.includes(READ)) return challenge(res, 403, 'insufficient_scope', READ);

    let message: { id?: unknown; method?: unknown; params?: { name?: unknown } };
    try {
      message = JSON.parse(Buffer.concat(chunks).toString('utf8')) as typeof message;
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end('{"jsonrpc":"2.0","id":null,"error":{"code":-32700,"message":"Parse error"}}');
      return;
    }
    if (message.method === 'tools/call' && message.params?.name === ADMIN_TOOL && !info.scopes.includes(WRITE)) {
      // MCP step-up: the challenge names every scope the call needs.
      return challenge(res, 403, 'insufficient_scope', `${READ} ${WRITE}`);
    }
    counts['auth:ok'] = (counts['auth:ok'] ?? 0) + 1;
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(`{"jsonrpc":"2.0","id":${JSON.stringify(message.id ?? null)},"result":{"scopes":${JSON.stringify(info.scopes)}}}`);
  }

  async function mintToken(scope = READ): Promise<string> {
    const json = async (url: string, init: Parameters<typeof request>[1]) => {
      const response = await request(url, init);
      const body = (await response.body.json()) as Record<string, unknown>;
      if (response.statusCode >= 300) throw new Error(`fixture: ${url} answered ${response.statusCode} ${JSON.stringify(body)}`);
      return body;
    };
    const client = await json(`${as.url}/register`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: [REDIRECT_URI], token_endpoint_auth_method: 'none', grant_types: ['authorization_code', 'refresh_token'], response_types: ['code'] }),
    });
    const verifier = randomBytes(32).toString('base64url');
    const authorize = new URL(`${as.url}/authorize`);
    for (const [k, v] of Object.entries({
      response_type: 'code',
      client_id: String(client.client_id),
      redirect_uri: REDIRECT_URI,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
      scope,
      resource: mcpUrl,
      state: 'mint',
    }))
      authorize.searchParams.set(k, v);
    const redirect = await request(authorize);
    await redirect.body.dump();
    const code = new URL(String(redirect.headers.location)).searchParams.get('code');
    if (!code) throw new Error('fixture: no code in the authorization response');
    const tokens = await json(`${as.url}/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, client_id: String(client.client_id), resource: mcpUrl }).toString(),
    });
    reset();
    return String(tokens.access_token);
  }

  function reset(): void {
    for (const k of Object.keys(counts)) delete counts[k];
    total = 0;
    as.resetCounts();
  }

  return {
    mcpUrl,
    issuer: as.issuer,
    counts: () => ({ mcp: { ...counts }, as: { ...as.counts } }),
    total: () => total + as.requests.length,
    authorizeScopes: () => as.requests.filter((r) => r.path === '/authorize').map((r) => new URLSearchParams(r.query).get('scope') ?? ''),
    reset,
    setLatency(ms) {
      latencyMs = ms;
      as.options.latencyMs = ms;
    },
    setExpiresIn(seconds) {
      as.options.accessTokenTtlSeconds = seconds;
    },
    mintToken,
    async close() {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await as.close();
    },
  };
}
