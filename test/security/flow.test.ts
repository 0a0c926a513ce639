/** Catalogue C, D, E: client registration, authorization request and browser opening, the callback. */
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { authorizationEntropy, systemRandomBytes } from '../../src/adapters/entropy.js';
import { openSystemBrowser } from '../../src/adapters/interaction/browser.js';
import { createOAuthSession } from '../../src/adapters/session.js';
import { OAuthConfigError, OAuthFlowError } from '../../src/machines/errors.js';
import { json, status } from './kit.js';
import { useKit } from './setup.js';

const kit = useKit();

describe('C. client registration', () => {
  for (const [name, reply, code] of [
    ['400 invalid_redirect_uri', json({ error: 'invalid_redirect_uri', error_description: 'loopback not allowed' }, 400), 'registration.invalid_redirect_uri'],
    ['400 invalid_client_metadata', json({ error: 'invalid_client_metadata' }, 400), 'registration.invalid_client_metadata'],
    ['500 HTML', status(500, { 'content-type': 'text/html' }, '<html>oops</html>'), 'registration.http_status'],
  ] as const) {
    it(`C25 DCR rejected (${name}): typed error, escaped description, nothing stored, no browser`, async () => {
      const k = kit();
      k.route('as.example', '/register', reply);
      const before = k.storeSnapshot();
      const e = k.assertTypedError(await k.fails(k.session()), code);
      if (name.includes('redirect')) expect(e.message).toContain('"loopback not allowed"');
      expect(k.to('as.example', '/register').length).toBeLessThanOrEqual(2);
      expect(k.opened).toHaveLength(0);
      expect(k.storeSnapshot()).toBe(before);
    });
  }

  for (const [name, body] of [
    ['no client_id', {}],
    ['client_id ""', { client_id: '' }],
    ['client_id 7', { client_id: 7 }],
  ] as const) {
    it(`C26 DCR success without a usable client_id (${name}): rejected, nothing stored`, async () => {
      const k = kit();
      k.route('as.example', '/register', json(body, 201));
      const before = k.storeSnapshot();
      k.assertTypedError(await k.fails(k.session()), 'registration.invalid_response');
      expect(k.opened).toHaveLength(0);
      expect(k.storeSnapshot()).toBe(before);
    });
  }

  it('C26 client_id of 5 MB: body cap, rejected, nothing stored', async () => {
    const k = kit();
    k.route('as.example', '/register', json({ client_id: 'x'.repeat(5 * 1024 * 1024) }, 201));
    const before = k.storeSnapshot();
    k.assertTypedError(await k.fails(k.session()), /^(network\.too_large|registration\.)/);
    expect(k.opened).toHaveLength(0);
    expect(k.storeSnapshot()).toBe(before);
  });

  it('C26 client_id with CR/LF: rejected before use, nothing stored', async () => {
    const k = kit();
    k.route('as.example', '/register', json({ client_id: 'abc\r\nX-Injected: 1', token_endpoint_auth_method: 'none' }, 201));
    const before = k.storeSnapshot();
    k.assertTypedError(await k.fails(k.session()), 'registration.invalid_response');
    expect(k.opened).toHaveLength(0);
    expect(k.storeSnapshot()).toBe(before);
  });

  it('C27 registration claiming client_secret_basic without a secret: unusable, refused before use', async () => {
    const k = kit();
    k.route('as.example', '/register', json({ client_id: 'c1', token_endpoint_auth_method: 'client_secret_basic' }, 201));
    const before = k.storeSnapshot();
    k.assertTypedError(await k.fails(k.session()), 'registration.missing_secret');
    expect(k.opened).toHaveLength(0);
    expect(k.storeSnapshot()).toBe(before);
  });

  it('C29 registration endpoint answering 307 to evil.example: not followed, body not re-sent', async () => {
    const k = kit();
    k.route('as.example', '/register', { status: 307, headers: { location: `${k.origin('evil.example')}/register` } });
    k.assertTypedError(await k.fails(k.session()), /^network\.redirect$/);
    expect(k.to('evil.example')).toHaveLength(0);
    expect(k.opened).toHaveLength(0);
  });

  it('C29 registration endpoint over http: refused at metadata validation', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), registration_endpoint: `http://as.example:${k.port}/register` }));
    k.assertTypedError(await k.fails(k.session()), 'asm.insecure_endpoint');
    expect(k.to('as.example', '/register')).toHaveLength(0);
  });

  for (const url of [
    'http://app.example/c.json',
    'https://app.example/',
    'https://app.example',
    'https://app.example/a/%2e%2e/c.json',
    'https://app.example/a/../c.json',
    'https://u:p@app.example/c.json',
    'https://app.example/c.json#f',
  ]) {
    it(`C30 CIMD URL ${url}: rejected when the session is created, before any network`, () => {
      const k = kit();
      let error: unknown;
      try {
        createOAuthSession({ serverUrl: k.mcpUrl, client: { metadataUrl: url, metadata: { redirect_uris: ['http://127.0.0.1:9/callback'] } }, resolver: k.resolver });
      } catch (e) {
        error = e;
      }
      expect(error).toBeInstanceOf(OAuthConfigError);
      expect((error as OAuthConfigError).message).toContain('client.metadataUrl');
      expect(k.requests).toHaveLength(0);
    });
  }

  it('C31 CIMD configured but not advertised: dynamic registration is used instead', async () => {
    const k = kit();
    const metadataUrl = 'https://app.example/client.json';
    const s = k.session({ client: { metadataUrl, metadata: { redirect_uris: ['http://127.0.0.1:9/callback'] } } });
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/register')).toHaveLength(1);
    expect(new URL(k.opened[0]!).searchParams.get('client_id')).not.toBe(metadataUrl);
  });

  it('C31 CIMD advertised: the document URL is the client_id, no registration, no secret', async () => {
    const k = kit();
    const metadataUrl = 'https://app.example/client.json';
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), client_id_metadata_document_supported: true, token_endpoint_auth_methods_supported: ['none'] }));
    k.clients.set(metadataUrl, { redirectUris: ['http://127.0.0.1:9/callback'] });
    const s = k.session({ client: { metadataUrl, metadata: { redirect_uris: ['http://127.0.0.1:9/callback'] } } });
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/register')).toHaveLength(0);
    expect(new URL(k.opened[0]!).searchParams.get('client_id')).toBe(metadataUrl);
    expect(new URLSearchParams(k.to('as.example', '/token')[0]!.body).get('client_secret')).toBeNull();
  });

  it('C32 dynamic client bound to as.example is never sent to as2.example; re-registration there', async () => {
    const k = kit();
    expect((await k.call(k.session())).status).toBe(200);
    const firstClient = new URL(k.opened[0]!).searchParams.get('client_id')!;
    // The server migrates to another AS and forgets the token.
    k.validAccessTokens.clear();
    k.validRefreshTokens.clear();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: k.mcpUrl, authorization_servers: [k.origin('as2.example')] }));
    const again = k.session();
    expect((await k.call(again)).status).toBe(200);
    expect(k.to('as2.example', '/register')).toHaveLength(1);
    for (const r of k.to('as2.example')) expect(`${r.url} ${r.body}`).not.toContain(firstClient);
    expect(k.opened.slice(1).every((u) => !u.includes(firstClient))).toBe(true);
  });

  it('C32 pre-registered client bound to as.example while PRM names as2.example: typed error, nothing sent to as2', async () => {
    const k = kit();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: k.mcpUrl, authorization_servers: [k.origin('as2.example')] }));
    const secret = k.issue('client_secret');
    const s = k.session({ client: { preregistered: { client_id: 'static-client', client_secret: secret, token_endpoint_auth_method: 'client_secret_post', issuer: k.issuer } } });
    k.assertTypedError(await k.fails(s), 'client.issuer_mismatch');
    for (const r of k.to('as2.example')) expect(`${r.url} ${r.body}`).not.toContain('static-client');
    expect(k.opened).toHaveLength(0);
  });
});

describe('D. authorization request and browser opening', () => {
  for (const endpoint of ['javascript:alert(1)', 'data:text/html,<script>alert(1)</script>', 'file:///etc/passwd', 'vbscript:msgbox(1)', 'smb://evil.example/share', 'search-ms:query=x', 'ms-settings:', 'ssh://x', ' \tJaVaScRiPt:alert(1)']) {
    it(`C33 authorization_endpoint ${JSON.stringify(endpoint)}: rejected at metadata validation, opener never invoked`, async () => {
      const k = kit();
      k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_endpoint: endpoint }));
      k.assertTypedError(await k.fails(k.session()), 'asm.insecure_endpoint');
      expect(k.opened).toHaveLength(0);
      expect(k.to('as.example', '/register')).toHaveLength(0);
    });
  }

  it('C33 the system opener itself refuses non-http(s) schemes (defence in depth, spawn never called)', async () => {
    for (const url of ['javascript:alert(1)', 'file:///etc/passwd', 'smb://evil.example/share', 'search-ms:query=x', 'ms-settings:', 'ssh://x']) {
      let spawned = 0;
      const error = await openSystemBrowser(url, { platform: 'linux', spawn: (() => (spawned++, undefined)) as never }).then(() => undefined, (e: unknown) => e);
      expect(error).toBeInstanceOf(OAuthFlowError);
      expect((error as OAuthFlowError).code).toBe('browser.unsafe_url');
      expect(spawned).toBe(0);
    }
  });

  const shellish = [
    'https://as.example/authorize?x=$(New-Item C:\\pwn)',
    'https://as.example/a&calc.exe',
    'https://as.example/a"|touch /tmp/pwn',
    'https://as.example/a`id`',
    'https://as.example/%USERPROFILE%',
    'https://as.example/a;id',
    'https://as.example/a\nid',
  ];
  for (const platform of ['linux', 'darwin', 'win32'] as const) {
    it(`C34 shell metacharacters in an https URL (${platform}, spawn spy): rejected or one argv element without a shell`, async () => {
      for (const url of shellish) {
        const calls: Array<{ command: string; args: string[]; options: Record<string, unknown> }> = [];
        const spawn = ((command: string, args: string[], options: Record<string, unknown>) => {
          calls.push({ command, args, options });
          const listeners: Record<string, () => void> = {};
          const child = { on: () => child, once: (event: string, fn: () => void) => ((listeners[event] = fn), child), off: () => child, unref: () => undefined };
          queueMicrotask(() => listeners.spawn?.());
          return child;
        }) as never;
        const error = await openSystemBrowser(url, { platform, spawn }).then(() => undefined, (e: unknown) => e);
        if (error) {
          expect((error as OAuthFlowError).code).toBe('browser.unsafe_url');
          expect(calls).toHaveLength(0);
          continue;
        }
        expect(calls).toHaveLength(1);
        const call = calls[0]!;
        expect(call.options.shell).toBe(false);
        expect(['xdg-open', 'open', 'rundll32']).toContain(call.command);
        expect(call.args.at(-1)).toBe(new URL(url).href);
        // One argv element holding the serialised URL; no shell ever parses it (`;` and `&` are legal URL characters).
        expect(call.args.filter((a) => a.includes('as.example'))).toHaveLength(1);
        expect(['cmd', 'cmd.exe', 'powershell', 'sh', 'bash']).not.toContain(call.command);
      }
    });
  }

  it('C35 userinfo authority in the authorization endpoint: rejected', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_endpoint: `https://as.example@evil.example:${k.port}/authorize` }));
    k.assertTypedError(await k.fails(k.session()), 'asm.insecure_endpoint');
    expect(k.opened).toHaveLength(0);
  });

  it('C35 NUL in the authorization endpoint: rejected; bidi override and IDN homograph refused by the system opener', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_endpoint: `${k.issuer}/auth\u0000ize` }));
    k.assertTypedError(await k.fails(k.session()), 'asm.insecure_endpoint');
    expect(k.opened).toHaveLength(0);
    for (const url of ['https://as.example/authorize\u202e', 'https://\u0430s.example/authorize']) {
      const error = await openSystemBrowser(url, { platform: 'linux', spawn: (() => undefined) as never }).then(() => undefined, (e: unknown) => e);
      expect((error as OAuthFlowError).code).toBe('browser.unsafe_url');
    }
  });

  it('C37 PKCE and state generation: 10,000 unique verifiers and states, S256 challenges, charset and length', async () => {
    const verifiers = new Set<string>();
    const states = new Set<string>();
    for (let i = 0; i < 10_000; i++) {
      const e = await authorizationEntropy(systemRandomBytes);
      expect(e.codeVerifier).toMatch(/^[A-Za-z0-9\-._~]{43,128}$/);
      expect(e.codeChallenge).toBe(createHash('sha256').update(e.codeVerifier).digest('base64url'));
      expect(e.state.length).toBeGreaterThanOrEqual(22);
      verifiers.add(e.codeVerifier);
      states.add(e.state);
    }
    expect(verifiers.size).toBe(10_000);
    expect(states.size).toBe(10_000);
  });

  it('C37 resource is identical in the authorization and token requests; a re-authorization uses a fresh verifier and state', async () => {
    const k = kit();
    expect((await k.call(k.session())).status).toBe(200);
    k.validAccessTokens.clear();
    k.validRefreshTokens.clear();
    expect((await k.call(k.session())).status).toBe(200);
    expect(k.opened).toHaveLength(2);
    const [a, b] = k.opened.map((u) => new URL(u).searchParams);
    expect(a!.get('code_challenge_method')).toBe('S256');
    expect(a!.get('state')).not.toBe(b!.get('state'));
    expect(a!.get('code_challenge')).not.toBe(b!.get('code_challenge'));
    for (const [i, t] of k.to('as.example', '/token').filter((r) => r.body.includes('authorization_code')).entries()) {
      expect(new URLSearchParams(t.body).get('resource')).toBe(k.mcpUrl);
      expect([a, b][i]!.get('resource')).toBe(k.mcpUrl);
    }
  });

  it('C38 scope selection: challenge scope wins over scopes_supported; else scopes_supported; else none', async () => {
    const k = kit();
    k.options.scopes = ['a', 'b'];
    k.challengeHeader = k.challenge(', scope="files:read"');
    expect((await k.call(k.session())).status).toBe(200);
    expect(new URL(k.opened[0]!).searchParams.get('scope')).toBe('files:read');
    k.validAccessTokens.clear();
    k.validRefreshTokens.clear();
    k.challengeHeader = undefined;
    expect((await k.call(k.session())).status).toBe(200);
    expect(new URL(k.opened[1]!).searchParams.get('scope')).toBe('a b');
    k.validAccessTokens.clear();
    k.validRefreshTokens.clear();
    k.route('mcp.example', '/.well-known/oauth-protected-resource/mcp', json({ resource: k.mcpUrl, authorization_servers: [k.issuer] }));
    expect((await k.call(k.session())).status).toBe(200);
    expect(new URL(k.opened[2]!).searchParams.has('scope')).toBe(false);
  });

  it('C39 opener throws: typed error, no second opener attempt, nothing stored but the registration', async () => {
    const k = kit();
    let calls = 0;
    const s = k.session({
      openAuthorizationUrl: () => {
        calls++;
        throw Object.assign(new Error('spawn xdg-open ENOENT'), { code: 'ENOENT' });
      },
    });
    k.assertTypedError(await k.fails(s), 'interaction.failed');
    expect(calls).toBe(1);
    expect(k.to('as.example', '/token')).toHaveLength(0);
  });

  it('C39 opener hangs: the callback deadline ends the flow, opener called once', async () => {
    const k = kit();
    let calls = 0;
    const s = k.session({ openAuthorizationUrl: () => void calls++, deadlines: { callbackMs: 300, oauthRequestMs: 1_500 } });
    k.assertTypedError(await k.fails(s), 'callback.timeout');
    expect(calls).toBe(1);
    expect(k.to('as.example', '/token')).toHaveLength(0);
  });
});

describe('E. callback', () => {
  /** The browser first delivers `forged`, then (next macrotask) the genuine response. */
  function forgedThenGenuine(forged: (genuine: URLSearchParams) => URLSearchParams | Record<string, string | string[]>) {
    const k = kit();
    const verdicts: string[] = [];
    const s = k.session({
      openAuthorizationUrl: (url) => {
        k.opened.push(url);
        const genuine = k.approve(url)!;
        verdicts.push(s.handleCallback(forged(genuine)));
        setImmediate(() => verdicts.push(s.handleCallback(genuine)));
      },
    });
    return { s, verdicts };
  }

  it('C40 state mismatch: ignored (400), no token request for it, the flow keeps waiting for the genuine one', async () => {
    const k = kit();
    const { s, verdicts } = forgedThenGenuine((g) => new URLSearchParams({ code: g.get('code')!, state: 'WRONG', iss: k.issuer }));
    expect((await k.call(s)).status).toBe(200);
    expect(verdicts).toEqual(['rejected', 'accepted']);
    expect(k.to('as.example', '/token')).toHaveLength(1);
  });

  it('C41 state missing: ignored, then the genuine one completes; one token request', async () => {
    const k = kit();
    const { s, verdicts } = forgedThenGenuine((g) => new URLSearchParams({ code: g.get('code')!, iss: k.issuer }));
    expect((await k.call(s)).status).toBe(200);
    expect(verdicts).toEqual(['rejected', 'accepted']);
    expect(k.to('as.example', '/token')).toHaveLength(1);
  });

  it('C41 state duplicated: not accepted, no token request for it', async () => {
    const k = kit();
    const { s, verdicts } = forgedThenGenuine((g) => ({ code: g.get('code')!, state: [g.get('state')!, g.get('state')!], iss: k.issuer }));
    expect((await k.call(s)).status).toBe(200);
    expect(verdicts).toEqual(['rejected', 'accepted']);
    expect(k.to('as.example', '/token')).toHaveLength(1);
  });

  it('C43 iss mismatch when advertised: callback.iss_mismatch before any token request; error text not shown', async () => {
    const k = kit();
    k.browser = (url) => k.approve(url, { iss: k.origin('evil.example'), error_description: 'ATTACKER TEXT' });
    const before = k.storeSnapshot().replace(/"client":\{.*?\}\}/, '');
    const e = k.assertTypedError(await k.fails(k.session()), 'callback.iss_mismatch');
    expect(e.message).not.toContain('ATTACKER TEXT');
    expect(k.to('as.example', '/token')).toHaveLength(0);
    expect(JSON.stringify(k.store.snapshot())).not.toContain('"tokens"');
    expect(before).toBeDefined();
  });

  it('C44 iss missing when advertised: rejected, no token request', async () => {
    const k = kit();
    k.browser = (url) => k.approve(url, { iss: undefined });
    k.assertTypedError(await k.fails(k.session()), 'callback.iss_missing');
    expect(k.to('as.example', '/token')).toHaveLength(0);
  });

  it('C45 iss present but not advertised: the recorded issuer is accepted', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_response_iss_parameter_supported: undefined }));
    expect((await k.call(k.session())).status).toBe(200);
  });

  it('C45 iss present but not advertised: another issuer is rejected', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_response_iss_parameter_supported: undefined }));
    k.browser = (url) => k.approve(url, { iss: k.origin('evil.example') });
    k.assertTypedError(await k.fails(k.session()), 'callback.iss_mismatch');
    expect(k.to('as.example', '/token')).toHaveLength(0);
  });

  it('C45 iss absent and not advertised: proceeds (P7 default)', async () => {
    const k = kit();
    k.route('as.example', '/.well-known/oauth-authorization-server', json({ ...k.asMetadata(), authorization_response_iss_parameter_supported: undefined }));
    k.browser = (url) => k.approve(url, { iss: undefined });
    expect((await k.call(k.session())).status).toBe(200);
  });

  for (const error of ['access_denied', 'invalid_scope', 'server_error', 'temporarily_unavailable']) {
    it(`C47 authorization error ${error} with valid state and iss: typed error, no token request, no re-prompt`, async () => {
      const k = kit();
      k.browser = (url) => {
        const p = k.approve(url, { code: undefined, error, error_description: 'User said no\u001b[2J\r\nFORGED LOG LINE' });
        return p;
      };
      const e = k.assertTypedError(await k.fails(k.session()), `authorize.${error}`);
      expect(e.oauthError).toBe(error);
      expect(e.message).not.toMatch(/[\u001b\r\n]/);
      expect(e.message).toContain('\\u001b[2J\\r\\nFORGED LOG LINE');
      expect(k.opened).toHaveLength(1);
      expect(k.to('as.example', '/token')).toHaveLength(0);
    });
  }

  it('C48 front-channel token injection: INJECTED is never stored nor sent', async () => {
    const k = kit();
    const injected = k.issue('access_token');
    k.browser = (url) => k.approve(url, { access_token: injected, token_type: 'bearer', id_token: 'x.y.z' });
    await k.call(k.session());
    expect(JSON.stringify(k.store.snapshot())).not.toContain(injected);
    for (const r of k.requests) expect(`${r.url} ${JSON.stringify(r.headers)} ${r.body}`).not.toContain(injected);
  });

  for (const extra of [{ access_token: 'INJECTED', token_type: 'bearer' }, { id_token: 'x.y.z' }, { response: 'jwt.jarm.x' }]) {
    it(`C48 front-channel ${Object.keys(extra)[0]}: the response is rejected as a whole, no token request`, async () => {
      const k = kit();
      k.browser = (url) => k.approve(url, extra);
      k.assertTypedError(await k.fails(k.session()), 'callback.unexpected_parameter');
      expect(k.to('as.example', '/token')).toHaveLength(0);
    });
  }

  it('C49 code replay: the genuine callback delivered twice yields one token request; the replay is rejected', async () => {
    const k = kit();
    const verdicts: string[] = [];
    const s = k.session({
      openAuthorizationUrl: (url) => {
        k.opened.push(url);
        const genuine = k.approve(url)!;
        verdicts.push(s.handleCallback(genuine), s.handleCallback(genuine));
      },
    });
    expect((await k.call(s)).status).toBe(200);
    expect(verdicts).toEqual(['accepted', 'rejected']);
    expect(k.to('as.example', '/token')).toHaveLength(1);
    expect(s.handleCallback(k.approve(k.opened[0]!)!)).toBe('rejected');
    expect(k.to('as.example', '/token')).toHaveLength(1);
  });

  it('C51 contradictory callback (code and error): no token request', async () => {
    const k = kit();
    k.browser = (url) => k.approve(url, { error: 'access_denied' });
    k.assertTypedError(await k.fails(k.session()), /^(authorize|callback)\./);
    expect(k.to('as.example', '/token')).toHaveLength(0);
  });
});
