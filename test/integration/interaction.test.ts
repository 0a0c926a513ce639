import { EventEmitter } from 'node:events';
import http from 'node:http';
import net from 'node:net';
import type { AddressInfo } from 'node:net';
import type { spawn as nodeSpawn } from 'node:child_process';
import { afterEach, describe, expect, it, vi } from 'vitest';
import {
  startLoopbackCallbackServer,
  type CallbackVerdict,
  type LoopbackCallbackServer,
} from '../../src/adapters/interaction/callbackServer.js';
import { createHeadlessUserAgent } from '../../src/adapters/interaction/headlessUserAgent.js';
import { openSystemBrowser } from '../../src/adapters/interaction/browser.js';
import { OAuthFlowError } from '../../src/machines/errors.js';

// ---------------------------------------------------------------------------------------------
// helpers

const cleanups: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup();
});

async function start(
  options: Partial<Parameters<typeof startLoopbackCallbackServer>[0]> = {},
  verdict: CallbackVerdict = 'accepted',
): Promise<{ server: LoopbackCallbackServer; received: URLSearchParams[] }> {
  const received: URLSearchParams[] = [];
  const server = await startLoopbackCallbackServer({
    onCallback: (params) => {
      received.push(params);
      return verdict;
    },
    ...options,
  });
  cleanups.push(() => server.close());
  return { server, received };
}

interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: string;
}

function send(options: {
  host?: string;
  port: number;
  path: string;
  method?: string;
  headers?: Record<string, string>;
}): Promise<Reply> {
  const host = options.host ?? '127.0.0.1';
  return new Promise((resolve, reject) => {
    const req = http.request(
      {
        host,
        port: options.port,
        path: options.path,
        method: options.method ?? 'GET',
        agent: false,
        headers: { host: `${host.includes(':') ? `[${host}]` : host}:${options.port}`, ...options.headers },
      },
      (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (chunk: string) => (body += chunk));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

function connectRefused(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (error: NodeJS.ErrnoException) => resolve(error.code === 'ECONNREFUSED'));
  });
}

function canListen(host: string): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = net.createServer();
    probe.once('error', () => resolve(false));
    probe.listen(0, host, () => probe.close(() => resolve(true)));
  });
}

const hasIpv6Loopback = await canListen('::1');
const NO_IPV6 = '::1 (IPv6 loopback) is not available on this machine; the IPv6 half of this check was skipped';

async function flowError(promise: Promise<unknown>): Promise<OAuthFlowError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(error).toBeInstanceOf(OAuthFlowError);
  return error as OAuthFlowError;
}

/** A node:http server on an ephemeral 127.0.0.1 port, closed after the test. */
async function fixture(handler: http.RequestListener): Promise<{ origin: string; port: number }> {
  const server = http.createServer(handler);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  cleanups.push(
    () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  );
  const { port } = server.address() as AddressInfo;
  return { origin: `http://127.0.0.1:${port}`, port };
}

// ---------------------------------------------------------------------------------------------
// loopback callback server

describe('loopback callback server', () => {
  it('answers an accepted callback with a static page and hardened headers', async () => {
    const { server, received } = await start();
    expect(server.redirectUri).toBe(`http://127.0.0.1:${server.port}/callback`);

    const reply = await send({
      port: server.port,
      path: '/callback?code=%3Cscript%3Eleak%3C%2Fscript%3E&state=s1&iss=https%3A%2F%2Fas.example',
    });
    expect(reply.status).toBe(200);
    expect(reply.body).toContain('You can close this tab');
    expect(reply.body).not.toMatch(/leak|script|s1|as\.example/);
    expect(reply.headers['cache-control']).toBe('no-store');
    expect(reply.headers['referrer-policy']).toBe('no-referrer');
    expect(reply.headers['content-security-policy']).toBe("default-src 'none'");
    expect(reply.headers['x-content-type-options']).toBe('nosniff');
    expect(reply.headers['connection']).toBe('close');
    expect(reply.headers['access-control-allow-origin']).toBeUndefined();

    expect(received).toHaveLength(1);
    expect(received[0]?.get('code')).toBe('<script>leak</script>');
    expect(received[0]?.get('state')).toBe('s1');
    expect(received[0]?.get('iss')).toBe('https://as.example');
  });

  it('answers a rejected callback 400 and keeps listening for the right one', async () => {
    let accept = false;
    const server = await startLoopbackCallbackServer({
      onCallback: async () => (accept ? 'accepted' : 'rejected'),
    });
    cleanups.push(() => server.close());

    const wrong = await send({ port: server.port, path: '/callback?code=x&state=WRONG' });
    expect(wrong.status).toBe(400);
    expect(wrong.body).not.toContain('WRONG');
    expect(wrong.headers['cache-control']).toBe('no-store');

    accept = true;
    const right = await send({ port: server.port, path: '/callback?code=x&state=RIGHT' });
    expect(right.status).toBe(200);
  });

  it('hands concurrent callbacks to onCallback one at a time, so the first valid one wins', async () => {
    let consumed = false;
    const server = await startLoopbackCallbackServer({
      onCallback: async () => {
        if (consumed) return 'rejected';
        await new Promise((resolve) => setTimeout(resolve, 30));
        consumed = true;
        return 'accepted';
      },
    });
    cleanups.push(() => server.close());
    const replies = await Promise.all([
      send({ port: server.port, path: '/callback?code=a&state=s' }),
      send({ port: server.port, path: '/callback?code=a&state=s' }),
    ]);
    expect(replies.map((r) => r.status).sort()).toEqual([200, 400]);
  });

  it('answers 500 when onCallback throws, and keeps serving', async () => {
    let fail = true;
    const server = await startLoopbackCallbackServer({
      onCallback: () => {
        if (fail) throw new Error('boom');
        return 'accepted';
      },
    });
    cleanups.push(() => server.close());
    expect((await send({ port: server.port, path: '/callback?code=a' })).status).toBe(500);
    fail = false;
    expect((await send({ port: server.port, path: '/callback?code=a' })).status).toBe(200);
  });

  it('answers 404 off the exact path and 405 for other methods, without consuming the flow', async () => {
    const { server, received } = await start();
    for (const path of ['/', '/favicon.ico', '/CALLBACK', '/callback/', '/callback/../callback', '/callbackx?code=a', '//callback']) {
      const reply = await send({ port: server.port, path });
      expect(reply.status, path).toBe(404);
    }
    for (const method of ['POST', 'HEAD', 'OPTIONS', 'PUT', 'DELETE']) {
      const reply = await send({ port: server.port, path: '/callback?code=a&state=s', method });
      expect(reply.status, method).toBe(405);
      expect(reply.headers['allow']).toBe('GET');
      expect(reply.headers['access-control-allow-origin']).toBeUndefined();
    }
    expect(received).toHaveLength(0);
  });

  it('honours a custom path', async () => {
    const { server, received } = await start({ path: '/oauth/cb' });
    expect(server.redirectUri).toBe(`http://127.0.0.1:${server.port}/oauth/cb`);
    expect((await send({ port: server.port, path: '/callback?code=a' })).status).toBe(404);
    expect((await send({ port: server.port, path: '/oauth/cb?code=a' })).status).toBe(200);
    expect(received).toHaveLength(1);
  });

  it('refuses a path option that is not a plain absolute path', async () => {
    for (const path of ['callback', '/cb?x=1', '/cb#f', '/c b']) {
      const error = await flowError(startLoopbackCallbackServer({ path, onCallback: () => 'accepted' }));
      expect(error.code).toBe('callback.invalid_path');
    }
  });

  it('answers 414 to a query over 8 KiB and survives a 1 MB request line', async () => {
    const { server, received } = await start();
    const long = await send({ port: server.port, path: `/callback?code=${'a'.repeat(9 * 1024)}` });
    expect(long.status).toBe(414);
    expect(long.body).not.toContain('aaaa');

    const huge = await send({ port: server.port, path: `/callback?code=${'a'.repeat(1024 * 1024)}` }).then(
      (reply) => reply.status,
      (error: NodeJS.ErrnoException) => error.code,
    );
    expect([414, 431, 'ECONNRESET', 'EPIPE']).toContain(huge);
    expect(received).toHaveLength(0);

    expect((await send({ port: server.port, path: '/callback?code=ok' })).status).toBe(200);
    expect(received).toHaveLength(1);
  });

  it('answers 400 to a Host header that is not the address and port it listens on (DNS rebinding)', async () => {
    const { server, received } = await start();
    const port = server.port;
    for (const host of [`evil.example:${port}`, `localhost:${port}`, '127.0.0.1', `127.0.0.1:${port + 1}`, `127.0.0.1.evil.example:${port}`]) {
      const reply = await send({ port, path: '/callback?code=a&state=s', headers: { host } });
      expect(reply.status, host).toBe(400);
      expect(reply.headers['access-control-allow-origin']).toBeUndefined();
    }
    expect(received).toHaveLength(0);
    expect((await send({ port, path: '/callback?code=a', headers: { host: `127.0.0.1:${port}` } })).status).toBe(200);
  });

  it('binds ::1 alone when asked', async (ctx) => {
    if (!hasIpv6Loopback) ctx.skip(NO_IPV6);
    const { server } = await start({ host: '::1' });
    expect(server.redirectUri).toBe(`http://[::1]:${server.port}/callback`);
    expect((await send({ host: '::1', port: server.port, path: '/callback?code=a' })).status).toBe(200);
    expect(await connectRefused('127.0.0.1', server.port)).toBe(true);
  });

  it('binds 127.0.0.1 and, for localhost, ::1 on the same port', async (ctx) => {
    const { server, received } = await start({ host: 'localhost' });
    const port = server.port;
    expect(server.redirectUri).toBe(`http://localhost:${port}/callback`);
    const v4 = await send({ port, path: '/callback?code=v4', headers: { host: `localhost:${port}` } });
    expect(v4.status).toBe(200);
    expect((await send({ port, path: '/callback?code=x', headers: { host: `evil.example:${port}` } })).status).toBe(400);

    if (!hasIpv6Loopback) ctx.skip(NO_IPV6);
    const v6 = await send({ host: '::1', port, path: '/callback?code=v6', headers: { host: `localhost:${port}` } });
    expect(v6.status).toBe(200);
    expect(received.map((p) => p.get('code'))).toEqual(['v4', 'v6']);
  });

  it('reports a taken port as callback.port_unavailable naming the port', async () => {
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '127.0.0.1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const { port } = blocker.address() as AddressInfo;

    const error = await flowError(startLoopbackCallbackServer({ port, onCallback: () => 'accepted' }));
    expect(error.code).toBe('callback.port_unavailable');
    expect(error.message).toContain(String(port));
  });

  it('for localhost, fails as a whole when ::1 is taken on a fixed port and releases 127.0.0.1', async (ctx) => {
    if (!hasIpv6Loopback) ctx.skip(NO_IPV6);
    const blocker = net.createServer();
    await new Promise<void>((resolve) => blocker.listen(0, '::1', resolve));
    cleanups.push(() => new Promise<void>((resolve) => blocker.close(() => resolve())));
    const { port } = blocker.address() as AddressInfo;

    const error = await flowError(startLoopbackCallbackServer({ host: 'localhost', port, onCallback: () => 'accepted' }));
    expect(error.code).toBe('callback.port_unavailable');
    expect(error.message).toContain(String(port));
    expect(await connectRefused('127.0.0.1', port)).toBe(true);
  });

  it('close() drops idle connections and leaves nothing listening', async () => {
    const server = await startLoopbackCallbackServer({ host: 'localhost', onCallback: () => 'accepted' });
    const port = server.port;
    // An idle browser-style preconnect that never sends a request.
    const idle = net.connect({ host: '127.0.0.1', port });
    await new Promise((resolve) => idle.once('connect', resolve));
    const idleClosed = new Promise((resolve) => idle.once('close', resolve));

    const started = Date.now();
    await server.close();
    await idleClosed;
    expect(Date.now() - started).toBeLessThan(2_000);
    expect(await connectRefused('127.0.0.1', port)).toBe(true);
    if (hasIpv6Loopback) expect(await connectRefused('::1', port)).toBe(true);
    await server.close(); // idempotent
  });
});

// ---------------------------------------------------------------------------------------------
// headless user agent

describe('headless user agent', () => {
  it('follows redirects with cookies and delivers the callback to a real loopback server', async () => {
    const seen: Array<{ path: string; cookie: string | undefined }> = [];
    let redirectUri = '';
    const as = await fixture((req, res) => {
      const url = new URL(req.url ?? '/', 'http://x');
      seen.push({ path: url.pathname, cookie: req.headers.cookie });
      if (url.pathname === '/authorize') {
        res.writeHead(302, {
          location: `/login?state=${url.searchParams.get('state') ?? ''}`,
          'set-cookie': ['sid=abc123; Path=/; HttpOnly', 'gone=1; Max-Age=0'],
        });
      } else if (url.pathname === '/login' && req.headers.cookie === 'sid=abc123') {
        res.writeHead(302, { location: 'consent?state=' + (url.searchParams.get('state') ?? '') });
      } else if (url.pathname === '/consent' && req.headers.cookie === 'sid=abc123') {
        const state = url.searchParams.get('state') ?? '';
        res.writeHead(302, { location: `${redirectUri}?code=c-1&state=${state}&iss=${encodeURIComponent('http://as.test')}#frag` });
      } else {
        res.writeHead(403);
      }
      res.end('<html>page</html>');
    });
    const { server, received } = await start();
    redirectUri = server.redirectUri;

    const ua = createHeadlessUserAgent();
    const params = await ua.authorize(`${as.origin}/authorize?state=st-9`, server.redirectUri);

    expect(params.get('code')).toBe('c-1');
    expect(params.get('state')).toBe('st-9');
    expect(params.get('iss')).toBe('http://as.test');
    expect(received).toHaveLength(1);
    expect(received[0]?.toString()).toBe(params.toString());
    expect(seen).toEqual([
      { path: '/authorize', cookie: undefined },
      { path: '/login', cookie: 'sid=abc123' },
      { path: '/consent', cookie: 'sid=abc123' },
    ]);
  });

  it('returns the query without delivering when deliver is false', async () => {
    let delivered = false;
    const client = await fixture((_req, res) => {
      delivered = true;
      res.end();
    });
    const redirectUri = `http://127.0.0.1:${client.port}/callback`;
    const as = await fixture((_req, res) => {
      res.writeHead(303, { location: `${redirectUri}?code=z&state=q` });
      res.end();
    });
    const ua = createHeadlessUserAgent({ deliver: false, deadlineMs: 2_000 });
    const params = await ua.authorize(`${as.origin}/authorize`, redirectUri);
    expect(params.get('code')).toBe('z');
    expect(delivered).toBe(false);
  });

  it('keeps cookies per origin', async () => {
    let cookieAtSecond: string | undefined = 'unset';
    const second = await fixture((req, res) => {
      cookieAtSecond = req.headers.cookie;
      res.writeHead(302, { location: 'http://127.0.0.1:1/callback?code=k' });
      res.end();
    });
    const first = await fixture((_req, res) => {
      res.writeHead(302, { location: `${second.origin}/next`, 'set-cookie': 'sid=secret' });
      res.end();
    });
    const ua = createHeadlessUserAgent({ deliver: false });
    const params = await ua.authorize(`${first.origin}/authorize`, 'http://127.0.0.1:1/callback');
    expect(params.get('code')).toBe('k');
    expect(cookieAtSecond).toBeUndefined();
  });

  it('gives up after maxRedirects with useragent.too_many_redirects', async () => {
    let hits = 0;
    const as = await fixture((_req, res) => {
      hits++;
      res.writeHead(302, { location: '/loop' });
      res.end();
    });
    const error = await flowError(createHeadlessUserAgent({ maxRedirects: 3 }).authorize(`${as.origin}/loop`, 'http://127.0.0.1:1/callback'));
    expect(error.code).toBe('useragent.too_many_redirects');
    expect(hits).toBe(4);
  });

  it('never follows a non-http(s) Location', async () => {
    for (const location of ['javascript:alert(1)', 'file:///etc/passwd', 'data:text/html,x', 'myapp://callback?code=a', 'http://[bad']) {
      let hits = 0;
      const as = await fixture((_req, res) => {
        hits++;
        res.writeHead(302, { location });
        res.end();
      });
      const error = await flowError(createHeadlessUserAgent().authorize(`${as.origin}/authorize`, 'http://127.0.0.1:1/callback'));
      expect(error.code, location).toBe('useragent.bad_location');
      expect(hits).toBe(1);
    }
    const error = await flowError(createHeadlessUserAgent().authorize('file:///etc/passwd', 'http://127.0.0.1:1/callback'));
    expect(error.code).toBe('useragent.bad_location');
  });

  it('reports a final non-redirect response as useragent.no_redirect with its status', async () => {
    const as = await fixture((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/html' });
      res.end('<form>log in</form>');
    });
    const error = await flowError(createHeadlessUserAgent().authorize(`${as.origin}/authorize`, 'http://127.0.0.1:1/callback'));
    expect(error.code).toBe('useragent.no_redirect');
    expect(error.status).toBe(200);
    expect(error.message).toContain('200');
  });

  it('enforces the total deadline with useragent.timeout', async () => {
    const as = await fixture(() => undefined); // never answers
    const started = Date.now();
    const error = await flowError(
      createHeadlessUserAgent({ deadlineMs: 200 }).authorize(`${as.origin}/authorize`, 'http://127.0.0.1:1/callback'),
    );
    expect(error.code).toBe('useragent.timeout');
    expect(Date.now() - started).toBeLessThan(3_000);
  });

  it("rejects with the caller's abort reason when the caller aborts", async () => {
    const as = await fixture(() => undefined);
    const controller = new AbortController();
    const reason = new Error('user cancelled');
    setTimeout(() => controller.abort(reason), 50);
    await expect(
      createHeadlessUserAgent().authorize(`${as.origin}/authorize`, 'http://127.0.0.1:1/callback', controller.signal),
    ).rejects.toBe(reason);
  });
});

// ---------------------------------------------------------------------------------------------
// system browser opener

interface SpawnCall {
  command: string;
  args: readonly string[];
  options: Record<string, unknown>;
}

function fakeSpawn(outcome: 'spawn' | NodeJS.ErrnoException | 'throw' = 'spawn'): {
  spawn: typeof nodeSpawn;
  calls: SpawnCall[];
  unref: ReturnType<typeof vi.fn>;
} {
  const calls: SpawnCall[] = [];
  const unref = vi.fn();
  const spawn = (command: string, args: readonly string[], options: Record<string, unknown>) => {
    calls.push({ command, args, options });
    if (outcome === 'throw') throw Object.assign(new Error('spawn EINVAL'), { code: 'EINVAL' });
    const child = Object.assign(new EventEmitter(), { unref });
    queueMicrotask(() => {
      if (outcome === 'spawn') child.emit('spawn');
      else child.emit('error', outcome);
    });
    return child;
  };
  return { spawn: spawn as unknown as typeof nodeSpawn, calls, unref };
}

describe('system browser opener', () => {
  const unsafe = [
    'javascript:alert(1)',
    'JaVaScRiPt:alert(1)',
    ' \tjavascript:alert(1)',
    'file:///etc/passwd',
    'data:text/html,<script>x</script>',
    'vbscript:msgbox(1)',
    'smb://evil.example/share',
    'search-ms:query=x',
    'ms-settings:',
    'https://as.example/a b',
    'https://as.example/authorize\n',
    'https://as.example/auth\nize',
    'https://as.example/auth\tize',
    'https://as.example/auth\u0000ize',
    'https://as.example/authorize\u202e',
    'https://as.example/authorize?x=$(New-Item C:\\pwn)',
    'https://as.example/authorize?x=$(touch%20/tmp/pwn)',
    'https://as.example/authorize?x=${IFS}',
    'https://as.example/a`id`',
    'https://as.example/a"|touch /tmp/pwn',
    'https://as.example/a|calc',
    'https://as.example/%USERPROFILE%',
    'https://user:pw@as.example/authorize',
    'https://as.example@evil.example/authorize',
    'https://аs.example/authorize',
    'not a url',
    '',
  ];

  it.each(unsafe)('refuses %j before spawning', async (url) => {
    const { spawn, calls } = fakeSpawn();
    const error = await flowError(openSystemBrowser(url, { platform: 'win32', spawn }));
    expect(error.code).toBe('browser.unsafe_url');
    expect(calls).toHaveLength(0);
  });

  const url = 'https://as.example/authorize?response_type=code&client_id=c%20id&state=s1&scope=a+b';
  it.each([
    ['linux', 'xdg-open', [url]],
    ['freebsd', 'xdg-open', [url]],
    ['darwin', 'open', [url]],
    ['win32', 'rundll32', ['url.dll,FileProtocolHandler', url]],
  ] as const)('on %s runs %s with the URL as one argument and no shell', async (platform, command, args) => {
    const { spawn, calls, unref } = fakeSpawn();
    await openSystemBrowser(url, { platform, spawn });
    expect(calls).toHaveLength(1);
    expect(calls[0]?.command).toBe(command);
    expect(calls[0]?.args).toEqual(args);
    expect(calls[0]?.options).toMatchObject({ shell: false, detached: true, stdio: 'ignore' });
    expect(unref).toHaveBeenCalled();
    for (const part of [calls[0]?.command, ...(calls[0]?.args ?? [])]) {
      expect(part).not.toMatch(/^(cmd|cmd\.exe|powershell|pwsh|sh|bash)$/i);
      expect(part).not.toMatch(/^\/c$/i);
    }
  });

  it('passes shell-meaningful but URL-legal characters as one argv element', async () => {
    const { spawn, calls } = fakeSpawn();
    await openSystemBrowser('https://as.example/a&calc.exe;x', { platform: 'win32', spawn });
    expect(calls[0]?.args).toEqual(['url.dll,FileProtocolHandler', 'https://as.example/a&calc.exe;x']);
  });

  it('reports a missing opener (ENOENT) as browser.unavailable', async () => {
    const enoent = Object.assign(new Error('spawn xdg-open ENOENT'), { code: 'ENOENT' });
    const { spawn } = fakeSpawn(enoent);
    const error = await flowError(openSystemBrowser(url, { platform: 'linux', spawn }));
    expect(error.code).toBe('browser.unavailable');
    expect(error.message).not.toContain('as.example');
  });

  it('reports a spawn that throws as browser.unavailable', async () => {
    const { spawn } = fakeSpawn('throw');
    const error = await flowError(openSystemBrowser(url, { platform: 'darwin', spawn }));
    expect(error.code).toBe('browser.unavailable');
  });
});
