/**
 * A loopback MCP deployment built from parts nobody here wrote: `oidc-provider` (OpenID-certified)
 * as the authorization server, configured the way an MCP deployment would configure it, and the
 * MCP SDK's Streamable HTTP server as the resource server, verifying the provider's JWT access
 * tokens with jose against the provider's JWKS.
 *
 * Machine-to-machine: the client credentials grant is enabled, with pre-registered confidential
 * clients (`options.clients`: a secret, or a `private_key_jwt` JWKS). DPoP (RFC 9449) is on when
 * `options.dpop` is set: the provider then advertises it, binds tokens to the proof's key
 * (`cnf.jkt`), and the MCP server demands `Authorization: DPoP` with a proof it verifies (`htm`,
 * `htu`, `iat`, `jti`, `ath`, and the key's thumbprint against `cnf.jkt`). It stays off by default
 * because the engine uses DPoP automatically when advertised (DESIGN policy 11), and the code-flow
 * tests send bearer tokens by hand.
 */
import { createHash, generateKeyPairSync, randomBytes } from 'node:crypto';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer as SdkMcpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { calculateJwkThumbprint, createRemoteJWKSet, decodeProtectedHeader, EmbeddedJWK, errors as joseErrors, jwtVerify, type JWK, type JWTVerifyGetKey } from 'jose';
import { z } from 'zod';

// oidc-provider ships no type declarations; the few members used here are typed below.
const OIDC_PROVIDER_MODULE: string = 'oidc-provider';

interface InteractionDetails {
  uid: string;
  prompt: { name: string; details: Record<string, unknown> };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

interface GrantInstance {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(indicator: string, scope: string): void;
  save(): Promise<string>;
}

interface OidcContext {
  oidc: {
    params?: Record<string, unknown>;
    client?: { clientId: string };
  };
  type?: string;
  body?: unknown;
}

export interface OidcProviderInstance {
  issuer: string;
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  interactionFinished(req: IncomingMessage, res: ServerResponse, result: Record<string, unknown>, options?: { mergeWithLastSubmission?: boolean }): Promise<void>;
  Grant: (new (init: { accountId: string; clientId: string }) => GrantInstance) & { find(id: string): Promise<GrantInstance | undefined> };
  on(event: string, listener: (ctx: OidcContext, ...rest: unknown[]) => void): unknown;
}

interface OidcProviderModule {
  default: new (issuer: string, configuration: Record<string, unknown>) => OidcProviderInstance;
  errors: { InvalidTarget: new (description?: string) => Error };
}

export interface OidcDeploymentOptions {
  /** Accounts the login page accepts; default alice / wonderland. */
  users?: Record<string, string>;
  /** Lifetime of the JWT access tokens; default 3600 s. */
  accessTokenTtlSeconds?: number;
  /** Reading of the clock the MCP server verifies `exp` with (ms); default Date.now. */
  resourceClock?: () => number;
  /**
   * Mounts the provider under a path (e.g. `/oidc`), making the issuer `http://127.0.0.1:<port>/oidc`.
   * oidc-provider then serves its metadata only under that path (`/oidc/.well-known/…`).
   */
  mountPath?: string;
  /** Turns on oidc-provider's DPoP (advertised, tokens bound with `cnf.jkt`) and the MCP server's proof check. */
  dpop?: boolean;
  /** Pre-registered clients (oidc-provider client metadata), e.g. confidential client-credentials clients. */
  clients?: Array<Record<string, unknown>>;
}

export interface AsRequestRecord {
  method: string;
  path: string;
  /** The raw query of a GET; token and revocation bodies are never recorded (they hold secrets). */
  query: string;
  status?: number;
}

export interface TokenRequestRecord {
  grantType: string;
  resource: string | undefined;
  clientId: string | undefined;
}

export interface McpRecordedRequest {
  method: string;
  path: string;
  status?: number;
}

export interface OidcDeployment {
  issuer: string;
  /** http://127.0.0.1:<port>/mcp: the resource, the PRM `resource` and the tokens' audience. */
  mcpUrl: string;
  resourceMetadataUrl: string;
  provider: OidcProviderInstance;
  user: { username: string; password: string };
  as: {
    /** Events of the provider (`register`, `authorize`, `grant:refresh_token`, `grant.error:invalid_grant`, `login`, `consent`, `consent.denied`, …) and `GET /path`. */
    counts: Record<string, number>;
    requests: AsRequestRecord[];
    tokenRequests: TokenRequestRecord[];
    /** Each dynamic registration as the provider accepted it. */
    registrations: Array<{ clientId: string; scope: string | undefined }>;
    /** Models the adapter currently holds, by name (`RefreshToken`, `Grant`, `Client`…). */
    stored(model: string): number;
  };
  mcp: {
    counts: Record<string, number>;
    requests: McpRecordedRequest[];
    /** Why tokens were refused (jose error codes, or `dpop:…` for a failed proof check), in order. */
    rejections: string[];
    /** Each DPoP proof the MCP server accepted: the thumbprint of its key and its `ath`. */
    dpopProofs: Array<{ jkt: string; ath: string; htm: string; htu: string }>;
  };
  /** POSTs to the provider's revocation endpoint as the (public) client would; returns the status. */
  revoke(token: string, clientId: string, hint?: 'refresh_token' | 'access_token'): Promise<number>;
  /** A raw token request (e.g. replaying a rotated refresh token); returns status and OAuth error. */
  tokenRequest(params: Record<string, string>): Promise<{ status: number; error: string | undefined }>;
  resetCounts(): void;
  close(): Promise<void>;
}

const RESOURCE_SCOPES = ['mcp:read', 'mcp:write'] as const;
const BASE_SCOPE = 'mcp:read';
const ADMIN_SCOPE = 'mcp:write';
const BODY_LIMIT = 1024 * 1024;

let signingKey: Record<string, unknown> | undefined;

/** One RSA key per test process: generation is the slow part and tests never share a provider. */
function providerSigningKey(): Record<string, unknown> {
  if (!signingKey) {
    const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    signingKey = { ...privateKey.export({ format: 'jwk' }), kid: `k-${randomBytes(6).toString('hex')}`, use: 'sig', alg: 'RS256' };
  }
  return signingKey;
}

async function listen(server: Server): Promise<string> {
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

function stop(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BODY_LIMIT) {
        resolve(undefined);
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function escapeHtml(value: string): string {
  return value.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

function html(title: string, body: string): string {
  return `<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title></head><body><main><h1>${escapeHtml(title)}</h1>${body}</main></body></html>`;
}

/**
 * oidc-provider's storage contract, held in maps: one per deployment, so tests never see each
 * other's grants. Grant members are indexed so that revoking one token can revoke its family.
 */
function memoryAdapterFactory(): { factory: (model: string) => unknown; stored: (model: string) => number } {
  const records = new Map<string, { payload: Record<string, unknown>; expiresAt: number }>();
  const grants = new Map<string, Set<string>>();
  const uids = new Map<string, string>();
  const userCodes = new Map<string, string>();
  const live = (key: string): Record<string, unknown> | undefined => {
    const record = records.get(key);
    if (!record) return undefined;
    if (record.expiresAt <= Date.now()) {
      records.delete(key);
      return undefined;
    }
    return record.payload;
  };
  const factory = (model: string) => {
    const key = (id: string) => `${model}:${id}`;
    return {
      async upsert(id: string, payload: Record<string, unknown>, expiresIn?: number) {
        records.set(key(id), { payload, expiresAt: typeof expiresIn === 'number' ? Date.now() + expiresIn * 1000 : Infinity });
        if (typeof payload.grantId === 'string') {
          const members = grants.get(payload.grantId) ?? new Set<string>();
          members.add(key(id));
          grants.set(payload.grantId, members);
        }
        if (model === 'Session' && typeof payload.uid === 'string') uids.set(payload.uid, id);
        if (typeof payload.userCode === 'string') userCodes.set(payload.userCode, id);
      },
      async find(id: string) {
        return live(key(id));
      },
      async findByUid(uid: string) {
        const id = uids.get(uid);
        return id === undefined ? undefined : live(key(id));
      },
      async findByUserCode(userCode: string) {
        const id = userCodes.get(userCode);
        return id === undefined ? undefined : live(key(id));
      },
      async consume(id: string) {
        const payload = live(key(id));
        if (payload) payload.consumed = Math.floor(Date.now() / 1000);
      },
      async destroy(id: string) {
        records.delete(key(id));
      },
      async revokeByGrantId(grantId: string) {
        for (const member of grants.get(grantId) ?? []) records.delete(member);
        grants.delete(grantId);
      },
    };
  };
  const stored = (model: string) => [...records.keys()].filter((k) => k.startsWith(`${model}:`) && live(k) !== undefined).length;
  return { factory, stored };
}

export async function startOidcDeployment(options: OidcDeploymentOptions = {}): Promise<OidcDeployment> {
  const { default: Provider, errors } = (await import(OIDC_PROVIDER_MODULE)) as OidcProviderModule;
  const users = options.users ?? { alice: 'wonderland' };
  const accessTokenTtl = options.accessTokenTtlSeconds ?? 3600;
  const resourceClock = options.resourceClock ?? Date.now;

  // Both listeners first: the provider needs the resource URL, the resource needs the issuer.
  const asServer = createServer();
  const mcpServer = createServer();
  const mount = options.mountPath ?? '';
  if (mount !== '' && !/^(\/[a-z0-9-]+)+$/.test(mount)) throw new TypeError('mountPath: a path like /oidc');
  const asOrigin = await listen(asServer);
  const issuer = `${asOrigin}${mount}`;
  const mcpOrigin = await listen(mcpServer);
  const mcpUrl = `${mcpOrigin}/mcp`;
  const resourceMetadataUrl = `${mcpOrigin}/.well-known/oauth-protected-resource/mcp`;

  const asCounts: Record<string, number> = {};
  const asRequests: AsRequestRecord[] = [];
  const tokenRequests: TokenRequestRecord[] = [];
  const registrations: Array<{ clientId: string; scope: string | undefined }> = [];
  const bumpAs = (name: string) => void (asCounts[name] = (asCounts[name] ?? 0) + 1);
  const adapter = memoryAdapterFactory();

  const provider = new Provider(issuer, {
    adapter: adapter.factory,
    clients: options.clients ?? [],
    jwks: { keys: [providerSigningKey()] },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    // The MCP scopes must be AS scopes: the engine registers its selected scope (RFC 7591 `scope`)
    // and oidc-provider refuses registered scope values it does not list.
    scopes: ['openid', 'offline_access', ...RESOURCE_SCOPES],
    responseTypes: ['code'],
    pkce: { required: () => true },
    findAccount: async (_ctx: unknown, sub: string) => (sub in users ? { accountId: sub, claims: async () => ({ sub }) } : undefined),
    interactions: { url: async (_ctx: unknown, interaction: { uid: string }) => `${mount}/interaction/${interaction.uid}` },
    rotateRefreshToken: () => true,
    clientBasedCORS: () => false,
    ttl: {
      AccessToken: accessTokenTtl,
      ClientCredentials: accessTokenTtl,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 14 * 24 * 3600,
      RefreshToken: 14 * 24 * 3600,
    },
    renderError: async (ctx: OidcContext, out: Record<string, string>) => {
      ctx.type = 'html';
      ctx.body = html('Error', Object.entries(out).map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: ${escapeHtml(String(v))}</p>`).join(''));
    },
    features: {
      devInteractions: { enabled: false },
      registration: { enabled: true },
      // RFC 7009 §2.1: a client revokes only tokens issued to it; anything else is silently ignored.
      revocation: { enabled: true, allowedPolicy: async (_ctx: unknown, client: { clientId: string }, token: { clientId?: string }) => token.clientId === client.clientId },
      dPoP: { enabled: options.dpop === true },
      clientCredentials: { enabled: true },
      rpInitiatedLogout: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // No default resource: a client that omits `resource` gets no token the MCP server accepts.
        getResourceServerInfo: async (_ctx: unknown, indicator: string) => {
          if (indicator !== mcpUrl) throw new errors.InvalidTarget();
          return {
            scope: RESOURCE_SCOPES.join(' '),
            audience: mcpUrl,
            accessTokenTTL: accessTokenTtl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
  });

  provider.on('registration_create.success', (_ctx, client) => {
    bumpAs('register');
    const registered = client as { clientId: string; scope?: string };
    registrations.push({ clientId: registered.clientId, scope: registered.scope });
  });
  provider.on('authorization.success', () => bumpAs('authorize'));
  provider.on('authorization.error', (_ctx, error) => bumpAs(`authorize.error:${(error as { error?: string }).error ?? 'unknown'}`));
  provider.on('interaction.started', (_ctx, prompt) => bumpAs(`interaction:${(prompt as { name?: string }).name ?? 'unknown'}`));
  provider.on('grant.success', (ctx) => {
    const params = ctx.oidc.params ?? {};
    const grantType = String(params.grant_type);
    bumpAs(`grant:${grantType}`);
    tokenRequests.push({
      grantType,
      resource: typeof params.resource === 'string' ? params.resource : undefined,
      clientId: ctx.oidc.client?.clientId,
    });
  });
  provider.on('grant.error', (_ctx, error) => bumpAs(`grant.error:${(error as { error?: string }).error ?? 'unknown'}`));
  provider.on('grant.revoked', () => bumpAs('grant.revoked'));

  const oidcHandler = provider.callback();

  async function interaction(req: IncomingMessage, res: ServerResponse, path: string): Promise<void> {
    const match = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|confirm|abort))?$/.exec(path.slice(mount.length));
    let details: InteractionDetails;
    try {
      details = await provider.interactionDetails(req, res);
    } catch {
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' }).end(html('Sign-in expired', '<p>Start again from the application.</p>'));
      return;
    }
    if (!match || match[1] !== details.uid) {
      res.writeHead(400, { 'content-type': 'text/html; charset=utf-8' }).end(html('Bad request', '<p>Unknown interaction.</p>'));
      return;
    }
    const uid = details.uid;
    const action = match[2];
    const page = (title: string, body: string, status = 200) => {
      res.writeHead(status, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(html(title, body));
    };
    const loginPage = (error?: string) =>
      page(
        'Sign in',
        `${error ? `<p role="alert">${escapeHtml(error)}</p>` : ''}<form method="post" action="${mount}/interaction/${uid}/login">` +
          '<label>Username <input type="text" name="username" autocomplete="username" required></label>' +
          '<label>Password <input type="password" name="password" autocomplete="current-password" required></label>' +
          '<button type="submit">Sign in</button></form>',
      );

    if (req.method === 'GET' && action === undefined) {
      if (details.prompt.name === 'login') return loginPage();
      if (details.prompt.name === 'consent') {
        const scopes = String(details.params.scope ?? '').split(' ').filter(Boolean);
        const resource = String(details.params.resource ?? '');
        return page(
          'Authorize access',
          `<p>The application asks for <code>${escapeHtml(scopes.join(' '))}</code> on <code>${escapeHtml(resource)}</code>.</p>` +
            `<form method="post" action="${mount}/interaction/${uid}/confirm"><button type="submit">Allow</button></form>` +
            `<form method="post" action="${mount}/interaction/${uid}/abort"><button type="submit">Deny</button></form>`,
        );
      }
      return page('Not supported', `<p>Prompt ${escapeHtml(details.prompt.name)} is not supported.</p>`, 501);
    }
    if (req.method !== 'POST') return page('Method not allowed', '', 405);
    const form = new URLSearchParams((await readBody(req)) ?? '');

    if (action === 'login' && details.prompt.name === 'login') {
      const username = form.get('username') ?? '';
      if (!(username in users) || users[username] !== form.get('password')) {
        bumpAs('login.failed');
        return loginPage('Wrong username or password.');
      }
      bumpAs('login');
      await provider.interactionFinished(req, res, { login: { accountId: username } }, { mergeWithLastSubmission: false });
      return;
    }
    if (action === 'confirm' && details.prompt.name === 'consent') {
      const accountId = details.session?.accountId;
      const clientId = String(details.params.client_id);
      if (accountId === undefined) return page('Sign-in expired', '', 400);
      const grant = (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ?? new provider.Grant({ accountId, clientId });
      const missing = details.prompt.details as { missingOIDCScope?: string[]; missingOIDCClaims?: string[]; missingResourceScopes?: Record<string, string[]> };
      if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
      if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
      for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) grant.addResourceScope(indicator, scopes.join(' '));
      const grantId = await grant.save();
      bumpAs('consent');
      await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
      return;
    }
    if (action === 'abort') {
      bumpAs('consent.denied');
      await provider.interactionFinished(req, res, { error: 'access_denied', error_description: 'The user denied the request' }, { mergeWithLastSubmission: false });
      return;
    }
    return page('Bad request', '<p>This step does not match the interaction.</p>', 400);
  }

  asServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', asOrigin);
    const record: AsRequestRecord = { method: req.method ?? 'GET', path: url.pathname, query: req.method === 'GET' ? url.search.slice(1) : '' };
    asRequests.push(record);
    res.on('finish', () => (record.status = res.statusCode));
    const mounted = mount === '' || url.pathname === mount || url.pathname.startsWith(`${mount}/`);
    const local = mounted ? url.pathname.slice(mount.length) : url.pathname;
    bumpAs(`${record.method} ${local.startsWith('/interaction/') ? '/interaction' : local}`);
    if (!mounted) {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not_found' }));
      return;
    }
    if (local.startsWith('/interaction/')) {
      interaction(req, res, url.pathname).catch(() => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' });
        res.end('interaction failed');
      });
      return;
    }
    if (mount !== '') {
      // What a framework's mount does: the provider sees the path below its mount point.
      Object.assign(req, { originalUrl: req.url, url: (req.url ?? '/').slice(mount.length) || '/' });
    }
    oidcHandler(req, res);
  });

  // ------------------------------------------------------------------ the MCP server

  const mcpCounts: Record<string, number> = {};
  const mcpRequests: McpRecordedRequest[] = [];
  const rejections: string[] = [];
  const dpopProofs: Array<{ jkt: string; ath: string; htm: string; htu: string }> = [];
  const seenJtis = new Set<string>();
  const bumpMcp = (name: string) => void (mcpCounts[name] = (mcpCounts[name] ?? 0) + 1);
  let jwks: JWTVerifyGetKey | undefined;

  /** The provider's JWKS, found the way any resource server finds it: through the issuer's discovery. */
  async function keySet(): Promise<JWTVerifyGetKey> {
    if (jwks) return jwks;
    const response = await fetch(`${issuer}/.well-known/openid-configuration`);
    const metadata = z.object({ issuer: z.literal(issuer), jwks_uri: z.url() }).parse(await response.json());
    const set = createRemoteJWKSet(new URL(metadata.jwks_uri));
    await set.reload();
    jwks = set;
    return jwks;
  }

  /**
   * RFC 9449 §7.1 and §4.3: the proof is a `dpop+jwt` signed by the JWK in its header, for this
   * method and URL, fresh, never replayed, with `ath` of the presented token, by the key the token
   * is bound to (`cnf.jkt`).
   */
  async function verifyProof(proof: string | undefined, token: string, jkt: unknown, method: string): Promise<string | undefined> {
    if (typeof jkt !== 'string') return 'dpop:unbound_token';
    if (proof === undefined) return 'dpop:missing_proof';
    try {
      const header = decodeProtectedHeader(proof);
      const { payload } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256', 'RS256', 'PS256', 'EdDSA'], currentDate: new Date(resourceClock()) });
      const now = Math.floor(resourceClock() / 1000);
      if (typeof payload.iat !== 'number' || Math.abs(now - payload.iat) > 60) return 'dpop:stale';
      if (payload.htm !== method) return 'dpop:htm';
      if (payload.htu !== mcpUrl) return 'dpop:htu';
      if (typeof payload.jti !== 'string' || seenJtis.has(payload.jti)) return 'dpop:jti';
      const ath = createHash('sha256').update(token).digest('base64url');
      if (payload.ath !== ath) return 'dpop:ath';
      const thumbprint = await calculateJwkThumbprint(header.jwk as JWK);
      if (thumbprint !== jkt) return 'dpop:jkt';
      seenJtis.add(payload.jti);
      dpopProofs.push({ jkt: thumbprint, ath, htm: String(payload.htm), htu: String(payload.htu) });
      return undefined;
    } catch (error) {
      return `dpop:${error instanceof joseErrors.JOSEError ? error.code : 'invalid'}`;
    }
  }

  async function verify(token: string, scheme: 'bearer' | 'dpop', proof: string | undefined, method: string): Promise<AuthInfo | { rejected: string }> {
    try {
      const { payload } = await jwtVerify(token, await keySet(), {
        issuer,
        audience: mcpUrl,
        typ: 'at+jwt',
        algorithms: ['RS256'],
        requiredClaims: ['exp', 'client_id'],
        currentDate: new Date(resourceClock()),
      });
      const jkt = (payload.cnf as { jkt?: unknown } | undefined)?.jkt;
      // A DPoP-bound token is not a bearer token (RFC 9449 §7.1), and a DPoP request needs a bound token.
      if (jkt !== undefined && scheme === 'bearer') return { rejected: 'dpop:bound_token_as_bearer' };
      if (scheme === 'dpop') {
        const problem = await verifyProof(proof, token, jkt, method);
        if (problem) return { rejected: problem };
      }
      const scopes = typeof payload.scope === 'string' ? payload.scope.split(' ').filter(Boolean) : [];
      return { token, clientId: String(payload.client_id), scopes, expiresAt: payload.exp, resource: new URL(mcpUrl) };
    } catch (error) {
      return { rejected: error instanceof joseErrors.JOSEError ? error.code : 'ERR_UNKNOWN' };
    }
  }

  function challenge(res: ServerResponse, status: 401 | 403, error: string | undefined, scope: string, description?: string): void {
    bumpMcp(`status:${status}`);
    if (error) bumpMcp(`challenge:${error}`);
    const params = [
      ...(error ? [`error=${quote(error)}`] : []),
      ...(description ? [`error_description=${quote(description)}`] : []),
      `scope=${quote(scope)}`,
      `resource_metadata=${quote(resourceMetadataUrl)}`,
    ];
    res.writeHead(status, { 'www-authenticate': `Bearer ${params.join(', ')}`, 'content-type': 'application/json' });
    res.end(JSON.stringify({ error: error ?? 'unauthorized' }));
  }

  function sdkServer(): SdkMcpServer {
    const server = new SdkMcpServer({ name: 'mcp-oauth-oidc-interop', version: '0.1.0' });
    server.registerTool('echo', { description: 'Returns the text it is given.', inputSchema: { text: z.string() } }, ({ text }) => ({
      content: [{ type: 'text', text }],
    }));
    server.registerTool('whoami', { description: 'The calling client and its scopes.' }, (extra) => ({
      content: [{ type: 'text', text: JSON.stringify({ clientId: extra.authInfo?.clientId, scopes: extra.authInfo?.scopes ?? [] }) }],
    }));
    server.registerTool('admin-reset', { description: `Pretends to reset state; needs ${ADMIN_SCOPE}.` }, (extra) =>
      (extra.authInfo?.scopes ?? []).includes(ADMIN_SCOPE)
        ? { content: [{ type: 'text', text: 'reset done' }] }
        : { isError: true, content: [{ type: 'text', text: `missing scope ${ADMIN_SCOPE}` }] },
    );
    return server;
  }

  async function handleMcp(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', mcpOrigin).pathname;
    const record: McpRecordedRequest = { method, path };
    mcpRequests.push(record);
    res.on('finish', () => (record.status = res.statusCode));
    bumpMcp(`${method} ${path}`);

    if (path === '/.well-known/oauth-protected-resource/mcp' && method === 'GET') {
      bumpMcp('prm');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(
        JSON.stringify({
          resource: mcpUrl,
          authorization_servers: [issuer],
          scopes_supported: [...RESOURCE_SCOPES],
          bearer_methods_supported: ['header'],
          resource_name: 'mcp-oauth oidc-provider interop server',
        }),
      );
      return;
    }
    if (path !== '/mcp') {
      res.writeHead(404, { 'content-type': 'application/json' }).end(JSON.stringify({ error: 'not_found' }));
      return;
    }

    const header = req.headers.authorization;
    const bearer = header === undefined ? null : /^(Bearer|DPoP) +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
    // RFC 6750 §3.1: a request without a token gets a challenge with no error code.
    if (!bearer?.[2]) return challenge(res, 401, undefined, BASE_SCOPE);
    const proofHeader = req.headers.dpop;
    const proof = typeof proofHeader === 'string' ? proofHeader : undefined;
    const verdict = await verify(bearer[2], bearer[1]!.toLowerCase() === 'dpop' ? 'dpop' : 'bearer', proof, method);
    if ('rejected' in verdict) {
      rejections.push(verdict.rejected);
      return challenge(res, 401, 'invalid_token', BASE_SCOPE, 'the access token is not valid for this resource');
    }
    if (!verdict.scopes.includes(BASE_SCOPE)) return challenge(res, 403, 'insufficient_scope', BASE_SCOPE);
    bumpMcp('auth:ok');

    if (method !== 'POST') {
      // Stateless server: no standalone SSE stream (GET) and no session to end (DELETE).
      res.writeHead(405, { allow: 'POST', 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Method not allowed.' } }));
      return;
    }
    const raw = await readBody(req);
    let message: unknown;
    try {
      if (raw === undefined) throw new Error('too large');
      message = JSON.parse(raw);
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
      return;
    }
    const calls = (Array.isArray(message) ? message : [message]) as Array<{ method?: unknown; params?: { name?: unknown } }>;
    for (const call of calls) {
      if (typeof call?.method === 'string') bumpMcp(`rpc:${call.method}`);
      if (call?.method === 'tools/call' && typeof call.params?.name === 'string') bumpMcp(`tool:${call.params.name}`);
    }
    const needsAdmin = calls.some((call) => call?.method === 'tools/call' && call.params?.name === 'admin-reset');
    if (needsAdmin && !verdict.scopes.includes(ADMIN_SCOPE)) {
      // MCP step-up: the challenge names every scope the call needs, not only the missing one.
      return challenge(res, 403, 'insufficient_scope', `${BASE_SCOPE} ${ADMIN_SCOPE}`);
    }

    const server = sdkServer();
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close();
      void server.close();
    });
    await server.connect(transport);
    await transport.handleRequest(Object.assign(req, { auth: verdict }), res, message);
  }

  mcpServer.on('request', (req: IncomingMessage, res: ServerResponse) => {
    handleMcp(req, res).catch((error: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32603, message: error instanceof Error ? error.message : 'internal error' } }));
      } else {
        res.destroy();
      }
    });
  });

  // A resource server loads the issuer's metadata and keys when it starts; the log then begins empty.
  await keySet();
  asRequests.length = 0;
  for (const key of Object.keys(asCounts)) delete asCounts[key];

  const [user, password] = Object.entries(users)[0] ?? ['', ''];

  async function form(path: string, params: Record<string, string>): Promise<{ status: number; error: string | undefined }> {
    const response = await fetch(`${issuer}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' },
      body: new URLSearchParams(params).toString(),
    });
    const text = await response.text();
    let error: string | undefined;
    try {
      const body = JSON.parse(text) as { error?: unknown };
      error = typeof body.error === 'string' ? body.error : undefined;
    } catch {
      error = undefined;
    }
    return { status: response.status, error };
  }

  return {
    issuer,
    mcpUrl,
    resourceMetadataUrl,
    provider,
    user: { username: user, password },
    as: { counts: asCounts, requests: asRequests, tokenRequests, registrations, stored: adapter.stored },
    mcp: { counts: mcpCounts, requests: mcpRequests, rejections, dpopProofs },
    async revoke(token, clientId, hint = 'refresh_token') {
      return (await form('/token/revocation', { token, token_type_hint: hint, client_id: clientId })).status;
    },
    tokenRequest: (params) => form('/token', params),
    resetCounts() {
      for (const counts of [asCounts, mcpCounts]) for (const key of Object.keys(counts)) delete counts[key];
      asRequests.length = 0;
      tokenRequests.length = 0;
      registrations.length = 0;
      mcpRequests.length = 0;
      rejections.length = 0;
      dpopProofs.length = 0;
    },
    async close() {
      await Promise.all([stop(mcpServer), stop(asServer)]);
    },
  };
}
