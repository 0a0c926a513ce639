import { describe, it, expect } from 'vitest';
import {
  OAuthConfigError,
  OAuthFlowError,
  OAuthNetworkError,
  OAuthRegistrationError,
  OAuthStoreError,
  OAuthTokenError,
  quoteUntrusted,
  toError,
  type ErrorKind,
  type FlowErrorData,
} from '../../src/machines/errors.js';
import { basicCredentials, parseJsonObject, type HttpResponseData } from '../../src/machines/http.js';
import { REDACTED, redactEffect, redactEvent, redactUrl } from '../../src/machines/redact.js';
import type { AuthorizationServerMetadata } from '../../src/machines/schemas.js';
import type { ClientRecord, TokenRecord } from '../../src/machines/store.js';
import {
  addsScope,
  applicationTypeFor,
  buildAuthorizationUrl,
  buildCodeExchangeRequest,
  buildMetadataRequest,
  buildRefreshRequest,
  buildRegistrationRequest,
  checkPkceSupport,
  chooseTokenEndpointAuthMethod,
  clientAuthentication,
  clientUsable,
  needsRefresh,
  processAuthorizationServerMetadataResponse,
  processRegistrationResponse,
  processResourceMetadataResponse,
  processTokenResponse,
  selectScope,
  unionScopes,
  validateAuthorizationResponse,
  type CallbackParams,
  type CallbackVerdict,
} from '../../src/machines/steps/index.js';
import type { AsmCandidate, PrmCandidate } from '../../src/machines/urls.js';

// ---------------------------------------------------------------- helpers

function json(status: number, body: unknown, headers: Record<string, string> = { 'content-type': 'application/json' }): HttpResponseData {
  return { status, headers, body: typeof body === 'string' ? body : JSON.stringify(body) };
}

function form(body: string | undefined): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(body ?? ''));
}

function failure<T, E>(result: { ok: true; value: T } | { ok: false; error: E }): E {
  if (result.ok) throw new Error(`expected a failure, got ${JSON.stringify(result.value)}`);
  return result.error;
}

function success<T, E>(result: { ok: true; value: T } | { ok: false; error: E }): T {
  if (!result.ok) throw new Error(`expected success, got ${JSON.stringify(result.error)}`);
  return result.value;
}

const PATH_CANDIDATE: PrmCandidate = {
  url: 'https://mcp.example/.well-known/oauth-protected-resource/mcp',
  expectedResource: 'https://mcp.example/mcp',
  source: 'path',
};
const ROOT_CANDIDATE: PrmCandidate = {
  url: 'https://mcp.example/.well-known/oauth-protected-resource',
  expectedResource: 'https://mcp.example',
  source: 'root',
};
const ASM_CANDIDATE: AsmCandidate = { url: 'https://auth.example/.well-known/oauth-authorization-server', kind: 'oauth' };

const ISSUER = 'https://auth.example';

function asm(extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer: ISSUER,
    authorization_endpoint: `${ISSUER}/authorize`,
    token_endpoint: `${ISSUER}/token`,
    registration_endpoint: `${ISSUER}/register`,
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    ...extra,
  };
}

// ---------------------------------------------------------------- discovery

describe('discovery: buildMetadataRequest', () => {
  it('is a GET carrying the MCP protocol version', () => {
    expect(buildMetadataRequest('req-1', 'prm', PATH_CANDIDATE.url, '2025-11-25')).toEqual({
      id: 'req-1',
      step: 'prm',
      method: 'GET',
      url: PATH_CANDIDATE.url,
      headers: { accept: 'application/json', 'mcp-protocol-version': '2025-11-25' },
    });
  });
});

describe('discovery: processResourceMetadataResponse', () => {
  const good = { resource: 'https://mcp.example/mcp', authorization_servers: [ISSUER], scopes_supported: ['mcp:read'] };

  it('accepts a matching document', () => {
    const value = success(processResourceMetadataResponse(json(200, good), PATH_CANDIDATE, 'exact'));
    expect(value.resource).toBe('https://mcp.example/mcp');
    expect(value.authorization_servers).toEqual([ISSUER]);
    expect(value.scopes_supported).toEqual(['mcp:read']);
  });

  it('accepts case-insensitive scheme/host and an empty path equal to "/"', () => {
    success(processResourceMetadataResponse(json(200, { ...good, resource: 'HTTPS://MCP.Example/mcp' }), PATH_CANDIDATE, 'exact'));
    success(processResourceMetadataResponse(json(200, { ...good, resource: 'https://mcp.example/' }), ROOT_CANDIDATE, 'exact'));
  });

  it('skips a non-200 answer', () => {
    const error = failure(processResourceMetadataResponse(json(404, good), PATH_CANDIDATE, 'exact'));
    expect(error.fatal).toBe(false);
    expect(error.error.code).toBe('prm.http_status');
    expect(error.error.status).toBe(404);
  });

  it('skips bad JSON, a JSON array and a non-object', () => {
    for (const body of ['{not json', '[1,2]', 'null', '"x"']) {
      const error = failure(processResourceMetadataResponse(json(200, body), PATH_CANDIDATE, 'exact'));
      expect(error.fatal).toBe(false);
      expect(error.error.code).toBe('prm.invalid_json');
    }
  });

  it('parses JSON whatever the content-type says (advisory)', () => {
    success(processResourceMetadataResponse(json(200, good, { 'content-type': 'text/plain' }), PATH_CANDIDATE, 'exact'));
  });

  it('skips a document without authorization_servers (missing or empty)', () => {
    for (const doc of [{ resource: good.resource }, { resource: good.resource, authorization_servers: [] }]) {
      const error = failure(processResourceMetadataResponse(json(200, doc), PATH_CANDIDATE, 'exact'));
      expect(error.fatal).toBe(false);
      expect(error.error.code).toBe('prm.invalid_document');
    }
  });

  it('treats a resource mismatch as fatal and uses none of the document', () => {
    const result = processResourceMetadataResponse(
      json(200, { resource: 'https://evil.example/mcp', authorization_servers: ['https://evil-as.example'] }),
      PATH_CANDIDATE,
      'exact',
    );
    expect(result.ok).toBe(false);
    expect('value' in result).toBe(false);
    const error = failure(result);
    expect(error.fatal).toBe(true);
    expect(error.error.code).toBe('prm.resource_mismatch');
    expect(JSON.stringify(error)).not.toContain('evil-as.example');
  });

  it('treats a trailing-slash difference as a mismatch', () => {
    const error = failure(processResourceMetadataResponse(json(200, { ...good, resource: 'https://mcp.example/mcp/' }), PATH_CANDIDATE, 'exact'));
    expect(error).toMatchObject({ fatal: true, error: { code: 'prm.resource_mismatch' } });
  });

  it('treats a different path, a query, a different port as mismatches', () => {
    for (const resource of ['https://mcp.example/other', 'https://mcp.example/mcp?x=1', 'https://mcp.example:8443/mcp', 'http://mcp.example/mcp']) {
      const error = failure(processResourceMetadataResponse(json(200, { ...good, resource }), PATH_CANDIDATE, 'exact'));
      expect(error.error.code, resource).toBe('prm.resource_mismatch');
    }
  });

  it('relaxes to the same origin only with the same-origin option', () => {
    const doc = json(200, { ...good, resource: 'https://mcp.example/other' });
    expect(failure(processResourceMetadataResponse(doc, PATH_CANDIDATE, 'exact')).error.code).toBe('prm.resource_mismatch');
    expect(success(processResourceMetadataResponse(doc, PATH_CANDIDATE, 'same-origin')).resource).toBe('https://mcp.example/other');
    // Another origin stays refused even with the relaxation.
    const other = json(200, { ...good, resource: 'https://evil.example/mcp' });
    expect(failure(processResourceMetadataResponse(other, PATH_CANDIDATE, 'same-origin')).error.code).toBe('prm.resource_mismatch');
  });

  it('refuses an http authorization server that is not loopback', () => {
    const error = failure(
      processResourceMetadataResponse(json(200, { ...good, authorization_servers: ['http://auth.example'] }), PATH_CANDIDATE, 'exact'),
    );
    expect(error).toMatchObject({ fatal: true, error: { code: 'prm.insecure_authorization_server' } });
    // Loopback http is allowed (development servers).
    success(processResourceMetadataResponse(json(200, { ...good, authorization_servers: ['http://127.0.0.1:9000'] }), PATH_CANDIDATE, 'exact'));
  });
});

describe('discovery: processAuthorizationServerMetadataResponse', () => {
  it('accepts an exact issuer echo', () => {
    const value = success(processAuthorizationServerMetadataResponse(json(200, asm()), ASM_CANDIDATE, { issuer: ISSUER }));
    expect(value.issuer).toBe(ISSUER);
    expect(value.token_endpoint).toBe(`${ISSUER}/token`);
  });

  it('skips non-200, bad JSON and documents lacking endpoints', () => {
    expect(failure(processAuthorizationServerMetadataResponse(json(404, asm()), ASM_CANDIDATE, { issuer: ISSUER }))).toMatchObject({
      fatal: false,
      error: { code: 'asm.http_status', status: 404 },
    });
    expect(failure(processAuthorizationServerMetadataResponse(json(200, '<html>'), ASM_CANDIDATE, { issuer: ISSUER }))).toMatchObject({
      fatal: false,
      error: { code: 'asm.invalid_json' },
    });
    expect(
      failure(processAuthorizationServerMetadataResponse(json(200, { issuer: ISSUER }), ASM_CANDIDATE, { issuer: ISSUER })),
    ).toMatchObject({ fatal: false, error: { code: 'asm.invalid_document' } });
  });

  it('refuses an issuer differing by a trailing slash, case or port', () => {
    for (const issuer of [`${ISSUER}/`, 'https://AUTH.example', 'https://auth.example:443', 'https://other.example']) {
      const error = failure(processAuthorizationServerMetadataResponse(json(200, asm({ issuer })), ASM_CANDIDATE, { issuer: ISSUER }));
      expect(error.fatal, issuer).toBe(true);
      expect(error.error.code, issuer).toBe('asm.issuer_mismatch');
    }
  });

  it('legacy mode: the issuer must be on the MCP server origin, any path', () => {
    const legacy = { issuer: 'https://mcp.example', legacyServerOrigin: 'https://mcp.example' };
    const candidate: AsmCandidate = { url: 'https://mcp.example/.well-known/oauth-authorization-server', kind: 'oauth' };
    const ok = success(
      processAuthorizationServerMetadataResponse(
        json(200, asm({ issuer: 'https://mcp.example/tenant', authorization_endpoint: 'https://mcp.example/authorize', token_endpoint: 'https://mcp.example/token' })),
        candidate,
        legacy,
      ),
    );
    expect(ok.issuer).toBe('https://mcp.example/tenant');
    const error = failure(processAuthorizationServerMetadataResponse(json(200, asm({ issuer: 'https://auth.example' })), candidate, legacy));
    expect(error).toMatchObject({ fatal: true, error: { code: 'asm.issuer_mismatch' } });
    const http = failure(processAuthorizationServerMetadataResponse(json(200, asm({ issuer: 'http://mcp.example' })), candidate, legacy));
    expect(http.error.code).toBe('asm.issuer_mismatch');
  });

  it('refuses an insecure endpoint', () => {
    for (const field of ['authorization_endpoint', 'token_endpoint', 'registration_endpoint', 'revocation_endpoint']) {
      const error = failure(
        processAuthorizationServerMetadataResponse(json(200, asm({ [field]: 'http://auth.example/x' })), ASM_CANDIDATE, { issuer: ISSUER }),
      );
      expect(error.fatal, field).toBe(true);
      expect(error.error.code, field).toBe('asm.insecure_endpoint');
      expect(error.error.message).toContain(field);
    }
  });

  it('refuses response_types_supported without code, accepts it absent', () => {
    const error = failure(
      processAuthorizationServerMetadataResponse(json(200, asm({ response_types_supported: ['token'] })), ASM_CANDIDATE, { issuer: ISSUER }),
    );
    expect(error).toMatchObject({ fatal: true, error: { code: 'asm.code_flow_unsupported' } });
    const doc = asm();
    delete doc.response_types_supported;
    success(processAuthorizationServerMetadataResponse(json(200, doc), ASM_CANDIDATE, { issuer: ISSUER }));
  });
});

describe('discovery: checkPkceSupport', () => {
  const meta = (extra: Partial<AuthorizationServerMetadata> = {}): AuthorizationServerMetadata => ({
    issuer: ISSUER,
    authorization_endpoint: `${ISSUER}/authorize`,
    token_endpoint: `${ISSUER}/token`,
    ...extra,
  });
  const strict = { quirkIssuers: [], allowUnadvertised: false };

  it('accepts S256 when listed, without a notice', () => {
    expect(checkPkceSupport(meta({ code_challenge_methods_supported: ['plain', 'S256'] }), strict)).toEqual({ ok: true });
  });

  it('refuses a list without S256, even with the opt-in', () => {
    for (const policy of [strict, { quirkIssuers: [ISSUER], allowUnadvertised: true }]) {
      const verdict = checkPkceSupport(meta({ code_challenge_methods_supported: ['plain'] }), policy);
      expect(verdict.ok).toBe(false);
      if (!verdict.ok) expect(verdict.error.code).toBe('asm.pkce_unsupported');
    }
  });

  it('refuses an absent list by default', () => {
    const verdict = checkPkceSupport(meta(), strict);
    expect(verdict.ok).toBe(false);
    if (!verdict.ok) expect(verdict.error.code).toBe('asm.pkce_unadvertised');
  });

  it('accepts an absent list for a configured quirk issuer, with a notice', () => {
    const verdict = checkPkceSupport(meta(), { quirkIssuers: [ISSUER], allowUnadvertised: false });
    expect(verdict.ok).toBe(true);
    expect(verdict.ok && verdict.notice).toMatch(/quirk/);
  });

  it('accepts an absent list for a built-in quirk issuer, with a notice', () => {
    const verdict = checkPkceSupport(meta({ issuer: 'https://login.microsoftonline.com/tenant/v2.0' }), strict);
    expect(verdict.ok).toBe(true);
    expect(verdict.ok && verdict.notice).toBeTruthy();
  });

  it('accepts an absent list with the option, with a notice naming it', () => {
    const verdict = checkPkceSupport(meta(), { quirkIssuers: [], allowUnadvertised: true });
    expect(verdict.ok).toBe(true);
    expect(verdict.ok && verdict.notice).toMatch(/allowUnadvertisedPkce/);
  });

  it('a built-in quirk matches the provider host exactly, never a look-alike', () => {
    expect(checkPkceSupport(meta({ issuer: 'https://cognito-idp.attacker.example' }), strict).ok).toBe(false);
    expect(checkPkceSupport(meta({ issuer: 'https://cognito-idp.eu-west-1.amazonaws.com.attacker.example/pool' }), strict).ok).toBe(false);
    expect(checkPkceSupport(meta({ issuer: 'https://cognito-idp.eu-west-1.amazonaws.com/eu-west-1_abc' }), strict).ok).toBe(true);
    expect(checkPkceSupport(meta({ issuer: 'https://login.microsoftonline.com/tenant/v2.0' }), strict).ok).toBe(true);
  });

  it('a quirk entry is exact: a look-alike issuer is refused', () => {
    const verdict = checkPkceSupport(meta({ issuer: 'https://auth.example.evil' }), { quirkIssuers: [ISSUER], allowUnadvertised: false });
    expect(verdict.ok).toBe(false);
  });
});

// ---------------------------------------------------------------- registration

describe('registration: buildRegistrationRequest', () => {
  const base = { endpoint: `${ISSUER}/register`, metadata: { client_name: 'Test client' }, authMethod: 'none' as const };

  it('builds a JSON POST with native application_type for a loopback redirect and default grants', () => {
    const request = buildRegistrationRequest('req-3', { ...base, redirectUri: 'http://127.0.0.1:33418/callback', scope: 'mcp:read' });
    expect(request).toMatchObject({ id: 'req-3', step: 'registration', method: 'POST', url: `${ISSUER}/register` });
    expect(request.headers['content-type']).toBe('application/json');
    expect(JSON.parse(request.body ?? '')).toEqual({
      client_name: 'Test client',
      redirect_uris: ['http://127.0.0.1:33418/callback'],
      application_type: 'native',
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none',
      scope: 'mcp:read',
    });
  });

  it('uses web for an https redirect and keeps the requested auth method and configured grants', () => {
    const request = buildRegistrationRequest('req-3', {
      ...base,
      metadata: { client_name: 'Web', grant_types: ['authorization_code'] },
      redirectUri: 'https://app.example/callback',
      authMethod: 'client_secret_basic',
    });
    const body = JSON.parse(request.body ?? '');
    expect(body.application_type).toBe('web');
    expect(body.grant_types).toEqual(['authorization_code']);
    expect(body.token_endpoint_auth_method).toBe('client_secret_basic');
    expect(body).not.toHaveProperty('scope');
  });

  it('classifies localhost and [::1] as native', () => {
    expect(applicationTypeFor('http://localhost:8080/cb')).toBe('native');
    expect(applicationTypeFor('http://[::1]:8080/cb')).toBe('native');
    expect(applicationTypeFor('https://app.example/cb')).toBe('web');
  });
});

describe('registration: processRegistrationResponse', () => {
  const inputs = { issuer: ISSUER, redirectUri: 'http://127.0.0.1:33418/callback', requestedMethod: 'none' as const };

  it('accepts a 201 and binds the record to the issuer', () => {
    const record = success(
      processRegistrationResponse(json(201, { client_id: 'c-1', redirect_uris: [inputs.redirectUri], token_endpoint_auth_method: 'none' }), inputs),
    );
    expect(record).toEqual({
      client_id: 'c-1',
      token_endpoint_auth_method: 'none',
      redirect_uris: [inputs.redirectUri],
      issuer: ISSUER,
      source: 'dynamic',
    });
  });

  it('keeps a secret and its expiry', () => {
    const record = success(
      processRegistrationResponse(
        json(200, { client_id: 'c-2', client_secret: 's3cret', client_secret_expires_at: 2000000000, token_endpoint_auth_method: 'client_secret_basic' }),
        { ...inputs, requestedMethod: 'client_secret_basic' },
      ),
    );
    expect(record).toMatchObject({ client_secret: 's3cret', client_secret_expires_at: 2000000000, token_endpoint_auth_method: 'client_secret_basic' });
    expect(record.redirect_uris).toEqual([inputs.redirectUri]);
  });

  it('maps an OAuth error body to registration.<error> with oauthError', () => {
    const error = failure(
      processRegistrationResponse(json(400, { error: 'invalid_redirect_uri', error_description: 'no "loopback"\nhere' }), inputs),
    );
    expect(error).toMatchObject({ kind: 'registration', code: 'registration.invalid_redirect_uri', oauthError: 'invalid_redirect_uri', status: 400 });
    expect(error.message).toContain(JSON.stringify('no "loopback"\nhere'));
    expect(error.message).not.toContain('\n');
  });

  it('folds a non-token error value into a stable code', () => {
    const error = failure(processRegistrationResponse(json(400, { error: 'bad value!' }), inputs));
    expect(error.code).toBe('registration.unknown_error');
    expect(error.oauthError).toBe('bad value!');
  });

  it('maps a non-OAuth error to registration.http_status', () => {
    expect(failure(processRegistrationResponse(json(500, 'oops'), inputs))).toMatchObject({ code: 'registration.http_status', status: 500 });
  });

  it('refuses a response without client_id', () => {
    expect(failure(processRegistrationResponse(json(201, { client_secret: 'x' }), inputs)).code).toBe('registration.invalid_response');
  });

  it('refuses a secret method registered without a secret', () => {
    const error = failure(processRegistrationResponse(json(201, { client_id: 'c', token_endpoint_auth_method: 'client_secret_post' }), inputs));
    expect(error.code).toBe('registration.missing_secret');
    // Inherited from the requested method as well.
    const inherited = failure(processRegistrationResponse(json(201, { client_id: 'c' }), { ...inputs, requestedMethod: 'client_secret_basic' }));
    expect(inherited.code).toBe('registration.missing_secret');
  });

  it('refuses an unsupported registered method', () => {
    const error = failure(processRegistrationResponse(json(201, { client_id: 'c', token_endpoint_auth_method: 'private_key_jwt' }), inputs));
    expect(error.code).toBe('registration.unusable_auth_method');
  });

  it('refuses a response that replaced the redirect URI', () => {
    const error = failure(processRegistrationResponse(json(201, { client_id: 'c', redirect_uris: ['https://evil.example/cb'] }), inputs));
    expect(error.code).toBe('registration.redirect_uri_replaced');
  });
});

describe('registration: chooseTokenEndpointAuthMethod', () => {
  it('prefers the configured method', () => {
    expect(chooseTokenEndpointAuthMethod('client_secret_post', ['none'])).toBe('client_secret_post');
  });
  it('prefers a public client when allowed or unspecified', () => {
    expect(chooseTokenEndpointAuthMethod(undefined, undefined)).toBe('none');
    expect(chooseTokenEndpointAuthMethod(undefined, ['client_secret_basic', 'none'])).toBe('none');
  });
  it('falls back to basic, then post, then none', () => {
    expect(chooseTokenEndpointAuthMethod(undefined, ['client_secret_post', 'client_secret_basic'])).toBe('client_secret_basic');
    expect(chooseTokenEndpointAuthMethod(undefined, ['client_secret_post'])).toBe('client_secret_post');
    expect(chooseTokenEndpointAuthMethod(undefined, ['private_key_jwt'])).toBe('none');
  });
});

describe('registration: clientUsable', () => {
  const client: ClientRecord = {
    client_id: 'c',
    client_secret: 's',
    client_secret_expires_at: 2000,
    token_endpoint_auth_method: 'client_secret_basic',
    redirect_uris: ['http://127.0.0.1:33418/callback'],
    issuer: ISSUER,
    source: 'dynamic',
  };
  it('is usable for its issuer, before expiry, on its redirect URI', () => {
    expect(clientUsable(client, ISSUER, 'http://127.0.0.1:33418/callback', 1_999_999)).toBe(true);
    expect(clientUsable(client, ISSUER, undefined, 0)).toBe(true);
  });
  it('is bound to its issuer exactly', () => {
    expect(clientUsable(client, 'https://other.example', undefined, 0)).toBe(false);
    expect(clientUsable(client, `${ISSUER}/`, undefined, 0)).toBe(false);
    expect(clientUsable(undefined, ISSUER, undefined, 0)).toBe(false);
  });
  it('is unusable once the secret expired; 0 means never', () => {
    expect(clientUsable(client, ISSUER, undefined, 2_000_000)).toBe(false);
    expect(clientUsable({ ...client, client_secret_expires_at: 0 }, ISSUER, undefined, 9e15)).toBe(true);
  });
  it('is unusable on a redirect URI it did not register', () => {
    expect(clientUsable(client, ISSUER, 'http://127.0.0.1:40000/callback', 0)).toBe(false);
  });
});

// ---------------------------------------------------------------- authorization

describe('authorization: buildAuthorizationUrl', () => {
  const inputs = {
    authorizationEndpoint: `${ISSUER}/authorize`,
    clientId: 'client 1',
    redirectUri: 'http://127.0.0.1:33418/callback',
    codeChallenge: 'E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM',
    state: 'st-123',
    resource: 'https://mcp.example/mcp',
  };

  it('carries every parameter, S256 and the resource', () => {
    const url = buildAuthorizationUrl({ ...inputs, scope: 'mcp:read mcp:write' });
    expect(url).toBeDefined();
    const parsed = new URL(url ?? '');
    expect(parsed.origin + parsed.pathname).toBe(`${ISSUER}/authorize`);
    expect(Object.fromEntries(parsed.searchParams)).toEqual({
      response_type: 'code',
      client_id: 'client 1',
      redirect_uri: inputs.redirectUri,
      code_challenge: inputs.codeChallenge,
      code_challenge_method: 'S256',
      state: 'st-123',
      scope: 'mcp:read mcp:write',
      resource: 'https://mcp.example/mcp',
    });
  });

  it('omits scope and prompt when no scope', () => {
    const parsed = new URL(buildAuthorizationUrl(inputs) ?? '');
    expect(parsed.searchParams.has('scope')).toBe(false);
    expect(parsed.searchParams.has('prompt')).toBe(false);
  });

  it('adds prompt=consent with offline_access only', () => {
    expect(new URL(buildAuthorizationUrl({ ...inputs, scope: 'mcp:read offline_access' }) ?? '').searchParams.get('prompt')).toBe('consent');
    expect(new URL(buildAuthorizationUrl({ ...inputs, scope: 'mcp:read offline_accessX' }) ?? '').searchParams.get('prompt')).toBeNull();
  });

  it('keeps an existing query', () => {
    const url = buildAuthorizationUrl({ ...inputs, authorizationEndpoint: `${ISSUER}/authorize?tenant=t1` }) ?? '';
    expect(url.startsWith(`${ISSUER}/authorize?tenant=t1&`)).toBe(true);
    expect(new URL(url).searchParams.get('tenant')).toBe('t1');
    expect(new URL(url).searchParams.get('state')).toBe('st-123');
  });

  it('refuses an endpoint that already carries an OAuth parameter or a fragment', () => {
    expect(buildAuthorizationUrl({ ...inputs, authorizationEndpoint: `${ISSUER}/authorize?client_id=evil` })).toBeUndefined();
    expect(buildAuthorizationUrl({ ...inputs, authorizationEndpoint: `${ISSUER}/authorize#x` })).toBeUndefined();
  });
});

describe('authorization: validateAuthorizationResponse', () => {
  const expected = { state: 'st-123', issuer: ISSUER, issAdvertised: true };
  const verdict = (params: CallbackParams, issAdvertised = true): CallbackVerdict =>
    validateAuthorizationResponse(params, { ...expected, issAdvertised });
  const failCode = (v: CallbackVerdict): string => (v.kind === 'fail' ? v.error.code : `not a failure: ${v.kind}`);

  describe('RFC 9207 table', () => {
    it('advertised + present + equal → code', () => {
      expect(verdict({ code: 'c', state: 'st-123', iss: ISSUER })).toEqual({ kind: 'code', code: 'c' });
    });
    it('advertised + present + different → fail', () => {
      expect(failCode(verdict({ code: 'c', state: 'st-123', iss: 'https://evil.example' }))).toBe('callback.iss_mismatch');
    });
    it('advertised + absent → fail', () => {
      expect(failCode(verdict({ code: 'c', state: 'st-123' }))).toBe('callback.iss_missing');
    });
    it('not advertised + present → compared', () => {
      expect(verdict({ code: 'c', state: 'st-123', iss: ISSUER }, false)).toEqual({ kind: 'code', code: 'c' });
      expect(failCode(verdict({ code: 'c', state: 'st-123', iss: 'https://evil.example' }, false))).toBe('callback.iss_mismatch');
    });
    it('neither → code', () => {
      expect(verdict({ code: 'c', state: 'st-123' }, false)).toEqual({ kind: 'code', code: 'c' });
    });
  });

  it('does not normalise iss (trailing slash, case, default port)', () => {
    for (const iss of [`${ISSUER}/`, 'https://AUTH.example', 'HTTPS://auth.example', 'https://auth.example:443']) {
      expect(failCode(verdict({ code: 'c', state: 'st-123', iss })), iss).toBe('callback.iss_mismatch');
      expect(failCode(verdict({ code: 'c', state: 'st-123', iss }, false)), iss).toBe('callback.iss_mismatch');
    }
  });

  it('ignores a missing state, even with error=', () => {
    expect(verdict({ code: 'c', iss: ISSUER })).toEqual({ kind: 'ignore', reason: 'state_missing' });
    expect(verdict({ error: 'access_denied', error_description: 'forged', iss: ISSUER })).toEqual({ kind: 'ignore', reason: 'state_missing' });
  });

  it('ignores a wrong state, even with error= (a forged error redirect is not shown)', () => {
    expect(verdict({ code: 'c', state: 'st-124', iss: ISSUER })).toEqual({ kind: 'ignore', reason: 'state_mismatch' });
    expect(verdict({ code: 'c', state: 'st-12', iss: ISSUER })).toEqual({ kind: 'ignore', reason: 'state_mismatch' });
    expect(verdict({ error: 'access_denied', error_description: 'forged', state: 'nope' })).toEqual({ kind: 'ignore', reason: 'state_mismatch' });
  });

  it('ignores a repeated state', () => {
    expect(verdict({ code: 'c', state: ['st-123', 'st-123'], iss: ISSUER }).kind).toBe('ignore');
  });

  it('fails on iss mismatch before acting on error=, without showing the attacker text', () => {
    const v = verdict({ state: 'st-123', iss: 'https://evil.example', error: 'access_denied', error_description: 'ATTACKER-TEXT call +1-555' });
    expect(failCode(v)).toBe('callback.iss_mismatch');
    expect(v.kind === 'fail' && v.error.message).not.toContain('ATTACKER-TEXT');
    expect(v.kind === 'fail' && v.error.oauthError).toBeUndefined();
  });

  it('fails on duplicated iss, code, error or error_description', () => {
    expect(failCode(verdict({ code: 'c', state: 'st-123', iss: [ISSUER, ISSUER] }))).toBe('callback.duplicate_parameter');
    expect(failCode(verdict({ code: ['a', 'b'], state: 'st-123', iss: ISSUER }))).toBe('callback.duplicate_parameter');
    expect(failCode(verdict({ error: ['a', 'b'], state: 'st-123', iss: ISSUER }))).toBe('callback.duplicate_parameter');
    expect(failCode(verdict({ error: 'a', error_description: ['x', 'y'], state: 'st-123', iss: ISSUER }))).toBe('callback.duplicate_parameter');
  });

  it('fails without code or error', () => {
    expect(failCode(verdict({ state: 'st-123', iss: ISSUER }))).toBe('callback.code_missing');
    expect(failCode(verdict({ code: '', state: 'st-123', iss: ISSUER }))).toBe('callback.code_missing');
  });

  it('maps an error redirect to authorize.<error>, description JSON-escaped and truncated', () => {
    const description = `"quoted"\n<script>${'x'.repeat(1000)}`;
    const v = verdict({ state: 'st-123', iss: ISSUER, error: 'access_denied', error_description: description });
    expect(v.kind).toBe('fail');
    if (v.kind !== 'fail') return;
    expect(v.error.code).toBe('authorize.access_denied');
    expect(v.error.oauthError).toBe('access_denied');
    expect(v.error.message).not.toContain('\n');
    expect(v.error.message).toContain(JSON.stringify(`${description.slice(0, 255)}…`));
    expect(v.error.message).not.toContain('x'.repeat(300));
    // The quoted description carries at most 256 characters of the original.
    const quoted = v.error.message.slice(v.error.message.lastIndexOf(' "') + 1);
    expect((JSON.parse(quoted) as string).length).toBeLessThanOrEqual(257);
  });

  it('folds an odd error value into authorize.unknown_error', () => {
    const v = verdict({ state: 'st-123', iss: ISSUER, error: 'not an oauth code' });
    expect(failCode(v)).toBe('authorize.unknown_error');
  });
});

// ---------------------------------------------------------------- token

function decodeBasic(header: string | undefined): [string, string] {
  expect(header).toMatch(/^Basic [A-Za-z0-9+/=]+$/);
  const raw = atob((header ?? '').slice('Basic '.length));
  const colon = raw.indexOf(':');
  return [raw.slice(0, colon), raw.slice(colon + 1)];
}
const formDecode = (v: string) => decodeURIComponent(v.replace(/\+/g, ' '));

describe('token: clientAuthentication', () => {
  it('basic: form-urlencodes id and secret before base64', () => {
    const auth = clientAuthentication({ client_id: 'a:b%c', client_secret: 's e:c%r&t+', token_endpoint_auth_method: 'client_secret_basic' });
    const [id, secret] = decodeBasic(auth.headers.authorization);
    expect(id).toBe('a%3Ab%25c');
    expect(secret).toBe('s+e%3Ac%25r%26t%2B');
    expect(formDecode(id)).toBe('a:b%c');
    expect(formDecode(secret)).toBe('s e:c%r&t+');
    expect(auth.params).toEqual({});
  });
  it('post: id and secret in the body, no header', () => {
    expect(clientAuthentication({ client_id: 'c', client_secret: 's', token_endpoint_auth_method: 'client_secret_post' })).toEqual({
      headers: {},
      params: { client_id: 'c', client_secret: 's' },
    });
  });
  it('none: the id only', () => {
    expect(clientAuthentication({ client_id: 'c', token_endpoint_auth_method: 'none' })).toEqual({ headers: {}, params: { client_id: 'c' } });
  });
});

describe('token: request builders', () => {
  const publicClient = { client_id: 'pub', token_endpoint_auth_method: 'none' as const };
  const basicClient = { client_id: 'conf', client_secret: 'top-secret', token_endpoint_auth_method: 'client_secret_basic' as const };

  it('code exchange carries code, verifier, redirect_uri and resource', () => {
    const request = buildCodeExchangeRequest('req-4', {
      tokenEndpoint: `${ISSUER}/token`,
      client: publicClient,
      code: 'the-code',
      codeVerifier: 'the-verifier',
      redirectUri: 'http://127.0.0.1:33418/callback',
      resource: 'https://mcp.example/mcp',
    });
    expect(request).toMatchObject({ id: 'req-4', step: 'token', method: 'POST', url: `${ISSUER}/token` });
    expect(request.headers['content-type']).toBe('application/x-www-form-urlencoded');
    expect(request.headers.authorization).toBeUndefined();
    expect(form(request.body)).toEqual({
      grant_type: 'authorization_code',
      code: 'the-code',
      redirect_uri: 'http://127.0.0.1:33418/callback',
      code_verifier: 'the-verifier',
      resource: 'https://mcp.example/mcp',
      client_id: 'pub',
    });
  });

  it('with basic auth the secret is only in the header', () => {
    const request = buildCodeExchangeRequest('req-4', {
      tokenEndpoint: `${ISSUER}/token`,
      client: basicClient,
      code: 'c',
      codeVerifier: 'v',
      redirectUri: 'http://127.0.0.1:1/cb',
      resource: 'https://mcp.example/mcp',
    });
    expect(request.body).not.toContain('top-secret');
    expect(form(request.body)).not.toHaveProperty('client_id');
    expect(decodeBasic(request.headers.authorization)).toEqual(['conf', 'top-secret']);
  });

  it('refresh carries the refresh token and resource', () => {
    const request = buildRefreshRequest('req-9', {
      tokenEndpoint: `${ISSUER}/token`,
      client: publicClient,
      refreshToken: 'rt-1',
      resource: 'https://mcp.example/mcp',
    });
    expect(request).toMatchObject({ id: 'req-9', step: 'refresh', method: 'POST' });
    expect(form(request.body)).toEqual({ grant_type: 'refresh_token', refresh_token: 'rt-1', resource: 'https://mcp.example/mcp', client_id: 'pub' });
  });
});

describe('token: processTokenResponse', () => {
  const expected = {
    at: 1_000_000,
    issuer: ISSUER,
    resource: 'https://mcp.example/mcp',
    requestedScope: 'mcp:read',
    minLifetimeSeconds: 10,
    maxLifetimeSeconds: 86_400,
  };

  it('accepts a Bearer response, lower-casing the type', () => {
    for (const tokenType of ['Bearer', 'bearer', 'BEARER']) {
      const record = success(processTokenResponse(json(200, { access_token: 'at', token_type: tokenType, expires_in: 3600, refresh_token: 'rt' }), expected));
      expect(record).toEqual({
        access_token: 'at',
        token_type: 'bearer',
        refresh_token: 'rt',
        expires_at: 1_000_000 + 3_600_000,
        obtained_at: 1_000_000,
        scope: 'mcp:read',
        issuer: ISSUER,
        resource: 'https://mcp.example/mcp',
      });
    }
  });

  it('refuses an unsupported token type', () => {
    expect(failure(processTokenResponse(json(200, { access_token: 'at', token_type: 'mac' }), expected)).code).toBe('token.unsupported_token_type');
  });

  it('accepts expires_in as a numeric string', () => {
    expect(success(processTokenResponse(json(200, { access_token: 'at', token_type: 'bearer', expires_in: '120' }), expected)).expires_at).toBe(
      1_000_000 + 120_000,
    );
    expect(failure(processTokenResponse(json(200, { access_token: 'at', token_type: 'bearer', expires_in: 'soon' }), expected)).code).toBe(
      'token.invalid_response',
    );
  });

  it('clamps expires_in into [min, max]', () => {
    expect(success(processTokenResponse(json(200, { access_token: 'at', token_type: 'bearer', expires_in: 0 }), expected)).expires_at).toBe(
      1_000_000 + 10_000,
    );
    expect(success(processTokenResponse(json(200, { access_token: 'at', token_type: 'bearer', expires_in: 1e9 }), expected)).expires_at).toBe(
      1_000_000 + 86_400_000,
    );
  });

  it('has no expires_at without expires_in', () => {
    const record = success(processTokenResponse(json(200, { access_token: 'at', token_type: 'bearer' }), expected));
    expect(record).not.toHaveProperty('expires_at');
    expect(needsRefresh(record, Number.MAX_SAFE_INTEGER, 60_000)).toBe(false);
  });

  it('prefers the granted scope to the requested one', () => {
    expect(success(processTokenResponse(json(200, { access_token: 'at', token_type: 'bearer', scope: 'mcp:x' }), expected)).scope).toBe('mcp:x');
  });

  it('on refresh keeps the previous refresh token and scope when omitted', () => {
    const previous: TokenRecord = {
      access_token: 'old',
      token_type: 'bearer',
      refresh_token: 'rt-old',
      obtained_at: 0,
      expires_at: 10,
      scope: 'mcp:read offline_access',
      issuer: ISSUER,
      resource: 'https://mcp.example/mcp',
    };
    const { requestedScope: _r, ...noRequested } = expected;
    const kept = success(processTokenResponse(json(200, { access_token: 'new', token_type: 'bearer' }), { ...noRequested, previous }));
    expect(kept.access_token).toBe('new');
    expect(kept.refresh_token).toBe('rt-old');
    expect(kept.scope).toBe('mcp:read offline_access');
    const rotated = success(
      processTokenResponse(json(200, { access_token: 'new', token_type: 'bearer', refresh_token: 'rt-new', scope: 'mcp:read' }), { ...noRequested, previous }),
    );
    expect(rotated.refresh_token).toBe('rt-new');
    expect(rotated.scope).toBe('mcp:read');
  });

  it('maps an error body to token.<error> with oauthError', () => {
    const error = failure(processTokenResponse(json(400, { error: 'invalid_grant', error_description: 'expired' }), expected));
    expect(error).toMatchObject({ kind: 'token', code: 'token.invalid_grant', oauthError: 'invalid_grant', status: 400 });
  });

  it('maps a non-JSON 500 to token.http_status', () => {
    const error = failure(processTokenResponse(json(500, '<html>Internal</html>', { 'content-type': 'text/html' }), expected));
    expect(error).toMatchObject({ kind: 'token', code: 'token.http_status', status: 500 });
    expect(error.oauthError).toBeUndefined();
  });

  it('refuses a 200 without access_token', () => {
    expect(failure(processTokenResponse(json(200, { token_type: 'bearer' }), expected)).code).toBe('token.invalid_response');
  });
});

describe('token: needsRefresh', () => {
  const tokens = (obtained: number, expires: number): TokenRecord => ({
    access_token: 'a',
    token_type: 'bearer',
    obtained_at: obtained,
    expires_at: expires,
    issuer: ISSUER,
    resource: 'https://mcp.example/mcp',
  });
  it('refreshes skew before expiry for a long-lived token', () => {
    const t = tokens(0, 3_600_000);
    expect(needsRefresh(t, 3_539_999, 60_000)).toBe(false);
    expect(needsRefresh(t, 3_540_000, 60_000)).toBe(true);
  });
  it('caps the skew at half the lifetime', () => {
    const t = tokens(0, 30_000);
    expect(needsRefresh(t, 14_999, 60_000)).toBe(false);
    expect(needsRefresh(t, 15_000, 60_000)).toBe(true);
  });
});

// ---------------------------------------------------------------- scope

describe('scope', () => {
  it('selectScope: challenge first', () => {
    expect(selectScope({ challengeScope: 'b a b', prmScopesSupported: ['x'], wantsRefreshTokens: false })).toBe('b a');
  });
  it('selectScope: PRM scopes_supported when the challenge has none', () => {
    expect(selectScope({ prmScopesSupported: ['x', 'y'], wantsRefreshTokens: false })).toBe('x y');
    expect(selectScope({ challengeScope: '  ', prmScopesSupported: ['x'], wantsRefreshTokens: false })).toBe('x');
  });
  it('selectScope: omitted otherwise, even when the AS lists offline_access', () => {
    expect(selectScope({ wantsRefreshTokens: true, asScopesSupported: ['offline_access'] })).toBeUndefined();
    expect(selectScope({ prmScopesSupported: [], wantsRefreshTokens: true })).toBeUndefined();
  });
  it('offline_access only when the AS lists it and refresh tokens are wanted', () => {
    expect(selectScope({ challengeScope: 'a', asScopesSupported: ['offline_access'], wantsRefreshTokens: true })).toBe('a offline_access');
    expect(selectScope({ challengeScope: 'a', asScopesSupported: ['offline_access'], wantsRefreshTokens: false })).toBe('a');
    expect(selectScope({ challengeScope: 'a', asScopesSupported: ['a'], wantsRefreshTokens: true })).toBe('a');
    expect(selectScope({ challengeScope: 'a', wantsRefreshTokens: true })).toBe('a');
    expect(selectScope({ challengeScope: 'offline_access a', asScopesSupported: ['offline_access'], wantsRefreshTokens: true })).toBe('offline_access a');
  });
  it('unionScopes keeps first-seen order and dedupes', () => {
    expect(unionScopes('b a', undefined, 'a  c', 'b')).toBe('b a c');
    expect(unionScopes(undefined, '')).toBeUndefined();
  });
  it('addsScope', () => {
    expect(addsScope('a b', 'a')).toBe(true);
    expect(addsScope('a', 'b a')).toBe(false);
    expect(addsScope(undefined, 'a')).toBe(false);
    expect(addsScope('a', undefined)).toBe(true);
  });
});

// ---------------------------------------------------------------- http

describe('http', () => {
  it('basicCredentials', () => {
    expect(basicCredentials('user', 'pass')).toBe(`Basic ${btoa('user:pass')}`);
    expect(basicCredentials('a b', 'c:d')).toBe(`Basic ${btoa('a+b:c%3Ad')}`);
  });
  it('parseJsonObject accepts objects only', () => {
    expect(parseJsonObject('{"a":1}')).toEqual({ a: 1 });
    for (const body of ['[]', '[{"a":1}]', 'null', '42', '"str"', 'true', 'garbage', '', '{"a":']) {
      expect(parseJsonObject(body), body).toBeUndefined();
    }
  });
});

// ---------------------------------------------------------------- errors

describe('errors', () => {
  it('quoteUntrusted JSON-escapes', () => {
    expect(quoteUntrusted('a"b\n\u0000')).toBe('"a\\"b\\n\\u0000"');
    expect(quoteUntrusted(42)).toBe('"42"');
  });
  it('quoteUntrusted truncates to 256 characters', () => {
    const q = quoteUntrusted('y'.repeat(300));
    expect(q).toBe(JSON.stringify(`${'y'.repeat(255)}…`));
    expect(JSON.parse(q)).toHaveLength(256);
    expect(quoteUntrusted('z'.repeat(256))).toBe(JSON.stringify('z'.repeat(256)));
  });
  it('toError maps each kind to its class', () => {
    const cases: Array<[ErrorKind, new (...args: never[]) => OAuthFlowError, string]> = [
      ['flow', OAuthFlowError, 'OAuthFlowError'],
      ['registration', OAuthRegistrationError, 'OAuthRegistrationError'],
      ['token', OAuthTokenError, 'OAuthTokenError'],
      ['network', OAuthNetworkError, 'OAuthNetworkError'],
      ['config', OAuthConfigError, 'OAuthConfigError'],
      ['store', OAuthStoreError, 'OAuthStoreError'],
    ];
    for (const [kind, cls, name] of cases) {
      const data: FlowErrorData = { kind, code: `${kind}.x`, message: 'm', state: 'flow.token', oauthError: 'invalid_grant', status: 400 };
      const error = toError(data);
      expect(error).toBeInstanceOf(cls);
      expect(error).toBeInstanceOf(OAuthFlowError);
      expect(error).toBeInstanceOf(Error);
      expect(error.name).toBe(name);
      expect(error.code).toBe(`${kind}.x`);
      expect(error.toJSON()).toEqual(data);
    }
  });
  it('JSON.stringify of an error has no cause and no secret', () => {
    const error = toError({ kind: 'token', code: 'token.invalid_grant', message: 'refused' }, new Error('refresh_token=SECRET-RT-123'));
    expect(error.cause).toBeInstanceOf(Error);
    const text = JSON.stringify(error);
    expect(text).not.toContain('SECRET-RT-123');
    expect(text).not.toContain('cause');
    expect(JSON.parse(text)).toEqual({ kind: 'token', code: 'token.invalid_grant', message: 'refused' });
  });
});

// ---------------------------------------------------------------- redact

describe('redact', () => {
  const client = { client_id: 'cid', client_secret: 'CLIENT-SECRET', token_endpoint_auth_method: 'client_secret_post' as const };

  it('redactEffect removes code, code_verifier and client_secret from a token request body', () => {
    const request = buildCodeExchangeRequest('req-4', {
      tokenEndpoint: `${ISSUER}/token`,
      client,
      code: 'AUTH-CODE',
      codeVerifier: 'PKCE-VERIFIER',
      redirectUri: 'http://127.0.0.1:1/cb',
      resource: 'https://mcp.example/mcp',
    });
    const redacted = redactEffect({ type: 'http.request', request });
    const text = JSON.stringify(redacted);
    for (const secret of ['AUTH-CODE', 'PKCE-VERIFIER', 'CLIENT-SECRET']) expect(text).not.toContain(secret);
    const body = form((redacted.request as { body: string }).body);
    expect(body).toMatchObject({ code: REDACTED, code_verifier: REDACTED, client_secret: REDACTED, grant_type: 'authorization_code', client_id: 'cid' });
    expect(body.resource).toBe('https://mcp.example/mcp');
    // The original is untouched.
    expect(request.body).toContain('AUTH-CODE');
  });

  it('redactEffect removes refresh_token and the authorization header', () => {
    const request = buildRefreshRequest('req-5', {
      tokenEndpoint: `${ISSUER}/token`,
      client: { ...client, token_endpoint_auth_method: 'client_secret_basic' },
      refreshToken: 'REFRESH-TOKEN',
      resource: 'https://mcp.example/mcp',
    });
    const redacted = redactEffect({ type: 'http.request', request }) as { request: { headers: Record<string, string>; body: string } };
    expect(redacted.request.headers.authorization).toBe(REDACTED);
    expect(form(redacted.request.body).refresh_token).toBe(REDACTED);
    const text = JSON.stringify(redacted);
    expect(text).not.toContain('REFRESH-TOKEN');
    expect(text).not.toContain(basicCredentials('cid', 'CLIENT-SECRET').slice(6));
  });

  it('redactEffect redacts a registration response secret-free body and the browser URL state', () => {
    const url = buildAuthorizationUrl({
      authorizationEndpoint: `${ISSUER}/authorize`,
      clientId: 'cid',
      redirectUri: 'http://127.0.0.1:1/cb',
      codeChallenge: 'CHALLENGE',
      state: 'STATE-SECRET',
      resource: 'https://mcp.example/mcp',
    }) ?? '';
    const redacted = redactEffect({ type: 'browser.open', url, redirectUri: 'http://127.0.0.1:1/cb' }) as { url: string };
    expect(redacted.url).not.toContain('STATE-SECRET');
    expect(new URL(redacted.url).searchParams.get('client_id')).toBe('cid');
  });

  it('redactEffect of store.save drops the value', () => {
    const redacted = redactEffect({
      type: 'store.save',
      kind: 'tokens',
      value: { access_token: 'AT-SECRET', token_type: 'bearer', obtained_at: 0, issuer: ISSUER, resource: 'r' },
      ifGeneration: 3,
    });
    expect(JSON.stringify(redacted)).not.toContain('AT-SECRET');
    expect(redacted).toEqual({ type: 'store.save', kind: 'tokens', ifGeneration: 3 });
  });

  it('redactUrl removes state and code, keeps the rest and the fragment', () => {
    const out = redactUrl('http://127.0.0.1:1/cb?code=CODE-1&state=STATE-1&iss=https%3A%2F%2Fauth.example#frag');
    expect(out).not.toContain('CODE-1');
    expect(out).not.toContain('STATE-1');
    expect(out.endsWith('#frag')).toBe(true);
    expect(new URL(out).searchParams.get('iss')).toBe(ISSUER);
    expect(redactUrl('https://a.example/x')).toBe('https://a.example/x');
  });

  it('redactEvent on a token http.response removes access_token and refresh_token', () => {
    const event = {
      type: 'http.response' as const,
      id: 'req-4',
      status: 200,
      headers: { 'content-type': 'application/json', 'set-cookie': 'sid=COOKIE' },
      body: JSON.stringify({ access_token: 'AT-1', refresh_token: 'RT-1', id_token: 'IDT-1', token_type: 'Bearer', expires_in: 60 }),
      at: 5,
    };
    const redacted = redactEvent(event);
    const text = JSON.stringify(redacted);
    for (const secret of ['AT-1', 'RT-1', 'IDT-1', 'COOKIE']) expect(text).not.toContain(secret);
    expect(JSON.parse(redacted.body as string)).toEqual({
      access_token: REDACTED,
      refresh_token: REDACTED,
      id_token: REDACTED,
      token_type: 'Bearer',
      expires_in: 60,
    });
    expect(event.body).toContain('AT-1');
  });

  it('redactEvent on a non-JSON body redacts it whole', () => {
    const redacted = redactEvent({ type: 'http.response', id: 'r', status: 200, headers: {}, body: 'access_token=AT-2', at: 0 });
    expect(redacted.body).toBe(REDACTED);
  });

  it('redactEvent on random redacts every value', () => {
    expect(redactEvent({ type: 'random', state: 'S', codeVerifier: 'V', codeChallenge: 'C' })).toEqual({
      type: 'random',
      state: REDACTED,
      codeVerifier: REDACTED,
      codeChallenge: REDACTED,
    });
  });

  it('redactEvent on callback redacts code and state, keeps iss and error', () => {
    const redacted = redactEvent({ type: 'callback', params: { code: 'CODE-9', state: 'STATE-9', iss: ISSUER, error: 'x' }, at: 7 });
    expect(redacted).toEqual({ type: 'callback', params: { code: REDACTED, state: REDACTED, iss: ISSUER, error: 'x' }, at: 7 });
  });
});
