/**
 * The pure parts of C77 (client assertion algorithm negotiation) and C79 (assertion clock offset):
 * the algorithm choice, the mark the machine puts on the request, the error code the machine maps
 * the adapter's refusal to, the option's validation, and the signer's iat/exp on a fake clock.
 */
import { decodeJwt, decodeProtectedHeader, exportJWK, exportPKCS8, generateKeyPair } from 'jose';
import { createActor } from 'xstate';
import { describe, expect, it } from 'vitest';
import {
  ASSERTION_LIFETIME_S,
  chooseClientAssertionAlg,
  CredentialUnavailable,
  forbiddenAssertionAlg,
  GrantSigner,
  SigningAlgUnsupported,
} from '../../src/adapters/grantCredentials.js';
import { resolveOptions } from '../../src/adapters/options.js';
import { OAuthConfigError } from '../../src/machines/errors.js';
import type { HttpRequest } from '../../src/machines/http.js';
import { networkError } from '../../src/machines/oauth.logic.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineEffect } from '../../src/machines/oauth.types.js';
import { AuthorizationServerMetadataSchema } from '../../src/machines/schemas.js';
import { buildClientCredentialsRequest, buildJwtBearerRequest } from '../../src/machines/steps/grants.js';

const AS = 'https://as.example';
const RESOURCE = 'https://mcp.example/mcp';

describe('C77 chooseClientAssertionAlg', () => {
  it.each([
    ['ES256', undefined, undefined, 'ES256'],
    ['RS256', undefined, undefined, 'RS256'],
    ['RS256', undefined, [], 'RS256'],
    ['RS256', 'RS256', ['PS256', 'RS256'], 'RS256'],
    ['ES256', 'ES256', ['ES256'], 'ES256'],
  ] as const)('key %s, configured %s, AS lists %j → %s', (key, configured, listed, alg) => {
    expect(chooseClientAssertionAlg(key, configured, listed)).toEqual({ ok: true, value: alg });
  });

  it.each([
    ['ES256', undefined, ['none'], SigningAlgUnsupported],
    ['RS256', undefined, ['HS256'], SigningAlgUnsupported],
    ['RS256', 'RS256', ['HS256', 'none'], SigningAlgUnsupported],
    ['RS256', undefined, ['ES256'], SigningAlgUnsupported],
    [undefined, undefined, undefined, SigningAlgUnsupported],
    ['RS256', 'ES256', undefined, CredentialUnavailable],
  ] as const)('key %s, configured %s, AS lists %j → refused', (key, configured, listed, type) => {
    const choice = chooseClientAssertionAlg(key, configured, listed, 'ed25519');
    expect(choice.ok).toBe(false);
    if (choice.ok) return;
    expect(choice.error).toBeInstanceOf(type);
    expect(choice.error.reason).toBe(type === SigningAlgUnsupported ? 'signing_alg_unsupported' : 'credential');
  });

  it('never none or HS*, in any case', () => {
    for (const alg of ['none', 'None', 'NONE', 'HS256', 'hs384', 'HS512', undefined, 7]) expect(forbiddenAssertionAlg(alg)).toBe(true);
    for (const alg of ['ES256', 'RS256', 'PS256', 'EdDSA']) expect(forbiddenAssertionAlg(alg)).toBe(false);
  });
});

describe('C77 the machine marks the request with the AS list', () => {
  const client = { clientId: 'c', authMethod: 'private_key_jwt' as const };

  it('the builders copy the list into clientAuth, and leave it out when absent', () => {
    const list = ['RS256'];
    const marked = buildClientCredentialsRequest('r1', { tokenEndpoint: `${AS}/token`, issuer: AS, client, resource: RESOURCE, signingAlgValuesSupported: list });
    expect(marked.clientAuth).toEqual({ method: 'private_key_jwt', clientId: 'c', audience: AS, signingAlgValuesSupported: ['RS256'] });
    expect(marked.clientAuth?.signingAlgValuesSupported).not.toBe(list);
    const bearer = buildJwtBearerRequest('r2', { tokenEndpoint: `${AS}/token`, issuer: AS, client, resource: RESOURCE, signingAlgValuesSupported: ['ES256'] });
    expect(bearer.clientAuth?.signingAlgValuesSupported).toEqual(['ES256']);
    const plain = buildClientCredentialsRequest('r3', { tokenEndpoint: `${AS}/token`, issuer: AS, client, resource: RESOURCE });
    expect(plain.clientAuth).toEqual({ method: 'private_key_jwt', clientId: 'c', audience: AS });
    const secret = buildClientCredentialsRequest('r4', { tokenEndpoint: `${AS}/token`, issuer: AS, client: { clientId: 'c', clientSecret: 's', authMethod: 'client_secret_basic' }, resource: RESOURCE, signingAlgValuesSupported: list });
    expect(secret.clientAuth).toBeUndefined();
  });

  it('the AS metadata schema reads token_endpoint_auth_signing_alg_values_supported as a string array', () => {
    const base = { issuer: AS, authorization_endpoint: `${AS}/a`, token_endpoint: `${AS}/t` };
    expect(AuthorizationServerMetadataSchema.parse({ ...base, token_endpoint_auth_signing_alg_values_supported: ['RS256'] }).token_endpoint_auth_signing_alg_values_supported).toEqual(['RS256']);
    expect(AuthorizationServerMetadataSchema.safeParse({ ...base, token_endpoint_auth_signing_alg_values_supported: 'RS256' }).success).toBe(false);
  });

  it.each([[['RS256', 'none']], [undefined]])('the machine passes the discovered list %j with the private_key_jwt mark', (list) => {
    const key = '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----';
    const config = resolveOptions({ serverUrl: RESOURCE, grant: { type: 'client_credentials', clientId: 'c', privateKey: key } }).config;
    const actor = createActor(oauthMachine, { input: config });
    const effects: EngineEffect[] = [];
    actor.on('*', (effect) => effects.push(effect as EngineEffect));
    actor.start();
    actor.send({ type: 'store.loaded' });
    actor.send({ type: 'unauthorized', status: 401, wwwAuthenticate: `Bearer resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp"`, tokenVersion: null, authorizations: 0, at: 0 });
    const pending = () => actor.getSnapshot().context.pendingId ?? '';
    actor.send({ type: 'http.response', id: pending(), status: 200, headers: {}, body: JSON.stringify({ resource: RESOURCE, authorization_servers: [AS] }), at: 0 });
    const asm = { issuer: AS, authorization_endpoint: `${AS}/authorize`, token_endpoint: `${AS}/token`, ...(list ? { token_endpoint_auth_signing_alg_values_supported: list } : {}) };
    actor.send({ type: 'http.response', id: pending(), status: 200, headers: {}, body: JSON.stringify(asm), at: 0 });
    const last = effects.filter((e) => e.type === 'http.request').at(-1) as Extract<EngineEffect, { type: 'http.request' }> | undefined;
    const request = last?.request as HttpRequest | undefined;
    expect(request?.clientAuth).toEqual({ method: 'private_key_jwt', clientId: 'c', audience: AS, ...(list ? { signingAlgValuesSupported: list } : {}) });
    actor.stop();
  });
});

describe('C77 the adapter refusal maps to a stable code', () => {
  const failed = (reason: string, message: string) => ({ type: 'http.failed' as const, id: 'r', reason, message, at: 0 });
  it.each([
    ['signing_alg_unsupported', 'anything', 'token.signing_alg_unsupported'],
    // The reason decides, never the wording of the message.
    ['credential', 'no client assertion algorithm both the key and the authorization server accept: …', 'token.credential_unavailable'],
    ['credential', 'the assertion provider failed', 'token.credential_unavailable'],
    ['timeout', 'no client assertion algorithm', 'network.timeout'],
  ])('http.failed %s (%s) → %s', (reason, message, code) => {
    expect(networkError('token', failed(reason, message)).code).toBe(code);
  });
});

describe('C79 assertion clock offset', () => {
  const request = (signingAlgValuesSupported?: string[]): HttpRequest => ({
    id: 'r',
    step: 'token',
    method: 'POST',
    url: `${AS}/token`,
    headers: {},
    body: 'grant_type=client_credentials',
    clientAuth: { method: 'private_key_jwt', clientId: 'c', audience: AS, ...(signingAlgValuesSupported ? { signingAlgValuesSupported } : {}) },
  });
  const random = (n: number) => new Uint8Array(n).fill(7);
  const at = Date.UTC(2030, 0, 1, 12, 0, 0, 700);

  it('the lifetime stays at most five minutes', () => {
    expect(ASSERTION_LIFETIME_S).toBeGreaterThan(0);
    expect(ASSERTION_LIFETIME_S).toBeLessThanOrEqual(300);
  });

  it.each([0, -600, 600])('offset %i s: iat = floor(clock) + offset, exp = iat + lifetime', async (offset) => {
    const { privateKey } = await generateKeyPair('ES256', { extractable: true });
    const signer = new GrantSigner({ privateKey: await exportPKCS8(privateKey), clockOffsetSeconds: offset }, random, () => at);
    const wire = await signer.complete(request(['ES256']));
    const assertion = new URLSearchParams(wire.body).get('client_assertion') ?? '';
    expect(decodeProtectedHeader(assertion).alg).toBe('ES256');
    const claims = decodeJwt(assertion);
    expect(claims.iat).toBe(Math.floor(at / 1000) + offset);
    expect(claims.exp).toBe(Number(claims.iat) + ASSERTION_LIFETIME_S);
    expect(wire.clientAuth).toBeUndefined();
  });

  it('an RSA JWK without a configured alg signs RS256; a list without it refuses with the signing reason', async () => {
    const { privateKey } = await generateKeyPair('RS256', { extractable: true });
    const signer = new GrantSigner({ privateKey: (await exportJWK(privateKey)) as never, clockOffsetSeconds: 0 }, random, () => at);
    const wire = await signer.complete(request());
    expect(decodeProtectedHeader(new URLSearchParams(wire.body).get('client_assertion') ?? '').alg).toBe('RS256');
    await expect(signer.complete(request(['ES256', 'none']))).rejects.toMatchObject({ reason: 'signing_alg_unsupported', name: 'SigningAlgUnsupported' });
  });

  it('options: the offset reaches only the adapter; bounded to ±1 day, integer; no alg default', () => {
    const key = '-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----';
    const resolved = resolveOptions({ serverUrl: RESOURCE, grant: { type: 'client_credentials', clientId: 'c', privateKey: key, assertionClockOffsetSeconds: -86_400 } });
    expect(resolved.grantCredentials).toMatchObject({ clockOffsetSeconds: -86_400 });
    expect(resolved.grantCredentials?.alg).toBeUndefined();
    expect(JSON.stringify(resolved.config)).not.toContain('86400');
    expect(resolveOptions({ serverUrl: RESOURCE, grant: { type: 'client_credentials', clientId: 'c', privateKey: key } }).grantCredentials?.clockOffsetSeconds).toBe(0);
    for (const bad of [86_401, -86_401, 0.5]) {
      expect(() => resolveOptions({ serverUrl: RESOURCE, grant: { type: 'client_credentials', clientId: 'c', privateKey: key, assertionClockOffsetSeconds: bad } })).toThrow(OAuthConfigError);
    }
  });
});
