/**
 * Machine-to-machine against oidc-provider: the client credentials grant with pre-registered
 * confidential clients (a secret; `private_key_jwt` with an ES256 key), DPoP-bound tokens the MCP
 * server checks against the proof's key, and logout revoking at the provider's revocation endpoint.
 */
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import { createHash, randomUUID } from 'node:crypto';
import { decodeJwt, decodeProtectedHeader, exportJWK, exportPKCS8, generateKeyPair, SignJWT } from 'jose';
import { describe, expect, it } from 'vitest';
import { createOAuthSession } from '../../src/adapters/session.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { rpc } from '../support/deployment.js';
import { listTools, onCleanup, track } from '../support/harness.js';
import { createFormUserAgent } from './formUserAgent.js';
import { startOidcDeployment, type OidcDeployment, type OidcDeploymentOptions } from './oidcProvider.js';

const M2M = { grant_types: ['client_credentials'], response_types: [], redirect_uris: [], scope: 'mcp:read mcp:write' };
const SECRET_CLIENT = { ...M2M, client_id: 'm2m-secret', client_secret: 'a-long-enough-client-secret-for-tests', token_endpoint_auth_method: 'client_secret_basic' };

async function deploy(options?: OidcDeploymentOptions): Promise<OidcDeployment> {
  const deployment = await startOidcDeployment(options);
  onCleanup(() => deployment.close());
  return deployment;
}

async function whoami(session: { fetch: typeof fetch }, mcpUrl: string): Promise<{ clientId: string; scopes: string[] }> {
  const client = new Client({ name: 'mcp-oauth-m2m', version: '1.0.0' });
  await client.connect(new StreamableHTTPClientTransport(new URL(mcpUrl), { fetch: session.fetch }));
  onCleanup(() => client.close());
  const result = await client.callTool({ name: 'whoami', arguments: {} });
  return JSON.parse((result.content as Array<{ text: string }>)[0]!.text) as { clientId: string; scopes: string[] };
}

async function es256Client(clientId: string) {
  const { publicKey, privateKey } = await generateKeyPair('ES256', { extractable: true });
  const jwk = { ...(await exportJWK(publicKey)), alg: 'ES256', use: 'sig', kid: `${clientId}-key` };
  return {
    metadata: { ...M2M, client_id: clientId, token_endpoint_auth_method: 'private_key_jwt', token_endpoint_auth_signing_alg: 'ES256', jwks: { keys: [jwk] } },
    pem: await exportPKCS8(privateKey),
  };
}

describe('oidc-provider: client credentials', () => {
  it('client_secret_basic: the MCP tool call succeeds with a JWT whose audience is the MCP URL', async () => {
    const d = await deploy({ clients: [SECRET_CLIENT] });
    const store = createMemoryStore();
    const session = track(
      createOAuthSession({ serverUrl: d.mcpUrl, store, policy: { dpop: 'off' }, grant: { type: 'client_credentials', clientId: SECRET_CLIENT.client_id, clientSecret: SECRET_CLIENT.client_secret, authMethod: 'client_secret_basic' } }),
    );
    expect(await whoami(session, d.mcpUrl)).toEqual({ clientId: 'm2m-secret', scopes: expect.arrayContaining(['mcp:read']) });
    const token = await session.getAccessToken();
    expect(decodeProtectedHeader(token)).toMatchObject({ typ: 'at+jwt', alg: 'RS256' });
    expect(decodeJwt(token)).toMatchObject({ iss: d.issuer, aud: d.mcpUrl, client_id: 'm2m-secret' });
    expect(decodeJwt(token).cnf).toBeUndefined();
    expect(d.as.tokenRequests).toEqual([{ grantType: 'client_credentials', resource: d.mcpUrl, clientId: 'm2m-secret' }]);
    expect(d.as.counts['grant:client_credentials']).toBe(1);
    expect(d.as.counts.register ?? 0).toBe(0);
    expect(d.as.counts.authorize ?? 0).toBe(0);
    expect(d.mcp.rejections).toEqual([]);
  });

  it('private_key_jwt with an ES256 key: same result, and a wrong key is refused by the provider', async () => {
    const good = await es256Client('m2m-jwt');
    const d = await deploy({ clients: [good.metadata] });
    const session = track(
      createOAuthSession({ serverUrl: d.mcpUrl, policy: { dpop: 'off' }, grant: { type: 'client_credentials', clientId: 'm2m-jwt', authMethod: 'private_key_jwt', privateKey: good.pem, alg: 'ES256' } }),
    );
    expect(await whoami(session, d.mcpUrl)).toEqual({ clientId: 'm2m-jwt', scopes: expect.arrayContaining(['mcp:read']) });
    expect(decodeJwt(await session.getAccessToken())).toMatchObject({ iss: d.issuer, aud: d.mcpUrl, client_id: 'm2m-jwt' });
    expect(d.as.tokenRequests).toEqual([{ grantType: 'client_credentials', resource: d.mcpUrl, clientId: 'm2m-jwt' }]);
    expect(d.as.counts['grant.error:invalid_client'] ?? 0).toBe(0);

    const other = await es256Client('m2m-jwt');
    const impostor = track(
      createOAuthSession({ serverUrl: d.mcpUrl, policy: { dpop: 'off' }, grant: { type: 'client_credentials', clientId: 'm2m-jwt', authMethod: 'private_key_jwt', privateKey: other.pem, alg: 'ES256' } }),
    );
    await expect(impostor.getAccessToken()).rejects.toMatchObject({ oauthError: 'invalid_client' });
    expect(d.as.counts['grant:client_credentials']).toBe(1);
  });
});

describe('oidc-provider: DPoP', () => {
  it('tokens are DPoP-bound (cnf.jkt) and the MCP server accepts them only with a proof by that key and ath of the token', async () => {
    const d = await deploy({ dpop: true, clients: [SECRET_CLIENT] });
    const store = createMemoryStore();
    const session = track(
      createOAuthSession({ serverUrl: d.mcpUrl, store, grant: { type: 'client_credentials', clientId: SECRET_CLIENT.client_id, clientSecret: SECRET_CLIENT.client_secret } }),
    );
    expect(await whoami(session, d.mcpUrl)).toEqual({ clientId: 'm2m-secret', scopes: expect.arrayContaining(['mcp:read']) });
    const tokens = (await store.get(d.mcpUrl, 'tokens'))!.value;
    expect(String(tokens.token_type).toLowerCase()).toBe('dpop');
    const jkt = (decodeJwt(tokens.access_token).cnf as { jkt?: string } | undefined)?.jkt;
    expect(jkt).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(d.mcp.rejections).toEqual([]);
    // Every MCP request (initialize, initialized, tools/call) carried its own proof, by the bound key.
    expect(d.mcp.dpopProofs.length).toBe(d.mcp.counts['auth:ok']);
    expect(d.mcp.dpopProofs.length).toBeGreaterThanOrEqual(3);
    expect(new Set(d.mcp.dpopProofs.map((p) => p.jkt))).toEqual(new Set([jkt]));
    // htm is checked against each request's method by the server (the SDK client also GETs for its SSE stream).
    expect(d.mcp.dpopProofs.every((p) => p.htu === d.mcpUrl)).toBe(true);
    // One unauthenticated POST found the challenge; every later POST carried a proof.
    expect(d.mcp.counts['status:401']).toBe(1);
    expect(d.mcp.dpopProofs.filter((p) => p.htm === 'POST').length).toBe(d.mcp.counts['POST /mcp']! - 1);
    expect(new Set(d.mcp.dpopProofs.map((p) => p.ath)).size).toBe(1);

    // The same token without a proof (as a bearer token) is refused.
    const init = rpc('tools/list');
    const response = await fetch(d.mcpUrl, { method: 'POST', headers: { ...(init.headers as Record<string, string>), authorization: `Bearer ${tokens.access_token}` }, body: init.body as string });
    await response.text();
    expect(response.status).toBe(401);
    expect(d.mcp.rejections).toEqual(['dpop:bound_token_as_bearer']);

    // A well-formed proof with the right ath, signed by a key the token is not bound to, is refused.
    const thief = await generateKeyPair('ES256');
    const ath = createHash('sha256').update(tokens.access_token).digest('base64url');
    const proof = await new SignJWT({ htm: 'POST', htu: d.mcpUrl, ath })
      .setProtectedHeader({ typ: 'dpop+jwt', alg: 'ES256', jwk: await exportJWK(thief.publicKey) })
      .setIssuedAt()
      .setJti(randomUUID())
      .sign(thief.privateKey);
    const stolen = await fetch(d.mcpUrl, { method: 'POST', headers: { ...(init.headers as Record<string, string>), authorization: `DPoP ${tokens.access_token}`, dpop: proof }, body: init.body as string });
    await stolen.text();
    expect(stolen.status).toBe(401);
    expect(d.mcp.rejections).toEqual(['dpop:bound_token_as_bearer', 'dpop:jkt']);
  });
});

describe('oidc-provider: logout', () => {
  it('after a code-flow sign-in, logout() revokes at the revocation endpoint and the refresh token no longer works', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const agent = createFormUserAgent({ user: d.user });
    const session = track(createOAuthSession({ serverUrl: d.mcpUrl, store, openAuthorizationUrl: agent.opener() }));
    expect(await listTools(session, d.mcpUrl)).toBe(200);
    const tokens = (await store.get(d.mcpUrl, 'tokens'))!.value;
    const clientId = (await store.get(d.mcpUrl, 'client'))!.value.client_id;
    expect(tokens.refresh_token).toBeTruthy();
    expect(d.as.stored('RefreshToken')).toBe(1);

    d.resetCounts();
    const result = await session.logout();
    expect(result).toMatchObject({ hadTokens: true, revocationAttempted: true, revoked: true });
    expect(d.as.requests.filter((r) => r.path === '/token/revocation').map((r) => [r.method, r.status])).toEqual([['POST', 200]]);
    expect(d.as.stored('RefreshToken')).toBe(0);
    expect(await store.get(d.mcpUrl, 'tokens')).toBeUndefined();

    const replay = await d.tokenRequest({ grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: clientId, resource: d.mcpUrl });
    expect(replay).toEqual({ status: 400, error: 'invalid_grant' });
  });
});

describe('oidc-provider: code flow with DPoP, then logout', () => {
  it('the browser-flow tokens are DPoP-bound too; logout() revokes the bound refresh token at the provider', async () => {
    const d = await deploy({ dpop: true });
    const store = createMemoryStore();
    const agent = createFormUserAgent({ user: d.user });
    const session = track(createOAuthSession({ serverUrl: d.mcpUrl, store, openAuthorizationUrl: agent.opener() }));
    expect(await listTools(session, d.mcpUrl)).toBe(200);
    const tokens = (await store.get(d.mcpUrl, 'tokens'))!.value;
    expect(String(tokens.token_type).toLowerCase()).toBe('dpop');
    const jkt = (decodeJwt(tokens.access_token).cnf as { jkt?: string } | undefined)?.jkt;
    expect(jkt).toBeTruthy();
    expect(d.mcp.dpopProofs.map((p) => p.jkt)).toEqual([jkt]);
    expect(d.mcp.rejections).toEqual([]);
    expect(d.as.stored('RefreshToken')).toBe(1);

    d.resetCounts();
    expect(await session.logout()).toMatchObject({ hadTokens: true, revocationAttempted: true, revoked: true });
    expect(d.as.requests.filter((r) => r.path === '/token/revocation').map((r) => [r.method, r.status])).toEqual([['POST', 200]]);
    expect(d.as.stored('RefreshToken')).toBe(0);
    expect(await store.get(d.mcpUrl, 'tokens')).toBeUndefined();
  });
});
