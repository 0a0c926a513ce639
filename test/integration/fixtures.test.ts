// The loopback fixtures are what the engine's integration tests trust, so they get tested on their own,
// with plain fetch and the SDK client and no engine code.
import { createHash, randomBytes } from 'node:crypto';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { startAuthorizationServer, type AuthorizationServer } from '../../examples/demo/authorizationServer.js';
import { startMcpServer, type McpServer } from '../../examples/demo/mcpServer.js';

const REDIRECT_URI = 'http://127.0.0.1:53682/callback';

let as: AuthorizationServer;
let mcp: McpServer;

beforeAll(async () => {
  as = await startAuthorizationServer();
  mcp = await startMcpServer({ authorizationServer: as });
});

afterAll(async () => {
  await mcp?.close();
  await as?.close();
});

beforeEach(() => {
  as.options.denyConsent = false;
  as.options.issParameter = 'correct';
  as.resetCounts();
  mcp.resetCounts();
});

interface Registered {
  client_id: string;
  client_secret?: string;
  token_endpoint_auth_method: string;
}

interface TokenResponse {
  access_token: string;
  refresh_token?: string;
  token_type: string;
  expires_in: number;
  scope: string;
}

function pkce(): { verifier: string; challenge: string } {
  const verifier = randomBytes(32).toString('base64url');
  return { verifier, challenge: createHash('sha256').update(verifier).digest('base64url') };
}

async function register(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${as.url}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(body),
  });
}

async function registerPublicClient(): Promise<Registered> {
  const res = await register({
    redirect_uris: [REDIRECT_URI],
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token'],
    application_type: 'native',
    client_name: 'fixtures test',
  });
  expect(res.status).toBe(201);
  return (await res.json()) as Registered;
}

async function authorize(
  clientId: string,
  challenge: string,
  extra: Record<string, string> = {},
): Promise<URL> {
  const url = new URL(`${as.url}/authorize`);
  const params: Record<string, string> = {
    response_type: 'code',
    client_id: clientId,
    redirect_uri: REDIRECT_URI,
    code_challenge: challenge,
    code_challenge_method: 'S256',
    state: 'state-123',
    scope: 'mcp:read',
    resource: mcp.url,
    ...extra,
  };
  // An empty value in `extra` drops the parameter.
  for (const [k, v] of Object.entries(params)) if (v !== '') url.searchParams.set(k, v);
  const res = await fetch(url, { redirect: 'manual' });
  expect(res.status).toBe(302);
  return new URL(res.headers.get('location') ?? '');
}

async function token(params: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${as.url}/token`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params).toString(),
  });
}

async function fullFlow(scope = 'mcp:read'): Promise<{ client: Registered; tokens: TokenResponse }> {
  const client = await registerPublicClient();
  const { verifier, challenge } = pkce();
  const location = await authorize(client.client_id, challenge, { scope });
  const code = location.searchParams.get('code') ?? '';
  const res = await token({
    grant_type: 'authorization_code',
    code,
    redirect_uri: REDIRECT_URI,
    code_verifier: verifier,
    client_id: client.client_id,
    resource: mcp.url,
  });
  expect(res.status).toBe(200);
  return { client, tokens: (await res.json()) as TokenResponse };
}

async function connectClient(accessToken: string): Promise<Client> {
  const client = new Client({ name: 'fixtures-test', version: '0.0.0' });
  const transport = new StreamableHTTPClientTransport(new URL(mcp.url), {
    requestInit: { headers: { Authorization: `Bearer ${accessToken}` } },
  });
  await client.connect(transport);
  return client;
}

describe('authorization server fixture', () => {
  it('serves RFC 8414 metadata and 404 for other well-knowns', async () => {
    const res = await fetch(`${as.url}/.well-known/oauth-authorization-server`);
    expect(res.status).toBe(200);
    const doc = (await res.json()) as Record<string, unknown>;
    expect(doc).toMatchObject({
      issuer: as.issuer,
      authorization_endpoint: `${as.url}/authorize`,
      token_endpoint: `${as.url}/token`,
      registration_endpoint: `${as.url}/register`,
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true,
      client_id_metadata_document_supported: false,
    });
    expect((await fetch(`${as.url}/.well-known/openid-configuration`)).status).toBe(404);
    expect(as.counts['GET /.well-known/oauth-authorization-server']).toBe(1);
  });

  it('rejects registration without valid redirect URIs', async () => {
    const missing = await register({ token_endpoint_auth_method: 'none' });
    expect(missing.status).toBe(400);
    expect(await missing.json()).toMatchObject({ error: 'invalid_redirect_uri' });
    const plainHttp = await register({ redirect_uris: ['http://example.com/cb'] });
    expect(await plainHttp.json()).toMatchObject({ error: 'invalid_redirect_uri' });
    expect(as.counts.register).toBe(2);
  });

  it('issues a secret for client_secret_basic and accepts form-urlencoded Basic credentials', async () => {
    const res = await register({ redirect_uris: [REDIRECT_URI], grant_types: ['authorization_code'] });
    const client = (await res.json()) as Registered & { client_secret_expires_at: number };
    expect(client.token_endpoint_auth_method).toBe('client_secret_basic');
    expect(client.client_secret).toBeTypeOf('string');
    expect(client.client_secret_expires_at).toBe(0);
    const { verifier, challenge } = pkce();
    const code = (await authorize(client.client_id, challenge)).searchParams.get('code') ?? '';
    const basic = Buffer.from(
      `${encodeURIComponent(client.client_id)}:${encodeURIComponent(client.client_secret ?? '')}`,
    ).toString('base64');
    const params = { grant_type: 'authorization_code', code, redirect_uri: REDIRECT_URI, code_verifier: verifier, resource: mcp.url };
    const ok = await token(params, { authorization: `Basic ${basic}` });
    expect(ok.status).toBe(200);
    expect(ok.headers.get('cache-control')).toBe('no-store');
    // Registered without refresh_token: no refresh token is issued.
    expect(((await ok.json()) as TokenResponse).refresh_token).toBeUndefined();
    const unknown = await token({ ...params, client_id: 'nobody' });
    expect(unknown.status).toBe(401);
    expect(await unknown.json()).toMatchObject({ error: 'invalid_client' });
  });

  it('redirects with code, state and iss; errors before a known redirect URI are a 400 page', async () => {
    const client = await registerPublicClient();
    const location = await authorize(client.client_id, pkce().challenge);
    expect(`${location.origin}${location.pathname}`).toBe(REDIRECT_URI);
    expect(location.searchParams.get('state')).toBe('state-123');
    expect(location.searchParams.get('iss')).toBe(as.issuer);
    expect(location.searchParams.get('code')).toBeTruthy();

    const missingResource = await authorize(client.client_id, pkce().challenge, { resource: '' });
    expect(missingResource.searchParams.get('error')).toBe('invalid_target');
    const badScope = await authorize(client.client_id, pkce().challenge, { scope: 'mcp:admin' });
    expect(badScope.searchParams.get('error')).toBe('invalid_scope');
    as.options.denyConsent = true;
    const denied = await authorize(client.client_id, pkce().challenge);
    expect(denied.searchParams.get('error')).toBe('access_denied');
    expect(denied.searchParams.get('state')).toBe('state-123');
    expect(denied.searchParams.get('iss')).toBe(as.issuer);

    const wrongRedirect = new URL(`${as.url}/authorize`);
    wrongRedirect.search = new URLSearchParams({
      response_type: 'code',
      client_id: client.client_id,
      redirect_uri: 'http://127.0.0.1:1/evil',
      code_challenge: pkce().challenge,
      code_challenge_method: 'S256',
      resource: mcp.url,
    }).toString();
    const page = await fetch(wrongRedirect, { redirect: 'manual' });
    expect(page.status).toBe(400);
    expect(page.headers.get('location')).toBeNull();
  });

  it('sends the resource parameter verbatim and rejects a reused code', async () => {
    const client = await registerPublicClient();
    const { verifier, challenge } = pkce();
    const code = (await authorize(client.client_id, challenge)).searchParams.get('code') ?? '';
    const params = {
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      client_id: client.client_id,
      resource: mcp.url,
    };
    const first = await token(params);
    const issued = (await first.json()) as TokenResponse;
    expect(as.verifyAccessToken(issued.access_token)?.resource).toBe(mcp.url);
    const second = await token(params);
    expect(second.status).toBe(400);
    expect(await second.json()).toMatchObject({ error: 'invalid_grant' });
    // Replay revoked what the code had issued.
    expect(as.verifyAccessToken(issued.access_token)).toBeUndefined();
    const tokenRequests = as.requests.filter((r) => r.path === '/token');
    expect(tokenRequests.map((r) => new URLSearchParams(r.body).get('resource'))).toEqual([mcp.url, mcp.url]);
    const authorizeRequest = as.requests.find((r) => r.path === '/authorize');
    expect(new URLSearchParams(authorizeRequest?.query).get('resource')).toBe(mcp.url);
    expect(as.counts['token:authorization_code']).toBe(2);
  });
});

describe('MCP server fixture', () => {
  it('challenges without a token and serves path-aware PRM', async () => {
    const res = await fetch(mcp.url, {
      method: 'POST',
      headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' }),
    });
    expect(res.status).toBe(401);
    const prmUrl = `${new URL(mcp.url).origin}/.well-known/oauth-protected-resource/mcp`;
    expect(res.headers.get('www-authenticate')).toBe(`Bearer resource_metadata="${prmUrl}", scope="mcp:read"`);
    const prm = await fetch(prmUrl);
    expect(await prm.json()).toMatchObject({
      resource: mcp.url,
      authorization_servers: [as.issuer],
      scopes_supported: ['mcp:read', 'mcp:write'],
      bearer_methods_supported: ['header'],
    });
    expect((await fetch(`${new URL(mcp.url).origin}/.well-known/oauth-protected-resource`)).status).toBe(404);

    const invalid = await fetch(mcp.url, { method: 'POST', headers: { authorization: 'Bearer not-a-token' } });
    expect(invalid.status).toBe(401);
    expect(invalid.headers.get('www-authenticate')).toBe(
      `Bearer error="invalid_token", resource_metadata="${prmUrl}", scope="mcp:read"`,
    );
    expect(mcp.counts['status:401']).toBe(2);
  });

  it('lists tools through the SDK client, rotates refresh tokens, and steps up on admin-reset', async () => {
    const { client: registered, tokens } = await fullFlow();
    expect(tokens).toMatchObject({ token_type: 'Bearer', expires_in: 3600, scope: 'mcp:read' });

    const client = await connectClient(tokens.access_token);
    try {
      const { tools } = await client.listTools();
      expect(tools.map((t) => t.name).sort()).toEqual(['admin-reset', 'echo', 'whoami']);
      const echoed = await client.callTool({ name: 'echo', arguments: { text: 'hi' } });
      expect(echoed.content).toEqual([{ type: 'text', text: 'hi' }]);
    } finally {
      await client.close();
    }
    expect(mcp.counts['rpc:tools/list']).toBe(1);
    expect(mcp.counts['tool:echo']).toBe(1);

    const refresh = { grant_type: 'refresh_token', client_id: registered.client_id, resource: mcp.url };
    const rotated = await token({ ...refresh, refresh_token: tokens.refresh_token ?? '' });
    expect(rotated.status).toBe(200);
    const next = (await rotated.json()) as TokenResponse;
    expect(next.refresh_token).toBeTruthy();
    expect(next.refresh_token).not.toBe(tokens.refresh_token);
    const newer = await token({ ...refresh, refresh_token: next.refresh_token ?? '' });
    expect(newer.status).toBe(200);
    const newest = (await newer.json()) as TokenResponse;
    const reused = await token({ ...refresh, refresh_token: tokens.refresh_token ?? '' });
    expect(reused.status).toBe(400);
    expect(await reused.json()).toMatchObject({ error: 'invalid_grant' });
    // RFC 9700 reuse detection: the replay killed the live refresh token of that grant as well.
    const afterReuse = await token({ ...refresh, refresh_token: newest.refresh_token ?? '' });
    expect(await afterReuse.json()).toMatchObject({ error: 'invalid_grant' });
    expect(as.counts['token:refresh_token']).toBe(4);

    const { tokens: readOnly } = await fullFlow('mcp:read');
    const forbidden = await fetch(mcp.url, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${readOnly.access_token}`,
        'content-type': 'application/json',
        accept: 'application/json, text/event-stream',
      },
      body: JSON.stringify({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'admin-reset', arguments: {} } }),
    });
    expect(forbidden.status).toBe(403);
    expect(forbidden.headers.get('www-authenticate')).toBe(
      `Bearer error="insufficient_scope", resource_metadata="${mcp.resourceMetadataUrl}", scope="mcp:read mcp:write"`,
    );

    const { tokens: admin } = await fullFlow('mcp:read mcp:write');
    const adminClient = await connectClient(admin.access_token);
    try {
      const result = await adminClient.callTool({ name: 'admin-reset', arguments: {} });
      expect(result.content).toEqual([{ type: 'text', text: 'reset done' }]);
      const who = await adminClient.callTool({ name: 'whoami', arguments: {} });
      const text = (who.content as Array<{ text: string }>)[0]?.text ?? '';
      expect(JSON.parse(text)).toMatchObject({ scopes: ['mcp:read', 'mcp:write'] });
    } finally {
      await adminClient.close();
    }
  });

  it('rejects expired tokens and tokens minted for another resource', async () => {
    const client = await registerPublicClient();
    const { verifier, challenge } = pkce();
    const other = 'https://other.example/mcp';
    const code = (await authorize(client.client_id, challenge, { resource: other })).searchParams.get('code') ?? '';
    const res = await token({
      grant_type: 'authorization_code',
      code,
      redirect_uri: REDIRECT_URI,
      code_verifier: verifier,
      client_id: client.client_id,
      resource: other,
    });
    const foreign = (await res.json()) as TokenResponse;
    const call = (accessToken: string): Promise<Response> =>
      fetch(mcp.url, {
        method: 'POST',
        headers: { authorization: `Bearer ${accessToken}`, 'content-type': 'application/json' },
        body: '{}',
      });
    expect((await call(foreign.access_token)).status).toBe(401);

    const { tokens } = await fullFlow();
    as.expireAllAccessTokens();
    const expired = await call(tokens.access_token);
    expect(expired.status).toBe(401);
    expect(expired.headers.get('www-authenticate')).toContain('error="invalid_token"');
  });
});
