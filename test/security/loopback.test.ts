/** Catalogue E (C52) and M: the loopback callback server. */
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces } from 'node:os';
import { describe, expect, it } from 'vitest';
import { startLoopbackCallbackServer, type LoopbackCallbackServer } from '../../src/adapters/interaction/callbackServer.js';
import { useKit } from './setup.js';

const kit = useKit();

function raw(port: number, lines: string, host = '127.0.0.1'): Promise<string> {
  return new Promise((resolve) => {
    const socket = connect({ host, port });
    let out = '';
    socket.on('data', (d) => (out += d.toString('latin1')));
    socket.on('error', () => resolve(out || 'ERROR'));
    socket.on('close', () => resolve(out));
    socket.write(lines);
    setTimeout(() => socket.destroy(), 1_000).unref();
  });
}

function get(port: number, path: string, headers: Record<string, string> = {}, method = 'GET'): Promise<{ status: number; headers: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: '127.0.0.1', port, path, method, headers: { connection: 'close', ...headers } }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers }));
    });
    req.on('error', reject);
    req.end();
  });
}

async function server(): Promise<{ srv: LoopbackCallbackServer; calls: URLSearchParams[] }> {
  const calls: URLSearchParams[] = [];
  let accepted = false;
  const srv = await startLoopbackCallbackServer({
    onCallback: (params) => {
      calls.push(params);
      if (params.get('state') === 'S' && !accepted) {
        accepted = true;
        return 'accepted';
      }
      return 'rejected';
    },
  });
  return { srv, calls };
}

describe('M. loopback callback server', () => {
  it('C52 oversized callback: 1 MB query answered 4xx without buffering; a 64 KB code too; the server keeps waiting', async () => {
    kit();
    const { srv, calls } = await server();
    try {
      const big = await raw(srv.port, `GET /callback?code=${'a'.repeat(1024 * 1024)}&state=S HTTP/1.1\r\nHost: 127.0.0.1:${srv.port}\r\n\r\n`);
      expect(big).toMatch(/^HTTP\/1\.1 4\d\d/);
      const mid = await get(srv.port, `/callback?code=${'b'.repeat(12 * 1024)}&state=S`, { host: `127.0.0.1:${srv.port}` });
      expect(mid.status).toBe(414);
      const many = await get(srv.port, `/callback?${Array.from({ length: 2_000 }, (_, i) => `p${i}=1`).join('&')}`, { host: `127.0.0.1:${srv.port}` });
      expect(many.status).toBeGreaterThanOrEqual(400);
      expect(calls).toHaveLength(0);
      expect((await get(srv.port, '/callback?code=c&state=S', { host: `127.0.0.1:${srv.port}` })).status).toBe(200);
    } finally {
      await srv.close();
    }
  });

  it('C105 loopback-only binding: 127.0.0.1, never a wildcard; a LAN address is refused', async () => {
    kit();
    const { srv } = await server();
    try {
      expect(srv.redirectUri).toMatch(/^http:\/\/127\.0\.0\.1:\d+\/callback$/);
      const lan = Object.values(networkInterfaces()).flat().find((i) => i && !i.internal && i.family === 'IPv4');
      if (lan) {
        const outcome = await new Promise<string>((resolve) => {
          const s = connect({ host: lan.address, port: srv.port });
          s.on('connect', () => (s.destroy(), resolve('connected')));
          s.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
        });
        expect(outcome).toBe('ECONNREFUSED');
      }
    } finally {
      await srv.close();
    }
  });

  it('C106 Host header of another name (DNS rebinding) and CORS preflight: 400, no ACAO, flow unaffected', async () => {
    kit();
    const { srv, calls } = await server();
    try {
      const rebound = await get(srv.port, '/callback?code=c&state=S', { host: `evil.example:${srv.port}`, origin: 'https://evil.example' });
      expect(rebound.status).toBe(400);
      expect(rebound.headers['access-control-allow-origin']).toBeUndefined();
      const preflight = await get(srv.port, '/callback', { host: `127.0.0.1:${srv.port}`, origin: 'https://evil.example', 'access-control-request-method': 'GET' }, 'OPTIONS');
      expect(preflight.status).toBe(405);
      expect(preflight.headers['access-control-allow-origin']).toBeUndefined();
      expect(calls).toHaveLength(0);
    } finally {
      await srv.close();
    }
  });

  it('C107 wrong path or method: 404/405, the flow is not consumed', async () => {
    kit();
    const { srv, calls } = await server();
    try {
      const host = { host: `127.0.0.1:${srv.port}` };
      for (const path of ['/', '/favicon.ico', '/CALLBACK', '/callback/../callback', '/callback/']) expect((await get(srv.port, `${path}?code=c&state=S`, host)).status).toBe(404);
      for (const method of ['POST', 'HEAD', 'OPTIONS']) expect((await get(srv.port, '/callback?code=c&state=S', host, method)).status).toBe(405);
      expect(calls).toHaveLength(0);
      expect((await get(srv.port, '/callback?code=c&state=S', host)).status).toBe(200);
    } finally {
      await srv.close();
    }
  });

  it('C108 multiple callbacks, two at once: the first valid one wins, later ones are refused', async () => {
    kit();
    const { srv } = await server();
    try {
      const host = { host: `127.0.0.1:${srv.port}` };
      const statuses = await Promise.all([get(srv.port, '/callback?code=a&state=S', host), get(srv.port, '/callback?code=b&state=S', host)]);
      expect(statuses.map((s) => s.status).sort()).toEqual([200, 400]);
      expect((await get(srv.port, '/callback?code=c&state=S', host)).status).toBe(400);
    } finally {
      await srv.close();
    }
  });

  it('C108 through a session: the genuine callback completes the flow once and the server closes, freeing the port', async () => {
    const k = kit();
    let port = 0;
    const s = k.session({
      redirect: { loopback: {} },
      openAuthorizationUrl: async (url, { redirectUri }) => {
        k.opened.push(url);
        port = Number(new URL(redirectUri).port);
        const query = k.approve(url)!.toString();
        const first = await get(port, `/callback?${query}`, { host: `127.0.0.1:${port}` });
        expect(first.status).toBe(200);
      },
    });
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/token')).toHaveLength(1);
    await new Promise((r) => setTimeout(r, 20));
    const after = await new Promise<string>((resolve) => {
      const sock = connect({ host: '127.0.0.1', port });
      sock.on('connect', () => (sock.destroy(), resolve('open')));
      sock.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(after).toBe('ECONNREFUSED');
  });

  it('C109 fixed port already in use: typed error naming the port, the other listener untouched', async () => {
    const k = kit();
    const { srv: holder } = await server();
    try {
      const error = await startLoopbackCallbackServer({ port: holder.port, onCallback: () => 'rejected' }).then(() => undefined, (e: unknown) => e);
      expect((error as { code?: string }).code).toBe('callback.port_unavailable');
      expect((error as Error).message).toContain(String(holder.port));
      expect((await get(holder.port, '/callback?code=c&state=S', { host: `127.0.0.1:${holder.port}` })).status).toBe(200);
      const s = k.session({ redirect: { loopback: { port: holder.port } } });
      k.assertTypedError(await k.fails(s), 'callback.port_unavailable');
      expect(k.opened).toHaveLength(0);
    } finally {
      await holder.close();
    }
  });

  it('C110 callback never arrives: callback.timeout at the deadline, server closed, no handles left', async () => {
    const k = kit();
    let port = 0;
    const s = k.session({
      redirect: { loopback: {} },
      deadlines: { callbackMs: 300 },
      openAuthorizationUrl: (url, { redirectUri }) => {
        k.opened.push(url);
        port = Number(new URL(redirectUri).port);
      },
    });
    k.assertTypedError(await k.fails(s), 'callback.timeout');
    await new Promise((r) => setTimeout(r, 20));
    const after = await new Promise<string>((resolve) => {
      const sock = connect({ host: '127.0.0.1', port });
      sock.on('connect', () => (sock.destroy(), resolve('open')));
      sock.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    expect(after).toBe('ECONNREFUSED');
  });

  it('C111 localhost redirect: both 127.0.0.1 and ::1 are bound on the same port (when IPv6 loopback exists)', async () => {
    kit();
    const srv = await startLoopbackCallbackServer({ host: 'localhost', onCallback: () => 'accepted' });
    try {
      expect(srv.redirectUri).toBe(`http://localhost:${srv.port}/callback`);
      const v4 = await get(srv.port, '/callback?x=1', { host: `localhost:${srv.port}` });
      expect(v4.status).toBe(200);
      const v6 = await new Promise<string>((resolve) => {
        const sock = connect({ host: '::1', port: srv.port });
        sock.on('connect', () => (sock.destroy(), resolve('open')));
        sock.on('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
      });
      expect(['open', 'EADDRNOTAVAIL', 'EAFNOSUPPORT', 'ENETUNREACH']).toContain(v6);
    } finally {
      await srv.close();
    }
  });
});
