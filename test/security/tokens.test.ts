/** Catalogue F, G, H: token responses, refresh and rotation, 401/403 handling and loops. */
import { describe, expect, it } from 'vitest';
import type { Recorded } from './kit.js';
import { json, status } from './kit.js';
import { useKit } from './setup.js';

const kit = useKit();

function clock(start = Date.now()) {
  let now = start;
  return { now: () => now, advance: (ms: number) => void (now += ms) };
}

const isCode = (r: Recorded) => new URLSearchParams(r.body).get('grant_type') === 'authorization_code';
const isRefresh = (r: Recorded) => new URLSearchParams(r.body).get('grant_type') === 'refresh_token';

/** Answers the code exchange with `reply` (the refresh grant stays honest). */
function codeExchangeAnswers(reply: (honest: Record<string, unknown>) => ReturnType<typeof json>) {
  const k = kit();
  k.route('as.example', '/token', (req) => {
    if (!isCode(req)) return k.token(req);
    const honest = k.token(req) as { body: string };
    return reply(JSON.parse(honest.body) as Record<string, unknown>);
  });
}

function tokensStored(): boolean {
  return JSON.stringify(kit().store.snapshot()).includes('"tokens"');
}

describe('F. token endpoint responses', () => {
  for (const [name, reply, code] of [
    ['400 invalid_grant', json({ error: 'invalid_grant', error_description: 'code expired' }, 400), 'token.invalid_grant'],
    ['401 invalid_client with WWW-Authenticate: Basic', json({ error: 'invalid_client' }, 401, { 'www-authenticate': 'Basic realm="as"' }), 'token.invalid_client'],
  ] as const) {
    it(`C53 OAuth error JSON (${name}): typed error, nothing stored, bounded`, async () => {
      const k = kit();
      codeExchangeAnswers(() => reply);
      k.assertTypedError(await k.fails(k.session()), code);
      expect(tokensStored()).toBe(false);
      expect(k.to('as.example', '/token').length).toBeLessThanOrEqual(2);
      expect(k.opened.length).toBeLessThanOrEqual(2);
    });
  }

  for (const [name, reply, code] of [
    ['200 HTML', status(200, { 'content-type': 'text/html' }, '<html></html>'), /^token\./],
    ['200 {}', json({}), 'token.invalid_response'],
    ['200 {"error":"server_error"}', json({ error: 'server_error' }), 'token.invalid_response'],
    ['200 []', json([]), /^token\./],
    ['200 access_token ""', json({ access_token: '', token_type: 'Bearer' }), 'token.invalid_response'],
    ['200 access_token object', json({ access_token: { x: 1 }, token_type: 'Bearer' }), 'token.invalid_response'],
    ['500 HTML', status(500, { 'content-type': 'text/html' }, '<html>down</html>'), 'token.http_status'],
  ] as const) {
    it(`C54 broken success response (${name}): typed error, nothing stored`, async () => {
      const k = kit();
      codeExchangeAnswers(() => reply);
      k.assertTypedError(await k.fails(k.session()), code);
      expect(tokensStored()).toBe(false);
    });
  }

  for (const [type, accepted] of [
    ['mac', false],
    [undefined, false],
    ['DPoP', false],
    ['bearer', true],
    ['BEARER', true],
  ] as const) {
    it(`C55 token_type ${String(type)}: ${accepted ? 'accepted' : 'rejected'}`, async () => {
      const k = kit();
      codeExchangeAnswers((honest) => json({ ...honest, token_type: type }));
      if (accepted) {
        expect((await k.call(k.session())).status).toBe(200);
      } else {
        k.assertTypedError(await k.fails(k.session()), /^token\.(unsupported_token_type|invalid_response)$/);
        expect(tokensStored()).toBe(false);
      }
    });
  }

  it('C57 scope narrower than requested is recorded as granted; omitted scope is the requested one', async () => {
    const k = kit();
    k.challengeHeader = k.challenge(', scope="files:read files:write"');
    codeExchangeAnswers((honest) => json({ ...honest, scope: 'files:read' }));
    expect((await k.call(k.session())).status).toBe(200);
    expect(JSON.stringify(k.store.snapshot())).toContain('"scope":"files:read"');
  });

  it('C59 no refresh token issued: no refresh attempted after expiry, one interactive re-authorization', async () => {
    const k = kit();
    const c = clock();
    codeExchangeAnswers((honest) => json({ ...honest, refresh_token: undefined }));
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    c.advance(2 * 3600_000);
    k.validAccessTokens.clear();
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/token').filter(isRefresh)).toHaveLength(0);
    expect(k.opened).toHaveLength(2);
  });

  it('C62 unknown and extra fields: ignored, only known fields persisted', async () => {
    const k = kit();
    const extra = Object.fromEntries(Array.from({ length: 500 }, (_, i) => [`k${i}`, { nested: [i] }]));
    codeExchangeAnswers((honest) => json({ ...extra, ...honest, id_token: 'ID.TOKEN.X', issued_token_type: 'urn:x' }));
    expect((await k.call(k.session())).status).toBe(200);
    const stored = JSON.stringify(k.store.snapshot());
    expect(stored).not.toContain('id_token');
    expect(stored).not.toContain('issued_token_type');
    expect(stored).not.toContain('"k499"');
  });
});

describe('G. refresh and rotation', () => {
  it('C63 refresh invalid_grant: only the failed generation is deleted (compare-and-delete), one authorization, no loop', async () => {
    const k = kit();
    const c = clock();
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    c.advance(2 * 3600_000);
    k.validRefreshTokens.clear();
    const deletes: unknown[] = [];
    const originalDelete = k.store.delete.bind(k.store);
    k.store.delete = async (key, kind, condition) => {
      deletes.push({ kind, condition });
      return originalDelete(key, kind, condition);
    };
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/token').filter(isRefresh)).toHaveLength(1);
    expect(k.opened).toHaveLength(2);
    for (const d of deletes as Array<{ kind: string; condition: { ifGeneration?: number } }>) {
      if (d.kind === 'tokens') expect(typeof d.condition.ifGeneration).toBe('number');
    }
  });

  it('C63 a loser never deletes the winner: under the lease the newer record is adopted, not deleted', async () => {
    const k = kit();
    const c = clock();
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    // Another process refreshed (rotating) and stored newer tokens meanwhile: RT1 is dead at the AS.
    const current = await k.store.get(k.mcpUrl, 'tokens');
    const rt1 = current!.value.refresh_token!;
    k.validRefreshTokens.clear();
    const winner = { ...current!.value, access_token: k.issue('access_token'), refresh_token: k.issue('refresh_token') };
    k.validRefreshTokens.set(winner.refresh_token, { clientId: new URLSearchParams(k.to('as.example', '/token')[0]!.body).get('client_id')! });
    await k.store.set(k.mcpUrl, 'tokens', winner, { ifGeneration: current!.generation });
    c.advance(2 * 3600_000);
    expect((await k.call(s)).status).toBe(200);
    const refreshes = k.to('as.example', '/token').filter(isRefresh).map((r) => new URLSearchParams(r.body).get('refresh_token'));
    expect(refreshes).not.toContain(rt1);
    expect(refreshes).toEqual([winner.refresh_token]);
    expect(k.opened).toHaveLength(1);
    expect(await k.store.get(k.mcpUrl, 'tokens')).toBeDefined();
  });

  it('C63 store contract: compare-and-delete of a stale generation leaves the newer record', async () => {
    const k = kit();
    const first = await k.store.set('key', 'tokens', { access_token: 'a'.repeat(8), token_type: 'bearer', obtained_at: 0, issuer: 'i', resource: 'r' }, { ifGeneration: 0 });
    expect(first.ok).toBe(true);
    const gen1 = first.ok ? first.generation : 0;
    const second = await k.store.set('key', 'tokens', { access_token: 'b'.repeat(8), token_type: 'bearer', obtained_at: 0, issuer: 'i', resource: 'r' }, { ifGeneration: gen1 });
    expect(second.ok).toBe(true);
    expect(await k.store.delete('key', 'tokens', { ifGeneration: gen1 })).toBe(false);
    expect((await k.store.get('key', 'tokens'))?.value.access_token).toBe('b'.repeat(8));
  });

  it('C64 rotation: RT2 replaces RT1 in the store, RT1 is never sent again; refresh carries resource, no wider scope', async () => {
    const k = kit();
    k.options.rotateRefreshTokens = true;
    const c = clock();
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    const rt1 = (await k.store.get(k.mcpUrl, 'tokens'))!.value.refresh_token!;
    c.advance(2 * 3600_000);
    expect((await k.call(s)).status).toBe(200);
    const rt2 = (await k.store.get(k.mcpUrl, 'tokens'))!.value.refresh_token!;
    expect(rt2).not.toBe(rt1);
    c.advance(2 * 3600_000);
    expect((await k.call(s)).status).toBe(200);
    const refreshes = k.to('as.example', '/token').filter(isRefresh).map((r) => new URLSearchParams(r.body));
    expect(refreshes.map((f) => f.get('refresh_token'))).toEqual([rt1, rt2]);
    for (const f of refreshes) {
      expect(f.get('resource')).toBe(k.mcpUrl);
      expect(f.has('scope')).toBe(false);
    }
  });

  it('C66 20 concurrent requests on an expired token: exactly one refresh POST, all 20 succeed', async () => {
    const k = kit();
    const c = clock();
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    c.advance(2 * 3600_000);
    const results = await Promise.all(Array.from({ length: 20 }, () => k.call(s)));
    expect(results.every((r) => r.status === 200)).toBe(true);
    expect(k.to('as.example', '/token').filter(isRefresh)).toHaveLength(1);
  });

  it('C66 when the refresh fails and the user denies, all 20 fail with the same typed error; one browser tab', async () => {
    const k = kit();
    const c = clock();
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    c.advance(2 * 3600_000);
    k.validRefreshTokens.clear();
    k.validAccessTokens.clear();
    k.browser = (url) => k.approve(url, { code: undefined, error: 'access_denied' });
    const results = await Promise.all(Array.from({ length: 20 }, () => k.call(s)));
    const codes = new Set(results.map((r) => (r.error as { code?: string })?.code));
    expect([...codes]).toEqual(['authorize.access_denied']);
    expect(k.opened).toHaveLength(2);
    expect(k.to('as.example', '/token').filter(isRefresh)).toHaveLength(1);
  });

  it('C68 transient refresh failure (503): refresh token kept, no interactive flow', async () => {
    const k = kit();
    const c = clock();
    const s = k.session({ clock: c.now });
    expect((await k.call(s)).status).toBe(200);
    const before = (await k.store.get(k.mcpUrl, 'tokens'))!.value.refresh_token;
    c.advance(2 * 3600_000);
    k.route('as.example', '/token', status(503, { 'retry-after': '1000000000' }));
    const outcome = await k.call(s);
    expect(outcome.status === 200).toBe(false);
    expect(k.opened).toHaveLength(1);
    expect((await k.store.get(k.mcpUrl, 'tokens'))?.value.refresh_token).toBe(before);
    expect(k.to('as.example', '/token').filter(isRefresh).length).toBeLessThanOrEqual(3);
  });
});

describe('H. 401/403 handling and loops', () => {
  it('C70 RS always 401: at most one refresh and one full authorization per request, then a typed error', async () => {
    const k = kit();
    k.route('mcp.example', '/mcp', status(401, { 'www-authenticate': k.challenge(', error="invalid_token"') }));
    k.assertTypedError(await k.fails(k.session()), 'flow.rejected_after_authorization');
    expect(k.opened).toHaveLength(1);
    expect(k.to('as.example', '/token').filter(isRefresh).length).toBeLessThanOrEqual(1);
    expect(k.to('mcp.example', '/mcp').length).toBeLessThanOrEqual(3);
  });

  it('C71 step-up success: re-authorization with the union of scopes, the request replayed once', async () => {
    const k = kit();
    k.challengeHeader = k.challenge(', scope="files:read"');
    const s = k.session();
    expect((await k.call(s)).status).toBe(200);
    const firstToken = [...k.validAccessTokens][0]!;
    k.route('mcp.example', '/mcp', (req) => {
      const auth = String(req.headers.authorization ?? '');
      if (auth === `Bearer ${firstToken}`) return status(403, { 'www-authenticate': k.challenge(', error="insufficient_scope", scope="files:write"') });
      return k.validAccessTokens.has(auth.slice(7)) ? json({ jsonrpc: '2.0', id: 1, result: {} }) : status(401, { 'www-authenticate': k.challenge() });
    });
    expect((await k.call(s)).status).toBe(200);
    expect(k.opened).toHaveLength(2);
    expect(new URL(k.opened[1]!).searchParams.get('scope')!.split(' ').sort()).toEqual(['files:read', 'files:write']);
  });

  it('C72 endless insufficient_scope: at most 3 authorizations, then a typed error', async () => {
    const k = kit();
    k.route('mcp.example', '/mcp', (req) =>
      k.validAccessTokens.has(String(req.headers.authorization ?? '').slice(7))
        ? status(403, { 'www-authenticate': k.challenge(`, error="insufficient_scope", scope="admin${k.opened.length}"`) })
        : status(401, { 'www-authenticate': k.challenge() }),
    );
    k.assertTypedError(await k.fails(k.session()), /^(flow\.authorization_limit|scope\.insufficient)$/);
    expect(k.opened.length).toBeLessThanOrEqual(3);
  });

  it('C72 a 403 whose union adds nothing is final, not a re-authorization', async () => {
    const k = kit();
    k.challengeHeader = k.challenge(', scope="admin"');
    k.route('mcp.example', '/mcp', (req) =>
      k.validAccessTokens.has(String(req.headers.authorization ?? '').slice(7))
        ? status(403, { 'www-authenticate': k.challenge(', error="insufficient_scope", scope="admin"') })
        : status(401, { 'www-authenticate': k.challengeHeader! }),
    );
    const outcome = await k.call(k.session());
    if (outcome.error) k.assertTypedError(outcome.error, 'scope.insufficient');
    else expect(outcome.status).toBe(403);
    expect(k.opened).toHaveLength(1);
  });

  for (const [name, reply] of [
    ['no WWW-Authenticate', status(403)],
    ['Bearer error="invalid_token"', status(403, { 'www-authenticate': 'Bearer error="invalid_token"' })],
    ['proxy HTML', status(403, { 'content-type': 'text/html' }, '<html>blocked</html>')],
  ] as const) {
    it(`C73 403 that is not a scope challenge (${name}): surfaced, no re-authorization`, async () => {
      const k = kit();
      const s = k.session();
      expect((await k.call(s)).status).toBe(200);
      k.route('mcp.example', '/mcp', reply);
      expect((await k.call(s)).status).toBe(403);
      expect(k.opened).toHaveLength(1);
    });
  }

  it('C74 challenge churn: each 401 names a different (foreign) PRM; nothing fetched off-origin, bounded', async () => {
    const k = kit();
    let n = 0;
    k.route('mcp.example', '/mcp', () => status(401, { 'www-authenticate': `Bearer resource_metadata="${k.origin('evil.example')}/prm${n++}"` }));
    await k.call(k.session());
    expect(k.to('evil.example')).toHaveLength(0);
    expect(k.to('mcp.example', '/mcp').length).toBeLessThanOrEqual(3);
    expect(k.opened.length).toBeLessThanOrEqual(1);
  });

  it('C75 local clock says valid, server says 401: refresh once (server verdict wins), no browser', async () => {
    const k = kit();
    const s = k.session();
    expect((await k.call(s)).status).toBe(200);
    k.validAccessTokens.clear();
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/token').filter(isRefresh)).toHaveLength(1);
    expect(k.opened).toHaveLength(1);
  });
});
