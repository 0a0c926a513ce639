/**
 * Machine-to-machine grants over real loopback HTTP (issue 4): client credentials with Basic, post
 * and private_key_jwt (ES256 PEM, RS256 JWK), JWT bearer for workload identity, and
 * enterprise-managed authorization (RFC 8693 → ID-JAG → JWT bearer). The server verifies what it
 * receives; tests count requests and read typed error codes, never times.
 */
import { exportJWK, exportPKCS8, generateKeyPair } from 'jose';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import type { OAuthSessionOptions } from '../../src/adapters/options.js';
import { OAuthConfigError, OAuthTokenError } from '../../src/machines/errors.js';
import { failure, listTools, track } from '../support/harness.js';
import { GRANT_JWT_BEARER, startM2MServer } from '../support/m2mServer.js';

function session(options: OAuthSessionOptions): OAuthSession {
  return track(
    createOAuthSession({
      ...options,
      openAuthorizationUrl: () => {
        throw new Error('a machine-to-machine grant never opens a browser');
      },
    }),
  );
}

/** Everything a trace, an error or `inspect` could show: none of it may carry a secret. */
function visible(s: OAuthSession, error?: unknown): string {
  return JSON.stringify(s.trace()) + inspect(s) + JSON.stringify(s) + (error === undefined ? '' : `${String(error)} ${JSON.stringify(error)} ${inspect(error)}`);
}

describe('client credentials', () => {
  it('client_secret_basic: PRM, AS metadata, one token request with the PRM resource, then the MCP request; no browser, no registration', async () => {
    const server = await startM2MServer();
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', clientSecret: 'm2m-secret', authMethod: 'client_secret_basic' } });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.counts).toEqual({ mcp: 2, 'mcp:401': 1, prm: 1, asm: 1, 'token:client_credentials': 1 });
    const body = server.tokenBodies[0]!;
    expect(body.get('resource')).toBe(server.mcpUrl);
    expect(body.get('scope')).toBe('mcp:read');
    expect(body.get('client_secret')).toBeNull();
    expect(String(server.tokenHeaders[0]?.authorization)).toMatch(/^Basic /);
    expect(s.state).toBe('ready.authorized');
    expect(visible(s)).not.toContain('m2m-secret');
    expect(visible(s)).not.toContain('m2m-token-1');
  });

  it('client_secret_post puts id and secret in the body and no Authorization header', async () => {
    const server = await startM2MServer();
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', clientSecret: 'm2m-secret', authMethod: 'client_secret_post' } });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.tokenBodies[0]?.get('client_secret')).toBe('m2m-secret');
    expect(server.tokenHeaders[0]?.authorization).toBeUndefined();
  });

  it('invalid_client is a typed OAuthTokenError, after exactly one token request', async () => {
    const server = await startM2MServer();
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', clientSecret: 'wrong-secret', authMethod: 'client_secret_basic' } });
    const error = await failure(listTools(s, server.mcpUrl));
    expect(error).toBeInstanceOf(OAuthTokenError);
    expect(error.code).toBe('token.invalid_client');
    expect(error.state).toBe('flow.token.clientCredentials');
    expect(server.counts['token:client_credentials']).toBe(1);
    expect(visible(s, error)).not.toContain('wrong-secret');
  });

  it('a 401 to a held token gets a new one from the same grant (no refresh token), then the request is replayed', async () => {
    const server = await startM2MServer();
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', clientSecret: 'm2m-secret' } });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    server.revokeAll();
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.counts['token:client_credentials']).toBe(2);
    expect(server.counts['mcp:401']).toBe(2);
  });

  it('C80 a 403 insufficient_scope re-requests client credentials with the union scope, once', async () => {
    const server = await startM2MServer({ requiredScope: 'mcp:write' });
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', clientSecret: 'm2m-secret' } });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.counts['token:client_credentials']).toBe(2);
    expect(server.tokenBodies[1]?.get('scope')?.split(' ').sort()).toEqual(['mcp:read', 'mcp:write']);
  });
});

describe('private_key_jwt (RFC 7523 client authentication)', () => {
  it('ES256 PKCS#8 PEM: iss = sub = client_id, aud = the issuer only, exp one minute after iat, a fresh jti each time', async () => {
    const keys = await generateKeyPair('ES256', { extractable: true });
    const server = await startM2MServer({ clientPublicKey: keys.publicKey });
    const pem = await exportPKCS8(keys.privateKey);
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', authMethod: 'private_key_jwt', privateKey: pem, alg: 'ES256' } });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    server.revokeAll();
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.verdicts).toEqual(['ok', 'ok']);
    const [first, second] = server.clientAssertions;
    expect(first?.header.alg).toBe('ES256');
    expect(first?.payload).toMatchObject({ iss: 'm2m-client', sub: 'm2m-client', aud: server.issuer });
    expect(Number(first?.payload.exp) - Number(first?.payload.iat)).toBe(60);
    expect(first?.payload.jti).not.toBe(second?.payload.jti);
    expect(server.tokenBodies[0]?.get('client_assertion_type')).toBe('urn:ietf:params:oauth:client-assertion-type:jwt-bearer');
    const assertion = server.tokenBodies[0]?.get('client_assertion') ?? '';
    expect(assertion.length).toBeGreaterThan(20);
    expect(visible(s)).not.toContain(assertion);
    expect(visible(s)).not.toContain('PRIVATE KEY');
  });

  it('RS256 JWK', async () => {
    const keys = await generateKeyPair('RS256', { extractable: true });
    const server = await startM2MServer({ clientPublicKey: { ...(await exportJWK(keys.publicKey)), alg: 'RS256' } });
    const jwk = await exportJWK(keys.privateKey);
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', authMethod: 'private_key_jwt', privateKey: jwk as never, alg: 'RS256' } });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.clientAssertions[0]?.header.alg).toBe('RS256');
  });

  it('a key the server does not trust: invalid_client, typed', async () => {
    const trusted = await generateKeyPair('ES256');
    const other = await generateKeyPair('ES256', { extractable: true });
    const server = await startM2MServer({ clientPublicKey: trusted.publicKey });
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'client_credentials', clientId: 'm2m-client', privateKey: await exportPKCS8(other.privateKey) } });
    expect((await failure(listTools(s, server.mcpUrl))).code).toBe('token.invalid_client');
  });
});

describe('JWT bearer grant (workload identity)', () => {
  it('sends the provider\'s assertion with grant_type jwt-bearer and the PRM resource; the provider learns the audience', async () => {
    const server = await startM2MServer();
    const asked: unknown[] = [];
    const jwt = await server.workloadJwt({ aud: server.issuer });
    const s = session({
      serverUrl: server.mcpUrl,
      grant: {
        type: 'jwt_bearer',
        assertionProvider: (request) => {
          asked.push(request);
          return jwt;
        },
      },
    });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.counts[`token:${GRANT_JWT_BEARER}`]).toBe(1);
    expect(server.tokenBodies[0]?.get('assertion')).toBe(jwt);
    expect(asked).toEqual([{ audience: server.issuer, resource: server.mcpUrl }]);
    expect(visible(s)).not.toContain(jwt);
  });

  it.each([
    ['the wrong audience', { aud: 'https://wrong.example' }],
    ['an expired JWT', { aud: 'ISSUER', expiresIn: 60, issuedAt: Math.floor(Date.now() / 1000) - 3600 }],
  ])('%s: the server refuses, the error is final (token.invalid_grant, one token request, no other grant)', async (_name, claims) => {
    const server = await startM2MServer();
    const jwt = await server.workloadJwt({ ...claims, aud: claims.aud === 'ISSUER' ? server.issuer : claims.aud });
    const s = session({ serverUrl: server.mcpUrl, grant: { type: 'jwt_bearer', assertionProvider: () => jwt } });
    const error = await failure(listTools(s, server.mcpUrl));
    expect(error).toBeInstanceOf(OAuthTokenError);
    expect(error.code).toBe('token.invalid_grant');
    expect(error.state).toBe('flow.token.jwtBearer');
    const tokenRequests = Object.entries(server.counts).filter(([key]) => key.startsWith('token:'));
    expect(tokenRequests).toEqual([[`token:${GRANT_JWT_BEARER}`, 1]]);
    expect(visible(s, error)).not.toContain(jwt);
  });

  it('a provider that throws: token.credential_unavailable, nothing sent to the token endpoint', async () => {
    const server = await startM2MServer();
    const s = session({
      serverUrl: server.mcpUrl,
      grant: {
        type: 'jwt_bearer',
        assertionProvider: () => {
          throw new Error('workload identity unavailable: secret-detail');
        },
      },
    });
    const error = await failure(listTools(s, server.mcpUrl));
    expect(error.code).toBe('token.credential_unavailable');
    expect(Object.keys(server.counts).some((key) => key.startsWith('token:'))).toBe(false);
    expect(visible(s, error)).not.toContain('secret-detail');
  });
});

describe('enterprise-managed authorization (SEP-990)', () => {
  it('exchanges the ID token for an ID-JAG at the IdP, then redeems it with the JWT bearer grant and Basic client auth', async () => {
    const server = await startM2MServer({ clientId: 'xaa-client', clientSecret: 'xaa-secret', idToken: 'the-id-token' });
    const s = session({
      serverUrl: server.mcpUrl,
      grant: { type: 'enterprise', clientId: 'xaa-client', clientSecret: 'xaa-secret', authMethod: 'client_secret_basic', idp: { tokenEndpoint: server.idpTokenEndpoint, clientId: 'idp-client', idToken: 'the-id-token' } },
    });
    expect(await listTools(s, server.mcpUrl)).toBe(200);
    expect(server.counts.idp).toBe(1);
    expect(server.counts[`token:${GRANT_JWT_BEARER}`]).toBe(1);
    const [exchange, bearer] = server.tokenBodies;
    expect(exchange?.get('audience')).toBe(server.issuer);
    expect(exchange?.get('resource')).toBe(server.mcpUrl);
    expect(exchange?.get('client_id')).toBe('idp-client');
    expect(bearer?.get('assertion')).toBe('id-jag-for-xaa-client');
    expect(String(server.tokenHeaders[1]?.authorization)).toMatch(/^Basic /);
    const shown = visible(s);
    expect(shown).not.toContain('the-id-token');
    expect(shown).not.toContain('id-jag-for-xaa-client');
    expect(shown).not.toContain('xaa-secret');
    const trace = s.trace() as unknown as { entries: Array<{ state: string }> };
    expect(JSON.stringify(trace)).toContain('flow.token.tokenExchange');
  });

  it('the IdP refuses: a typed idp.* error, the MCP authorization server is never asked', async () => {
    const server = await startM2MServer({ clientId: 'xaa-client', clientSecret: 'xaa-secret', idToken: 'the-id-token' });
    const s = session({
      serverUrl: server.mcpUrl,
      grant: { type: 'enterprise', clientId: 'xaa-client', clientSecret: 'xaa-secret', idp: { tokenEndpoint: server.idpTokenEndpoint, clientId: 'idp-client', idToken: 'stale-id-token' } },
    });
    const error = await failure(listTools(s, server.mcpUrl));
    expect(error.code).toBe('idp.invalid_grant');
    expect(error.state).toBe('flow.token.tokenExchange');
    expect(server.counts[`token:${GRANT_JWT_BEARER}`]).toBeUndefined();
  });
});

describe('grant configuration is validated before any network', () => {
  it.each([
    [{ type: 'client_credentials', clientId: 'c', authMethod: 'client_secret_basic' }, 'grant.clientSecret'],
    [{ type: 'client_credentials', clientId: 'c', authMethod: 'private_key_jwt' }, 'grant.privateKey'],
    [{ type: 'client_credentials', clientId: 'c', privateKey: 'not a key' }, 'grant.privateKey'],
    [{ type: 'jwt_bearer' }, 'grant.assertionProvider'],
    [{ type: 'enterprise', clientId: 'c', clientSecret: 's', idp: { tokenEndpoint: 'http://idp.example/token', clientId: 'i', idToken: 't' } }, 'grant.idp.tokenEndpoint'],
    [{ type: 'enterprise', clientId: 'c', clientSecret: 's', idp: { tokenEndpoint: 'https://idp.example/token', clientId: 'i' } }, 'grant.idp.idToken'],
    [{ type: 'password', clientId: 'c' }, 'grant.type'],
  ])('%j → OAuthConfigError naming %s', (grant, field) => {
    let error: unknown;
    try {
      createOAuthSession({ serverUrl: 'https://mcp.example/mcp', grant: grant as never });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OAuthConfigError);
    expect((error as Error).message.startsWith(field)).toBe(true);
  });
});
