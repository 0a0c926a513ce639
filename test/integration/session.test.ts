/**
 * The engine over real loopback HTTP against the demo authorization server and the MCP SDK's
 * server. Tests assert what was sent and stored and how many requests it took, never times.
 */
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Agent, request } from 'undici';
import { describe, expect, it } from 'vitest';
import { startAuthorizationServer } from '../../examples/demo/authorizationServer.js';
import { createHeadlessUserAgent } from '../../src/adapters/interaction/headlessUserAgent.js';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import { createFileStore } from '../../src/adapters/stores/file.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { OAuthConfigError, OAuthNetworkError } from '../../src/machines/errors.js';
import { headlessOpener, rpc } from '../support/deployment.js';
import { deploy, failure, listTools, manualClock, onCleanup, startRawServer, startScriptedResource, track } from '../support/harness.js';







describe('cold flow and stored tokens', () => {
  it('takes exactly 7 requests cold (401, PRM, AS metadata, register, authorize, token, retry), then 1 with stored tokens', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const opened = { opened: 0 };
    const first = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener(opened) }));
    expect(await listTools(first, d.mcp.url)).toBe(200);
    expect(d.totalRequests()).toBe(7);
    expect(d.mcp.counts['status:401']).toBe(1);
    expect(d.as.counts.register).toBe(1);
    expect(d.as.counts.authorize).toBe(1);
    expect(d.as.counts['token:authorization_code']).toBe(1);
    expect(opened.opened).toBe(1);

    // RFC 8707: the same resource, the PRM's string, in the authorization and the token request.
    const authorize = d.as.requests.find((r) => r.path === '/authorize');
    const token = d.as.requests.find((r) => r.path === '/token');
    expect(new URLSearchParams(authorize?.query).get('resource')).toBe(d.mcp.url);
    expect(new URLSearchParams(token?.body).get('resource')).toBe(d.mcp.url);
    expect(new URLSearchParams(authorize?.query).get('code_challenge_method')).toBe('S256');

    d.resetCounts();
    const second = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener(opened) }));
    expect(await listTools(second, d.mcp.url)).toBe(200);
    expect(d.totalRequests()).toBe(1);
    expect(opened.opened).toBe(1);
  });

  it('survives a restart through the file store: no second login, records 0600 in a 0700 directory', async () => {
    const d = await deploy();
    const directory = await mkdtemp(join(tmpdir(), 'mcp-oauth-store-'));
    onCleanup(() => rm(directory, { recursive: true, force: true }));
    const opened = { opened: 0 };
    const first = track(createOAuthSession({ serverUrl: d.mcp.url, store: createFileStore({ directory }), openAuthorizationUrl: headlessOpener(opened) }));
    expect(await listTools(first, d.mcp.url)).toBe(200);
    await first.close();

    d.resetCounts();
    const second = track(createOAuthSession({ serverUrl: d.mcp.url, store: createFileStore({ directory }), openAuthorizationUrl: headlessOpener(opened) }));
    expect(await listTools(second, d.mcp.url)).toBe(200);
    expect(d.totalRequests()).toBe(1);
    expect(opened.opened).toBe(1);
    const files = (await readdir(directory)).filter((name) => name.endsWith('.json') && !name.includes('counters'));
    expect(files.length).toBeGreaterThanOrEqual(3);
  });

  it('refreshes after a restart when the stored token expired, using the stored token endpoint', async () => {
    const d = await deploy();
    const directory = await mkdtemp(join(tmpdir(), 'mcp-oauth-store-'));
    onCleanup(() => rm(directory, { recursive: true, force: true }));
    const clock = manualClock();
    const first = track(createOAuthSession({ serverUrl: d.mcp.url, store: createFileStore({ directory }), clock: clock.now, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(first, d.mcp.url)).toBe(200);
    await first.close();

    clock.advance(2 * 3600_000);
    d.as.expireAllAccessTokens();
    d.resetCounts();
    const second = track(createOAuthSession({ serverUrl: d.mcp.url, store: createFileStore({ directory }), clock: clock.now, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(second, d.mcp.url)).toBe(200);
    // A proactive refresh and the request: no 401, no discovery.
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.mcp.counts['status:401'] ?? 0).toBe(0);
    expect(d.totalRequests()).toBe(2);
  });
});

describe('single-flight', () => {
  it('200 concurrent requests on an expired rotating refresh token: exactly 1 refresh, 200 succeed', async () => {
    const d = await deploy({ rotateRefreshTokens: true });
    const clock = manualClock();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, clock: clock.now, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    clock.advance(3600_000);
    d.as.expireAllAccessTokens();
    d.resetCounts();

    const statuses = await Promise.all(Array.from({ length: 200 }, () => listTools(session, d.mcp.url)));
    expect(statuses.filter((status) => status === 200)).toHaveLength(200);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.as.counts['error:invalid_grant'] ?? 0).toBe(0);
  });

  it('200 concurrent requests whose token the server revoked (401s): exactly 1 refresh, 200 succeed', async () => {
    const d = await deploy({ rotateRefreshTokens: true });
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    d.as.expireAllAccessTokens();
    d.resetCounts();

    const statuses = await Promise.all(Array.from({ length: 200 }, () => listTools(session, d.mcp.url)));
    expect(statuses.filter((status) => status === 200)).toHaveLength(200);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.as.counts.authorize ?? 0).toBe(0);
  });

  it('200 concurrent first requests: exactly 1 registration and 1 authorization, 200 succeed', async () => {
    const d = await deploy();
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener(opened) }));
    const statuses = await Promise.all(Array.from({ length: 200 }, () => listTools(session, d.mcp.url)));
    expect(statuses.filter((status) => status === 200)).toHaveLength(200);
    expect(d.as.counts.register).toBe(1);
    expect(d.as.counts.authorize).toBe(1);
    expect(d.as.counts['token:authorization_code']).toBe(1);
    expect(opened.opened).toBe(1);
  });

  it('through the undici interceptor: cold flow, then 200 concurrent expired requests share one refresh', async () => {
    const d = await deploy();
    const clock = manualClock();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, clock: clock.now, openAuthorizationUrl: headlessOpener() }));
    const agent = new Agent().compose(session.interceptor);
    onCleanup(() => agent.close());
    const call = async () => {
      const init = rpc('tools/list');
      const response = await request(d.mcp.url, { method: 'POST', headers: init.headers as Record<string, string>, body: init.body as string, dispatcher: agent });
      const text = await response.body.text();
      return { status: response.statusCode, text };
    };
    const cold = await call();
    expect(cold.status).toBe(200);
    expect(cold.text).toContain('echo');
    expect(d.totalRequests()).toBe(7);

    clock.advance(3600_000);
    d.as.expireAllAccessTokens();
    d.resetCounts();
    const results = await Promise.all(Array.from({ length: 200 }, call));
    expect(results.filter((r) => r.status === 200)).toHaveLength(200);
    expect(d.as.counts['token:refresh_token']).toBe(1);
  });
});

describe('refresh', () => {
  it('invalid_grant clears only that token generation, then runs one full authorization', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const opened = { opened: 0 };
    const clock = manualClock();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, store, clock: clock.now, openAuthorizationUrl: headlessOpener(opened) }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const before = await store.get(d.mcp.url, 'tokens');
    clock.advance(3600_000);
    d.as.revokeRefreshTokens();
    d.as.expireAllAccessTokens();
    d.resetCounts();

    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.as.counts.authorize).toBe(1);
    expect(d.as.counts.register ?? 0).toBe(0);
    expect(opened.opened).toBe(2);
    const after = await store.get(d.mcp.url, 'tokens');
    expect(after?.value.access_token).not.toBe(before?.value.access_token);
    expect(after?.generation).toBeGreaterThan(before?.generation ?? 0);
  });

  it('a rotated refresh token replaces the old one in the store', async () => {
    const d = await deploy({ rotateRefreshTokens: true });
    const store = createMemoryStore();
    const clock = manualClock();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, store, clock: clock.now, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const first = (await store.get(d.mcp.url, 'tokens'))?.value.refresh_token;
    clock.advance(3600_000);
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const second = (await store.get(d.mcp.url, 'tokens'))?.value.refresh_token;
    expect(first).toBeDefined();
    expect(second).toBeDefined();
    expect(second).not.toBe(first);
    clock.advance(3600_000);
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(d.as.counts['token:refresh_token']).toBe(2);
    expect(d.as.counts['error:invalid_grant'] ?? 0).toBe(0);
  });
});

describe('step-up', () => {
  it('re-authorizes on 403 insufficient_scope with the union of held and challenged scopes', async () => {
    const d = await deploy();
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener(opened) }));
    const call = await session.fetch(d.mcp.url, rpc('tools/call', { name: 'admin-reset', arguments: {} }));
    expect(call.status).toBe(200);
    expect(await call.text()).toContain('reset done');
    expect(opened.opened).toBe(2);
    const scopes = d.as.requests.filter((r) => r.path === '/authorize').map((r) => new URLSearchParams(r.query).get('scope'));
    expect(scopes[0]?.split(' ')).toContain('mcp:read');
    expect(scopes[1]?.split(' ').sort()).toEqual(expect.arrayContaining(['mcp:read', 'mcp:write']));
  });

  it('stops after 3 authorizations when every answer demands another scope', async () => {
    const as = await startAuthorizationServer({ scopesSupported: ['s1', 's2', 's3', 's4', 's5', 's6'] });
    onCleanup(() => as.close());
    let demanded = 0;
    const { url } = await startScriptedResource(as.issuer, (authorization, metadata) => {
      if (!authorization) return { status: 401, wwwAuthenticate: `Bearer ${metadata}, scope="s1"` };
      demanded += 1;
      const scope = Array.from({ length: demanded + 1 }, (_, i) => `s${i + 1}`).join(' ');
      return { status: 403, wwwAuthenticate: `Bearer error="insufficient_scope", scope="${scope}", ${metadata}` };
    });
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: url, openAuthorizationUrl: headlessOpener(opened) }));
    const error = await failure(session.fetch(url, rpc('tools/list')));
    expect(error.code).toBe('flow.authorization_limit');
    expect(opened.opened).toBe(3);
    expect(as.counts.authorize).toBe(3);
  });

  it('a 403 whose scope is already granted is final: no re-authorization', async () => {
    const as = await startAuthorizationServer();
    onCleanup(() => as.close());
    const { url } = await startScriptedResource(
      as.issuer,
      (authorization) =>
        authorization
          ? { status: 403, wwwAuthenticate: 'Bearer error="insufficient_scope", scope="mcp:read"' }
          : { status: 401, wwwAuthenticate: 'Bearer scope="mcp:read"' },
      { scopes_supported: ['mcp:read'] },
    );
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: url, openAuthorizationUrl: headlessOpener(opened) }));
    const error = await failure(session.fetch(url, rpc('tools/list')));
    expect(error.code).toBe('scope.insufficient');
    expect(opened.opened).toBe(1);
  });
});

describe('authorization response checks', () => {
  it('ignores a callback with a wrong state (answered 400) and completes with the genuine one', async () => {
    const d = await deploy();
    const agent = createHeadlessUserAgent({ deliver: false });
    let forgedStatus = 0;
    const session = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        openAuthorizationUrl: async (url, { redirectUri }) => {
          const params = await agent.authorize(url, redirectUri);
          const forged = new URL(redirectUri);
          forged.searchParams.set('code', 'attacker-code');
          forged.searchParams.set('state', 'forged-state');
          forgedStatus = (await request(forged)).statusCode;
          const genuine = new URL(redirectUri);
          genuine.search = params.toString();
          await (await request(genuine)).body.dump();
        },
      }),
    );
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(forgedStatus).toBe(400);
    const exchanges = d.as.requests.filter((r) => r.path === '/token');
    expect(exchanges).toHaveLength(1);
    expect(exchanges[0]?.body).not.toContain('attacker-code');
  });

  it('a wrong state alone never reaches the token endpoint: the wait ends at its deadline, nothing stored', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const session = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        store,
        deadlines: { callbackMs: 300 },
        openAuthorizationUrl: async (_url, { redirectUri }) => {
          const forged = new URL(redirectUri);
          forged.searchParams.set('code', 'attacker-code');
          forged.searchParams.set('state', 'forged-state');
          await (await request(forged)).body.dump();
        },
      }),
    );
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('callback.timeout');
    expect(d.as.counts['POST /token'] ?? 0).toBe(0);
    expect(await store.get(d.mcp.url, 'tokens')).toBeUndefined();
  });

  it('a wrong iss is rejected before the code is used: no token request, no tokens stored', async () => {
    const d = await deploy({ issParameter: 'wrong' });
    const store = createMemoryStore();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('callback.iss_mismatch');
    expect(d.as.counts['POST /token'] ?? 0).toBe(0);
    expect(await store.get(d.mcp.url, 'tokens')).toBeUndefined();
  });

  it('an error redirect becomes a typed error naming the OAuth error', async () => {
    const d = await deploy({ denyConsent: true });
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('authorize.access_denied');
    expect(error.oauthError).toBe('access_denied');
  });
});

describe('persisted snapshot', () => {
  it('a snapshot persisted while waiting for the callback resumes in a new session, redeeming the code once', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const redirectUri = 'http://127.0.0.1:9/callback';
    let authorizationUrl = '';
    const first = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        store,
        redirect: { uri: redirectUri },
        client: { metadata: { redirect_uris: [redirectUri] } },
        openAuthorizationUrl: (url) => {
          authorizationUrl = url;
        },
      }),
    );
    const pending = first.fetch(d.mcp.url, rpc('tools/list')).catch((e: unknown) => e);
    for (let i = 0; i < 200 && first.state !== 'flow.authorize.awaitingCallback'; i++) await new Promise((r) => setTimeout(r, 5));
    expect(first.state).toBe('flow.authorize.awaitingCallback');
    const persisted = JSON.stringify(first.persist());
    await first.close();
    await pending;

    // The page came back: a new session, the same store, the restored snapshot, the redirect's query.
    const params = await createHeadlessUserAgent({ deliver: false }).authorize(authorizationUrl, redirectUri);
    const second = track(
      createOAuthSession({ serverUrl: d.mcp.url, store, redirect: { uri: redirectUri }, client: { metadata: { redirect_uris: [redirectUri] } }, resume: JSON.parse(persisted) }),
    );
    expect(second.handleCallback(params)).toBe('accepted');
    expect(await listTools(second, d.mcp.url)).toBe(200);
    expect(second.handleCallback(params)).toBe('rejected');
    expect(d.as.counts['token:authorization_code']).toBe(1);
    expect(d.as.counts.authorize).toBe(1);
    expect((await store.get(d.mcp.url, 'tokens'))?.value.issuer).toBe(d.as.issuer);
  });
});

describe('authorization-server change', () => {
  it('registers at the new server and never sends the old client_id there', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const oldClientId = (await store.get(d.mcp.url, 'client'))?.value.client_id;
    expect(oldClientId).toBeDefined();

    const as2 = await startAuthorizationServer();
    onCleanup(() => as2.close());
    d.mcp.options.authorizationServer = as2;
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(as2.counts.register).toBe(1);
    const leaked = as2.requests.filter((r) => r.query.includes(oldClientId!) || r.body.includes(oldClientId!) || JSON.stringify(r.headers).includes(oldClientId!));
    expect(leaked).toHaveLength(0);
    const client = await store.get(d.mcp.url, 'client');
    expect(client?.value.issuer).toBe(as2.issuer);
  });
});

/** Another origin that records the Authorization header of every request it gets. */
async function authorizationRecorder(): Promise<{ seen: Array<string | undefined>; other: { url: string } }> {
  const seen: Array<string | undefined> = [];
  const other = await startRawServer((req, res) => {
    seen.push(req.headers.authorization);
    res.writeHead(200).end('ok');
  });
  return { seen, other };
}

describe('where the token goes', () => {
  it('never attaches the token to another origin, and passes other requests through', async () => {
    const d = await deploy();
    const { seen, other } = await authorizationRecorder();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const response = await session.fetch(`${other.url}/anything`);
    expect(await response.text()).toBe('ok');
    expect(seen).toEqual([undefined]);
  });

  it('does not follow a cross-origin redirect with the token', async () => {
    const d = await deploy();
    const seen: Array<string | undefined> = [];
    const other = await startRawServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200).end('elsewhere');
    });
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const redirecting = await startRawServer((_req, res) => res.writeHead(307, { location: `${other.url}/x` }).end());
    const session2 = track(createOAuthSession({ serverUrl: `${redirecting.url}/mcp`, openAuthorizationUrl: headlessOpener() }));
    const response = await session2.fetch(`${redirecting.url}/mcp`, rpc('tools/list'));
    expect(response.status).toBe(307);
    expect(seen).toHaveLength(0);
  });
});

describe('failures are typed and name the step', () => {
  it('an unreachable authorization server is a network error naming the step, with the cause attached', async () => {
    // Port 9 (discard) on loopback: nothing listens there.
    const { url } = await startScriptedResource('http://127.0.0.1:9', () => ({ status: 401, wwwAuthenticate: 'Bearer' }));
    const session = track(createOAuthSession({ serverUrl: url, openAuthorizationUrl: headlessOpener() }));
    const error = await failure(session.fetch(url, rpc('tools/list')));
    expect(error).toBeInstanceOf(OAuthNetworkError);
    expect(error.code).toBe('network.unreachable');
    expect(error.message).toContain('asm');
    expect(error.cause).toBeDefined();
  });

  it('a token endpoint that is down is a network error naming the token step, with the cause', async () => {
    const d = await deploy();
    const clock = manualClock();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, clock: clock.now, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    await d.as.close();
    clock.advance(3600_000);
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error).toBeInstanceOf(OAuthNetworkError);
    expect(error.code).toMatch(/^network\./);
    expect(error.message).toContain('refresh');
    expect(error.cause).toBeDefined();
  });

  it('rejects bad options before any network activity, naming the field', () => {
    let error: unknown;
    try {
      createOAuthSession({ serverUrl: 'https://mcp.example/mcp', client: { metadataUrl: 'http://client.example/meta.json' } });
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(OAuthConfigError);
    expect((error as Error).message).toContain('client.metadataUrl');

    expect(() => createOAuthSession({ serverUrl: 'https://mcp.example/mcp', client: { metadataUrl: 'https://client.example/' } })).toThrow(/client\.metadataUrl/);
    expect(() => createOAuthSession({ serverUrl: 'http://mcp.example/mcp' })).toThrow(/serverUrl/);
    expect(() =>
      createOAuthSession({ serverUrl: 'https://mcp.example/mcp', client: { preregistered: { client_id: 'x', token_endpoint_auth_method: 'client_secret_basic' } } }),
    ).toThrow(/client\.preregistered\.client_secret/);
  });

  it('a server that rejects every token gets one authorization, then a typed error: no 401 loop', async () => {
    const d = await deploy();
    const { url } = await startScriptedResource(d.as.issuer, (authorization, metadata) => ({
      status: 401,
      wwwAuthenticate: `Bearer ${authorization ? 'error="invalid_token", ' : ''}${metadata}`,
    }));
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: url, openAuthorizationUrl: headlessOpener(opened) }));
    const error = await failure(session.fetch(url, rpc('tools/list')));
    expect(error.code).toBe('flow.rejected_after_authorization');
    expect(opened.opened).toBe(1);
    expect(d.as.counts['token:authorization_code']).toBe(1);
  });

  it('never contacts an authorization server more internal than the MCP server (DESIGN policy 6)', async () => {
    const internal = await startRawServer(() => undefined);
    const { url } = await startScriptedResource(internal.url.replace('127.0.0.1', '127.0.0.2'), () => ({ status: 401, wwwAuthenticate: 'Bearer' }));
    let contacted = 0;
    internal.server.on('request', () => (contacted += 1));
    const session = track(
      createOAuthSession({
        serverUrl: url,
        // The MCP server's address counts as public here, 127.0.0.2 as a private network.
        classifyAddress: (address) => (address === '127.0.0.1' ? 'public' : address === '127.0.0.2' ? 'private' : undefined),
        openAuthorizationUrl: headlessOpener(),
      }),
    );
    const error = await failure(session.fetch(url, rpc('tools/list')));
    expect(error.code).toBe('network.blocked');
    expect(contacted).toBe(0);
  });

  it('a store that never answers fails the request with store.timeout, and a later request loads again', async () => {
    const d = await deploy();
    const real = createMemoryStore();
    let hang = true;
    const store: typeof real = {
      ...real,
      get: ((key: string, kind: 'tokens') => (hang ? new Promise(() => undefined) : real.get(key, kind))) as typeof real.get,
    };
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, store, deadlines: { storeMs: 100 }, openAuthorizationUrl: headlessOpener() }));
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('store.timeout');
    expect(d.totalRequests()).toBe(0);
    hang = false;
    expect(await listTools(session, d.mcp.url)).toBe(200);
  });

  it('keeps secrets out of the trace, errors and inspection', async () => {
    const d = await deploy();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const token = await session.getAccessToken();
    const trace = JSON.stringify(session.trace());
    const issued = d.as.requests.filter((r) => r.path === '/token').map((r) => new URLSearchParams(r.body));
    const code = issued[0]?.get('code');
    const verifier = issued[0]?.get('code_verifier');
    for (const secret of [token, code, verifier]) {
      expect(secret).toBeTruthy();
      expect(trace).not.toContain(secret!);
    }
    const { inspect } = await import('node:util');
    expect(inspect(session)).not.toContain(token);
    expect(JSON.stringify(session)).not.toContain(token);
  });
});

describe('the request path: bodies, header forms and origins', () => {
  /** A resource that records what reached it: 401 (with PRM) unless exactly one non-stale bearer token came. */
  async function startRecordingResource() {
    const as = await startAuthorizationServer();
    onCleanup(() => as.close());
    const seen: Array<{ authorization: string[]; body: string; contentType: string | undefined; trace: string | undefined }> = [];
    const { url } = await startRawServer((req, res) => {
      const origin = `http://${req.headers.host}`;
      if (req.url === '/.well-known/oauth-protected-resource/mcp') {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ resource: `${origin}/mcp`, authorization_servers: [as.issuer] }));
        return;
      }
      const chunks: Buffer[] = [];
      req.on('data', (chunk: Buffer) => chunks.push(chunk));
      req.on('end', () => {
        const authorization: string[] = [];
        for (let i = 0; i < req.rawHeaders.length; i += 2) if (req.rawHeaders[i]?.toLowerCase() === 'authorization') authorization.push(req.rawHeaders[i + 1] ?? '');
        const trace = req.headers['x-trace'];
        seen.push({ authorization, body: Buffer.concat(chunks).toString(), contentType: req.headers['content-type'], trace: Array.isArray(trace) ? trace.join(', ') : trace });
        const bearer = authorization.length === 1 && authorization[0]?.startsWith('Bearer ') && authorization[0] !== 'Bearer stale';
        if (bearer) res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        else res.writeHead(401, { 'www-authenticate': `Bearer resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"` }).end();
      });
    });
    return { url: `${url}/mcp`, seen, as };
  }

  it('fetch: a URLSearchParams body is sent again, with its content type, after the 401', async () => {
    const resource = await startRecordingResource();
    const session = track(createOAuthSession({ serverUrl: resource.url, openAuthorizationUrl: headlessOpener() }));
    const body = new URLSearchParams({ a: '1', b: 'x y' });
    const response = await session.fetch(resource.url, { method: 'POST', body });
    expect(response.status).toBe(200);
    expect(resource.seen.map((s) => s.body)).toEqual(['a=1&b=x+y', 'a=1&b=x+y']);
    expect(resource.seen.map((s) => s.contentType)).toEqual(['application/x-www-form-urlencoded;charset=UTF-8', 'application/x-www-form-urlencoded;charset=UTF-8']);
    expect(resource.seen.map((s) => s.authorization.length)).toEqual([0, 1]);
  });

  it('fetch: a ReadableStream body is buffered once and replayed after the 401', async () => {
    const resource = await startRecordingResource();
    const session = track(createOAuthSession({ serverUrl: resource.url, openAuthorizationUrl: headlessOpener() }));
    let pulls = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        pulls += 1;
        controller.enqueue(new TextEncoder().encode('{"streamed":true}'));
        controller.close();
      },
    });
    const response = await session.fetch(resource.url, { method: 'POST', body: stream, headers: { 'content-type': 'application/json' }, duplex: 'half' } as RequestInit);
    expect(response.status).toBe(200);
    expect(pulls).toBe(1);
    expect(resource.seen.map((s) => s.body)).toEqual(['{"streamed":true}', '{"streamed":true}']);
    expect(resource.seen.map((s) => s.contentType)).toEqual(['application/json', 'application/json']);
  });

  it('fetch: string, bytes and a Request are replayed; a caller Authorization to the server is replaced, never duplicated', async () => {
    const resource = await startRecordingResource();
    const session = track(createOAuthSession({ serverUrl: resource.url, openAuthorizationUrl: headlessOpener() }));
    expect((await session.fetch(resource.url, { method: 'POST', body: 'text', headers: { Authorization: 'Bearer stale', 'X-Trace': 's' } })).status).toBe(200);
    expect((await session.fetch(resource.url, { method: 'POST', body: new TextEncoder().encode('bytes'), headers: [['AUTHORIZATION', 'Bearer stale']] })).status).toBe(200);
    const request = new Request(resource.url, { method: 'POST', body: 'from a Request', headers: { authorization: 'Bearer stale', 'x-trace': 'r' } });
    expect((await session.fetch(request)).status).toBe(200);
    // The first call ran the flow: its stale header went out (no token yet), then the replay with ours.
    expect(resource.seen.map((s) => s.body)).toEqual(['text', 'text', 'bytes', 'from a Request']);
    expect(resource.seen.map((s) => s.authorization.length)).toEqual([1, 1, 1, 1]);
    expect(resource.seen[0]?.authorization).toEqual(['Bearer stale']);
    expect(resource.seen.slice(1).every((s) => s.authorization[0] !== 'Bearer stale')).toBe(true);
    expect(resource.seen.map((s) => s.trace)).toEqual(['s', 's', undefined, 'r']);
    expect(resource.seen[0]?.contentType).toBe('text/plain;charset=UTF-8');
  });

  it('interceptor: an array-form Authorization of the caller is replaced (cold and hot), other headers kept', async () => {
    const resource = await startRecordingResource();
    const session = track(createOAuthSession({ serverUrl: resource.url, openAuthorizationUrl: headlessOpener() }));
    const agent = new Agent().compose(session.interceptor);
    onCleanup(() => agent.close());
    const call = async () => {
      const response = await request(resource.url, { method: 'POST', headers: ['Authorization', 'Bearer stale', 'X-Trace', 'a', 'x-trace', 'b'], body: 'payload', dispatcher: agent });
      await response.body.text();
      return response.statusCode;
    };
    expect(await call()).toBe(200);
    expect(await call()).toBe(200);
    expect(resource.seen.map((s) => s.authorization.length)).toEqual([0, 1, 1]);
    expect(resource.seen.slice(1).every((s) => s.authorization[0] !== 'Bearer stale')).toBe(true);
    expect(resource.seen.map((s) => s.body)).toEqual(['payload', 'payload', 'payload']);
    expect(resource.seen.map((s) => s.trace)).toEqual(['a, b', 'a, b', 'a, b']);
  });

  it('interceptor: a handler in the newer callback style (dispatch directly) gets the same replay after the 401', async () => {
    const resource = await startRecordingResource();
    const session = track(createOAuthSession({ serverUrl: resource.url, openAuthorizationUrl: headlessOpener() }));
    const agent = new Agent().compose(session.interceptor);
    onCleanup(() => agent.close());
    const { origin, pathname } = new URL(resource.url);
    const dispatchOnce = () =>
      new Promise<{ status: number; body: string; starts: number }>((resolve, reject) => {
        let status = 0;
        let starts = 0;
        const chunks: Buffer[] = [];
        agent.dispatch(
          { origin, path: pathname, method: 'POST', headers: { Authorization: 'Bearer stale' }, body: 'new-style' },
          {
            onRequestStart: () => void (starts += 1),
            onResponseStart: (_controller, statusCode) => void (status = statusCode),
            onResponseData: (_controller, chunk) => void chunks.push(chunk),
            onResponseEnd: () => resolve({ status, body: Buffer.concat(chunks).toString(), starts }),
            onResponseError: (_controller, error) => reject(error),
          },
        );
      });
    expect(await dispatchOnce()).toEqual({ status: 200, body: '{}', starts: 1 });
    expect(await dispatchOnce()).toEqual({ status: 200, body: '{}', starts: 1 });
    expect(resource.seen.map((s) => s.authorization.length)).toEqual([0, 1, 1]);
    expect(resource.seen.map((s) => s.body)).toEqual(['new-style', 'new-style', 'new-style']);
  });

  it('interceptor: a server that rejects every token ends the request with the typed error, no loop', async () => {
    const as = await startAuthorizationServer();
    onCleanup(() => as.close());
    const { url } = await startScriptedResource(as.issuer, (_authorization, metadata) => ({ status: 401, wwwAuthenticate: `Bearer ${metadata}` }));
    const opened = { opened: 0 };
    const session = track(createOAuthSession({ serverUrl: url, openAuthorizationUrl: headlessOpener(opened) }));
    const agent = new Agent().compose(session.interceptor);
    onCleanup(() => agent.close());
    const error = await request(url, { method: 'POST', body: '{}', dispatcher: agent }).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect((error as { code?: string } | undefined)?.code).toBe('flow.rejected_after_authorization');
    expect(opened.opened).toBe(1);
  });

  it('interceptor: a request to another origin gets no token, and its own Authorization passes untouched', async () => {
    const d = await deploy();
    const { seen, other } = await authorizationRecorder();
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(session, d.mcp.url)).toBe(200);
    const agent = new Agent().compose(session.interceptor);
    onCleanup(() => agent.close());
    const plain = await request(`${other.url}/mcp`, { dispatcher: agent });
    expect(await plain.body.text()).toBe('ok');
    const own = await request(`${other.url}/x`, { headers: { authorization: 'Bearer theirs' }, dispatcher: agent });
    expect(await own.body.text()).toBe('ok');
    expect(seen).toEqual([undefined, 'Bearer theirs']);
  });

  it('interceptor: 200 concurrent requests sent on the fast path with a revoked token: exactly 1 refresh, 200 succeed', async () => {
    const d = await deploy({ rotateRefreshTokens: true });
    const session = track(createOAuthSession({ serverUrl: d.mcp.url, openAuthorizationUrl: headlessOpener() }));
    const agent = new Agent().compose(session.interceptor);
    onCleanup(() => agent.close());
    const call = async () => {
      const init = rpc('tools/list');
      const response = await request(d.mcp.url, { method: 'POST', headers: init.headers as Record<string, string>, body: init.body as string, dispatcher: agent });
      await response.body.text();
      return response.statusCode;
    };
    expect(await call()).toBe(200);
    d.as.expireAllAccessTokens();
    d.resetCounts();
    const statuses = await Promise.all(Array.from({ length: 200 }, call));
    expect(statuses.filter((status) => status === 200)).toHaveLength(200);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.as.counts.authorize ?? 0).toBe(0);
    expect(d.mcp.counts['status:401']).toBe(200);
  });
});
