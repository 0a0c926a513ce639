/** Catalogue A and B: WWW-Authenticate, Protected Resource Metadata, authorization-server metadata. */
import { describe, expect, it } from 'vitest';
import { json, redirect, status } from './kit.js';
import { useKit } from './setup.js';

const kit = useKit();

/** INV-B, INV-E and "nothing went to the AS" for a case that must stop before any OAuth request. */
function stoppedBeforeAs(before: string): void {
  const k = kit();
  expect(k.storeSnapshot()).toBe(before);
  expect(k.opened).toHaveLength(0);
  expect(k.to('as.example', '/register')).toHaveLength(0);
  expect(k.to('as.example', '/token')).toHaveLength(0);
}

describe('A. WWW-Authenticate and PRM', () => {
  it('C01 resource_metadata aimed at cloud metadata: never dialled, well-known fallback', async () => {
    const k = kit();
    k.challengeHeader = 'Bearer resource_metadata="http://169.254.169.254/latest/meta-data/iam/"';
    const s = k.session();
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('mcp.example', '/.well-known/oauth-protected-resource/mcp')).toHaveLength(1);
    expect(k.lookups).not.toContain('169.254.169.254');
    k.assertOnlyKitDialled();
  });

  for (const target of ['https://2130706433/prm', 'https://0x7f.1/prm', 'https://127.1/prm', 'https://[::ffff:7f00:1]/prm', 'https://[fd00::1]/prm', 'rebind']) {
    it(`C02 resource_metadata into private space (${target}): never connected`, async () => {
      const k = kit();
      const url = target === 'rebind' ? `https://rebind.example:${k.port}/prm` : target;
      k.challengeHeader = `Bearer resource_metadata="${url}"`;
      const s = k.session();
      const outcome = await k.call(s);
      // Another origin is not fetched (DESIGN policy 2); discovery falls back to the server's own well-known URL.
      expect(outcome.status).toBe(200);
      k.assertOnlyKitDialled();
    });
  }

  it('C02 policy still blocks a private resolution when the origin is allowed (allow-list mode)', async () => {
    const k = kit();
    const url = `https://rebind.example:${k.port}/prm`;
    k.challengeHeader = `Bearer resource_metadata="${url}"`;
    const s = k.session({ policy: { allowedMetadataOrigins: [`https://rebind.example:${k.port}`] } });
    expect((await k.call(s)).status).toBe(200);
    k.assertOnlyKitDialled();
  });

  it('C03 resource_metadata on another origin: not fetched, falls back to the path-aware well-known', async () => {
    const k = kit();
    k.route('evil.example', '/prm', json({ resource: k.mcpUrl, authorization_servers: [k.origin('evil.example')] }));
    k.challengeHeader = `Bearer resource_metadata="${k.origin('evil.example')}/prm"`;
    const s = k.session();
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('evil.example')).toHaveLength(0);
    expect(k.to('mcp.example', '/.well-known/oauth-protected-resource/mcp')).toHaveLength(1);
  });

  it('C03 allow-listed origin is fetched but still subject to the resource rule', async () => {
    const k = kit();
    k.route('evil.example', '/prm', json({ resource: `${k.origin('bank-mcp.example')}/mcp`, authorization_servers: [k.origin('evil.example')] }));
    k.challengeHeader = `Bearer resource_metadata="${k.origin('evil.example')}/prm"`;
    const before = k.storeSnapshot();
    const s = k.session({ policy: { allowedMetadataOrigins: [k.origin('evil.example')] } });
    const e = await k.fails(s);
    k.assertTypedError(e, 'prm.resource_mismatch');
    expect(k.to('evil.example', '/prm')).toHaveLength(1);
    expect(k.to('evil.example').filter((r) => r.path !== '/prm')).toHaveLength(0);
    stoppedBeforeAs(before);
  });

  it('C04 PRM names a different resource (CVE-2026-54030 shape): whole document discarded', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: `${k.origin('bank-mcp.example')}/mcp`, authorization_servers: [k.origin('as.bank.example')] }));
    const before = k.storeSnapshot();
    const s = k.session();
    const e = k.assertTypedError(await k.fails(s), 'prm.resource_mismatch');
    expect(e.message).toContain('bank-mcp.example');
    expect(e.message).toContain(JSON.stringify(k.mcpUrl));
    expect(k.to('as.bank.example')).toHaveLength(0);
    expect(k.to('as.example')).toHaveLength(0);
    stoppedBeforeAs(before);
  });

  for (const variant of ['/mcp/', ':0PORT/mcp', '/mcp#x', '/mcp?tenant=a', '/MCP', '@userinfo']) {
    it(`C05 PRM resource near-miss ${variant}: rejected`, async () => {
      const k = kit();
      const resource =
        variant === ':0PORT/mcp'
          ? `https://mcp.example:0${k.port}/mcp`
          : variant === '@userinfo'
            ? `https://u@mcp.example:${k.port}/mcp`
            : `${k.origin('mcp.example')}${variant}`;
      k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource, authorization_servers: [k.issuer] }));
      const before = k.storeSnapshot();
      k.assertTypedError(await k.fails(k.session()), 'prm.resource_mismatch');
      stoppedBeforeAs(before);
    });
  }

  it('C05 pinned P1 tolerance: upper-case scheme and host match; the PRM string is sent verbatim', async () => {
    const k = kit();
    const resource = `HTTPS://MCP.EXAMPLE:${k.port}/mcp`;
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource, authorization_servers: [k.issuer] }));
    expect((await k.call(k.session())).status).toBe(200);
    expect(new URL(k.opened[0]!).searchParams.get('resource')).toBe(resource);
    expect(new URLSearchParams(k.to('as.example', '/token')[0]!.body).get('resource')).toBe(resource);
  });

  it('C07 root fallback PRM: accepted, resource is the origin (PRM string verbatim), two PRM requests', async () => {
    const k = kit();
    k.challengeHeader = 'Bearer realm="mcp"';
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', status(404));
    k.route('mcp.example', '/.well-known/oauth-protected-resource', json({ resource: k.origin('mcp.example'), authorization_servers: [k.issuer] }));
    expect((await k.call(k.session())).status).toBe(200);
    expect(k.to('mcp.example').filter((r) => r.path.startsWith('/.well-known/oauth-protected-resource'))).toHaveLength(2);
    expect(new URL(k.opened[0]!).searchParams.get('resource')).toBe(k.origin('mcp.example'));
    expect(new URLSearchParams(k.to('as.example', '/token')[0]!.body).get('resource')).toBe(k.origin('mcp.example'));
  });

  const bad: Array<[string, (prm: string, as: string) => unknown]> = [
    ['resource missing', (_p, as) => ({ authorization_servers: [as] })],
    ['resource: 42', (_p, as) => ({ resource: 42, authorization_servers: [as] })],
    ['resource array', (p, as) => ({ resource: [p], authorization_servers: [as] })],
    ['authorization_servers missing', (p) => ({ resource: p })],
    ['authorization_servers []', (p) => ({ resource: p, authorization_servers: [] })],
    ['authorization_servers string', (p, as) => ({ resource: p, authorization_servers: as })],
  ];
  for (const [name, doc] of bad) {
    it(`C08 PRM structurally bad (${name}): typed prm.* error, no AS guessed`, async () => {
      const k = kit();
      k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json(doc(k.mcpUrl, k.issuer)));
      const before = k.storeSnapshot();
      const e = await k.fails(k.session({ policy: { legacyFallback: false } }));
      k.assertTypedError(e, /^prm\./);
      expect(k.to('as.example')).toHaveLength(0);
      stoppedBeforeAs(before);
    });
  }

  it('C09 10,000 hostile authorization_servers entries: bounded, none contacted', async () => {
    const k = kit();
    const entries = Array.from({ length: 10_000 }, (_, i) => ['http://as.example', 'javascript:alert(1)', 'https://as.example/?x#f', '', null, 'https://10.0.0.5'][i % 6]);
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: k.mcpUrl, authorization_servers: [...entries, k.issuer] }));
    const e = await k.fails(k.session({ policy: { legacyFallback: false } }));
    k.assertTypedError(e, /^prm\./);
    expect(k.to('as.example')).toHaveLength(0);
    expect(k.requests.length).toBeLessThanOrEqual(4);
  });

  it('C09 a short list with an http / javascript: entry before a valid one: rejected, never an http issuer', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: k.mcpUrl, authorization_servers: ['http://as.example', 'javascript:alert(1)', k.issuer] }));
    k.assertTypedError(await k.fails(k.session()), 'prm.insecure_authorization_server');
    expect(k.to('as.example')).toHaveLength(0);
  });

  for (const [name, body] of [
    ['HTML', '<html>login</html>'],
    ['[]', '[]'],
    ['null', 'null'],
    ['"str"', '"str"'],
    ['truncated', '{"resource":'],
    ['BOM + JSON (pinned: JSON.parse of text, rejected)', '\ufeff{"resource":"R","authorization_servers":["A"]}'],
  ] as const) {
    it(`C10 PRM not a JSON object (${name}): typed error, no AS contacted`, async () => {
      const k = kit();
      k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', { status: 200, headers: { 'content-type': 'application/json' }, body: body.replace('"R"', JSON.stringify(k.mcpUrl)).replace('"A"', JSON.stringify(k.issuer)) });
      const before = k.storeSnapshot();
      k.assertTypedError(await k.fails(k.session({ policy: { legacyFallback: false } })), /^prm\./);
      stoppedBeforeAs(before);
      expect(k.to('as.example')).toHaveLength(0);
    });
  }

  it('C10 duplicate resource keys: the single value JSON.parse yields goes through the resource rule', async () => {
    const k = kit();
    const body = `{"resource":${JSON.stringify(k.mcpUrl)},"authorization_servers":[${JSON.stringify(k.issuer)}],"resource":"https://evil.example"}`;
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', { status: 200, headers: { 'content-type': 'application/json' }, body });
    k.assertTypedError(await k.fails(k.session()), 'prm.resource_mismatch');
    expect(k.to('as.example')).toHaveLength(0);
  });

  it('C11 endless PRM body: read aborted at the cap, socket destroyed, typed error', async () => {
    const k = kit();
    let sent = 0;
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', () => {
      sent++;
      return { kind: 'endless' };
    });
    const e = await k.fails(k.session({ policy: { legacyFallback: false }, maxBodyBytes: 64 * 1024 }));
    k.assertTypedError(e, /^(prm\.|network\.too_large)/);
    expect(e.code === 'network.too_large' || /exceeds|too large|unreachable|no usable/.test(e.message)).toBe(true);
    expect(sent).toBe(1);
    expect(k.to('as.example')).toHaveLength(0);
  });

  it('C12 valid PRM JSON as text/html is accepted (DESIGN policy 5: parse first, content-type advisory)', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', { status: 200, headers: { 'content-type': 'text/html' }, body: JSON.stringify(k.prm()) });
    expect((await k.call(k.session())).status).toBe(200);
  });

  it('C13(a) discovery redirect to http://10.0.0.5: never contacted', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', redirect('http://10.0.0.5/prm'));
    const e = await k.fails(k.session({ policy: { legacyFallback: false } }));
    k.assertTypedError(e, /^(prm\.|network\.)/);
    k.assertOnlyKitDialled();
    expect(k.to('as.example')).toHaveLength(0);
  });

  it('C13(b) discovery redirect to another origin: not followed (DESIGN policy 2)', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', redirect(`${k.origin('evil.example')}/prm`, 301));
    k.route('evil.example', '/prm', json({ resource: k.mcpUrl, authorization_servers: [k.origin('evil.example')] }));
    await k.call(k.session({ policy: { legacyFallback: false } }));
    expect(k.to('evil.example')).toHaveLength(0);
  });

  it('C13(c) discovery redirect downgrading to http: never contacted', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', redirect(`http://mcp.example:${k.port}/prm`, 307));
    const e = await k.fails(k.session({ policy: { legacyFallback: false } }));
    k.assertTypedError(e, /^(prm\.|network\.)/);
    expect(k.to('mcp.example', '/prm')).toHaveLength(0);
  });

  it('C13(d) redirect loop A→B→A: stops within 3 hops', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', redirect('/b'));
    k.route('mcp.example', '/b', redirect('/.well-known/oauth-protected-resource/mcp'));
    const e = await k.fails(k.session({ policy: { legacyFallback: false } }));
    k.assertTypedError(e, /^(prm\.|network\.)/);
    // The hint URL and the path candidate are the same URL: one walk of at most 1 + 3 hops.
    expect(k.to('mcp.example').filter((r) => r.path === '/b' || r.path.endsWith('/mcp') && r.method === 'GET').length).toBeLessThanOrEqual(8);
  });

  it('C13(e) same-origin redirect is followed and the resource rule applies to the original identifier', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', redirect('/prm.json'));
    k.route('mcp.example', '/prm.json', json(k.prm()));
    expect((await k.call(k.session())).status).toBe(200);
    expect(k.to('mcp.example', '/prm.json')).toHaveLength(1);
  });

  it('C13(e) same-origin redirect whose document names the redirect target as resource: rejected', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', redirect('/prm.json'));
    k.route('mcp.example', '/prm.json', json({ resource: `${k.origin('mcp.example')}/prm.json`, authorization_servers: [k.issuer] }));
    k.assertTypedError(await k.fails(k.session()), 'prm.resource_mismatch');
  });

  for (const [name, header] of [
    ['unterminated quote', 'Bearer resource_metadata="https://evil.example/prm'],
    ['relative URL', 'Bearer resource_metadata="/.well-known/oauth-protected-resource"'],
    ['not a URL', 'Bearer resource_metadata="not a url"'],
    ['only Basic', 'Basic realm="x"'],
    ['no header', null],
    ['12 KiB of junk', `Bearer ${'a=b, '.repeat(2500)}resource_metadata="https://evil.example/prm"`],
  ] as const) {
    it(`C15 malformed WWW-Authenticate (${name}): treated as absent, well-known fallback`, async () => {
      const k = kit();
      k.challengeHeader = header;
      expect((await k.call(k.session())).status).toBe(200);
      expect(k.to('evil.example')).toHaveLength(0);
    });
  }

  it('C16 fallback order: hint, then path-inserted, then root; all 404 is prm.not_found (legacy off), bounded', async () => {
    const k = kit();
    k.challengeHeader = `Bearer resource_metadata="${k.origin('mcp.example')}/custom-prm"`;
    k.route('mcp.example', '/custom-prm', status(404));
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', status(404));
    k.route('mcp.example', '/.well-known/oauth-protected-resource', status(404));
    k.assertTypedError(await k.fails(k.session({ policy: { legacyFallback: false } })), 'prm.not_found');
    const order = k.to('mcp.example').filter((r) => r.method === 'GET').map((r) => r.path);
    expect(order).toEqual(['/custom-prm', '/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']);
  });

  it('C16 a 5xx on the path-inserted PRM stops with a typed error (no silent switch to the root document)', async () => {
    const k = kit();
    k.challengeHeader = 'Bearer realm="mcp"';
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', status(500));
    k.route('mcp.example', '/.well-known/oauth-protected-resource', json({ resource: k.origin('mcp.example'), authorization_servers: [k.issuer] }));
    const e = k.assertTypedError(await k.fails(k.session()), 'prm.http_status');
    expect(e.status).toBe(500);
    expect(k.to('mcp.example', '/.well-known/oauth-protected-resource')).toHaveLength(0);
    expect(k.to('as.example')).toHaveLength(0);
  });

  it('C16 path-inserted 404 then root 200 (positive), and a 401 on the path-inserted URL moves on', async () => {
    const k = kit();
    k.challengeHeader = 'Bearer realm="mcp"';
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', status(401));
    k.route('mcp.example', '/.well-known/oauth-protected-resource', json({ resource: k.origin('mcp.example'), authorization_servers: [k.issuer] }));
    expect((await k.call(k.session())).status).toBe(200);
  });
});

describe('B. authorization-server metadata', () => {
  function prmNaming(issuer: string): void {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: k.mcpUrl, authorization_servers: [issuer] }));
  }

  it('C17 issuer mismatch (MCP example): evil.example metadata claiming as.example is not used', async () => {
    const k = kit();
    prmNaming(k.origin('evil.example'));
    k.route('evil.example', '/.well-known/oauth-authorization-server', json(k.asMetadata(k.issuer)));
    const before = k.storeSnapshot();
    const e = k.assertTypedError(await k.fails(k.session()), 'asm.issuer_mismatch');
    expect(e.message.length).toBeLessThan(700);
    stoppedBeforeAs(before);
    expect(k.to('evil.example').map((r) => r.path)).toEqual(['/.well-known/oauth-authorization-server']);
  });

  for (const variant of ['/tenant1/', 'UPPER', ':0PORT', '/tenant1?x=1', '/Tenant1']) {
    it(`C18 issuer near-miss (${variant}): rejected on the raw string`, async () => {
      const k = kit();
      const expected = `${k.issuer}/tenant1`;
      prmNaming(expected);
      const claimed =
        variant === 'UPPER' ? `https://AS.example:${k.port}/tenant1` : variant === ':0PORT' ? `https://as.example:0${k.port}/tenant1` : `${k.issuer}${variant}`;
      k.route('as.example', '/.well-known/oauth-authorization-server/tenant1', json(k.asMetadata(claimed)));
      const before = k.storeSnapshot();
      k.assertTypedError(await k.fails(k.session()), 'asm.issuer_mismatch');
      stoppedBeforeAs(before);
    });
  }

  it('C19 discovery order with a trap: oauth path-inserted 404, OIDC path-inserted valid, URL 3 never requested', async () => {
    const k = kit();
    const issuer = `${k.issuer}/tenant1`;
    prmNaming(issuer);
    k.route('as.example', '/.well-known/oauth-authorization-server/tenant1', status(404));
    k.route('as.example', '/.well-known/openid-configuration/tenant1', json({ ...k.asMetadata(issuer), token_endpoint: `${k.issuer}/token`, registration_endpoint: `${k.issuer}/register` }));
    k.route('as.example', '/tenant1/.well-known/openid-configuration', json(k.asMetadata(k.origin('evil.example'))));
    k.authIssuer = issuer;
    expect((await k.call(k.session())).status).toBe(200);
    const asm = k.to('as.example').filter((r) => r.path.includes('.well-known')).map((r) => r.path);
    expect(asm).toEqual(['/.well-known/oauth-authorization-server/tenant1', '/.well-known/openid-configuration/tenant1']);
  });

  it('C19 variant: OIDC path-inserted with a mismatching issuer is fatal, not "skip to one that agrees"', async () => {
    const k = kit();
    const issuer = `${k.issuer}/tenant1`;
    prmNaming(issuer);
    k.route('as.example', '/.well-known/oauth-authorization-server/tenant1', status(404));
    k.route('as.example', '/.well-known/openid-configuration/tenant1', json(k.asMetadata(k.origin('evil.example'))));
    k.route('as.example', '/tenant1/.well-known/openid-configuration', json(k.asMetadata(issuer)));
    k.assertTypedError(await k.fails(k.session()), 'asm.issuer_mismatch');
    expect(k.to('as.example', '/tenant1/.well-known/openid-configuration')).toHaveLength(0);
  });

  it('C20 authorization_endpoint downgraded to http: refused at metadata validation, no browser', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_endpoint: `http://as.example:${k.port}/authorize` }));
    const before = k.storeSnapshot();
    const e = k.assertTypedError(await k.fails(k.session()), 'asm.insecure_endpoint');
    expect(e.message).toContain('authorization_endpoint');
    stoppedBeforeAs(before);
  });

  for (const [field, value] of [
    ['token_endpoint', 'https://169.254.169.254/token'],
    ['registration_endpoint', 'http://localhost:6379/'],
  ] as const) {
    it(`C20 ${field} pointing inward (${value}): no packet ever reaches it`, async () => {
      const k = kit();
      k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), [field]: value }));
      const e = await k.fails(k.session());
      k.assertTypedError(e, /^(asm|network)\./);
      k.assertOnlyKitDialled();
      expect(k.to('as.example', '/token')).toHaveLength(0);
    });

    it(`C20 ${field} pointing inward: refused at metadata validation, before any POST and before the browser opens`, async () => {
      const k = kit();
      k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), [field]: value }));
      const before = k.storeSnapshot();
      const e = k.assertTypedError(await k.fails(k.session()), 'asm.inward_endpoint');
      expect(e.message).toContain(field);
      expect(k.opened).toHaveLength(0);
      expect(k.to('as.example', '/register')).toHaveLength(0);
      stoppedBeforeAs(before);
    });
  }

  for (const [name, methods] of [
    ['absent', undefined],
    ['["plain"]', ['plain']],
    ['["s256"]', ['s256']],
    ['[]', []],
  ] as const) {
    it(`C21 PKCE ${name}: refused, no authorization URL built`, async () => {
      const k = kit();
      const metadata: Record<string, unknown> = { ...k.asMetadata(), code_challenge_methods_supported: methods };
      if (methods === undefined) delete metadata.code_challenge_methods_supported;
      k.route('as.example', '/.well-known/oauth-authorization-server', json(metadata));
      const before = k.storeSnapshot();
      k.assertTypedError(await k.fails(k.session()), /^asm\.pkce_(unsupported|unadvertised)$/);
      stoppedBeforeAs(before);
    });
  }

  it('C21 PKCE absent in an OIDC document: refused too', async () => {
    const k = kit();
    const metadata: Record<string, unknown> = { ...k.asMetadata() };
    delete metadata.code_challenge_methods_supported;
    k.route('as.example', '/.well-known/oauth-authorization-server', status(404));
    k.route('as.example', '/.well-known/openid-configuration', json(metadata));
    k.assertTypedError(await k.fails(k.session()), 'asm.pkce_unadvertised');
    expect(k.opened).toHaveLength(0);
  });

  for (const [name, patch, code] of [
    ['no authorization_endpoint', { authorization_endpoint: undefined }, /^asm\./],
    ['token_endpoint as an array', { token_endpoint: ['https://as.example/token'] }, /^asm\./],
    ['userinfo endpoint', { token_endpoint: 'https://as.example@evil.example/token' }, 'asm.insecure_endpoint'],
    ['authorization_endpoint with fragment', { authorization_endpoint: 'AS/authorize#frag' }, 'asm.invalid_authorization_endpoint'],
    ['response_types_supported ["token"]', { response_types_supported: ['token'] }, 'asm.code_flow_unsupported'],
  ] as const) {
    it(`C23 required endpoint missing or malformed (${name}): typed asm.* error, no browser`, async () => {
      const k = kit();
      const metadata: Record<string, unknown> = { ...k.asMetadata() };
      for (const [key, value] of Object.entries(patch)) {
        if (value === undefined) delete metadata[key];
        else metadata[key] = typeof value === 'string' ? value.replace('AS', k.issuer) : value;
      }
      k.route('as.example', '/.well-known/oauth-authorization-server', json(metadata));
      k.route('as.example', '/.well-known/openid-configuration', status(404));
      const before = k.storeSnapshot();
      k.assertTypedError(await k.fails(k.session()), code);
      expect(k.to('evil.example')).toHaveLength(0);
      expect(k.opened).toHaveLength(0);
      expect(k.storeSnapshot()).toBe(before);
    });
  }

  it('C24 prototype pollution through PRM, metadata and registration: no global prototype touched', async () => {
    const k = kit();
    const poison = '"__proto__":{"isAdmin":true},"constructor":{"prototype":{"polluted":1}}';
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', { status: 200, headers: { 'content-type': 'application/json' }, body: `{${poison},${JSON.stringify(k.prm()).slice(1)}` });
    k.route('as.example', '/.well-known/oauth-authorization-server', { status: 200, headers: { 'content-type': 'application/json' }, body: `{${poison},${JSON.stringify(k.asMetadata()).slice(1)}` });
    k.route('as.example', '/register', (req) => {
      const reply = k.register(req) as { status: number; headers: Record<string, string>; body: string };
      return { ...reply, body: `{${poison},${reply.body.slice(1)}` };
    });
    expect((await k.call(k.session())).status).toBe(200);
    expect(({} as Record<string, unknown>).isAdmin).toBeUndefined();
    expect(({} as Record<string, unknown>).polluted).toBeUndefined();
  });
});
