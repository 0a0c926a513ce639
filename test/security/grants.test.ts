/**
 * Catalogue I (client authentication of the machine-to-machine grants): C77 algorithm negotiation
 * and C79 assertion clock skew, with client credentials + private_key_jwt against the kit's AS.
 *
 * The kit's `as.example` is scripted per case: its metadata advertises the grant, `private_key_jwt`
 * and (or not) `token_endpoint_auth_signing_alg_values_supported`; its token endpoint really verifies
 * the client assertion (signature with the registered public key, the algorithms it listed, iss =
 * sub = client id, aud = issuer) against the real clock and answers `invalid_client` "iat in the
 * future" when the assertion was stamped ahead of it. Every assertion is registered as a kit secret,
 * so INV-A checks it went only to the token endpoint and the sentinel scan that it shows nowhere else.
 */
import { decodeJwt, decodeProtectedHeader, exportJWK, exportPKCS8, generateKeyPair, jwtVerify, UnsecuredJWT, type CryptoKey } from 'jose';
import { describe, expect, it } from 'vitest';
import type { GrantOptions } from '../../src/adapters/options.js';
import { OAuthConfigError } from '../../src/machines/errors.js';
import { json, type Recorded } from './kit.js';
import { useKit } from './setup.js';

const kit = useKit();

const CLIENT_ID = 'm2m-client';
const TEN_MINUTES_MS = 10 * 60_000;

type KeyKind = 'ES256' | 'RS256' | 'Ed25519';

async function keyPair(kind: KeyKind): Promise<{ pem: string; publicKey: CryptoKey; privateKey: CryptoKey }> {
  const keys = await generateKeyPair(kind === 'Ed25519' ? 'EdDSA' : kind, { extractable: true, ...(kind === 'Ed25519' ? { crv: 'Ed25519' } : {}) });
  return { pem: await exportPKCS8(keys.privateKey), publicKey: keys.publicKey, privateKey: keys.privateKey };
}

interface Seen {
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
  verdict: string;
}

/**
 * as.example for client credentials with private_key_jwt. `algs` is what its metadata lists
 * (`undefined`: the member is absent). The token endpoint accepts only an assertion that verifies
 * under `publicKey` with a listed algorithm, at the AS's (real) time.
 */
function privateKeyJwtServer(publicKey: CryptoKey | undefined, algs: unknown[] | undefined): Seen[] {
  const k = kit();
  const seen: Seen[] = [];
  k.route('as.example', '/.well-known/oauth-authorization-server', () =>
    json({
      ...k.asMetadata(),
      grant_types_supported: ['client_credentials'],
      token_endpoint_auth_methods_supported: ['private_key_jwt'],
      ...(algs === undefined ? {} : { token_endpoint_auth_signing_alg_values_supported: algs }),
    }),
  );
  k.route('as.example', '/token', async (req: Recorded) => {
    const form = new URLSearchParams(req.body);
    const assertion = form.get('client_assertion') ?? '';
    if (assertion) k.secrets.set(assertion, 'client_secret');
    const refuse = (verdict: string, description: string) => {
      seen.push({ header: safeHeader(assertion), payload: safePayload(assertion), verdict });
      return json({ error: 'invalid_client', error_description: description }, 401);
    };
    if (form.get('grant_type') !== 'client_credentials') return json({ error: 'unsupported_grant_type' }, 400);
    if (form.get('client_assertion_type') !== 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') return refuse('no assertion', 'client assertion required');
    if (!publicKey) return refuse('no key', 'no key registered');
    const allowed = (algs ?? ['ES256', 'RS256']).filter((a): a is string => typeof a === 'string' && (a === 'ES256' || a === 'RS256'));
    let payload: Record<string, unknown>;
    try {
      ({ payload } = await jwtVerify(assertion, publicKey, { algorithms: allowed, issuer: CLIENT_ID, subject: CLIENT_ID, audience: k.issuer }));
    } catch {
      return refuse('bad signature or claims', 'client assertion invalid');
    }
    const now = Math.floor(Date.now() / 1000);
    if (typeof payload.iat !== 'number' || payload.iat > now + 30) return refuse('iat in the future', 'iat in the future');
    seen.push({ header: decodeProtectedHeader(assertion) as Record<string, unknown>, payload, verdict: 'ok' });
    return json(k.tokens(CLIENT_ID, form.get('scope') ?? undefined));
  });
  return seen;
}

function safeHeader(assertion: string): Record<string, unknown> {
  try {
    return decodeProtectedHeader(assertion) as Record<string, unknown>;
  } catch {
    return {};
  }
}
function safePayload(assertion: string): Record<string, unknown> {
  try {
    return decodeJwt(assertion) as Record<string, unknown>;
  } catch {
    return {};
  }
}

function grant(pem: string, extra: Partial<Extract<GrantOptions, { type: 'client_credentials' }>> = {}): GrantOptions {
  return { type: 'client_credentials', clientId: CLIENT_ID, authMethod: 'private_key_jwt', privateKey: pem, ...extra };
}

const tokenRequests = () => kit().to('as.example', '/token');

/** The typed refusal of C77: nothing reached the token endpoint, and the message names algorithms, not key material. */
async function refusedBeforeSending(session: ReturnType<ReturnType<typeof kit>['session']>, pem: string): Promise<string> {
  const k = kit();
  const error = k.assertTypedError(await k.fails(session), 'token.signing_alg_unsupported');
  expect(error.state).toBe('flow.token.clientCredentials');
  expect(tokenRequests()).toHaveLength(0);
  expect(k.requests.some((r) => r.body.includes('client_assertion'))).toBe(false);
  const shown = `${error.message} ${JSON.stringify(error)} ${JSON.stringify(session.trace())}`;
  expect(shown).not.toContain('PRIVATE KEY');
  for (const line of pem.split('\n').filter((l) => l.length > 20 && !l.startsWith('-----'))) expect(shown).not.toContain(line);
  expect(tokensStored()).toBe(false);
  return error.message;
}

function tokensStored(): boolean {
  return kit().storeSnapshot().includes('"tokens"');
}

describe('C77 algorithm negotiation (RFC 7523 client assertions)', () => {
  for (const kind of ['ES256', 'RS256'] as const) {
    it(`C77 metadata ["none"] with an ${kind === 'ES256' ? 'EC P-256' : 'RSA'} key: never alg none; typed error, no token request`, async () => {
      const k = kit();
      const { pem, publicKey } = await keyPair(kind);
      privateKeyJwtServer(publicKey, ['none']);
      const message = await refusedBeforeSending(k.session({ grant: grant(pem) }), pem);
      expect(message).toContain(kind);
      expect(message).toContain('"none"');
    });
  }

  it('C77 metadata ["HS256"] with an RSA key: never a symmetric alg keyed by a public value; typed error, no token request', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('RS256');
    privateKeyJwtServer(publicKey, ['HS256']);
    const message = await refusedBeforeSending(k.session({ grant: grant(pem) }), pem);
    expect(message).toContain('RS256');
    expect(message).toContain('"HS256"');
  });

  it('C77 metadata ["HS256"] with alg RS256 configured: the configuration does not unlock HS*; typed error, no token request', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('RS256');
    privateKeyJwtServer(publicKey, ['HS256', 'none']);
    await refusedBeforeSending(k.session({ grant: grant(pem, { alg: 'RS256' }) }), pem);
  });

  it('C77 metadata ["ES256"] with an RSA key: no alg matches both; typed error naming both, no token request', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('RS256');
    privateKeyJwtServer(publicKey, ['ES256']);
    const message = await refusedBeforeSending(k.session({ grant: grant(pem) }), pem);
    expect(message).toMatch(/key signs RS256/);
    expect(message).toContain('"ES256"');
  });

  it('C77 metadata ["RS256"] with an RSA key: one token request, header alg RS256, accepted', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('RS256');
    const seen = privateKeyJwtServer(publicKey, ['RS256']);
    expect((await k.call(k.session({ grant: grant(pem) }))).status).toBe(200);
    expect(tokenRequests()).toHaveLength(1);
    expect(seen.map((s) => s.verdict)).toEqual(['ok']);
    expect(seen[0]?.header).toEqual({ alg: 'RS256', typ: 'JWT' });
    expect(seen[0]?.payload).toMatchObject({ iss: CLIENT_ID, sub: CLIENT_ID, aud: k.issuer });
    expect(tokensStored()).toBe(true);
  });

  it('C77 metadata ["RS256"] with an RSA JWK: the key type is read from the JWK, header alg RS256, accepted', async () => {
    const k = kit();
    const { privateKey, publicKey } = await keyPair('RS256');
    const jwk = await exportJWK(privateKey);
    const seen = privateKeyJwtServer(publicKey, ['PS256', 'RS256']);
    expect((await k.call(k.session({ grant: { type: 'client_credentials', clientId: CLIENT_ID, privateKey: jwk as never } }))).status).toBe(200);
    expect(seen.map((s) => [s.verdict, s.header.alg])).toEqual([['ok', 'RS256']]);
  });

  for (const kind of ['ES256', 'RS256'] as const) {
    it(`C77 metadata without the member, ${kind === 'ES256' ? 'EC P-256' : 'RSA'} key: the key's own alg (${kind}), one token request, accepted`, async () => {
      const k = kit();
      const { pem, publicKey } = await keyPair(kind);
      const seen = privateKeyJwtServer(publicKey, undefined);
      expect((await k.call(k.session({ grant: grant(pem) }))).status).toBe(200);
      expect(tokenRequests()).toHaveLength(1);
      const assertion = new URLSearchParams(tokenRequests()[0]!.body).get('client_assertion') ?? '';
      expect(decodeProtectedHeader(assertion).alg).toBe(kind);
      expect(seen.map((s) => s.verdict)).toEqual(['ok']);
    });
  }

  it('C77 an Ed25519 key (a type this client does not sign with): typed error, no token request', async () => {
    const k = kit();
    const { pem } = await keyPair('Ed25519');
    privateKeyJwtServer(undefined, ['EdDSA', 'ES256', 'RS256']);
    const message = await refusedBeforeSending(k.session({ grant: grant(pem) }), pem);
    expect(message).toMatch(/ed25519/);
  });

  it('C77 alg ES256 configured with an RSA key: typed error, no token request, never signed with a mismatched alg', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('RS256');
    privateKeyJwtServer(publicKey, ['ES256', 'RS256']);
    const error = k.assertTypedError(await k.fails(k.session({ grant: grant(pem, { alg: 'ES256' }) })), 'token.credential_unavailable');
    expect(error.message).toContain('ES256');
    expect(tokenRequests()).toHaveLength(0);
  });

  it('C77 an application assertion provider returning an alg none JWT: not sent, typed error', async () => {
    const k = kit();
    privateKeyJwtServer(undefined, undefined);
    const unsigned = new UnsecuredJWT({}).setIssuer(CLIENT_ID).setSubject(CLIENT_ID).setAudience(k.issuer).setIssuedAt().setExpirationTime('1m').encode();
    const session = k.session({ grant: { type: 'client_credentials', clientId: CLIENT_ID, authMethod: 'private_key_jwt', assertionProvider: () => unsigned } });
    k.assertTypedError(await k.fails(session), 'token.signing_alg_unsupported');
    expect(tokenRequests()).toHaveLength(0);
  });

  it('C77 hostile algorithm names in the metadata are quoted, bounded and never acted on', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('RS256');
    const hostile = ['HS256\u001b[31m', 'x'.repeat(5_000), 'none', ...Array.from({ length: 20 }, (_, i) => `HS${i}`)];
    privateKeyJwtServer(publicKey, hostile);
    const message = await refusedBeforeSending(k.session({ grant: grant(pem) }), pem);
    expect(message).not.toContain('\u001b');
    expect(message.length).toBeLessThan(2_000);
  });
});

describe('C79 assertion clock skew', () => {
  it('C79 local clock 10 min fast, no offset: iat/exp from that clock, lifetime ≤ 5 min; invalid_client "iat in the future" is a typed error after exactly one token request', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('ES256');
    const seen = privateKeyJwtServer(publicKey, ['ES256']);
    const fast = Date.now() + TEN_MINUTES_MS;
    const session = k.session({ clock: () => fast, grant: grant(pem) });
    const error = k.assertTypedError(await k.fails(session), 'token.invalid_client');
    expect(error.oauthError).toBe('invalid_client');
    expect(error.state).toBe('flow.token.clientCredentials');
    expect(tokenRequests()).toHaveLength(1);
    expect(seen.map((s) => s.verdict)).toEqual(['iat in the future']);
    const { iat, exp } = seen[0]!.payload as { iat: number; exp: number };
    expect(iat).toBe(Math.floor(fast / 1000));
    expect(exp - iat).toBeGreaterThan(0);
    expect(exp - iat).toBeLessThanOrEqual(300);
    // No retry loop: a second call from the application is one more request, not a storm.
    k.assertTypedError(await k.fails(session), 'token.invalid_client');
    expect(tokenRequests()).toHaveLength(2);
    expect(tokensStored()).toBe(false);
  });

  it('C79 local clock 10 min fast with assertionClockOffsetSeconds -600: iat/exp corrected, one token request, accepted', async () => {
    const k = kit();
    const { pem, publicKey } = await keyPair('ES256');
    const seen = privateKeyJwtServer(publicKey, ['ES256']);
    const fast = Date.now() + TEN_MINUTES_MS;
    const session = k.session({ clock: () => fast, grant: grant(pem, { assertionClockOffsetSeconds: -600 }) });
    expect((await k.call(session)).status).toBe(200);
    expect(tokenRequests()).toHaveLength(1);
    expect(seen.map((s) => s.verdict)).toEqual(['ok']);
    const { iat, exp } = seen[0]!.payload as { iat: number; exp: number };
    expect(iat).toBe(Math.floor(fast / 1000) - 600);
    expect(exp - iat).toBe(60);
  });

  it('C79 the offset is validated before any network: integer, within ±1 day', () => {
    const k = kit();
    for (const bad of [86_401, -86_401, 1.5, Number.NaN, '60' as unknown as number]) {
      expect(() => k.session({ grant: grant('-----BEGIN PRIVATE KEY-----\nx\n-----END PRIVATE KEY-----', { assertionClockOffsetSeconds: bad }) }), String(bad)).toThrow(OAuthConfigError);
    }
    expect(k.requests).toHaveLength(0);
  });
});
