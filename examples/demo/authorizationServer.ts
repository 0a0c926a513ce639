/**
 * A loopback OAuth 2.1 authorization server for the demo and the engine's integration tests.
 *
 * It follows RFC 8414 (metadata), RFC 7591 (registration), RFC 6749/OAuth 2.1 (code + PKCE, refresh),
 * RFC 8707 (resource indicators), RFC 9207 (iss), RFC 7009 (revocation), RFC 9700 (refresh token
 * rotation and reuse detection) and, opt-in, RFC 8628 (device authorization grant) strictly, so an engine that passes against it is not relying on a
 * lenient server. Every request is recorded and counted so tests can assert what the engine sent.
 */
import { createHash, randomBytes, randomInt, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';

export type TokenEndpointAuthMethod = 'none' | 'client_secret_basic' | 'client_secret_post';
export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
export type GrantType = 'authorization_code' | 'refresh_token' | 'client_credentials' | typeof DEVICE_CODE_GRANT;

export interface AuthorizationServerOptions {
  /** Read once at start. 0 (default) picks a free port. */
  port?: number;
  /** Read once at start. '' (default): issuer = http://127.0.0.1:<port>. Endpoints stay at the root. */
  issuerPath?: string;
  accessTokenTtlSeconds?: number;
  /** true (default): every refresh returns a new refresh token and kills the old one. */
  rotateRefreshTokens?: boolean;
  /** true (default): presenting a rotated-out refresh token revokes the whole grant (RFC 9700 §4.14.2). */
  revokeFamilyOnRefreshReuse?: boolean;
  scopesSupported?: string[];
  /** Granted when the authorization request has no `scope` (RFC 6749 §3.3 default). */
  defaultScopes?: string[];
  issParameter?: 'correct' | 'omit' | 'wrong';
  clientIdMetadataDocumentSupported?: boolean;
  /** Advertised methods; null omits the field. S256 is always accepted, 'plain' only when listed. */
  codeChallengeMethods?: string[] | null;
  latencyMs?: number;
  denyConsent?: boolean;
  /** grant_types_supported, and the grants /token and /register accept. */
  grantTypes?: GrantType[];
  /** false: no registration_endpoint in metadata and /register answers 404. */
  registrationEnabled?: boolean;
  /** true (default): authorize and token requests must carry `resource` (RFC 8707). */
  requireResource?: boolean;
  /** RFC 8252 §7.3: accept any port for registered http://127.0.0.1 / [::1] redirect URIs. Default false (exact match). */
  loopbackAnyPort?: boolean;
  /** 'oauth' (default) serves RFC 8414 only; 'openid' OIDC discovery only (path-insert and path-append); 'both'. */
  discovery?: 'oauth' | 'openid' | 'both';
  /** Merged over the metadata document; a key set to undefined is removed. */
  metadataOverrides?: Record<string, unknown>;
  /** Milliseconds since the epoch; lets tests move time without fake timers. */
  clock?: () => number;
  /**
   * RFC 8628: serves /device_authorization and the /device verification page, and advertises the
   * former. The grant itself is only usable when DEVICE_CODE_GRANT is also in `grantTypes`.
   */
  deviceAuthorization?: DeviceAuthorizationOptions;
}

export interface DeviceAuthorizationOptions {
  /** Minimum seconds between polls (default 5); 0 lets tests poll back to back. */
  intervalSeconds?: number;
  /** Lifetime of a device code (default 600). */
  expiresInSeconds?: number;
}

export type DeviceAuthorizationStatus = 'pending' | 'approved' | 'denied' | 'redeemed' | 'expired';

export interface DeviceAuthorizationInfo {
  /** As shown to the user: XXXX-XXXX. */
  userCode: string;
  status: DeviceAuthorizationStatus;
  /** Token requests that presented this device code, slow_down and failures included. */
  polls: number;
  clientId: string;
  /** The current polling interval; each slow_down adds 5. */
  intervalSeconds: number;
}

export interface RecordedRequest {
  method: string;
  path: string;
  headers: Record<string, string>;
  body: string;
  query: string;
}

export interface ClientRecord {
  client_id: string;
  client_secret?: string;
  redirect_uris: string[];
  grant_types: string[];
  response_types: string[];
  token_endpoint_auth_method: TokenEndpointAuthMethod;
  application_type?: string;
  scope?: string;
  /** Everything the client sent or was given, as returned by /register. */
  information: Record<string, unknown>;
}

export interface AccessTokenInfo {
  clientId: string;
  scopes: string[];
  resource: string;
  /** Seconds since the epoch, as the MCP SDK's AuthInfo. */
  expiresAt: number;
}

export interface AuthorizationServer {
  issuer: string;
  url: string;
  counts: Record<string, number>;
  requests: RecordedRequest[];
  clients: ReadonlyMap<string, ClientRecord>;
  verifyAccessToken(token: string): AccessTokenInfo | undefined;
  expireAllAccessTokens(): void;
  revokeRefreshTokens(): void;
  resetCounts(): void;
  /** Pre-registers a client (no HTTP, not counted); same validation and defaults as /register. */
  addClient(metadata: Record<string, unknown> & { client_id?: string; client_secret?: string }): ClientRecord;
  /** Stands in for fetching a Client ID Metadata Document, which a loopback test cannot do. */
  addClientMetadataDocument(url: string, document: Record<string, unknown>): void;
  /** Every device code issued, oldest first; the device code itself is never exposed. */
  deviceAuthorizations(): DeviceAuthorizationInfo[];
  options: AuthorizationServerOptions;
  close(): Promise<void>;
}

interface CodeRecord {
  clientId: string;
  redirectUri: string | undefined;
  codeChallenge: string;
  codeChallengeMethod: string;
  scopes: string[];
  resource: string | undefined;
  expiresAt: number;
  used: boolean;
  grantId: string;
}

interface DeviceCodeRecord {
  clientId: string;
  /** Normalized: eight alphabet characters, no dash. */
  userCode: string;
  scopes: string[];
  resource: string | undefined;
  expiresAt: number;
  intervalSeconds: number;
  lastPollAt: number | undefined;
  polls: number;
  /** 'expired' is derived from expiresAt when read, so the clock option alone decides it. */
  status: Exclude<DeviceAuthorizationStatus, 'expired'>;
  grantId: string;
}

interface AccessTokenRecord extends AccessTokenInfo {
  grantId: string;
  revoked: boolean;
}

interface RefreshTokenRecord {
  clientId: string;
  scopes: string[];
  resource: string | undefined;
  grantId: string;
  /** 'rotated' is kept apart from 'revoked' so only replay of a rotated-out token triggers reuse detection. */
  state: 'active' | 'rotated' | 'revoked';
}

class OAuthError extends Error {
  constructor(
    readonly error: string,
    readonly description: string,
    readonly status = 400,
    readonly headers: Record<string, string> = {},
  ) {
    super(description);
  }
}

const BODY_LIMIT = 1024 * 1024;
const CODE_TTL_MS = 60_000;
const SUPPORTED_AUTH_METHODS: TokenEndpointAuthMethod[] = ['none', 'client_secret_basic', 'client_secret_post'];
const NO_STORE = { 'cache-control': 'no-store', pragma: 'no-cache' };
/** RFC 8628 §6.1: consonants only, so a code spells no word and survives being read aloud. */
const USER_CODE_ALPHABET = 'BCDFGHJKLMNPQRSTVWXZ';
const USER_CODE_LENGTH = 8;
const SLOW_DOWN_STEP_SECONDS = 5;
// The verification page is where a user types a code, so it loads nothing, leaks no Referer and cannot be framed.
const DEVICE_PAGE_HEADERS = {
  'content-type': 'text/html; charset=utf-8',
  'referrer-policy': 'no-referrer',
  'content-security-policy': "default-src 'none'; form-action 'self'; frame-ancestors 'none'",
  ...NO_STORE,
};

function opaqueToken(): string {
  return randomBytes(32).toString('base64url');
}

function sha256base64url(input: string): string {
  return createHash('sha256').update(input, 'ascii').digest('base64url');
}

function safeEqual(a: string, b: string): boolean {
  const ab = Buffer.from(a);
  const bb = Buffer.from(b);
  return ab.length === bb.length && timingSafeEqual(ab, bb);
}

function isLoopbackHost(hostname: string): boolean {
  return hostname === '127.0.0.1' || hostname === '[::1]' || hostname === 'localhost';
}

function redirectUriProblem(value: unknown): string | undefined {
  if (typeof value !== 'string') return 'redirect URI must be a string';
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    return 'redirect URI is not an absolute URL';
  }
  if (url.hash !== '' || value.includes('#')) return 'redirect URI must not have a fragment';
  if (url.protocol === 'https:') return undefined;
  if (url.protocol === 'http:' && isLoopbackHost(url.hostname)) return undefined;
  return 'redirect URI must be https or http on a loopback host';
}

function splitScope(scope: string | null | undefined): string[] {
  return (scope ?? '').split(' ').filter((s) => s !== '');
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BODY_LIMIT) {
        reject(new OAuthError('invalid_request', 'request body too large', 413));
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function flattenHeaders(req: IncomingMessage): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined) continue;
    out[name.toLowerCase()] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function randomUserCode(): string {
  let code = '';
  // randomInt, not a byte modulo 20, so every character is equally likely.
  for (let i = 0; i < USER_CODE_LENGTH; i++) code += USER_CODE_ALPHABET[randomInt(USER_CODE_ALPHABET.length)];
  return code;
}

/** RFC 8628 §6.1: people type codes loosely, so case, the display dash and spaces do not matter. */
function normalizeUserCode(input: string): string {
  return input.replace(/[\s-]/g, '').toUpperCase();
}

function displayUserCode(code: string): string {
  return `${code.slice(0, USER_CODE_LENGTH / 2)}-${code.slice(USER_CODE_LENGTH / 2)}`;
}

/** RFC 6749 §2.3.1: the id and secret are form-urlencoded before being joined and base64-encoded. */
function formDecode(value: string): string {
  return decodeURIComponent(value.replace(/\+/g, ' '));
}

function singleParams(params: URLSearchParams, allowRepeated: string[] = []): Map<string, string> {
  const out = new Map<string, string>();
  for (const key of new Set(params.keys())) {
    const values = params.getAll(key);
    // RFC 6749 §3.1/§3.2: parameters must not repeat; repeated `resource` is RFC 8707's multi-resource case.
    if (values.length > 1 && !allowRepeated.includes(key)) {
      throw new OAuthError('invalid_request', `parameter ${key} repeated`);
    }
    out.set(key, values[0] ?? '');
  }
  return out;
}

export async function startAuthorizationServer(
  input: AuthorizationServerOptions = {},
): Promise<AuthorizationServer> {
  const options: AuthorizationServerOptions = {
    port: 0,
    issuerPath: '',
    accessTokenTtlSeconds: 3600,
    rotateRefreshTokens: true,
    revokeFamilyOnRefreshReuse: true,
    scopesSupported: ['mcp:read', 'mcp:write', 'offline_access'],
    defaultScopes: ['mcp:read'],
    issParameter: 'correct',
    clientIdMetadataDocumentSupported: false,
    codeChallengeMethods: ['S256'],
    latencyMs: 0,
    denyConsent: false,
    grantTypes: ['authorization_code', 'refresh_token'],
    registrationEnabled: true,
    requireResource: true,
    loopbackAnyPort: false,
    discovery: 'oauth',
    ...input,
  };

  const now = (): number => (options.clock ?? Date.now)();
  const counts: Record<string, number> = {};
  const requests: RecordedRequest[] = [];
  const clients = new Map<string, ClientRecord>();
  const metadataDocuments = new Map<string, Record<string, unknown>>();
  const codes = new Map<string, CodeRecord>();
  const accessTokens = new Map<string, AccessTokenRecord>();
  const refreshTokens = new Map<string, RefreshTokenRecord>();
  const deviceCodes = new Map<string, DeviceCodeRecord>();
  const deviceCodesByUserCode = new Map<string, DeviceCodeRecord>();

  const bump = (key: string): void => {
    counts[key] = (counts[key] ?? 0) + 1;
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ error: 'server_error', error_description: String(err) }));
      } else {
        res.destroy();
      }
    });
  });
  // Idle keep-alive sockets outlive the client's own keep-alive (undici: 4 s), so a loaded machine
  // whose timers fire late never reuses a socket the server has just closed.
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const port = (server.address() as AddressInfo).port;
  const url = `http://127.0.0.1:${port}`;
  const issuerPath = options.issuerPath ?? '';
  const issuer = `${url}${issuerPath}`;

  function metadata(): Record<string, unknown> {
    const doc: Record<string, unknown> = {
      issuer,
      authorization_endpoint: `${url}/authorize`,
      token_endpoint: `${url}/token`,
      registration_endpoint: options.registrationEnabled === false ? undefined : `${url}/register`,
      revocation_endpoint: `${url}/revoke`,
      device_authorization_endpoint: options.deviceAuthorization === undefined ? undefined : `${url}/device_authorization`,
      response_types_supported: ['code'],
      response_modes_supported: ['query'],
      grant_types_supported: options.grantTypes,
      code_challenge_methods_supported: options.codeChallengeMethods ?? undefined,
      token_endpoint_auth_methods_supported: SUPPORTED_AUTH_METHODS,
      revocation_endpoint_auth_methods_supported: SUPPORTED_AUTH_METHODS,
      scopes_supported: options.scopesSupported,
      authorization_response_iss_parameter_supported: options.issParameter === 'omit' ? undefined : true,
      client_id_metadata_document_supported: options.clientIdMetadataDocumentSupported === true,
      ...options.metadataOverrides,
    };
    return Object.fromEntries(Object.entries(doc).filter(([, v]) => v !== undefined));
  }

  function openIdMetadata(): Record<string, unknown> {
    // OIDC discovery requires these even though this server issues no ID tokens.
    return {
      ...metadata(),
      jwks_uri: `${url}/jwks`,
      subject_types_supported: ['public'],
      id_token_signing_alg_values_supported: ['RS256'],
      ...options.metadataOverrides,
    };
  }

  function wellKnownDocuments(): Map<string, () => Record<string, unknown>> {
    const map = new Map<string, () => Record<string, unknown>>();
    const mode = options.discovery ?? 'oauth';
    if (mode === 'oauth' || mode === 'both') {
      map.set(`/.well-known/oauth-authorization-server${issuerPath}`, metadata);
    }
    if (mode === 'openid' || mode === 'both') {
      map.set(`/.well-known/openid-configuration${issuerPath}`, openIdMetadata);
      map.set(`${issuerPath}/.well-known/openid-configuration`, openIdMetadata);
    }
    return map;
  }

  function send(
    res: ServerResponse,
    status: number,
    body: unknown,
    headers: Record<string, string> = {},
  ): void {
    const text = body === undefined ? '' : JSON.stringify(body);
    res.writeHead(status, {
      ...(body === undefined ? {} : { 'content-type': 'application/json' }),
      ...headers,
    });
    res.end(text);
  }

  function sendError(res: ServerResponse, err: OAuthError, extraHeaders: Record<string, string> = {}): void {
    bump(`error:${err.error}`);
    send(
      res,
      err.status,
      { error: err.error, error_description: err.description },
      { ...extraHeaders, ...err.headers },
    );
  }

  function errorPage(res: ServerResponse, error: string, description: string): void {
    bump(`error:${error}`);
    res.writeHead(400, { 'content-type': 'text/html; charset=utf-8', ...NO_STORE });
    res.end(
      `<!doctype html><title>Authorization error</title><h1>${escapeHtml(error)}</h1><p>${escapeHtml(description)}</p>`,
    );
  }

  function validateClientMetadata(
    body: Record<string, unknown>,
    origin: 'register' | 'cimd',
  ): Omit<ClientRecord, 'client_id' | 'information'> {
    const authMethod = body.token_endpoint_auth_method ?? (origin === 'cimd' ? 'none' : 'client_secret_basic');
    if (typeof authMethod !== 'string' || !SUPPORTED_AUTH_METHODS.includes(authMethod as TokenEndpointAuthMethod)) {
      throw new OAuthError('invalid_client_metadata', 'unsupported token_endpoint_auth_method');
    }
    if (origin === 'cimd' && authMethod !== 'none') {
      throw new OAuthError('invalid_client_metadata', 'a metadata document client cannot use a shared secret');
    }
    const grantTypes = body.grant_types ?? ['authorization_code'];
    if (!Array.isArray(grantTypes) || !grantTypes.every((g): g is string => typeof g === 'string')) {
      throw new OAuthError('invalid_client_metadata', 'grant_types must be an array of strings');
    }
    for (const g of grantTypes) {
      if (!(options.grantTypes ?? []).includes(g as GrantType)) {
        throw new OAuthError('invalid_client_metadata', `grant type ${g} not supported`);
      }
    }
    if (grantTypes.includes('client_credentials') && authMethod === 'none') {
      throw new OAuthError('invalid_client_metadata', 'client_credentials requires a confidential client');
    }
    const responseTypes = body.response_types ?? (grantTypes.includes('authorization_code') ? ['code'] : []);
    if (!Array.isArray(responseTypes) || !responseTypes.every((r) => r === 'code')) {
      throw new OAuthError('invalid_client_metadata', 'only response type code is supported');
    }
    if (grantTypes.includes('authorization_code') !== responseTypes.includes('code')) {
      throw new OAuthError('invalid_client_metadata', 'grant_types and response_types are inconsistent');
    }
    const redirectUris = body.redirect_uris;
    if (grantTypes.includes('authorization_code')) {
      if (!Array.isArray(redirectUris) || redirectUris.length === 0) {
        throw new OAuthError('invalid_redirect_uri', 'redirect_uris is required');
      }
      for (const uri of redirectUris) {
        const problem = redirectUriProblem(uri);
        if (problem !== undefined) throw new OAuthError('invalid_redirect_uri', problem);
      }
    } else if (redirectUris !== undefined && !Array.isArray(redirectUris)) {
      throw new OAuthError('invalid_redirect_uri', 'redirect_uris must be an array');
    }
    if (body.application_type !== undefined && body.application_type !== 'web' && body.application_type !== 'native') {
      throw new OAuthError('invalid_client_metadata', 'application_type must be web or native');
    }
    if (body.scope !== undefined && typeof body.scope !== 'string') {
      throw new OAuthError('invalid_client_metadata', 'scope must be a string');
    }
    const record: Omit<ClientRecord, 'client_id' | 'information'> = {
      redirect_uris: (redirectUris as string[] | undefined) ?? [],
      grant_types: grantTypes,
      response_types: responseTypes as string[],
      token_endpoint_auth_method: authMethod as TokenEndpointAuthMethod,
    };
    if (typeof body.application_type === 'string') record.application_type = body.application_type;
    if (typeof body.scope === 'string') record.scope = body.scope;
    return record;
  }

  function registerClient(body: Record<string, unknown>, fixed: { client_id?: string; client_secret?: string } = {}): ClientRecord {
    const validated = validateClientMetadata(body, 'register');
    const clientId = fixed.client_id ?? `client-${randomBytes(12).toString('base64url')}`;
    const information: Record<string, unknown> = {
      ...body,
      ...validated,
      client_id: clientId,
      client_id_issued_at: Math.floor(now() / 1000),
    };
    const record: ClientRecord = { ...validated, client_id: clientId, information };
    if (validated.token_endpoint_auth_method !== 'none') {
      record.client_secret = fixed.client_secret ?? opaqueToken();
      information.client_secret = record.client_secret;
      information.client_secret_expires_at = 0;
    } else {
      delete information.client_secret;
      delete information.client_secret_expires_at;
    }
    clients.set(clientId, record);
    return record;
  }

  function findClient(clientId: string): ClientRecord | undefined {
    const registered = clients.get(clientId);
    if (registered !== undefined) return registered;
    if (options.clientIdMetadataDocumentSupported !== true) return undefined;
    let parsed: URL;
    try {
      parsed = new URL(clientId);
    } catch {
      return undefined;
    }
    if (parsed.protocol !== 'https:') return undefined;
    bump('cimd:lookup');
    const doc = metadataDocuments.get(clientId);
    if (doc === undefined || doc.client_id !== clientId) return undefined;
    try {
      const validated = validateClientMetadata(doc, 'cimd');
      return { ...validated, client_id: clientId, information: { ...doc } };
    } catch {
      return undefined;
    }
  }

  function redirectUriMatches(client: ClientRecord, requested: string): boolean {
    if (client.redirect_uris.includes(requested)) return true;
    if (options.loopbackAnyPort !== true) return false;
    let req: URL;
    try {
      req = new URL(requested);
    } catch {
      return false;
    }
    if (req.protocol !== 'http:' || (req.hostname !== '127.0.0.1' && req.hostname !== '[::1]')) return false;
    return client.redirect_uris.some((registered) => {
      try {
        const reg = new URL(registered);
        reg.port = req.port;
        return reg.href === req.href;
      } catch {
        return false;
      }
    });
  }

  function checkResource(value: string | undefined): void {
    if (value === undefined) {
      if (options.requireResource !== false) throw new OAuthError('invalid_target', 'resource parameter is required');
      return;
    }
    let parsed: URL;
    try {
      parsed = new URL(value);
    } catch {
      throw new OAuthError('invalid_target', 'resource must be an absolute URI');
    }
    if (parsed.hash !== '' || value.includes('#')) throw new OAuthError('invalid_target', 'resource must not have a fragment');
  }

  function checkScopes(requested: string[]): void {
    const supported = options.scopesSupported ?? [];
    const unknown = requested.filter((s) => !supported.includes(s));
    if (unknown.length > 0) throw new OAuthError('invalid_scope', `unsupported scope ${unknown.join(' ')}`);
  }

  function authorizeResponseIss(): string | undefined {
    switch (options.issParameter) {
      case 'omit':
        return undefined;
      case 'wrong':
        return 'https://attacker.example';
      default:
        return issuer;
    }
  }

  function handleAuthorize(res: ServerResponse, query: URLSearchParams): void {
    bump('authorize');
    let params: Map<string, string>;
    try {
      params = singleParams(query, ['resource']);
    } catch (err) {
      if (err instanceof OAuthError) return errorPage(res, err.error, err.description);
      throw err;
    }
    const clientId = params.get('client_id');
    if (clientId === undefined || clientId === '') return errorPage(res, 'invalid_request', 'client_id is required');
    const client = findClient(clientId);
    if (client === undefined) return errorPage(res, 'invalid_client', 'unknown client_id');
    let redirectUri = params.get('redirect_uri');
    if (redirectUri === undefined) {
      // OAuth 2.1 §4.1.1: optional only when exactly one redirect URI is registered.
      if (client.redirect_uris.length !== 1) return errorPage(res, 'invalid_request', 'redirect_uri is required');
    } else if (!redirectUriMatches(client, redirectUri)) {
      return errorPage(res, 'invalid_request', 'redirect_uri is not registered for this client');
    }
    const target = new URL(redirectUri ?? (client.redirect_uris[0] as string));
    const state = params.get('state');

    const redirect = (result: Record<string, string>): void => {
      for (const [k, v] of Object.entries(result)) target.searchParams.set(k, v);
      if (state !== undefined) target.searchParams.set('state', state);
      const iss = authorizeResponseIss();
      if (iss !== undefined) target.searchParams.set('iss', iss);
      if (result.error !== undefined) bump(`error:${result.error}`);
      res.writeHead(302, { location: target.href, ...NO_STORE });
      res.end();
    };

    try {
      if (params.get('response_type') !== 'code') {
        throw new OAuthError('unsupported_response_type', 'response_type must be code');
      }
      if (!client.grant_types.includes('authorization_code')) {
        throw new OAuthError('unauthorized_client', 'client may not use the authorization code grant');
      }
      const challenge = params.get('code_challenge');
      if (challenge === undefined) throw new OAuthError('invalid_request', 'code_challenge is required');
      const method = params.get('code_challenge_method') ?? 'plain';
      const plainAllowed = (options.codeChallengeMethods ?? []).includes('plain');
      if (method !== 'S256' && !(method === 'plain' && plainAllowed)) {
        throw new OAuthError('invalid_request', `code_challenge_method ${method} not supported`);
      }
      if (!/^[A-Za-z0-9\-._~]{43,128}$/.test(challenge)) {
        throw new OAuthError('invalid_request', 'code_challenge is malformed');
      }
      if (query.getAll('resource').length > 1) throw new OAuthError('invalid_target', 'only one resource is supported');
      const resource = params.get('resource');
      checkResource(resource);
      const requestedScopes = params.has('scope') ? splitScope(params.get('scope')) : (options.defaultScopes ?? []);
      checkScopes(requestedScopes);
      if (options.denyConsent === true) throw new OAuthError('access_denied', 'the user denied consent');

      const code = opaqueToken();
      codes.set(code, {
        clientId: client.client_id,
        redirectUri,
        codeChallenge: challenge,
        codeChallengeMethod: method,
        scopes: requestedScopes,
        resource,
        expiresAt: now() + CODE_TTL_MS,
        used: false,
        grantId: opaqueToken(),
      });
      redirect({ code });
    } catch (err) {
      if (!(err instanceof OAuthError)) throw err;
      redirect({ error: err.error, error_description: err.description });
    }
  }

  /** Authenticates the client the way it registered; RFC 6749 §2.3 allows one method per request. */
  function authenticateClient(req: IncomingMessage, params: Map<string, string>): ClientRecord {
    const header = req.headers.authorization;
    let basic: { id: string; secret: string } | undefined;
    if (header !== undefined && /^basic /i.test(header)) {
      const decoded = Buffer.from(header.slice(6).trim(), 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon < 0) throw invalidClient('malformed Basic credentials', true);
      try {
        basic = { id: formDecode(decoded.slice(0, colon)), secret: formDecode(decoded.slice(colon + 1)) };
      } catch {
        throw invalidClient('malformed Basic credentials', true);
      }
    }
    const bodyId = params.get('client_id');
    const bodySecret = params.get('client_secret');
    if (basic !== undefined && bodySecret !== undefined) {
      throw new OAuthError('invalid_request', 'more than one client authentication method');
    }
    if (basic !== undefined && bodyId !== undefined && bodyId !== basic.id) {
      throw invalidClient('client_id does not match the Authorization header', true);
    }
    const clientId = basic?.id ?? bodyId;
    if (clientId === undefined) throw invalidClient('client authentication required', false);
    const client = findClient(clientId);
    if (client === undefined) throw invalidClient('unknown client', basic !== undefined);
    const used: TokenEndpointAuthMethod =
      basic !== undefined ? 'client_secret_basic' : bodySecret !== undefined ? 'client_secret_post' : 'none';
    if (used !== client.token_endpoint_auth_method) {
      throw invalidClient(`client must authenticate with ${client.token_endpoint_auth_method}`, basic !== undefined);
    }
    if (used !== 'none') {
      const presented = basic?.secret ?? bodySecret ?? '';
      if (client.client_secret === undefined || !safeEqual(presented, client.client_secret)) {
        throw invalidClient('client authentication failed', basic !== undefined);
      }
    }
    return client;
  }

  function invalidClient(description: string, viaHeader: boolean): OAuthError {
    // RFC 6749 §5.2: a client that tried the Authorization header gets a matching challenge.
    return new OAuthError(
      'invalid_client',
      description,
      401,
      viaHeader ? { 'www-authenticate': 'Basic realm="token"' } : {},
    );
  }

  function issueTokens(
    client: ClientRecord,
    grantId: string,
    scopes: string[],
    resource: string | undefined,
    refresh: 'new' | 'keep' | 'none',
  ): Record<string, unknown> {
    const ttl = options.accessTokenTtlSeconds ?? 3600;
    const accessToken = opaqueToken();
    accessTokens.set(accessToken, {
      clientId: client.client_id,
      scopes,
      resource: resource ?? '',
      expiresAt: Math.floor(now() / 1000) + ttl,
      grantId,
      revoked: false,
    });
    const response: Record<string, unknown> = {
      access_token: accessToken,
      token_type: 'Bearer',
      expires_in: ttl,
      scope: scopes.join(' '),
    };
    if (refresh === 'new') {
      const refreshToken = opaqueToken();
      refreshTokens.set(refreshToken, { clientId: client.client_id, scopes, resource, grantId, state: 'active' });
      response.refresh_token = refreshToken;
    }
    return response;
  }

  function revokeGrant(grantId: string): void {
    for (const at of accessTokens.values()) if (at.grantId === grantId) at.revoked = true;
    for (const rt of refreshTokens.values()) if (rt.grantId === grantId) rt.state = 'revoked';
  }

  function mayRefresh(client: ClientRecord): boolean {
    return (options.grantTypes ?? []).includes('refresh_token') && client.grant_types.includes('refresh_token');
  }

  function tokenRequest(req: IncomingMessage, body: string): Record<string, unknown> {
    const contentType = req.headers['content-type'] ?? '';
    if (!/^application\/x-www-form-urlencoded\b/i.test(contentType)) {
      throw new OAuthError('invalid_request', 'body must be application/x-www-form-urlencoded');
    }
    const raw = new URLSearchParams(body);
    const params = singleParams(raw, ['resource']);
    const grantType = params.get('grant_type');
    bump(`token:${grantType ?? '(none)'}`);
    const client = authenticateClient(req, params);
    if (grantType === undefined) throw new OAuthError('invalid_request', 'grant_type is required');
    if (!(options.grantTypes ?? []).includes(grantType as GrantType)) {
      throw new OAuthError('unsupported_grant_type', `grant type ${grantType} not supported`);
    }
    if (!client.grant_types.includes(grantType)) {
      throw new OAuthError('unauthorized_client', `client not registered for ${grantType}`);
    }
    if (raw.getAll('resource').length > 1) throw new OAuthError('invalid_target', 'only one resource is supported');
    const resource = params.get('resource');

    if (grantType === 'authorization_code') {
      const code = params.get('code');
      if (code === undefined) throw new OAuthError('invalid_request', 'code is required');
      const record = codes.get(code);
      if (record === undefined || record.clientId !== client.client_id) {
        throw new OAuthError('invalid_grant', 'unknown authorization code');
      }
      if (record.used) {
        // OAuth 2.1 §4.1.3: a replayed code revokes what it already issued.
        revokeGrant(record.grantId);
        throw new OAuthError('invalid_grant', 'authorization code already used');
      }
      // Burned on any presentation, so a failed attempt cannot be retried by someone else.
      record.used = true;
      if (record.expiresAt <= now()) throw new OAuthError('invalid_grant', 'authorization code expired');
      if (record.redirectUri !== undefined && params.get('redirect_uri') !== record.redirectUri) {
        throw new OAuthError('invalid_grant', 'redirect_uri does not match the authorization request');
      }
      const verifier = params.get('code_verifier');
      if (verifier === undefined) throw new OAuthError('invalid_grant', 'code_verifier is required');
      if (!/^[A-Za-z0-9\-._~]{43,128}$/.test(verifier)) throw new OAuthError('invalid_grant', 'code_verifier is malformed');
      const expected = record.codeChallengeMethod === 'S256' ? sha256base64url(verifier) : verifier;
      if (!safeEqual(expected, record.codeChallenge)) throw new OAuthError('invalid_grant', 'PKCE verification failed');
      if (resource === undefined && options.requireResource !== false) {
        throw new OAuthError('invalid_target', 'resource parameter is required');
      }
      if (resource !== undefined && resource !== record.resource) {
        throw new OAuthError('invalid_target', 'resource differs from the authorization request');
      }
      return issueTokens(client, record.grantId, record.scopes, record.resource, mayRefresh(client) ? 'new' : 'none');
    }

    if (grantType === 'refresh_token') {
      const token = params.get('refresh_token');
      if (token === undefined) throw new OAuthError('invalid_request', 'refresh_token is required');
      const record = refreshTokens.get(token);
      if (record === undefined || record.clientId !== client.client_id) {
        throw new OAuthError('invalid_grant', 'unknown refresh token');
      }
      if (record.state !== 'active') {
        if (record.state === 'rotated' && options.revokeFamilyOnRefreshReuse !== false) revokeGrant(record.grantId);
        throw new OAuthError('invalid_grant', 'refresh token is no longer valid');
      }
      if (resource !== undefined && resource !== record.resource) {
        throw new OAuthError('invalid_target', 'resource differs from the original grant');
      }
      let scopes = record.scopes;
      if (params.has('scope')) {
        const requested = splitScope(params.get('scope'));
        if (!requested.every((s) => record.scopes.includes(s))) {
          throw new OAuthError('invalid_scope', 'scope exceeds the original grant');
        }
        scopes = requested;
      }
      const rotate = options.rotateRefreshTokens !== false;
      if (rotate) record.state = 'rotated';
      // Without rotation the response omits refresh_token: RFC 6749 §6 lets the client keep the old one.
      return issueTokens(client, record.grantId, scopes, record.resource, rotate ? 'new' : 'keep');
    }

    if (grantType === DEVICE_CODE_GRANT) return redeemDeviceCode(client, params, resource);

    // client_credentials
    if (client.token_endpoint_auth_method === 'none') {
      throw new OAuthError('unauthorized_client', 'client_credentials requires a confidential client');
    }
    checkResource(resource);
    const scopes = params.has('scope') ? splitScope(params.get('scope')) : (options.defaultScopes ?? []);
    checkScopes(scopes);
    return issueTokens(client, opaqueToken(), scopes, resource, 'none');
  }

  function revokeRequest(req: IncomingMessage, body: string): void {
    const contentType = req.headers['content-type'] ?? '';
    if (!/^application\/x-www-form-urlencoded\b/i.test(contentType)) {
      throw new OAuthError('invalid_request', 'body must be application/x-www-form-urlencoded');
    }
    const params = singleParams(new URLSearchParams(body));
    const client = authenticateClient(req, params);
    const token = params.get('token');
    if (token === undefined) throw new OAuthError('invalid_request', 'token is required');
    const at = accessTokens.get(token);
    if (at !== undefined) {
      if (at.clientId !== client.client_id) throw new OAuthError('unauthorized_client', 'token belongs to another client');
      at.revoked = true;
      return;
    }
    const rt = refreshTokens.get(token);
    if (rt !== undefined) {
      if (rt.clientId !== client.client_id) throw new OAuthError('unauthorized_client', 'token belongs to another client');
      // RFC 7009 §2.1: revoking a refresh token should also end the access tokens of the same grant.
      revokeGrant(rt.grantId);
    }
    // RFC 7009 §2.2: unknown or already-invalid tokens still get 200.
  }

  function mayUseDeviceGrant(client: ClientRecord): boolean {
    return (options.grantTypes ?? []).includes(DEVICE_CODE_GRANT) && client.grant_types.includes(DEVICE_CODE_GRANT);
  }

  function deviceCodeExpired(record: DeviceCodeRecord): boolean {
    return record.expiresAt <= now();
  }

  /** A user code that can still be decided on; expired and unknown codes look the same to the user. */
  function liveDeviceCode(userCode: string): DeviceCodeRecord | undefined {
    const record = deviceCodesByUserCode.get(normalizeUserCode(userCode));
    return record === undefined || deviceCodeExpired(record) ? undefined : record;
  }

  function unusedUserCode(): string {
    // Only live codes must be unique; an expired code's user code may be handed out again.
    for (;;) {
      const code = randomUserCode();
      if (liveDeviceCode(code) === undefined) return code;
    }
  }

  /** RFC 8628 §3.1-3.2: same client authentication as /token, same scope and resource rules as /authorize. */
  function deviceAuthorizationRequest(
    req: IncomingMessage,
    body: string,
    settings: DeviceAuthorizationOptions,
  ): Record<string, unknown> {
    const contentType = req.headers['content-type'] ?? '';
    if (!/^application\/x-www-form-urlencoded\b/i.test(contentType)) {
      throw new OAuthError('invalid_request', 'body must be application/x-www-form-urlencoded');
    }
    const raw = new URLSearchParams(body);
    const params = singleParams(raw, ['resource']);
    const client = authenticateClient(req, params);
    if (!mayUseDeviceGrant(client)) {
      throw new OAuthError('unauthorized_client', 'client may not use the device authorization grant');
    }
    if (raw.getAll('resource').length > 1) throw new OAuthError('invalid_target', 'only one resource is supported');
    const resource = params.get('resource');
    checkResource(resource);
    const scopes = params.has('scope') ? splitScope(params.get('scope')) : (options.defaultScopes ?? []);
    checkScopes(scopes);

    const deviceCode = opaqueToken();
    const userCode = unusedUserCode();
    const expiresIn = settings.expiresInSeconds ?? 600;
    const record: DeviceCodeRecord = {
      clientId: client.client_id,
      userCode,
      scopes,
      resource,
      expiresAt: now() + expiresIn * 1000,
      intervalSeconds: settings.intervalSeconds ?? 5,
      lastPollAt: undefined,
      polls: 0,
      status: 'pending',
      grantId: opaqueToken(),
    };
    deviceCodes.set(deviceCode, record);
    deviceCodesByUserCode.set(userCode, record);
    const verificationUri = `${url}/device`;
    return {
      device_code: deviceCode,
      user_code: displayUserCode(userCode),
      verification_uri: verificationUri,
      verification_uri_complete: `${verificationUri}?user_code=${encodeURIComponent(displayUserCode(userCode))}`,
      expires_in: expiresIn,
      interval: record.intervalSeconds,
    };
  }

  /** RFC 8628 §3.4-3.5: one poll of the token endpoint; only an approved code yields tokens, once. */
  function redeemDeviceCode(
    client: ClientRecord,
    params: Map<string, string>,
    resource: string | undefined,
  ): Record<string, unknown> {
    const deviceCode = params.get('device_code');
    if (deviceCode === undefined) throw new OAuthError('invalid_request', 'device_code is required');
    const record = deviceCodes.get(deviceCode);
    // Another client's code is reported as unknown so a code's existence does not leak across clients.
    if (record === undefined || record.clientId !== client.client_id) {
      throw new OAuthError('invalid_grant', 'unknown device code');
    }
    record.polls += 1;
    if (record.status === 'redeemed') throw new OAuthError('invalid_grant', 'device code already used');
    if (deviceCodeExpired(record)) throw new OAuthError('expired_token', 'device code expired');
    // Same rule as the authorization code grant, so a client cannot get tokens for a resource it did not ask for.
    if (resource === undefined && options.requireResource !== false) {
      throw new OAuthError('invalid_target', 'resource parameter is required');
    }
    if (resource !== undefined && resource !== record.resource) {
      throw new OAuthError('invalid_target', 'resource differs from the device authorization request');
    }
    const previousPoll = record.lastPollAt;
    record.lastPollAt = now();
    if (previousPoll !== undefined && record.lastPollAt - previousPoll < record.intervalSeconds * 1000) {
      // §3.5: the longer interval applies to every later poll of this code, not just the next one.
      record.intervalSeconds += SLOW_DOWN_STEP_SECONDS;
      throw new OAuthError('slow_down', `poll at most every ${record.intervalSeconds} seconds`);
    }
    if (record.status === 'pending') throw new OAuthError('authorization_pending', 'the user has not decided yet');
    if (record.status === 'denied') throw new OAuthError('access_denied', 'the user denied the request');
    record.status = 'redeemed';
    return issueTokens(client, record.grantId, record.scopes, record.resource, mayRefresh(client) ? 'new' : 'none');
  }

  function devicePage(res: ServerResponse, status: number, title: string, content: string): void {
    res.writeHead(status, DEVICE_PAGE_HEADERS);
    res.end(
      `<!doctype html><html lang="en"><meta charset="utf-8"><title>${escapeHtml(title)}</title><h1>${escapeHtml(title)}</h1>${content}</html>`,
    );
  }

  function deviceErrorPage(res: ServerResponse, error: string, description: string): void {
    bump(`error:${error}`);
    devicePage(res, 400, 'Device authorization error', `<p>${escapeHtml(error)}: ${escapeHtml(description)}</p>`);
  }

  /** RFC 8628 §3.3: where the user enters the code; naming the client and scopes is the §5.4 anti-phishing cue. */
  function handleDevicePage(res: ServerResponse, query: URLSearchParams): void {
    bump('device:page');
    const typed = query.get('user_code') ?? '';
    const record = typed === '' ? undefined : liveDeviceCode(typed);
    let request = '';
    if (record !== undefined && record.status === 'pending') {
      const name = findClient(record.clientId)?.information.client_name;
      const who = typeof name === 'string' && name !== '' ? name : record.clientId;
      request = `<p>${escapeHtml(who)} asks for: ${escapeHtml(record.scopes.join(' ') || '(no scope)')}</p>`;
    }
    devicePage(
      res,
      200,
      'Connect a device',
      `${request}<form method="post" action="/device">` +
        `<label>Code <input name="user_code" value="${escapeHtml(typed)}" autocomplete="off" autocapitalize="characters" required></label> ` +
        `<button name="decision" value="approve">Approve</button> <button name="decision" value="deny">Deny</button></form>`,
    );
  }

  function handleDeviceDecision(req: IncomingMessage, res: ServerResponse, body: string): void {
    bump('device:decision');
    const contentType = req.headers['content-type'] ?? '';
    if (!/^application\/x-www-form-urlencoded\b/i.test(contentType)) {
      return deviceErrorPage(res, 'invalid_request', 'body must be application/x-www-form-urlencoded');
    }
    let params: Map<string, string>;
    try {
      params = singleParams(new URLSearchParams(body));
    } catch (err) {
      if (err instanceof OAuthError) return deviceErrorPage(res, err.error, err.description);
      throw err;
    }
    const decision = params.get('decision');
    if (decision !== 'approve' && decision !== 'deny') {
      return deviceErrorPage(res, 'invalid_request', 'decision must be approve or deny');
    }
    const record = liveDeviceCode(params.get('user_code') ?? '');
    if (record === undefined || record.status !== 'pending') {
      return deviceErrorPage(res, 'invalid_grant', 'unknown, expired or already used code');
    }
    // denyConsent stands for a user who refuses everything, whichever button a test presses.
    const approved = decision === 'approve' && options.denyConsent !== true;
    record.status = approved ? 'approved' : 'denied';
    bump(`device:${record.status}`);
    devicePage(res, 200, approved ? 'Device approved' : 'Device denied', `<p>You can return to your device.</p>`);
  }

  function cors(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('access-control-allow-origin', '*');
    res.setHeader('access-control-expose-headers', 'www-authenticate, location');
    if (req.method === 'OPTIONS') {
      res.setHeader('access-control-allow-methods', 'GET, POST, OPTIONS');
      res.setHeader(
        'access-control-allow-headers',
        req.headers['access-control-request-headers'] ?? 'authorization, content-type, dpop',
      );
      res.setHeader('access-control-max-age', '600');
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const parsedUrl = new URL(req.url ?? '/', url);
    const path = parsedUrl.pathname;
    let body = '';
    try {
      body = await readBody(req);
    } catch (err) {
      if (err instanceof OAuthError) return sendError(res, err);
      throw err;
    }
    requests.push({ method, path, headers: flattenHeaders(req), body, query: parsedUrl.search.slice(1) });
    bump(`${method} ${path}`);
    if ((options.latencyMs ?? 0) > 0) await new Promise((r) => setTimeout(r, options.latencyMs));
    cors(req, res);
    if (method === 'OPTIONS') {
      res.writeHead(204);
      res.end();
      return;
    }

    const wellKnown = wellKnownDocuments().get(path);
    if (wellKnown !== undefined) {
      if (method !== 'GET') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'GET' });
      bump('metadata');
      return send(res, 200, wellKnown());
    }
    if (path.startsWith('/.well-known/') || path.includes('/.well-known/')) {
      return send(res, 404, { error: 'not_found' });
    }

    try {
      switch (path) {
        case '/authorize':
          if (method !== 'GET') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'GET' });
          return handleAuthorize(res, parsedUrl.searchParams);
        case '/token': {
          if (method !== 'POST') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'POST' });
          return send(res, 200, tokenRequest(req, body), NO_STORE);
        }
        case '/register': {
          if (options.registrationEnabled === false) return send(res, 404, { error: 'not_found' });
          if (method !== 'POST') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'POST' });
          bump('register');
          let parsed: unknown;
          try {
            parsed = JSON.parse(body);
          } catch {
            throw new OAuthError('invalid_client_metadata', 'body is not JSON');
          }
          if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) {
            throw new OAuthError('invalid_client_metadata', 'body must be a JSON object');
          }
          const { client_id: _id, client_secret: _secret, ...metadataOnly } = parsed as Record<string, unknown>;
          const record = registerClient(metadataOnly);
          return send(res, 201, record.information, NO_STORE);
        }
        case '/revoke': {
          if (method !== 'POST') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'POST' });
          bump('revoke');
          revokeRequest(req, body);
          res.writeHead(200, NO_STORE);
          res.end();
          return;
        }
        case '/device_authorization': {
          const settings = options.deviceAuthorization;
          if (settings === undefined) return send(res, 404, { error: 'not_found' });
          if (method !== 'POST') return send(res, 405, { error: 'method_not_allowed' }, { allow: 'POST' });
          bump('device_authorization');
          return send(res, 200, deviceAuthorizationRequest(req, body, settings), NO_STORE);
        }
        case '/device': {
          if (options.deviceAuthorization === undefined) return send(res, 404, { error: 'not_found' });
          if (method === 'GET') return handleDevicePage(res, parsedUrl.searchParams);
          if (method === 'POST') return handleDeviceDecision(req, res, body);
          return send(res, 405, { error: 'method_not_allowed' }, { allow: 'GET, POST' });
        }
        case '/jwks':
          return send(res, 200, { keys: [] });
        default:
          return send(res, 404, { error: 'not_found' });
      }
    } catch (err) {
      if (err instanceof OAuthError) return sendError(res, err, NO_STORE);
      throw err;
    }
  }

  return {
    issuer,
    url,
    counts,
    requests,
    clients,
    options,
    verifyAccessToken(token) {
      const record = accessTokens.get(token);
      if (record === undefined || record.revoked || record.expiresAt * 1000 <= now()) return undefined;
      return { clientId: record.clientId, scopes: [...record.scopes], resource: record.resource, expiresAt: record.expiresAt };
    },
    expireAllAccessTokens() {
      const past = Math.floor(now() / 1000) - 1;
      for (const record of accessTokens.values()) record.expiresAt = Math.min(record.expiresAt, past);
    },
    revokeRefreshTokens() {
      for (const record of refreshTokens.values()) record.state = 'revoked';
    },
    resetCounts() {
      for (const key of Object.keys(counts)) delete counts[key];
      requests.length = 0;
    },
    addClient(metadata) {
      const { client_id, client_secret, ...rest } = metadata;
      const fixed: { client_id?: string; client_secret?: string } = {};
      if (typeof client_id === 'string') fixed.client_id = client_id;
      if (typeof client_secret === 'string') fixed.client_secret = client_secret;
      return registerClient(rest, fixed);
    },
    addClientMetadataDocument(documentUrl, document) {
      metadataDocuments.set(documentUrl, document);
    },
    deviceAuthorizations() {
      return [...deviceCodes.values()].map((record) => ({
        userCode: displayUserCode(record.userCode),
        status: record.status !== 'redeemed' && deviceCodeExpired(record) ? 'expired' : record.status,
        polls: record.polls,
        clientId: record.clientId,
        intervalSeconds: record.intervalSeconds,
      }));
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
