/**
 * The hostile-server kit (security-cases.md §5): one scriptable HTTPS fixture on a loopback address
 * that plays the MCP server (`mcp.example`), an honest authorization server (`as.example`), a second
 * one (`as2.example`) and an attacker (`evil.example`), routed by the Host header. An injected
 * resolver maps those "public" names to the fixture's loopback address, and an injected classifier
 * calls that one address public, so the session's network-class policy (DESIGN policy 6) still sees
 * a public server and public authorization servers, while `10.0.0.5`, `127.1`, `169.254.169.254`…
 * stay what they are.
 *
 * Every secret the kit issues is a unique sentinel (`AT_SENTINEL_…`, `RT_SENTINEL_…`, codes, client
 * secrets) and the kit also learns the flow's own secrets as they pass (state from the authorization
 * URL, code_verifier from the token request), so a case can scan logs, traces, errors and the traffic
 * sent to every host for them.
 */
import { createHash, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { createServer, type Server } from 'node:https';
import type { AddressInfo, LookupFunction, Socket } from 'node:net';
import tls from 'node:tls';
import { inspect } from 'node:util';
import diagnostics from 'node:diagnostics_channel';
import { Agent } from 'undici';
import { expect } from 'vitest';
import type { Resolver } from '../../src/adapters/oauthHttp.js';
import type { OAuthSessionOptions } from '../../src/adapters/options.js';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import type { TraceEntry } from '../../src/adapters/trace.js';
import { OAuthFlowError } from '../../src/machines/errors.js';
import { classifyAddress, type NetworkClass } from '../../src/machines/urls.js';

const fixtures = new URL('./fixtures/', import.meta.url);
export const TEST_CA = readFileSync(new URL('ca.pem', fixtures), 'utf8');
const LEAF_CERT = readFileSync(new URL('leaf.pem', fixtures), 'utf8');
const LEAF_KEY = readFileSync(new URL('leaf.key', fixtures), 'utf8');
export const ROGUE_CERT = readFileSync(new URL('rogue.pem', fixtures), 'utf8');
export const ROGUE_KEY = readFileSync(new URL('rogue.key', fixtures), 'utf8');

/** The one loopback address every fixture name resolves to; the injected classifier calls it public. */
export const KIT_ADDRESS = '127.10.0.1';
export const KIT_NAMES = ['mcp.example', 'as.example', 'as2.example', 'evil.example', 'bank-mcp.example', 'as.bank.example', 'other.example'];
/** Resolves to a private address: a "public" name that points inward (C02). */
export const PRIVATE_NAME = 'rebind.example';

// The engine's OAuth agent uses Node's default trust store; the kit's names are signed by a test CA.
// Only connections to the kit's names get the test CA (and only it), so a certificate from any other
// CA (C85) still fails, and nothing is made permissive globally.
const originalConnect = tls.connect;
const patched = Symbol.for('mcp-oauth.security-kit.tls');
if (!(tls as unknown as Record<symbol, boolean>)[patched]) {
  (tls as unknown as Record<symbol, boolean>)[patched] = true;
  (tls as { connect: typeof tls.connect }).connect = function connect(this: unknown, ...args: unknown[]) {
    const first = args[0] as tls.ConnectionOptions | undefined;
    if (first && typeof first === 'object' && first.ca === undefined && typeof first.servername === 'string' && [...KIT_NAMES, PRIVATE_NAME].includes(first.servername)) {
      args[0] = { ...first, ca: TEST_CA };
    }
    return (originalConnect as (...a: unknown[]) => tls.TLSSocket).apply(this, args);
  } as typeof tls.connect;
}

// ------------------------------------------------------------------------------------------ replies

export type Reply =
  | { kind?: 'send'; status: number; headers?: Record<string, string>; body?: string | Buffer }
  /** 200 headers, then data forever (until the client goes away or `limitBytes`). */
  | { kind: 'endless'; headers?: Record<string, string>; chunk?: string; limitBytes?: number }
  /** 200 headers, then one byte every `everyMs` (slowloris). */
  | { kind: 'drip'; everyMs: number; headers?: Record<string, string> }
  /** Accept and never answer. */
  | { kind: 'hang' }
  /** Headers and part of the body, then the connection is destroyed. */
  | { kind: 'reset'; status?: number; headers?: Record<string, string>; partial?: string };

export const json = (value: unknown, status = 200, headers: Record<string, string> = {}): Reply => ({
  status,
  headers: { 'content-type': 'application/json', ...headers },
  body: typeof value === 'string' ? value : JSON.stringify(value),
});
export const redirect = (location: string, status = 302): Reply => ({ status, headers: { location } });
export const status = (code: number, headers: Record<string, string> = {}, body = ''): Reply => ({ status: code, headers, body });

export interface Recorded {
  seq: number;
  host: string;
  method: string;
  path: string;
  url: string;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export type Handler = (req: Recorded) => Reply | Promise<Reply>;

// ------------------------------------------------------------------------------------------ sentinels

export type SecretKind = 'access_token' | 'refresh_token' | 'code' | 'client_secret' | 'code_verifier' | 'state';

export function sentinel(kind: string): string {
  return `${kind.toUpperCase()}_SENTINEL_${randomBytes(8).toString('hex')}`;
}

// ------------------------------------------------------------------------------------------ the kit

export interface KitOptions {
  rotateRefreshTokens?: boolean;
  /** `expires_in` of issued access tokens. */
  expiresIn?: number;
  /** The scopes PRM lists. */
  scopes?: string[];
}

export interface BrowserVisit {
  url: string;
}

export class Kit {
  port = 0;
  readonly requests: Recorded[] = [];
  readonly secrets = new Map<string, SecretKind>();
  readonly opened: string[] = [];
  readonly logs: string[] = [];
  readonly trace: TraceEntry[] = [];
  readonly errors: unknown[] = [];
  readonly sessions: OAuthSession[] = [];
  readonly validAccessTokens = new Set<string>();
  readonly validRefreshTokens = new Map<string, { scope?: string; clientId: string }>();
  readonly codes = new Map<string, { challenge: string; clientId: string; redirectUri: string; resource?: string; scope?: string }>();
  readonly clients = new Map<string, { secret?: string; redirectUris: string[] }>();
  /** Per host, per path (no query), scripted replies that replace the honest behaviour. */
  private readonly routes = new Map<string, Handler>();
  /** The person at the browser: by default approves at the honest AS and returns the redirect's query. */
  browser: (url: string) => URLSearchParams | undefined | Promise<URLSearchParams | undefined> = (url) => this.approve(url);
  private server!: Server;
  private readonly sockets = new Set<Socket>();
  private readonly timers = new Set<NodeJS.Timeout>();
  readonly mcpAgent: Agent;
  private restoreLogs: (() => void) | undefined;
  private counter = 0;

  constructor(readonly options: KitOptions = {}) {
    this.mcpAgent = new Agent({ connect: { ca: TEST_CA, lookup: this.lookup } });
  }

  origin(host: string): string {
    return `https://${host}:${this.port}`;
  }
  get mcpUrl(): string {
    return `${this.origin('mcp.example')}/mcp`;
  }
  get prmUrl(): string {
    return `${this.origin('mcp.example')}/.well-known/oauth-protected-resource/mcp`;
  }
  get issuer(): string {
    return this.origin('as.example');
  }

  /** Replaces what `host` answers on `path` (exact path, query ignored). */
  route(host: string, path: string, handler: Handler | Reply): void {
    this.routes.set(`${host} ${path}`, typeof handler === 'function' ? handler : () => handler);
  }

  to(host: string, path?: string): Recorded[] {
    return this.requests.filter((r) => r.host === host && (path === undefined || r.path === path));
  }

  /** Per-name address overrides (a second fixture server, a rebinding name…). */
  readonly addresses = new Map<string, Array<{ address: string; family: number }>>();
  /** Every name the engine asked to resolve, in order. */
  readonly lookups: string[] = [];
  /** Remote address and port of every connection any undici client made while the kit ran. */
  readonly connections: string[] = [];
  private readonly onConnected = (message: unknown): void => {
    const socket = (message as { socket?: Socket }).socket;
    this.connections.push(`${socket?.remoteAddress ?? '?'}:${socket?.remotePort ?? '?'}`);
  };

  readonly resolver: Resolver = async (hostname) => {
    this.lookups.push(hostname);
    const override = this.addresses.get(hostname);
    if (override) return override;
    if (hostname === PRIVATE_NAME) return [{ address: '10.0.0.5', family: 4 }];
    if (KIT_NAMES.includes(hostname)) return [{ address: KIT_ADDRESS, family: 4 }];
    throw Object.assign(new Error(`getaddrinfo ENOTFOUND ${hostname}`), { code: 'ENOTFOUND' });
  };

  /** 127.10.0.0/24 is the kit's "internet": public to the policy, loopback to the kernel. */
  readonly classify = (address: string): NetworkClass | undefined => (address.startsWith('127.10.0.') ? 'public' : classifyAddress(address));

  private readonly lookup: LookupFunction = (hostname, options, callback) => {
    const cb = callback as unknown as (...args: unknown[]) => void;
    this.resolver(hostname).then(
      (addresses) => {
        if ((options as { all?: boolean } | undefined)?.all) cb(null, addresses);
        else cb(null, addresses[0]!.address, addresses[0]!.family);
      },
      (error: unknown) => cb(error),
    );
  };

  async start(): Promise<this> {
    this.server = createServer({ cert: LEAF_CERT, key: LEAF_KEY }, (req, res) => void this.handle(req, res));
    this.server.on('secureConnection', (socket: Socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    this.server.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => this.server.listen(0, KIT_ADDRESS, resolve));
    this.port = (this.server.address() as AddressInfo).port;
    this.captureLogs();
    diagnostics.subscribe('undici:client:connected', this.onConnected);
    return this;
  }

  private captureLogs(): void {
    const out = process.stdout.write.bind(process.stdout);
    const errw = process.stderr.write.bind(process.stderr);
    const methods = ['log', 'info', 'warn', 'error', 'debug'] as const;
    const saved = methods.map((m) => console[m]);
    const record = (chunk: unknown) => this.logs.push(typeof chunk === 'string' ? chunk : Buffer.isBuffer(chunk) ? chunk.toString('utf8') : String(chunk));
    process.stdout.write = ((chunk: unknown, ...rest: unknown[]) => {
      record(chunk);
      return (out as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stdout.write;
    process.stderr.write = ((chunk: unknown, ...rest: unknown[]) => {
      record(chunk);
      return (errw as (...a: unknown[]) => boolean)(chunk, ...rest);
    }) as typeof process.stderr.write;
    methods.forEach((m, i) => {
      console[m] = (...args: unknown[]) => {
        record(args.map((a) => (typeof a === 'string' ? a : inspect(a, { depth: 8 }))).join(' '));
        (saved[i] as (...a: unknown[]) => void)(...args);
      };
    });
    this.restoreLogs = () => {
      process.stdout.write = out as typeof process.stdout.write;
      process.stderr.write = errw as typeof process.stderr.write;
      methods.forEach((m, i) => (console[m] = saved[i] as never));
    };
  }

  // ---------------------------------------------------------------------------------- request path

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of req) {
      size += (chunk as Buffer).length;
      if (size > 4 * 1024 * 1024) {
        res.destroy();
        return;
      }
      chunks.push(chunk as Buffer);
    }
    const host = (req.headers.host ?? '').replace(/:\d+$/, '');
    const url = req.url ?? '/';
    const q = url.indexOf('?');
    const recorded: Recorded = {
      seq: ++this.counter,
      host,
      method: req.method ?? 'GET',
      path: q < 0 ? url : url.slice(0, q),
      url,
      headers: { ...req.headers },
      body: Buffer.concat(chunks).toString('utf8'),
    };
    this.requests.push(recorded);
    const handler = this.routes.get(`${host} ${recorded.path}`) ?? ((r: Recorded) => this.honest(r));
    let reply: Reply;
    try {
      reply = await handler(recorded);
    } catch {
      reply = status(500);
    }
    this.respond(res, reply);
  }

  private respond(res: ServerResponse, reply: Reply): void {
    switch (reply.kind) {
      case 'hang':
        return;
      case 'reset': {
        res.writeHead(reply.status ?? 200, { 'content-type': 'application/json', ...reply.headers });
        res.flushHeaders();
        if (reply.partial) res.write(reply.partial);
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          res.socket?.destroy();
        }, 20);
        this.timers.add(timer);
        return;
      }
      case 'endless': {
        res.writeHead(200, { 'content-type': 'application/json', ...reply.headers });
        const chunk = Buffer.from(reply.chunk ?? `{"pad":"${'x'.repeat(65_000)}",`);
        const limit = reply.limitBytes ?? 256 * 1024 * 1024;
        let sent = 0;
        const pump = (): void => {
          while (!res.destroyed && sent < limit) {
            sent += chunk.length;
            if (!res.write(chunk)) {
              res.once('drain', pump);
              return;
            }
          }
          if (!res.destroyed) res.end();
        };
        res.on('close', () => res.removeAllListeners('drain'));
        pump();
        return;
      }
      case 'drip': {
        res.writeHead(200, { 'content-type': 'application/json', ...reply.headers });
        res.write('{');
        const timer = setInterval(() => {
          if (res.destroyed) {
            clearInterval(timer);
            this.timers.delete(timer);
            return;
          }
          res.write(' ');
        }, reply.everyMs);
        this.timers.add(timer);
        res.on('close', () => {
          clearInterval(timer);
          this.timers.delete(timer);
        });
        return;
      }
      default: {
        res.writeHead(reply.status, reply.headers ?? {});
        res.end(reply.body ?? '');
      }
    }
  }

  // ---------------------------------------------------------------------------------- honest roles

  prm(): Record<string, unknown> {
    return { resource: this.mcpUrl, authorization_servers: [this.issuer], scopes_supported: this.options.scopes ?? ['files:read'] };
  }

  asMetadata(issuer = this.issuer): Record<string, unknown> {
    return {
      issuer,
      authorization_endpoint: `${issuer}/authorize`,
      token_endpoint: `${issuer}/token`,
      registration_endpoint: `${issuer}/register`,
      response_types_supported: ['code'],
      grant_types_supported: ['authorization_code', 'refresh_token'],
      code_challenge_methods_supported: ['S256'],
      token_endpoint_auth_methods_supported: ['client_secret_post'],
      authorization_response_iss_parameter_supported: true,
    };
  }

  /** What the honest MCP server's 401 carries; `null` sends no WWW-Authenticate at all. */
  challengeHeader: string | null | undefined;

  challenge(extra = ''): string {
    return `Bearer resource_metadata="${this.prmUrl}"${extra}`;
  }

  private honest(req: Recorded): Reply {
    if (req.host === 'mcp.example') {
      if (req.path === '/.well-known/oauth-protected-resource/mcp') return json(this.prm());
      if (req.path === '/mcp') {
        const auth = String(req.headers.authorization ?? '');
        if (auth.startsWith('Bearer ') && this.validAccessTokens.has(auth.slice(7))) return json({ jsonrpc: '2.0', id: 1, result: { tools: [] } });
        const header = this.challengeHeader === undefined ? this.challenge() : this.challengeHeader;
        return status(401, header === null ? {} : { 'www-authenticate': header });
      }
      return status(404);
    }
    if (req.host === 'as.example' || req.host === 'as2.example') {
      const issuer = this.origin(req.host);
      if (req.path === '/.well-known/oauth-authorization-server') return json(this.asMetadata(issuer));
      if (req.path === '/register' && req.method === 'POST') return this.register(req);
      if (req.path === '/token' && req.method === 'POST') return this.token(req);
      return status(404);
    }
    return status(404);
  }

  register(req: Recorded): Reply {
    const body = JSON.parse(req.body || '{}') as { redirect_uris?: string[]; token_endpoint_auth_method?: string; scope?: string };
    const clientId = `client-${this.counter}-${randomBytes(4).toString('hex')}`;
    const method = body.token_endpoint_auth_method ?? 'client_secret_post';
    const secret = method === 'none' ? undefined : this.issue('client_secret');
    this.clients.set(clientId, { ...(secret ? { secret } : {}), redirectUris: body.redirect_uris ?? [] });
    return json(
      {
        client_id: clientId,
        ...(secret ? { client_secret: secret, client_secret_expires_at: 0 } : {}),
        token_endpoint_auth_method: method,
        redirect_uris: body.redirect_uris,
        grant_types: ['authorization_code', 'refresh_token'],
      },
      201,
    );
  }

  token(req: Recorded): Reply {
    const form = new URLSearchParams(req.body);
    const clientId = form.get('client_id') ?? '';
    const client = this.clients.get(clientId);
    if (!client || (client.secret !== undefined && form.get('client_secret') !== client.secret)) return json({ error: 'invalid_client' }, 401);
    if (form.get('grant_type') === 'authorization_code') {
      const code = form.get('code') ?? '';
      const issued = this.codes.get(code);
      this.codes.delete(code);
      const verifier = form.get('code_verifier') ?? '';
      if (verifier) this.secrets.set(verifier, 'code_verifier');
      const challenge = createHash('sha256').update(verifier).digest('base64url');
      if (!issued || issued.challenge !== challenge || issued.clientId !== clientId || issued.redirectUri !== form.get('redirect_uri')) {
        return json({ error: 'invalid_grant' }, 400);
      }
      return json(this.tokens(clientId, issued.scope));
    }
    if (form.get('grant_type') === 'refresh_token') {
      const rt = form.get('refresh_token') ?? '';
      const known = this.validRefreshTokens.get(rt);
      if (!known) return json({ error: 'invalid_grant', error_description: 'refresh token unknown' }, 400);
      if (this.options.rotateRefreshTokens) this.validRefreshTokens.delete(rt);
      return json(this.tokens(clientId, known.scope, this.options.rotateRefreshTokens ? undefined : rt));
    }
    return json({ error: 'unsupported_grant_type' }, 400);
  }

  tokens(clientId: string, scope?: string, keepRefresh?: string): Record<string, unknown> {
    const at = this.issue('access_token');
    this.validAccessTokens.add(at);
    const rt = keepRefresh ?? this.issue('refresh_token');
    this.validRefreshTokens.set(rt, { clientId, ...(scope ? { scope } : {}) });
    return {
      access_token: at,
      token_type: 'Bearer',
      expires_in: this.options.expiresIn ?? 3600,
      ...(keepRefresh ? {} : { refresh_token: rt }),
      ...(scope ? { scope } : {}),
    };
  }

  issue(kind: SecretKind): string {
    const value = sentinel(kind);
    this.secrets.set(value, kind);
    return value;
  }

  /** The `iss` the consent page answers with (default: the authorization endpoint's origin). */
  authIssuer: string | undefined;

  /** The honest AS's consent page: a code for this request, back to the redirect URI with state and iss. */
  approve(url: string, overrides: Record<string, string | undefined> = {}): URLSearchParams | undefined {
    const parsed = new URL(url);
    if (parsed.origin !== this.issuer && parsed.origin !== this.origin('as2.example')) return undefined;
    const p = parsed.searchParams;
    const state = p.get('state') ?? '';
    this.secrets.set(state, 'state');
    const code = this.issue('code');
    this.codes.set(code, {
      challenge: p.get('code_challenge') ?? '',
      clientId: p.get('client_id') ?? '',
      redirectUri: p.get('redirect_uri') ?? '',
      ...(p.get('resource') ? { resource: p.get('resource')! } : {}),
      ...(p.get('scope') ? { scope: p.get('scope')! } : {}),
    });
    const out = new URLSearchParams({ code, state, iss: this.authIssuer ?? parsed.origin });
    for (const [name, value] of Object.entries(overrides)) {
      if (value === undefined) out.delete(name);
      else out.set(name, value);
    }
    return out;
  }

  // ---------------------------------------------------------------------------------- sessions

  readonly store = createMemoryStore();

  session(overrides: Partial<OAuthSessionOptions> = {}): OAuthSession {
    const session = createOAuthSession({
      serverUrl: this.mcpUrl,
      store: this.store,
      redirect: { uri: 'http://127.0.0.1:9/callback' },
      openAuthorizationUrl: async (url) => {
        this.opened.push(url);
        return this.browser(url);
      },
      resolver: this.resolver,
      classifyAddress: this.classify,
      dispatcher: this.mcpAgent,
      deadlines: { oauthRequestMs: 1_500, callbackMs: 3_000, connectMs: 1_500, storeMs: 2_000 },
      observe: (entry) => this.trace.push(entry),
      ...overrides,
    });
    this.sessions.push(session);
    return session;
  }

  /** A JSON-RPC call through the session: its status, or the error it threw (also kept for the scan). */
  async call(session: OAuthSession, url = this.mcpUrl): Promise<{ status?: number; error?: unknown; body?: string }> {
    try {
      const response = await session.fetch(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
        body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list', params: {} }),
      });
      return { status: response.status, body: await response.text() };
    } catch (error) {
      this.errors.push(error);
      return { error };
    }
  }

  /** The typed error a call ends with. */
  async fails(session: OAuthSession, url = this.mcpUrl): Promise<OAuthFlowError> {
    const outcome = await this.call(session, url);
    expect(outcome.error, `expected a typed error, got status ${outcome.status}`).toBeInstanceOf(OAuthFlowError);
    return outcome.error as OAuthFlowError;
  }

  storeSnapshot(): string {
    return JSON.stringify(this.store.snapshot());
  }

  // ---------------------------------------------------------------------------------- invariants

  /** INV-A: every secret went only where it belongs (the AT to the MCP server; the rest to as.example's token endpoint). */
  assertNoLeak(): void {
    for (const req of this.requests) {
      const text = `${req.url}\n${JSON.stringify(req.headers)}\n${req.body}`;
      for (const [value, kind] of this.secrets) {
        if (value.length < 8 || !text.includes(value)) continue;
        const allowed =
          kind === 'access_token'
            ? req.host === 'mcp.example'
            : kind === 'state'
              ? false
              : (req.host === 'as.example' || req.host === 'as2.example') && req.path === '/token';
        expect(allowed, `${kind} sent to ${req.host}${req.path}`).toBe(true);
      }
    }
  }

  /** INV-C: a typed error with a stable code, no secret in any rendering of it. */
  assertTypedError(error: unknown, code: string | RegExp): OAuthFlowError {
    expect(error).toBeInstanceOf(OAuthFlowError);
    const e = error as OAuthFlowError;
    if (typeof code === 'string') expect(e.code).toBe(code);
    else expect(e.code).toMatch(code);
    expect(e.code).toMatch(/^[a-z_]+\.[a-z0-9_]+$/);
    this.errors.push(e);
    return e;
  }

  /** REL-10 / C99–C101: no sentinel in logs, trace, errors, or the inspection of sessions. */
  assertNoSecretsOutside(): void {
    const texts: string[] = [...this.logs, JSON.stringify(this.trace)];
    for (const s of this.sessions) texts.push(JSON.stringify(s.trace()), JSON.stringify(s), inspect(s, { depth: Infinity }), String(s));
    for (const e of this.errors) {
      texts.push(String(e), inspect(e, { depth: Infinity, showHidden: true }));
      try {
        texts.push(JSON.stringify(e));
      } catch {
        texts.push('[unserialisable]');
      }
      if (e instanceof Error) texts.push(e.message, e.stack ?? '');
    }
    const all = texts.join('\n');
    for (const [value, kind] of this.secrets) {
      if (value.length < 8) continue;
      expect(all.includes(value), `${kind} sentinel found outside the store`).toBe(false);
    }
  }

  sockets_open(): number {
    return this.sockets.size;
  }

  async close(): Promise<void> {
    for (const s of this.sessions) await s.close().catch(() => undefined);
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    await this.mcpAgent.close().catch(() => undefined);
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.restoreLogs?.();
    diagnostics.unsubscribe('undici:client:connected', this.onConnected);
  }

  /** Only the kit's own addresses were ever dialled (no packet to 169.254.169.254, 10.0.0.5, 127.0.0.1…). */
  assertOnlyKitDialled(): void {
    for (const c of this.connections) expect(c.startsWith('127.10.0.'), `connection to ${c}`).toBe(true);
  }
}

/** INV-D: no sockets, servers or ref'd timers left over once everything settled and closed. */
export async function assertNoOpenHandles(baseline: Record<string, number>): Promise<void> {
  for (let i = 0; i < 20; i++) {
    const now = handleCounts();
    if (Object.entries(now).every(([k, v]) => v <= (baseline[k] ?? 0))) return;
    await new Promise((r) => setTimeout(r, 25));
  }
  expect(handleCounts()).toEqual(expect.objectContaining(Object.fromEntries(Object.keys(handleCounts()).map((k) => [k, baseline[k] ?? 0]))));
}

export function handleCounts(): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const name of process.getActiveResourcesInfo()) {
    if (name === 'TCPSocketWrap' || name === 'TCPServerWrap' || name === 'TLSWrap' || name === 'Timeout' || name === 'ProcessWrap') counts[name] = (counts[name] ?? 0) + 1;
  }
  return counts;
}
