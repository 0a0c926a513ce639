/**
 * Client identity and shared state over real loopback HTTP: pre-registered clients (trust on first
 * use), Client ID Metadata Documents, the remembered loopback port (DESIGN policy 12) and the file
 * store's lease making two sessions refresh once.
 */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { startAuthorizationServer } from '../../examples/demo/authorizationServer.js';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import { createFileStore } from '../../src/adapters/stores/file.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { OAuthFlowError } from '../../src/machines/errors.js';
import { headlessOpener, rpc, startDeployment, type Deployment } from '../support/deployment.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function deploy(...args: Parameters<typeof startDeployment>): Promise<Deployment> {
  const deployment = await startDeployment(...args);
  cleanups.push(() => deployment.close());
  return deployment;
}

function track(session: OAuthSession): OAuthSession {
  cleanups.push(() => session.close());
  return session;
}

async function status(session: OAuthSession, url: string): Promise<number> {
  const response = await session.fetch(url, rpc('tools/list'));
  await response.text();
  return response.status;
}

async function failure(promise: Promise<unknown>): Promise<OAuthFlowError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OAuthFlowError);
  return error as OAuthFlowError;
}

/** Holds a loopback port so the engine cannot bind it. */
async function occupy(port = 0): Promise<{ port: number; server: Server }> {
  const server = createServer((_req, res) => res.end());
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  cleanups.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
  return { port: (server.address() as AddressInfo).port, server };
}

async function freePort(): Promise<number> {
  const { port, server } = await occupy();
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

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
    expect(await status(session, d.mcp.url)).toBe(200);
    expect(d.as.counts.register ?? 0).toBe(0);
    const token = d.as.requests.find((r) => r.path === '/token');
    expect(token?.headers.authorization).toBe(`Basic ${Buffer.from('pre%3Aregistered:se%25cr%3Aet').toString('base64')}`);
    expect(token?.body).not.toContain('se%25cr');
    const bound = await store.get(d.mcp.url, 'client');
    expect(bound?.value).toMatchObject({ client_id: 'pre:registered', issuer: d.as.issuer, source: 'preregistered' });

    // The server now names another authorization server: the secret must not go there.
    const as2 = await startAuthorizationServer();
    cleanups.push(() => as2.close());
    d.mcp.options.authorizationServer = as2;
    const error = await failure(session.fetch(d.mcp.url, rpc('tools/list')));
    expect(error.code).toBe('client.issuer_mismatch');
    expect(as2.requests.filter((r) => r.path !== '/.well-known/oauth-authorization-server')).toHaveLength(0);
  });

  it('a fixed redirect port that is taken is a typed error naming the port; no browser opens', async () => {
    const d = await deploy();
    const { port } = await occupy();
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
    expect(await status(first, d.mcp.url)).toBe(200);
    const registered = (await store.get(d.mcp.url, 'client'))?.value.redirect_uris[0];
    expect(registered).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
    await first.close();

    // A new authorization with the port free: the same redirect URI, no new registration.
    await store.delete(d.mcp.url, 'tokens', { ifGeneration: (await store.get(d.mcp.url, 'tokens'))!.generation });
    const second = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await status(second, d.mcp.url)).toBe(200);
    expect(d.as.counts.register).toBe(1);
    expect(new URLSearchParams(d.as.requests.filter((r) => r.path === '/authorize')[1]?.query).get('redirect_uri')).toBe(registered);
    await second.close();

    // Now something else holds that port: register again with the new redirect URI.
    await occupy(Number(new URL(registered!).port));
    await store.delete(d.mcp.url, 'tokens', { ifGeneration: (await store.get(d.mcp.url, 'tokens'))!.generation });
    const third = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await status(third, d.mcp.url)).toBe(200);
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
    expect(await status(session, d.mcp.url)).toBe(200);
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
    expect(await status(session, d.mcp.url)).toBe(200);
    expect(d.as.counts.register).toBe(1);
  });
});

describe('the file store lease across sessions', () => {
  it('two sessions sharing one file store and an expired rotating token refresh exactly once', async () => {
    const d = await deploy({ rotateRefreshTokens: true });
    const directory = await mkdtemp(join(tmpdir(), 'mcp-oauth-lease-'));
    cleanups.push(() => rm(directory, { recursive: true, force: true }));
    let now = Date.now();
    const clock = () => now;
    const make = () =>
      track(createOAuthSession({ serverUrl: d.mcp.url, store: createFileStore({ directory }), clock, openAuthorizationUrl: headlessOpener() }));
    const a = make();
    expect(await status(a, d.mcp.url)).toBe(200);
    const b = make();
    expect(await status(b, d.mcp.url)).toBe(200);
    expect(d.as.counts.authorize).toBe(1);

    now += 3600_000;
    d.as.expireAllAccessTokens();
    d.resetCounts();
    const results = await Promise.all([
      ...Array.from({ length: 50 }, () => status(a, d.mcp.url)),
      ...Array.from({ length: 50 }, () => status(b, d.mcp.url)),
    ]);
    expect(results.filter((s) => s === 200)).toHaveLength(100);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(d.as.counts['error:invalid_grant'] ?? 0).toBe(0);
    expect(d.as.counts.authorize ?? 0).toBe(0);
  });
});
