/**
 * Client identity and shared state over real loopback HTTP: pre-registered clients (trust on first
 * use), Client ID Metadata Documents, the remembered loopback port (DESIGN policy 12) and the file
 * store's lease making two sessions refresh once.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { startAuthorizationServer } from '../../examples/demo/authorizationServer.js';
import { createOAuthSession } from '../../src/adapters/session.js';
import { createFileStore } from '../../src/adapters/stores/file.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { headlessOpener, rpc } from '../support/deployment.js';
import { deploy, failure, freePort, listTools, occupy, onCleanup, track } from '../support/harness.js';

describe('pre-registered client', () => {
  it('uses configured credentials (Basic, form-urlencoded), binds them to the first issuer and never registers', async () => {
    const d = await deploy();
    const port = await freePort();
    const redirectUri = `http://127.0.0.1:${port}/callback`;
    d.as.addClient({
      client_id: 'pre:registered',
      client_secret: 'se%cr:et',
      redirect_uris: [redirectUri],
      token_endpoint_auth_method: 'client_secret_basic',
      grant_types: ['authorization_code', 'refresh_token'],
    });
    const store = createMemoryStore();
    const session = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        store,
        redirect: { loopback: { port } },
        client: { preregistered: { client_id: 'pre:registered', client_secret: 'se%cr:et', token_endpoint_auth_method: 'client_secret_basic' } },
        openAuthorizationUrl: headlessOpener(),
      }),
    );
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(d.as.counts.register ?? 0).toBe(0);
    const token = d.as.requests.find((r) => r.path === '/token');
    expect(token?.headers.authorization).toBe(`Basic ${Buffer.from('pre%3Aregistered:se%25cr%3Aet').toString('base64')}`);
    expect(token?.body).not.toContain('se%25cr');
    const bound = await store.get(d.mcp.url, 'client');
    expect(bound?.value).toMatchObject({ client_id: 'pre:registered', issuer: d.as.issuer, source: 'preregistered' });

    // The server now names another authorization server: the secret must not go there.
    const as2 = await startAuthorizationServer();
    onCleanup(() => as2.close());
    d.mcp.options.authorizationServer = as2;
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('client.issuer_mismatch');
    expect(as2.requests.filter((r) => r.path !== '/.well-known/oauth-authorization-server')).toHaveLength(0);
  });

  it('a fixed redirect port that is taken is a typed error naming the port; no browser opens', async () => {
    const d = await deploy();
    const port = await occupy();
    const opened = { opened: 0 };
    const session = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        redirect: { loopback: { port } },
        client: { preregistered: { client_id: 'fixed', token_endpoint_auth_method: 'none' } },
        openAuthorizationUrl: headlessOpener(opened),
      }),
    );
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('callback.port_unavailable');
    expect(error.message).toContain(String(port));
    expect(opened.opened).toBe(0);
  });
});

describe('remembered loopback port (DESIGN policy 12)', () => {
  it('reuses the registered port; when it is taken, a dynamically registered client registers again', async () => {
    const d = await deploy();
    const store = createMemoryStore();
    const first = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(first, d.mcp.url)).toBe(200);
    const registered = (await store.get(d.mcp.url, 'client'))?.value.redirect_uris[0];
    expect(registered).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    await first.close();

    // A new authorization with the port free: the same redirect URI, no new registration.
    await store.delete(d.mcp.url, 'tokens', { ifGeneration: (await store.get(d.mcp.url, 'tokens'))!.generation });
    const second = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(second, d.mcp.url)).toBe(200);
    expect(d.as.counts.register).toBe(1);
    expect(new URLSearchParams(d.as.requests.filter((r) => r.path === '/authorize')[1]?.query).get('redirect_uri')).toBe(registered);
    await second.close();

    // Now something else holds that port: register again with the new redirect URI.
    await occupy(Number(new URL(registered!).port));
    await store.delete(d.mcp.url, 'tokens', { ifGeneration: (await store.get(d.mcp.url, 'tokens'))!.generation });
    const third = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(third, d.mcp.url)).toBe(200);
    expect(d.as.counts.register).toBe(2);
    const now = (await store.get(d.mcp.url, 'client'))?.value.redirect_uris[0];
    expect(now).not.toBe(registered);
  });
});

describe('Client ID Metadata Document', () => {
  it('uses the document URL as client_id when the server supports it, without registering', async () => {
    const d = await deploy({ clientIdMetadataDocumentSupported: true });
    const port = await freePort();
    const redirectUri = `http://127.0.0.1:${port}/callback`;
    const documentUrl = 'https://client.example/mcp-oauth/client.json';
    d.as.addClientMetadataDocument(documentUrl, {
      client_id: documentUrl,
      client_name: 'mcp-oauth tests',
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code', 'refresh_token'],
      token_endpoint_auth_method: 'none',
    });
    const session = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        redirect: { loopback: { port } },
        client: { metadataUrl: documentUrl, metadata: { redirect_uris: [redirectUri] } },
        openAuthorizationUrl: headlessOpener(),
      }),
    );
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(d.as.counts.register ?? 0).toBe(0);
    const authorize = d.as.requests.find((r) => r.path === '/authorize');
    expect(new URLSearchParams(authorize?.query).get('client_id')).toBe(documentUrl);
  });

  it('falls back to dynamic registration when the server does not advertise support', async () => {
    const d = await deploy({ clientIdMetadataDocumentSupported: false });
    const port = await freePort();
    const session = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        redirect: { loopback: { port } },
        client: { metadataUrl: 'https://client.example/mcp-oauth/client.json' },
        openAuthorizationUrl: headlessOpener(),
      }),
    );
    expect(await listTools(session, d.mcp.url)).toBe(200);
    expect(d.as.counts.register).toBe(1);
  });
});

describe('the lease is renewed while a flow runs', () => {
  for (const [name, makeStore] of [
    ['memory', async () => createMemoryStore()],
    [
      'file',
      async () => {
        const directory = await mkdtemp(join(tmpdir(), 'mcp-oauth-heartbeat-'));
        onCleanup(() => rm(directory, { recursive: true, force: true }));
        return createFileStore({ directory });
      },
    ],
  ] as const) {
    it(`${name} store: a sign-in that outlasts the lease ttl many times keeps it; the waiting session reuses its tokens`, async () => {
      const d = await deploy();
      const store = await makeStore();
      const agent = headlessOpener();
      let opened = 0;
      // ttl = 3 × oauthRequestMs = 600 ms; the person takes 2.5 s to approve.
      const deadlines = { oauthRequestMs: 200, callbackMs: 10_000 };
      const slow = track(
        createOAuthSession({
          serverUrl: d.mcp.url,
          store,
          deadlines,
          openAuthorizationUrl: async (url, context) => {
            opened += 1;
            await new Promise((resolve) => setTimeout(resolve, 2_500));
            await agent(url, context);
          },
        }),
      );
      const other = track(createOAuthSession({ serverUrl: d.mcp.url, store, deadlines, openAuthorizationUrl: (url, context) => ((opened += 1), agent(url, context)) }));
      const first = listTools(slow, d.mcp.url);
      // Let the slow session take the lease before the other one asks for it.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const statuses = await Promise.all([first, listTools(other, d.mcp.url)]);
      expect(statuses).toEqual([200, 200]);
      // Without renewal the lease would lapse at 600 ms and the other session would run its own sign-in.
      expect(opened).toBe(1);
      expect(d.as.counts.authorize).toBe(1);
      expect(d.as.counts.register).toBe(1);
    });
  }
});

describe('the file store lease across sessions', () => {
  it('two sessions sharing one file store and an expired rotating token refresh exactly once', async () => {
    const d = await deploy({ rotateRefreshTokens: true });
    const directory = await mkdtemp(join(tmpdir(), 'mcp-oauth-lease-'));
    onCleanup(() => rm(directory, { recursive: true, force: true }));
    let now = Date.now();
    const clock = () => now;
    const make = () =>
      track(createOAuthSession({ serverUrl: d.mcp.url, store: createFileStore({ directory }), clock, openAuthorizationUrl: headlessOpener() }));
    const a = make();
    expect(await listTools(a, d.mcp.url)).toBe(200);
    const b = make();
    expect(await listTools(b, d.mcp.url)).toBe(200);
    expect(d.as.counts.authorize).toBe(1);

    now += 3600_000;
    d.as.expireAllAccessTokens();
    d.resetCounts();
    const results = await Promise.all([
      ...Array.from({ length: 50 }, () => listTools(a, d.mcp.url)),
      ...Array.from({ length: 50 }, () => listTools(b, d.mcp.url)),
    ]);
    expect(results.filter((s) => s === 200)).toHaveLength(100);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.as.counts['error:invalid_grant'] ?? 0).toBe(0);
    expect(d.as.counts.authorize ?? 0).toBe(0);
  });
});
