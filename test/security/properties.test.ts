/**
 * Property-based tests (fast-check): the WWW-Authenticate parser, URL rules, metadata and token
 * response processors. 10,000 runs per property under CI (`CI=true`), 1,000 locally; override with
 * `SECURITY_PROPERTY_RUNS`.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import type { HttpResponseData } from '../../src/machines/http.js';
import { redactUrl } from '../../src/machines/redact.js';
import {
  processAuthorizationServerMetadataResponse,
  processRegistrationResponse,
  processResourceMetadataResponse,
  processTokenResponse,
  validateAuthorizationResponse,
} from '../../src/machines/steps/index.js';
import {
  authorizationServerMetadataCandidates,
  canonicalServerUrl,
  classifyAddress,
  clientIdMetadataUrlProblem,
  isAllowedOAuthUrl,
  originOf,
  protectedResourceMetadataCandidates,
  sameOrigin,
  sameResource,
  splitUrl,
  withQueryParams,
} from '../../src/machines/urls.js';
import { parseWWWAuthenticate, readBearerChallenge } from '../../src/machines/wwwAuthenticate.js';

export const RUNS = Number(process.env.SECURITY_PROPERTY_RUNS ?? (process.env.CI === 'true' ? 10_000 : 1_000));
const opts = { numRuns: RUNS };

// ------------------------------------------------------------------ generators

const anyText = fc.oneof(fc.string({ unit: 'binary', maxLength: 200 }), fc.string({ maxLength: 200 }), fc.string({ unit: 'grapheme-ascii', maxLength: 200 }));
/** Strings built from the characters that matter to URL and header grammars. */
const gritty = (max = 60) =>
  fc.string({
    unit: fc.constantFrom(...'aAzZ09-._~:/?#[]@!$&\'()*+,;=%\\" \t\r\n\u0000\u007f\u00e9\u0430\u202e'.split(''), 'https://', 'http://', '..', '%2e', '%2E', '::', 'xn--'),
    maxLength: max,
  });
const host = fc.oneof(
  fc.constantFrom('as.example', 'AS.example', 'mcp.example', 'localhost', '127.0.0.1', '127.1', '0x7f.1', '2130706433', '[::1]', '[::ffff:7f00:1]', '[fd00::1]', '10.0.0.5', '169.254.169.254', 'xn--s-7sb.example', 'a..b', ''),
  fc.domain(),
  fc.ipV4().map(String),
  fc.ipV6().map((v) => `[${v}]`),
);
const urlish = fc.oneof(
  fc.tuple(fc.constantFrom('https', 'http', 'HTTPS', 'javascript', 'file', 'data', 'ftp'), fc.option(fc.constantFrom('u@', 'u:p@', 'a@b@'), { nil: '' }), host, fc.option(fc.constantFrom(':443', ':80', ':0443', ':8080', ':', ':99999'), { nil: '' }), fc.option(gritty(30), { nil: '' }), fc.option(gritty(15).map((q) => `?${q}`), { nil: '' }), fc.option(gritty(10).map((f) => `#${f}`), { nil: '' })).map(
    ([scheme, userinfo, h, port, path, query, fragment]) => `${scheme}://${userinfo}${h}${port}${path.startsWith('/') || path === '' ? path : `/${path}`}${query}${fragment}`,
  ),
  fc.webUrl({ withQueryParameters: true, withFragments: true }),
  gritty(80),
);

function response(status: number, body: string): HttpResponseData {
  return { status, headers: { 'content-type': 'application/json' }, body };
}
const jsonish = fc.oneof(fc.jsonValue().map((v) => JSON.stringify(v)), anyText);
const field = (names: string[], values: fc.Arbitrary<unknown>) =>
  fc.dictionary(fc.constantFrom(...names, '__proto__', 'constructor', 'x'), values, { maxKeys: names.length + 2 }).map((o) => JSON.stringify(o));
const value = fc.oneof(fc.string({ maxLength: 40 }), urlish, fc.integer(), fc.double(), fc.boolean(), fc.constant(null), fc.array(fc.oneof(fc.string({ maxLength: 20 }), urlish), { maxLength: 20 }), fc.jsonValue());

// ------------------------------------------------------------------ WWW-Authenticate

describe('properties: WWW-Authenticate', () => {
  it('never throws and returns challenges for any input', () => {
    fc.assert(
      fc.property(fc.oneof(anyText, gritty(300)), (header) => {
        const challenges = parseWWWAuthenticate(header);
        expect(Array.isArray(challenges)).toBe(true);
        for (const c of challenges) expect(c.scheme).toBe(c.scheme.toLowerCase());
        readBearerChallenge(header);
        readBearerChallenge([header, header]);
      }),
      opts,
    );
  });

  const token = fc.string({ unit: fc.constantFrom(...'abcXYZ09-_.~!#$%&\'*+^`|'.split('')), minLength: 1, maxLength: 12 });
  const quotedContent = fc.string({ unit: fc.constantFrom(...'ab ,;=\\"\tresource_metadata'.split(''), 'resource_metadata="https://evil.example/"', ', Bearer resource_metadata=', '\\"'), maxLength: 60 });
  const quote = (v: string) => `"${v.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;

  it('a parameter is never picked out of another parameter’s quoted value; quoted values round-trip', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(token, quotedContent), { maxLength: 5 }), fc.option(fc.webUrl(), { nil: undefined }), fc.boolean(), (params, rm, bearerFirst) => {
        const list = params.filter(([name]) => name.toLowerCase() !== 'resource_metadata');
        const names = new Set<string>();
        const unique = list.filter(([name]) => (names.has(name.toLowerCase()) ? false : (names.add(name.toLowerCase()), true)));
        const parts = unique.map(([name, v]) => `${name}=${quote(v)}`);
        if (rm !== undefined) parts.push(`resource_metadata=${quote(rm)}`);
        const bearer = `Bearer ${parts.join(', ')}`;
        const header = bearerFirst ? `${bearer}, Basic realm="x"` : `Basic realm="x", ${bearer}`;
        const parsed = readBearerChallenge(header);
        expect(parsed?.resourceMetadata).toBe(rm);
        const full = parseWWWAuthenticate(header).find((c) => c.scheme === 'bearer');
        for (const [name, v] of unique) expect(full?.params[name.toLowerCase()]).toBe(v);
      }),
      opts,
    );
  });

  it('an unterminated quote never yields a resource_metadata taken from inside it', () => {
    fc.assert(
      fc.property(quotedContent, fc.webUrl(), (inner, url) => {
        const header = `Bearer realm="${inner.replace(/"/g, '')} resource_metadata="${url}`;
        const parsed = readBearerChallenge(header);
        expect(parsed?.resourceMetadata === url && !header.includes(`, resource_metadata="${url}"`)).toBe(false);
      }),
      opts,
    );
  });
});

// ------------------------------------------------------------------ URL rules

describe('properties: URL rules', () => {
  it('sameResource is reflexive on splittable URLs and symmetric; sameOrigin is symmetric and agrees with WHATWG', () => {
    fc.assert(
      fc.property(urlish, urlish, (a, b) => {
        expect(sameResource(a, b)).toBe(sameResource(b, a));
        expect(sameOrigin(a, b)).toBe(sameOrigin(b, a));
        if (splitUrl(a) !== undefined) expect(sameResource(a, a)).toBe(true);
        if (sameOrigin(a, b)) expect(new URL(a).origin).toBe(new URL(b).origin);
        if (sameResource(a, b)) expect(originOf(a)).toBe(originOf(b));
      }),
      opts,
    );
  });

  it('canonicalServerUrl is idempotent and keeps the resource identity; never carries userinfo or fragment', () => {
    fc.assert(
      fc.property(urlish, (u) => {
        if (splitUrl(u) === undefined) return;
        const c = canonicalServerUrl(u);
        expect(canonicalServerUrl(c)).toBe(c);
        expect(splitUrl(c)?.fragment).toBeUndefined();
        expect(splitUrl(c)!.authority.includes('@')).toBe(false);
      }),
      opts,
    );
  });

  it('isAllowedOAuthUrl: only https, or http whose host both parsers see as loopback; never userinfo', () => {
    fc.assert(
      fc.property(urlish, (u) => {
        if (!isAllowedOAuthUrl(u)) return;
        const parsed = new URL(u);
        expect(parsed.username).toBe('');
        expect(parsed.password).toBe('');
        if (parsed.protocol !== 'https:') {
          expect(parsed.protocol).toBe('http:');
          const h = parsed.hostname.startsWith('[') ? parsed.hostname : parsed.hostname;
          expect(classifyAddress(h)).toBe('loopback');
        }
      }),
      opts,
    );
  });

  it('CIMD URL rule: accepted URLs are https, parseable, with a non-root path, no dot segment, userinfo, query or fragment', () => {
    fc.assert(
      fc.property(urlish, (u) => {
        const problem = clientIdMetadataUrlProblem(u);
        if (problem !== undefined) return;
        const raw = splitUrl(u)!;
        expect(raw.scheme.toLowerCase()).toBe('https');
        expect(raw.fragment).toBeUndefined();
        expect(raw.query).toBeUndefined();
        expect(raw.path === '' || raw.path === '/').toBe(false);
        expect(raw.path.split('/').some((s) => ['.', '..'].includes(s.toLowerCase().split('%2e').join('.')))).toBe(false);
        expect(new URL(u).username).toBe('');
      }),
      opts,
    );
  });

  it('discovery candidates stay on the origin they were derived from; issuers with query/fragment/userinfo yield none', () => {
    fc.assert(
      fc.property(urlish, fc.option(urlish, { nil: undefined }), (server, hint) => {
        if (!URL.canParse(server)) return;
        const prm = protectedResourceMetadataCandidates(server, hint);
        expect(prm.length).toBeLessThanOrEqual(3);
        for (const c of prm) if (c.source !== 'header') expect(sameOrigin(c.url, server)).toBe(true);
        const asm = authorizationServerMetadataCandidates(server);
        expect(asm.length).toBeLessThanOrEqual(3);
        const raw = splitUrl(server);
        if (raw && (raw.query !== undefined || raw.fragment !== undefined || raw.authority.includes('@'))) expect(asm).toHaveLength(0);
        for (const c of asm) expect(sameOrigin(c.url, server)).toBe(true);
      }),
      opts,
    );
  });

  it('redirect/authorization targets: withQueryParams keeps the endpoint, adds each parameter exactly once, refuses fragments and duplicates', () => {
    fc.assert(
      fc.property(urlish, fc.dictionary(fc.constantFrom('state', 'code_challenge', 'resource', 'scope', 'client_id', 'redirect_uri'), fc.string({ maxLength: 30 }), { maxKeys: 6 }), (endpoint, params) => {
        const out = withQueryParams(endpoint, params);
        if (out === undefined) return;
        expect(out.startsWith(endpoint)).toBe(true);
        expect(splitUrl(endpoint)?.fragment).toBeUndefined();
        const query = new URLSearchParams(splitUrl(out)?.query ?? '');
        for (const [name, v] of Object.entries(params)) expect(query.getAll(name)).toEqual([v]);
      }),
      opts,
    );
  });

  it('network classes: legacy IPv4 spellings and IPv4-mapped IPv6 classify like the dotted address; classify never throws', () => {
    fc.assert(
      fc.property(fc.tuple(fc.nat(255), fc.nat(255), fc.nat(255), fc.nat(255)), anyText, ([a, b, c, d], junk) => {
        const dotted = `${a}.${b}.${c}.${d}`;
        const n = ((a * 256 + b) * 256 + c) * 256 + d;
        const cls = classifyAddress(dotted);
        expect(cls).toBeDefined();
        expect(classifyAddress(String(n))).toBe(cls);
        expect(classifyAddress(`0x${n.toString(16)}`)).toBe(cls);
        expect(classifyAddress(`${a}.${(b * 256 + c) * 256 + d}`)).toBe(cls);
        expect(classifyAddress(`[::ffff:${dotted}]`)).toBe(cls);
        classifyAddress(junk);
      }),
      opts,
    );
  });

  it('redactUrl never throws and removes code and state values', () => {
    fc.assert(
      fc.property(urlish, fc.string({ unit: fc.constantFrom(...'ABCDEFGHIJKLMNOP0123456789'.split('')), minLength: 16, maxLength: 32 }), (u, secret) => {
        const url = withQueryParams(u, { code: `C${secret}`, state: `S${secret}` });
        if (url === undefined) return;
        const red = redactUrl(url);
        expect(red.includes(`C${secret}`)).toBe(false);
        expect(red.includes(`S${secret}`)).toBe(false);
      }),
      opts,
    );
  });
});

// ------------------------------------------------------------------ schemas and processors

describe('properties: metadata and token-response processors', () => {
  const status = fc.oneof(fc.constant(200), fc.constant(201), fc.integer({ min: 100, max: 599 }));

  it('PRM processor never throws; an accepted document names exactly the expected resource and only https/loopback issuers', () => {
    const candidate = { url: 'https://mcp.example/.well-known/oauth-protected-resource/mcp', expectedResource: 'https://mcp.example/mcp', source: 'path' as const };
    fc.assert(
      fc.property(status, fc.oneof(jsonish, field(['resource', 'authorization_servers', 'scopes_supported', 'resource_name'], fc.oneof(value, fc.constant('https://mcp.example/mcp'), fc.constant(['https://as.example'])))), (code, body) => {
        for (const match of ['exact', 'same-origin'] as const) {
          const out = processResourceMetadataResponse(response(code, body), candidate, match);
          if (!out.ok) {
            expect(out.error.error.code).toMatch(/^prm\.[a-z_]+$/);
            continue;
          }
          if (match === 'exact') expect(sameResource(out.value.resource, candidate.expectedResource)).toBe(true);
          for (const issuer of out.value.authorization_servers) expect(isAllowedOAuthUrl(issuer)).toBe(true);
        }
      }),
      opts,
    );
  });

  it('AS metadata processor never throws; an accepted document echoes the issuer exactly and has safe endpoints', () => {
    const names = ['issuer', 'authorization_endpoint', 'token_endpoint', 'registration_endpoint', 'response_types_supported', 'code_challenge_methods_supported'];
    const v = fc.oneof(value, fc.constantFrom('https://as.example', 'https://as.example/authorize', 'https://as.example/token', 'javascript:alert(1)'), fc.constant(['code']));
    fc.assert(
      fc.property(status, fc.oneof(jsonish, field(names, v)), (code, body) => {
        const out = processAuthorizationServerMetadataResponse(response(code, body), { url: 'https://as.example/.well-known/oauth-authorization-server', kind: 'oauth' }, { issuer: 'https://as.example' });
        if (!out.ok) return void expect(out.error.error.code).toMatch(/^asm\.[a-z_]+$/);
        expect(out.value.issuer).toBe('https://as.example');
        for (const f of ['authorization_endpoint', 'token_endpoint', 'registration_endpoint'] as const) if (out.value[f] !== undefined) expect(isAllowedOAuthUrl(out.value[f]!)).toBe(true);
        expect(splitUrl(out.value.authorization_endpoint)?.fragment).toBeUndefined();
      }),
      opts,
    );
  });

  it('token processor never throws; an accepted response is a bearer token with a non-empty access_token and a finite expiry', () => {
    const names = ['access_token', 'token_type', 'expires_in', 'refresh_token', 'scope', 'error', 'error_description'];
    const v = fc.oneof(value, fc.constantFrom('Bearer', 'bearer', 'BEARER', 'DPoP', 'mac', '3600', '1e400', '-5', 'NaN', 'Infinity'), fc.double(), fc.integer());
    fc.assert(
      fc.property(status, fc.oneof(jsonish, field(names, v)), (code, body) => {
        const out = processTokenResponse(response(code, body), { at: 1_000_000, issuer: 'https://as.example', resource: 'https://mcp.example/mcp', minLifetimeSeconds: 0, maxLifetimeSeconds: 86_400 });
        if (!out.ok) {
          expect(out.error.code).toMatch(/^token\.[a-z0-9_]{1,64}$/i);
          expect(out.error.message.length).toBeLessThan(700);
          return;
        }
        expect(typeof out.value.access_token).toBe('string');
        expect(out.value.access_token.length).toBeGreaterThan(0);
        expect(out.value.token_type).toBe('bearer');
        if (out.value.expires_at !== undefined) {
          expect(Number.isFinite(out.value.expires_at)).toBe(true);
          expect(out.value.expires_at).toBeGreaterThanOrEqual(1_000_000);
          expect(out.value.expires_at).toBeLessThanOrEqual(1_000_000 + 86_400_000);
        }
      }),
      opts,
    );
  });

  it('registration processor never throws; an accepted client has a non-empty client_id and keeps our redirect URI', () => {
    const names = ['client_id', 'client_secret', 'client_secret_expires_at', 'token_endpoint_auth_method', 'redirect_uris', 'error', 'error_description'];
    const v = fc.oneof(value, fc.constantFrom('none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt'), fc.constant(['http://127.0.0.1:9/callback']));
    fc.assert(
      fc.property(status, fc.oneof(jsonish, field(names, v)), (code, body) => {
        const out = processRegistrationResponse(response(code, body), { issuer: 'https://as.example', redirectUri: 'http://127.0.0.1:9/callback', requestedMethod: 'none' });
        if (!out.ok) return void expect(out.error.code).toMatch(/^registration\.[a-z0-9_]{1,64}$/i);
        expect(out.value.client_id.length).toBeGreaterThan(0);
        expect(out.value.redirect_uris).toContain('http://127.0.0.1:9/callback');
        if (out.value.token_endpoint_auth_method !== 'none') expect(out.value.client_secret).toBeDefined();
      }),
      opts,
    );
  });

  it('authorization-response validator never throws; a code is only returned for the exact state and an acceptable iss', () => {
    const param = fc.oneof(fc.string({ maxLength: 20 }), fc.constantFrom('S', 'https://as.example', 'https://as.example/', 'c'), fc.array(fc.constantFrom('S', 'x'), { minLength: 2, maxLength: 3 }));
    fc.assert(
      fc.property(fc.dictionary(fc.constantFrom('code', 'state', 'iss', 'error', 'error_description', 'access_token'), param, { maxKeys: 6 }), fc.boolean(), (params, advertised) => {
        const verdict = validateAuthorizationResponse(params, { state: 'S', issuer: 'https://as.example', issAdvertised: advertised });
        if (verdict.kind !== 'code') return;
        expect(params.state).toBe('S');
        if (advertised) expect(params.iss).toBe('https://as.example');
        else expect(params.iss === undefined || params.iss === 'https://as.example').toBe(true);
        expect(params.error).toBeUndefined();
      }),
      opts,
    );
  });
});
