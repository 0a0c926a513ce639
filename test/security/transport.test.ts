/** Catalogue J and L: transport faults and token/secret leakage. */
import { createServer } from 'node:https';
import { gzipSync } from 'node:zlib';
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createOAuthSession } from '../../src/adapters/session.js';
import { OAuthConfigError } from '../../src/machines/errors.js';
import { json, redirect, ROGUE_CERT, ROGUE_KEY, status, type Recorded } from './kit.js';
import { useKit } from './setup.js';

const kit = useKit();
const isCode = (r: Recorded) => new URLSearchParams(r.body).get('grant_type') === 'authorization_code';
const isRefresh = (r: Recorded) => new URLSearchParams(r.body).get('grant_type') === 'refresh_token';

describe('J. transport', () => {
  it('C81 authorization-server metadata host accepts and never answers: aborted at the deadline, typed error', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', { kind: 'hang' });
    k.route('as.example', '/.well-known/openid-configuration', { kind: 'hang' });
    const e = k.assertTypedError(await k.fails(k.session({ deadlines: { oauthRequestMs: 300 } })), /^(network\.timeout|asm\.(unreachable|not_found))$/);
    expect(e.message).toMatch(/300 ms|no complete response|timeout/);
    expect(k.to('as.example').length).toBeLessThanOrEqual(2);
    expect(k.opened).toHaveLength(0);
  });

  it('C81 token host sends headers but never the body: aborted at the deadline, the code is not redeemed twice', async () => {
    const k = kit();
    k.route('as.example', '/token', { kind: 'drip', everyMs: 1_000_000 });
    k.assertTypedError(await k.fails(k.session({ deadlines: { oauthRequestMs: 300 } })), /^network\.timeout$/);
    expect(k.to('as.example', '/token').filter(isCode)).toHaveLength(1);
  });

  it('C82 slowloris PRM drip: the total deadline (not an idle timer) aborts it', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', { kind: 'drip', everyMs: 20 });
    k.assertTypedError(await k.fails(k.session({ deadlines: { oauthRequestMs: 300 }, policy: { legacyFallback: false } })), /^(network\.timeout|prm\.)/);
    expect(k.to('as.example')).toHaveLength(0);
  });

  it('C60 token endpoint stalls: no automatic second exchange; a new attempt starts a fresh flow', async () => {
    const k = kit();
    let stall = true;
    k.route('as.example', '/token', (req) => (stall ? { kind: 'hang' } : k.token(req)));
    const s = k.session({ deadlines: { oauthRequestMs: 300 } });
    k.assertTypedError(await k.fails(s), 'network.timeout');
    expect(k.to('as.example', '/token').filter(isCode)).toHaveLength(1);
    stall = false;
    expect((await k.call(s)).status).toBe(200);
    const codes = k.to('as.example', '/token').filter(isCode).map((r) => new URLSearchParams(r.body));
    expect(codes).toHaveLength(2);
    expect(codes[0]!.get('code')).not.toBe(codes[1]!.get('code'));
    expect(codes[0]!.get('code_verifier')).not.toBe(codes[1]!.get('code_verifier'));
  });

  it('C83 connection reset mid token response: no partial JSON used, the code is not replayed', async () => {
    const k = kit();
    k.route('as.example', '/token', (req) => {
      const body = (k.token(req) as { body: string }).body;
      return { kind: 'reset', partial: body.slice(0, body.length >> 1) };
    });
    k.assertTypedError(await k.fails(k.session()), /^network\./);
    expect(k.to('as.example', '/token')).toHaveLength(1);
    expect(JSON.stringify(k.store.snapshot())).not.toContain('"tokens"');
  });

  it('C83 reset during refresh: the refresh token is kept', async () => {
    const k = kit();
    let now = Date.now();
    const s = k.session({ clock: () => now });
    expect((await k.call(s)).status).toBe(200);
    const rt = (await k.store.get(k.mcpUrl, 'tokens'))!.value.refresh_token;
    now += 2 * 3600_000;
    k.route('as.example', '/token', (req) => {
      const body = (k.token(req) as { body: string }).body;
      return { kind: 'reset', partial: body.slice(0, 10) };
    });
    await k.call(s);
    expect((await k.store.get(k.mcpUrl, 'tokens'))?.value.refresh_token).toBe(rt);
    expect(k.to('as.example', '/token').filter(isRefresh).length).toBeLessThanOrEqual(3);
  });

  it('C84 503 with an absurd Retry-After during discovery: no hot loop, bounded, typed error', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', status(503, { 'retry-after': '1000000000' }));
    k.route('mcp.example', '/.well-known/oauth-protected-resource', status(429, { 'retry-after': 'Fri, 31 Dec 9999 23:59:59 GMT' }));
    k.assertTypedError(await k.fails(k.session({ policy: { legacyFallback: false } })), /^prm\./);
    expect(k.to('mcp.example').filter((r) => r.method === 'GET').length).toBeLessThanOrEqual(4);
  });

  it('C85 authorization server with a certificate from an untrusted CA: hard failure, no http fallback', async () => {
    const k = kit();
    const rogue = createServer({ cert: ROGUE_CERT, key: ROGUE_KEY }, (_req, res) => res.end('{}'));
    rogue.on('tlsClientError', () => undefined);
    await new Promise<void>((resolve) => rogue.listen(k.port, '127.10.0.2', resolve));
    try {
      k.addresses.set('as.example', [{ address: '127.10.0.2', family: 4 }]);
      k.assertTypedError(await k.fails(k.session()), /^(network\.unreachable|asm\.(unreachable|not_found))$/);
      expect(k.to('as.example')).toHaveLength(0);
      expect(process.env.NODE_TLS_REJECT_UNAUTHORIZED).toBeUndefined();
    } finally {
      rogue.closeAllConnections();
      await new Promise<void>((resolve) => rogue.close(() => resolve()));
    }
  });

  it('C85 a plain-http MCP server that is not loopback is refused when the session is created', () => {
    const k = kit();
    expect(() => createOAuthSession({ serverUrl: `http://mcp.example:${k.port}/mcp` })).toThrow(OAuthConfigError);
    expect(k.requests).toHaveLength(0);
  });

  it('C86 gzip bomb as metadata: never decoded, bounded, typed error', async () => {
    const k = kit();
    const bomb = gzipSync(Buffer.alloc(64 * 1024 * 1024, 0x20));
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', { status: 200, headers: { 'content-type': 'application/json', 'content-encoding': 'gzip' }, body: bomb });
    k.route('mcp.example', '/.well-known/oauth-protected-resource', status(404));
    const heap = process.memoryUsage().heapUsed;
    k.assertTypedError(await k.fails(k.session({ policy: { legacyFallback: false } })), /^prm\./);
    expect(process.memoryUsage().heapUsed - heap).toBeLessThan(48 * 1024 * 1024);
  });

  for (const [name, target] of [
    ['to evil.example', 'https://evil.example:PORT/mcp'],
    ['downgrade to http', 'http://mcp.example:PORT/mcp'],
  ] as const) {
    it(`C89 authenticated MCP request redirected ${name}: not followed, no token there`, async () => {
      const k = kit();
      const s = k.session();
      expect((await k.call(s)).status).toBe(200);
      k.route('mcp.example', '/mcp', redirect(target.replace('PORT', String(k.port)), 302));
      const outcome = await k.call(s);
      expect(outcome.status).toBe(302);
      expect(k.to('evil.example')).toHaveLength(0);
    });
  }
});

describe('L. token and secret leakage', () => {
  it('C99/C100/C101 a full flow with refresh: no sentinel in logs, trace, errors, inspect or JSON of the session', async () => {
    const k = kit();
    let now = Date.now();
    const s = k.session({ clock: () => now });
    expect((await k.call(s)).status).toBe(200);
    now += 2 * 3600_000;
    expect((await k.call(s)).status).toBe(200);
    k.route('as.example', '/token', json({ error: 'invalid_grant', error_description: 'refresh token revoked' }, 400));
    now += 2 * 3600_000;
    k.browser = (url) => k.approve(url, { error: 'access_denied' });
    await k.call(s);
    expect(k.trace.length).toBeGreaterThan(10);
    expect(k.secrets.size).toBeGreaterThanOrEqual(6);
    const kinds = new Set(k.secrets.values());
    for (const kind of ['access_token', 'refresh_token', 'code', 'client_secret', 'code_verifier', 'state']) expect(kinds.has(kind as never)).toBe(true);
    const rendered = `${inspect(s, { depth: Infinity })} ${JSON.stringify(s)} ${JSON.stringify(s.trace())}`;
    for (const secret of k.secrets.keys()) expect(rendered.includes(secret)).toBe(false);
    // The afterEach scan covers logs, the observed trace and every error thrown.
  });

  it('C100 an authorization server echoing the client secret in error_description: scrubbed from the error and trace', async () => {
    const k = kit();
    let echo = '';
    k.route('as.example', '/token', (req) => {
      echo = new URLSearchParams(req.body).get('client_secret') ?? '';
      return json({ error: 'invalid_client', error_description: `secret ${echo} is wrong` }, 401);
    });
    const e = await k.fails(k.session());
    k.errors.length = 0;
    k.trace.length = 0;
    k.sessions.length = 0;
    k.secrets.clear();
    expect(echo.length).toBeGreaterThan(8);
    expect(`${e.message} ${inspect(e)}`.includes(echo)).toBe(false);
    expect(e.message).toContain('[redacted]');
  });

  it('C102 custom headers configured for the MCP server never follow discovery to other hosts', async () => {
    const k = kit();
    const apiKey = k.issue('access_token');
    const s = k.session();
    const response = await s.fetch(k.mcpUrl, { method: 'POST', headers: { 'x-api-key': apiKey, 'content-type': 'application/json' }, body: '{}' });
    expect(response.status).toBe(200);
    await response.text();
    for (const r of k.requests) {
      if (r.headers['x-api-key'] !== undefined) expect(`${r.host}${r.path}`).toBe('mcp.example/mcp');
    }
    expect(k.to('as.example').every((r) => r.headers['x-api-key'] === undefined)).toBe(true);
  });

  it('C103 attacker text (ANSI, CR/LF, 100 KB) reaching an error: escaped and truncated', async () => {
    const k = kit();
    const description = `\u001b[2J\u001b]8;;https://evil.example\u0007click\u001b]8;;\u0007\r\n2026-01-01 INFO forged${'A'.repeat(100_000)}`;
    k.route('as.example', '/register', json({ error: 'invalid_client_metadata', error_description: description }, 400));
    const e = k.assertTypedError(await k.fails(k.session()), 'registration.invalid_client_metadata');
    expect(e.message).not.toMatch(/[\u0000-\u001f\u007f]/);
    expect(e.message.length).toBeLessThan(700);
    expect(e.message).toContain('\\u001b[2J');
  });

  it('C104 token placement: only in the Authorization header to the MCP server, never in a URL or on OAuth calls', async () => {
    const k = kit();
    let now = Date.now();
    const s = k.session({ clock: () => now });
    expect((await k.call(s)).status).toBe(200);
    now += 2 * 3600_000;
    expect((await k.call(s)).status).toBe(200);
    const get = await s.fetch(k.mcpUrl, { method: 'GET' });
    await get.text();
    const del = await s.fetch(k.mcpUrl, { method: 'DELETE' });
    await del.text();
    const ats = [...k.secrets].filter(([, kind]) => kind === 'access_token').map(([v]) => v);
    for (const r of k.requests) {
      for (const at of ats) {
        expect(r.url.includes(at)).toBe(false);
        expect(r.body.includes(at)).toBe(false);
      }
      if (r.host !== 'mcp.example' || r.path !== '/mcp') expect(r.headers.authorization === undefined || r.host === 'as.example').toBe(true);
    }
    const mcp = k.to('mcp.example', '/mcp');
    expect(mcp.filter((r) => r.method === 'GET' || r.method === 'DELETE').every((r) => String(r.headers.authorization).startsWith('Bearer '))).toBe(true);
  });
});
