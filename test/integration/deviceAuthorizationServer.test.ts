// The loopback AS's RFC 8628 endpoints are what a --no-browser client is tested against, so they are
// checked here on their own with plain fetch and a hand-moved clock, no engine code.
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import {
  DEVICE_CODE_GRANT,
  startAuthorizationServer,
  type AuthorizationServer,
} from '../../examples/demo/authorizationServer.js';

const RESOURCE = 'https://mcp.example/mcp';
const USER_CODE = /^[BCDFGHJKLMNPQRSTVWXZ]{4}-[BCDFGHJKLMNPQRSTVWXZ]{4}$/;

let clockMs = Date.parse('2026-01-01T00:00:00Z');
let as: AuthorizationServer;

beforeAll(async () => {
  as = await startAuthorizationServer({
    grantTypes: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
    deviceAuthorization: { intervalSeconds: 0 },
    discovery: 'both',
    clock: () => clockMs,
  });
});

afterAll(async () => {
  await as?.close();
});

beforeEach(() => {
  as.options.deviceAuthorization = { intervalSeconds: 0 };
  as.options.denyConsent = false;
  as.resetCounts();
});

interface Registered {
  client_id: string;
  client_secret?: string;
  grant_types: string[];
}

interface DeviceAuthorizationResponse {
  device_code: string;
  user_code: string;
  verification_uri: string;
  verification_uri_complete: string;
  expires_in: number;
  interval: number;
}

function advance(seconds: number): void {
  clockMs += seconds * 1000;
}

function postForm(path: string, params: Record<string, string>, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${as.url}${path}`, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded', ...headers },
    body: new URLSearchParams(params).toString(),
  });
}

async function register(metadata: Record<string, unknown>): Promise<Registered> {
  const res = await fetch(`${as.url}/register`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ client_name: 'device test', ...metadata }),
  });
  expect(res.status).toBe(201);
  return (await res.json()) as Registered;
}

function registerDeviceClient(): Promise<Registered> {
  return register({ grant_types: [DEVICE_CODE_GRANT, 'refresh_token'], token_endpoint_auth_method: 'none' });
}

async function requestCodes(client: Registered, extra: Record<string, string> = {}): Promise<DeviceAuthorizationResponse> {
  const res = await postForm('/device_authorization', {
    client_id: client.client_id,
    scope: 'mcp:read offline_access',
    resource: RESOURCE,
    ...extra,
  });
  expect(res.status, await res.clone().text()).toBe(200);
  return (await res.json()) as DeviceAuthorizationResponse;
}

function poll(client: Registered, deviceCode: string): Promise<Response> {
  return postForm('/token', {
    grant_type: DEVICE_CODE_GRANT,
    device_code: deviceCode,
    client_id: client.client_id,
    resource: RESOURCE,
  });
}

async function expectError(res: Response, status: number, error: string): Promise<void> {
  expect(res.status).toBe(status);
  expect(((await res.json()) as { error: string }).error).toBe(error);
}

function decide(userCode: string, decision: 'approve' | 'deny'): Promise<Response> {
  return postForm('/device', { user_code: userCode, decision });
}

function statusOf(userCode: string): string | undefined {
  return as.deviceAuthorizations().find((d) => d.userCode === userCode)?.status;
}

describe('metadata', () => {
  it('advertises the device authorization endpoint in both documents only when enabled', async () => {
    for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
      const doc = (await (await fetch(`${as.url}${path}`)).json()) as Record<string, unknown>;
      expect(doc.device_authorization_endpoint).toBe(`${as.url}/device_authorization`);
      expect(doc.grant_types_supported).toContain(DEVICE_CODE_GRANT);
    }

    const plain = await startAuthorizationServer({ discovery: 'both' });
    try {
      for (const path of ['/.well-known/oauth-authorization-server', '/.well-known/openid-configuration']) {
        const doc = (await (await fetch(`${plain.url}${path}`)).json()) as Record<string, unknown>;
        expect(doc).not.toHaveProperty('device_authorization_endpoint');
        expect(doc.grant_types_supported).not.toContain(DEVICE_CODE_GRANT);
      }
      expect((await fetch(`${plain.url}/device_authorization`, { method: 'POST' })).status).toBe(404);
      expect((await fetch(`${plain.url}/device`)).status).toBe(404);
    } finally {
      await plain.close();
    }
  });

  it('refuses to register the device grant when the server does not support it', async () => {
    const plain = await startAuthorizationServer();
    try {
      const res = await fetch(`${plain.url}/register`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({ grant_types: [DEVICE_CODE_GRANT], token_endpoint_auth_method: 'none' }),
      });
      expect(res.status).toBe(400);
      expect(((await res.json()) as { error: string }).error).toBe('invalid_client_metadata');
    } finally {
      await plain.close();
    }
  });
});

describe('device authorization endpoint', () => {
  it('gives a registered device client codes, uncached', async () => {
    const client = await registerDeviceClient();
    expect(client.grant_types).toEqual([DEVICE_CODE_GRANT, 'refresh_token']);
    const res = await postForm('/device_authorization', { client_id: client.client_id, scope: 'mcp:read', resource: RESOURCE });
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const body = (await res.json()) as DeviceAuthorizationResponse;
    expect(body.device_code.length).toBeGreaterThanOrEqual(43);
    expect(body.user_code).toMatch(USER_CODE);
    expect(body.verification_uri).toBe(`${as.url}/device`);
    expect(body.verification_uri_complete).toBe(`${as.url}/device?user_code=${body.user_code}`);
    expect(body.expires_in).toBe(600);
    expect(body.interval).toBe(0);
    expect(as.deviceAuthorizations()).toContainEqual(
      expect.objectContaining({ userCode: body.user_code, status: 'pending', polls: 0, clientId: client.client_id }),
    );
    expect(as.counts.device_authorization).toBe(1);
    expect(as.requests.some((r) => r.method === 'POST' && r.path === '/device_authorization')).toBe(true);
  });

  it('authenticates confidential clients as the token endpoint does', async () => {
    const client = await register({ grant_types: [DEVICE_CODE_GRANT], token_endpoint_auth_method: 'client_secret_basic' });
    const basic = `Basic ${Buffer.from(`${client.client_id}:${client.client_secret}`).toString('base64')}`;
    const ok = await postForm('/device_authorization', { resource: RESOURCE }, { authorization: basic });
    expect(ok.status).toBe(200);

    const wrong = `Basic ${Buffer.from(`${client.client_id}:nope`).toString('base64')}`;
    const bad = await postForm('/device_authorization', { resource: RESOURCE }, { authorization: wrong });
    expect(bad.headers.get('www-authenticate')).toContain('Basic');
    await expectError(bad, 401, 'invalid_client');
    // Registered for basic, so the secret in the body is the wrong method.
    await expectError(
      await postForm('/device_authorization', { client_id: client.client_id, client_secret: client.client_secret ?? '', resource: RESOURCE }),
      401,
      'invalid_client',
    );
  });

  it('answers unauthorized_client to a client registered without the device grant', async () => {
    const client = await register({
      grant_types: ['authorization_code'],
      redirect_uris: ['http://127.0.0.1:53682/callback'],
      token_endpoint_auth_method: 'none',
    });
    await expectError(
      await postForm('/device_authorization', { client_id: client.client_id, resource: RESOURCE }),
      400,
      'unauthorized_client',
    );
  });

  it('validates scope and resource as the authorization endpoint does', async () => {
    const client = await registerDeviceClient();
    await expectError(await postForm('/device_authorization', { client_id: client.client_id, scope: 'admin', resource: RESOURCE }), 400, 'invalid_scope');
    await expectError(await postForm('/device_authorization', { client_id: client.client_id }), 400, 'invalid_target');
    await expectError(await postForm('/device_authorization', { client_id: client.client_id, resource: 'https://mcp.example/#x' }), 400, 'invalid_target');
    const twice = new URLSearchParams([['client_id', client.client_id], ['resource', RESOURCE], ['resource', 'https://other.example/']]);
    const res = await fetch(`${as.url}/device_authorization`, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: twice.toString(),
    });
    await expectError(res, 400, 'invalid_target');
  });
});

describe('device code grant', () => {
  it('is pending until approved, then issues resource-bound tokens once', async () => {
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    await expectError(await poll(client, codes.device_code), 400, 'authorization_pending');

    const page = await fetch(codes.verification_uri_complete);
    expect(page.status).toBe(200);
    expect(await page.text()).toContain('device test');

    // Typed loosely: lower case, no dash.
    const approval = await decide(codes.user_code.replace('-', '').toLowerCase(), 'approve');
    expect(approval.status).toBe(200);
    expect(approval.headers.get('content-type')).toMatch(/^text\/html/);
    expect(await approval.text()).toContain('approved');
    expect(statusOf(codes.user_code)).toBe('approved');

    const res = await poll(client, codes.device_code);
    expect(res.status).toBe(200);
    expect(res.headers.get('cache-control')).toBe('no-store');
    const tokens = (await res.json()) as { access_token: string; refresh_token?: string; token_type: string; scope: string; expires_in: number };
    expect(tokens.token_type).toBe('Bearer');
    expect(tokens.scope).toBe('mcp:read offline_access');
    expect(tokens.expires_in).toBe(3600);
    expect(tokens.refresh_token).toBeDefined();
    expect(as.verifyAccessToken(tokens.access_token)).toMatchObject({
      clientId: client.client_id,
      resource: RESOURCE,
      scopes: ['mcp:read', 'offline_access'],
    });

    const refreshed = await postForm('/token', {
      grant_type: 'refresh_token',
      refresh_token: tokens.refresh_token ?? '',
      client_id: client.client_id,
      resource: RESOURCE,
    });
    expect(refreshed.status).toBe(200);

    await expectError(await poll(client, codes.device_code), 400, 'invalid_grant');
    expect(as.deviceAuthorizations()).toContainEqual(
      expect.objectContaining({ userCode: codes.user_code, status: 'redeemed', polls: 3 }),
    );
    expect(as.counts[`token:${DEVICE_CODE_GRANT}`]).toBe(3);
    expect(as.counts['POST /device']).toBe(1);
    expect(as.requests.filter((r) => r.path === '/device').map((r) => r.method)).toEqual(['GET', 'POST']);
  });

  it('issues no refresh token to a client that may not refresh', async () => {
    const client = await register({ grant_types: [DEVICE_CODE_GRANT], token_endpoint_auth_method: 'none' });
    const codes = await requestCodes(client);
    await decide(codes.user_code, 'approve');
    const res = await poll(client, codes.device_code);
    expect(res.status).toBe(200);
    expect(await res.json()).not.toHaveProperty('refresh_token');
  });

  it('answers slow_down to a poll sooner than the interval and lengthens the interval by 5 s', async () => {
    as.options.deviceAuthorization = { intervalSeconds: 5 };
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    expect(codes.interval).toBe(5);

    await expectError(await poll(client, codes.device_code), 400, 'authorization_pending');
    advance(1);
    await expectError(await poll(client, codes.device_code), 400, 'slow_down');
    expect(as.deviceAuthorizations().find((d) => d.userCode === codes.user_code)?.intervalSeconds).toBe(10);

    // The old interval is no longer enough.
    advance(6);
    await expectError(await poll(client, codes.device_code), 400, 'slow_down');
    advance(15);
    await expectError(await poll(client, codes.device_code), 400, 'authorization_pending');

    await decide(codes.user_code, 'approve');
    advance(15);
    expect((await poll(client, codes.device_code)).status).toBe(200);
  });

  it('answers access_denied once the user denies', async () => {
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    const denial = await decide(codes.user_code, 'deny');
    expect(denial.status).toBe(200);
    expect(await denial.text()).toContain('denied');
    await expectError(await poll(client, codes.device_code), 400, 'access_denied');
    expect(statusOf(codes.user_code)).toBe('denied');
    // A decided code cannot be decided again.
    expect((await decide(codes.user_code, 'approve')).status).toBe(400);
  });

  it('treats approval as denial under denyConsent', async () => {
    as.options.denyConsent = true;
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    const res = await decide(codes.user_code, 'approve');
    expect(await res.text()).toContain('denied');
    await expectError(await poll(client, codes.device_code), 400, 'access_denied');
  });

  it('answers expired_token after expires_in, by the server clock', async () => {
    as.options.deviceAuthorization = { intervalSeconds: 0, expiresInSeconds: 60 };
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    expect(codes.expires_in).toBe(60);
    advance(61);
    expect(statusOf(codes.user_code)).toBe('expired');
    const late = await decide(codes.user_code, 'approve');
    expect(late.status).toBe(400);
    await expectError(await poll(client, codes.device_code), 400, 'expired_token');
  });

  it('does not let another client redeem the code', async () => {
    const owner = await registerDeviceClient();
    const thief = await registerDeviceClient();
    const codes = await requestCodes(owner);
    await decide(codes.user_code, 'approve');
    await expectError(await poll(thief, codes.device_code), 400, 'invalid_grant');
    expect((await poll(owner, codes.device_code)).status).toBe(200);
  });

  it('requires a device_code and the resource it was issued for', async () => {
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    await expectError(await postForm('/token', { grant_type: DEVICE_CODE_GRANT, client_id: client.client_id, resource: RESOURCE }), 400, 'invalid_request');
    await expectError(
      await postForm('/token', { grant_type: DEVICE_CODE_GRANT, device_code: codes.device_code, client_id: client.client_id, resource: 'https://other.example/' }),
      400,
      'invalid_target',
    );
  });
});

describe('verification page', () => {
  it('escapes a hostile user_code, loads nothing and sends no Referer', async () => {
    const hostile = `"><script>alert(1)</script><img src=x onerror=alert(2)>'`;
    const res = await fetch(`${as.url}/device?user_code=${encodeURIComponent(hostile)}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('referrer-policy')).toBe('no-referrer');
    expect(res.headers.get('content-type')).toMatch(/^text\/html/);
    expect(res.headers.get('content-security-policy')).toContain("default-src 'none'");
    const html = await res.text();
    // The whole hostile value stays inside the attribute, quotes included.
    expect(html).toContain('value="&#34;&#62;&#60;script&#62;alert(1)&#60;/script&#62;&#60;img src=x onerror=alert(2)&#62;&#39;"');
    expect(html).not.toMatch(/<(?:script|img|link|iframe|style|object)\b/i);
    expect(html).not.toMatch(/\bhref=|https?:\/\//i);
    expect(html).toMatch(/<form method="post" action="\/device">/);
    expect(html).toContain('name="decision" value="approve"');
    expect(html).toContain('name="decision" value="deny"');

    const rejected = await decide(hostile, 'approve');
    expect(rejected.status).toBe(400);
    expect(rejected.headers.get('referrer-policy')).toBe('no-referrer');
    expect(await rejected.text()).not.toContain('<script');
  });

  it('rejects an unknown code or a missing decision with a 400 page', async () => {
    expect((await decide('BBBB-BBBB', 'approve')).status).toBe(400);
    const client = await registerDeviceClient();
    const codes = await requestCodes(client);
    const res = await postForm('/device', { user_code: codes.user_code, decision: 'maybe' });
    expect(res.status).toBe(400);
    expect(statusOf(codes.user_code)).toBe('pending');
  });
});
