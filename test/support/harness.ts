/** Shared test plumbing: cleanups after each test, deployments, sessions, clocks and raw servers. */
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterEach, expect } from 'vitest';
import type { OAuthSession } from '../../src/adapters/session.js';
import { OAuthFlowError } from '../../src/machines/errors.js';
import { rpc, startDeployment, type Deployment } from './deployment.js';

const cleanups: Array<() => Promise<unknown> | unknown> = [];

/** Registers the after-each hook once per test file that imports this module. */
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

export function onCleanup(cleanup: () => Promise<unknown> | unknown): void {
  cleanups.push(cleanup);
}

export async function deploy(...args: Parameters<typeof startDeployment>): Promise<Deployment> {
  const deployment = await startDeployment(...args);
  onCleanup(() => deployment.close());
  return deployment;
}

export function track(session: OAuthSession): OAuthSession {
  onCleanup(() => session.close());
  return session;
}

/** `tools/list` through the session; the status after the engine did whatever it had to. */
export async function listTools(session: OAuthSession, url: string): Promise<number> {
  const response = await session.fetch(url, rpc('tools/list'));
  await response.text();
  return response.status;
}

/** The typed error a call ends with (the test fails if it resolves). */
export async function failure(promise: Promise<unknown>): Promise<OAuthFlowError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OAuthFlowError);
  return error as OAuthFlowError;
}

/** A clock the test moves, so expiry is data rather than waiting. */
export function manualClock(start = Date.now()): { now: () => number; advance: (ms: number) => void } {
  let now = start;
  return { now: () => now, advance: (ms) => (now += ms) };
}

export async function startRawServer(handler: Parameters<typeof createServer>[1], port = 0): Promise<{ url: string; port: number; server: Server }> {
  const server = createServer(handler);
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  onCleanup(
    () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  );
  const bound = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${bound}`, port: bound, server };
}

/** Holds a loopback port so the engine cannot bind it. */
export async function occupy(port = 0): Promise<number> {
  return (await startRawServer((_req, res) => res.end(), port)).port;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** An MCP-shaped resource server for cases the demo server cannot play: PRM plus a scripted answer. */
export async function startScriptedResource(
  authorizationServer: string,
  answer: (authorization: string | undefined, metadataParam: string) => { status: number; wwwAuthenticate?: string },
  prm: Record<string, unknown> = {},
): Promise<{ url: string }> {
  const { url } = await startRawServer((req, res) => {
    const origin = `http://${req.headers.host}`;
    if (req.url === '/.well-known/oauth-protected-resource/mcp') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ resource: `${origin}/mcp`, authorization_servers: [authorizationServer], ...prm }));
      return;
    }
    const { status, wwwAuthenticate } = answer(req.headers.authorization, `resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"`);
    res.writeHead(status, wwwAuthenticate === undefined ? {} : { 'www-authenticate': wwwAuthenticate });
    res.end(status === 200 ? '{}' : '');
  });
  return { url: `${url}/mcp` };
}
