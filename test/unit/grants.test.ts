/**
 * The machine-to-machine grants and DPoP as pure pieces (issue 4): request builders mark what the
 * adapter completes and never carry keys; the machine picks the grant from configuration; the
 * token response accepts `DPoP` only with DPoP in use; redaction hides every new secret.
 */
import { createActor } from 'xstate';
import { describe, expect, it } from 'vitest';
import { htuOf, validNonce } from '../../src/adapters/dpop.js';
import { resolveOptions } from '../../src/adapters/options.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineEffect } from '../../src/machines/oauth.types.js';
import { redactEffect } from '../../src/machines/redact.js';
import { buildClientCredentialsRequest, buildJwtBearerRequest, buildTokenExchangeRequest, processTokenExchangeResponse } from '../../src/machines/steps/grants.js';
import { processTokenResponse } from '../../src/machines/steps/token.js';

const AS = 'https://as.example';
const RESOURCE = 'https://mcp.example/mcp';

describe('grant request builders', () => {
  it('client credentials with private_key_jwt: marked for the adapter, audience = issuer, no secret, no assertion in the body', () => {
    const request = buildClientCredentialsRequest('req-1', { tokenEndpoint: `${AS}/token`, issuer: AS, client: { clientId: 'c', authMethod: 'private_key_jwt' }, resource: RESOURCE, scope: 'a b' });
    expect(request.clientAuth).toEqual({ method: 'private_key_jwt', clientId: 'c', audience: AS });
    const form = new URLSearchParams(request.body);
    expect(Object.fromEntries(form)).toEqual({ grant_type: 'client_credentials', resource: RESOURCE, scope: 'a b' });
    expect(request.headers.authorization).toBeUndefined();
  });

  it('client credentials with client_secret_basic: form-urlencoded before Base64', () => {
    const request = buildClientCredentialsRequest('req-1', { tokenEndpoint: `${AS}/token`, issuer: AS, client: { clientId: 'c:1', clientSecret: 's%2', authMethod: 'client_secret_basic' }, resource: RESOURCE });
    expect(Buffer.from(request.headers.authorization!.slice(6), 'base64').toString()).toBe('c%3A1:s%252');
    expect(new URLSearchParams(request.body).get('client_secret')).toBeNull();
  });

  it('JWT bearer without an ID-JAG asks the adapter for the assertion; with one, carries it', () => {
    const base = { tokenEndpoint: `${AS}/token`, issuer: AS, client: { authMethod: 'none' as const }, resource: RESOURCE };
    const workload = buildJwtBearerRequest('req-1', base);
    expect(workload.assertion).toEqual({ param: 'assertion', source: 'jwt_bearer', audience: AS, resource: RESOURCE });
    expect(new URLSearchParams(workload.body).get('assertion')).toBeNull();
    const enterprise = buildJwtBearerRequest('req-2', { ...base, assertion: 'id-jag' });
    expect(enterprise.assertion).toBeUndefined();
    expect(new URLSearchParams(enterprise.body).get('grant_type')).toBe('urn:ietf:params:oauth:grant-type:jwt-bearer');
  });

  it('token exchange: id_token subject (filled by the adapter), id-jag requested, audience = MCP AS issuer, resource = PRM resource', () => {
    const request = buildTokenExchangeRequest('req-1', { idpTokenEndpoint: 'https://idp.example/token', idpClient: { clientId: 'idp', authMethod: 'none' }, audience: AS, resource: RESOURCE });
    expect(Object.fromEntries(new URLSearchParams(request.body))).toEqual({
      grant_type: 'urn:ietf:params:oauth:grant-type:token-exchange',
      requested_token_type: 'urn:ietf:params:oauth:token-type:id-jag',
      subject_token_type: 'urn:ietf:params:oauth:token-type:id_token',
      audience: AS,
      resource: RESOURCE,
      client_id: 'idp',
    });
    expect(request.assertion?.param).toBe('subject_token');
  });

  it('the IdP answer must be an ID-JAG', () => {
    const answer = (status: number, body: unknown) => ({ status, headers: {}, body: JSON.stringify(body) });
    expect(processTokenExchangeResponse(answer(200, { access_token: 'jag', issued_token_type: 'urn:ietf:params:oauth:token-type:id-jag' }))).toEqual({ ok: true, value: 'jag' });
    const wrongType = processTokenExchangeResponse(answer(200, { access_token: 'x', issued_token_type: 'urn:ietf:params:oauth:token-type:access_token' }));
    expect(!wrongType.ok && wrongType.error.code).toBe('idp.unexpected_token_type');
    const refused = processTokenExchangeResponse(answer(400, { error: 'invalid_grant' }));
    expect(!refused.ok && refused.error.code).toBe('idp.invalid_grant');
  });
});

describe('token_type DPoP', () => {
  const response = { status: 200, headers: {}, body: JSON.stringify({ access_token: 't', token_type: 'DPoP', expires_in: 60 }) };
  const expected = { at: 0, issuer: AS, resource: RESOURCE, minLifetimeSeconds: 1, maxLifetimeSeconds: 3600 };
  it('is accepted only when DPoP is in use', () => {
    expect(processTokenResponse(response, { ...expected, dpop: true }).ok).toBe(true);
    const refused = processTokenResponse(response, expected);
    expect(!refused.ok && refused.error.code).toBe('token.unsupported_token_type');
  });
});

describe('DPoP helpers', () => {
  it('htu drops query and fragment', () => {
    expect(htuOf('https://mcp.example/mcp?session=1&x=2#frag')).toBe('https://mcp.example/mcp');
  });
  it.each([
    ['abc-123_~.', true],
    ['', false],
    ['has space', false],
    ['quote"inside', false],
    ['back\\slash', false],
    ['x'.repeat(257), false],
  ])('nonce %j valid: %s', (nonce, valid) => {
    expect(validNonce(nonce)).toBe(valid);
  });
});

describe('the machine picks the grant from configuration', () => {
  it.each([
    [{ type: 'client_credentials', clientId: 'c', clientSecret: 's' }, 'flow.token.clientCredentials'],
    [{ type: 'jwt_bearer', assertionProvider: () => 'x' }, 'flow.token.jwtBearer'],
    [{ type: 'enterprise', clientId: 'c', clientSecret: 's', idp: { tokenEndpoint: 'https://idp.example/token', clientId: 'i', idToken: 't' } }, 'flow.token.tokenExchange'],
  ])('%j → %s after AS discovery, with no redirect and no registration', (grant, state) => {
    const config = resolveOptions({ serverUrl: RESOURCE, grant: grant as never }).config;
    expect(JSON.stringify(config)).not.toContain('assertionProvider');
    const actor = createActor(oauthMachine, { input: config });
    const effects: EngineEffect[] = [];
    actor.on('*', (effect) => effects.push(effect as EngineEffect));
    actor.start();
    actor.send({ type: 'store.loaded' });
    actor.send({ type: 'unauthorized', status: 401, wwwAuthenticate: `Bearer resource_metadata="${RESOURCE.replace('/mcp', '')}/.well-known/oauth-protected-resource/mcp"`, tokenVersion: null, authorizations: 0, at: 0 });
    const pending = () => actor.getSnapshot().context.pendingId ?? '';
    actor.send({ type: 'http.response', id: pending(), status: 200, headers: {}, body: JSON.stringify({ resource: RESOURCE, authorization_servers: [AS] }), at: 0 });
    // No code_challenge_methods_supported and no registration endpoint: irrelevant to these grants.
    actor.send({ type: 'http.response', id: pending(), status: 200, headers: {}, body: JSON.stringify({ issuer: AS, authorization_endpoint: `${AS}/authorize`, token_endpoint: `${AS}/token` }), at: 0 });
    const value = actor.getSnapshot().value as { flow: { token: string } };
    expect(`flow.token.${value.flow.token}`).toBe(state);
    expect(effects.some((e) => e.type === 'redirect.prepare' || e.type === 'browser.open')).toBe(false);
    const last = effects.filter((e) => e.type === 'http.request').at(-1);
    expect(last?.type === 'http.request' && new URLSearchParams(last.request.body).get('resource')).toBe(RESOURCE);
    // The recorded effect never holds a secret: the redacted projection hides form secrets and Basic.
    expect(JSON.stringify(effects.map(redactEffect))).not.toMatch(/"s"|Basic [A-Za-z0-9]/);
    actor.stop();
  });
});
