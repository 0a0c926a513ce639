import { describe, it, expect } from 'vitest';
import {
  MAX_WWW_AUTHENTICATE_LENGTH,
  parseWWWAuthenticate,
  readBearerChallenge,
  type Challenge,
} from '../../src/machines/wwwAuthenticate.js';

/** Plain objects so that assertions compare content, whatever prototype the parser uses. */
function plain(challenges: Challenge[]): unknown[] {
  return challenges.map((c) => ({
    scheme: c.scheme,
    params: { ...c.params },
    ...(c.token68 === undefined ? {} : { token68: c.token68 }),
  }));
}

// Adapted from Reschke's HTTP authentication test cases (via oauth4webapi's table). Where that table
// lets a duplicate parameter overwrite, this parser drops the challenge (the project's rule).
const vectors: { name: string; header: string; expected: unknown[] }[] = [
  { name: 'empty', header: '', expected: [] },
  { name: 'only a comma', header: ',', expected: [] },
  { name: 'only empty elements', header: ' , ,, ', expected: [] },
  { name: 'bare scheme', header: 'Bearer', expected: [{ scheme: 'bearer', params: {} }] },
  {
    name: 'two bare schemes',
    header: 'Scheme, DPoP',
    expected: [
      { scheme: 'scheme', params: {} },
      { scheme: 'dpop', params: {} },
    ],
  },
  { name: 'simple', header: 'Scheme realm="foo"', expected: [{ scheme: 'scheme', params: { realm: 'foo' } }] },
  { name: 'upper case scheme and name', header: 'SCHEME REALM="foo"', expected: [{ scheme: 'scheme', params: { realm: 'foo' } }] },
  { name: 'token value', header: 'Scheme realm=foo', expected: [{ scheme: 'scheme', params: { realm: 'foo' } }] },
  { name: 'single quotes are just token characters', header: "Scheme realm='foo'", expected: [{ scheme: 'scheme', params: { realm: "'foo'" } }] },
  { name: 'percent is not special', header: 'Scheme realm="foo%20bar"', expected: [{ scheme: 'scheme', params: { realm: 'foo%20bar' } }] },
  { name: 'BWS around =', header: 'Scheme realm = "foo"', expected: [{ scheme: 'scheme', params: { realm: 'foo' } }] },
  { name: 'escaped quotes', header: 'Scheme realm="\\"foo\\""', expected: [{ scheme: 'scheme', params: { realm: '"foo"' } }] },
  { name: 'escaped backslash', header: 'Bearer error_description="bad \\\\ token"', expected: [{ scheme: 'bearer', params: { error_description: 'bad \\ token' } }] },
  { name: 'escaped ordinary character', header: 'Bearer error_description="a\\bc"', expected: [{ scheme: 'bearer', params: { error_description: 'abc' } }] },
  {
    name: 'extra params with empty elements',
    header: 'Scheme realm="foo", bar="xyz",, a=b,,,c=d',
    expected: [{ scheme: 'scheme', params: { realm: 'foo', bar: 'xyz', a: 'b', c: 'd' } }],
  },
  { name: 'leading empty element', header: ',Scheme realm="basic"', expected: [{ scheme: 'scheme', params: { realm: 'basic' } }] },
  { name: 'trailing comma', header: 'Bearer realm="foo",', expected: [{ scheme: 'bearer', params: { realm: 'foo' } }] },
  { name: 'comma after scheme', header: 'Scheme , realm="foo"', expected: [{ scheme: 'scheme', params: { realm: 'foo' } }] },
  {
    name: 'two challenges, quoted-string escapes in the first',
    header: 'Newauth realm="apps", type=1, title="Login to \\"apps\\"", Scheme realm="simple" ',
    expected: [
      { scheme: 'newauth', params: { realm: 'apps', type: '1', title: 'Login to "apps"' } },
      { scheme: 'scheme', params: { realm: 'simple' } },
    ],
  },
  {
    name: 'quoted value containing "realm="',
    header: 'Scheme foo="realm=nottherealm", realm="basic"',
    expected: [{ scheme: 'scheme', params: { foo: 'realm=nottherealm', realm: 'basic' } }],
  },
  {
    name: 'quoted value containing a comma and another challenge',
    header: 'Basic realm="a, Bearer resource_metadata=x", Bearer scope="s"',
    expected: [
      { scheme: 'basic', params: { realm: 'a, Bearer resource_metadata=x' } },
      { scheme: 'bearer', params: { scope: 's' } },
    ],
  },
  { name: 'token68 without padding', header: 'NTLS Y2hhbGxlbmdl', expected: [{ scheme: 'ntls', params: {}, token68: 'Y2hhbGxlbmdl' }] },
  { name: 'token68 with padding', header: 'Negotiate abc==', expected: [{ scheme: 'negotiate', params: {}, token68: 'abc==' }] },
  { name: 'token68 with / and +', header: 'Negotiate YII/+w==', expected: [{ scheme: 'negotiate', params: {}, token68: 'YII/+w==' }] },
  {
    name: 'token68 then another challenge',
    header: 'Negotiate abc123==, Basic realm="test"',
    expected: [
      { scheme: 'negotiate', params: {}, token68: 'abc123==' },
      { scheme: 'basic', params: { realm: 'test' } },
    ],
  },
  {
    name: 'token68 followed by an auth-param is dropped',
    header: 'Negotiate abc123==, realm="ignored", Basic realm="b"',
    expected: [{ scheme: 'basic', params: { realm: 'b' } }],
  },
  { name: 'missing value read as token68 (grammar)', header: 'Bearer error=', expected: [{ scheme: 'bearer', params: {}, token68: 'error=' }] },
  { name: 'unterminated quote', header: 'Scheme realm="basic', expected: [] },
  { name: 'stray escape leaves the quote unterminated', header: 'Bearer error="bad\\escape\\"', expected: [] },
  { name: 'token value with backslashes', header: 'Scheme realm=\\f\\o\\o', expected: [] },
  { name: 'duplicate parameter', header: 'Bearer error="a", error="b"', expected: [] },
  { name: 'duplicate parameter, case-insensitive', header: 'Bearer scope="a", SCOPE="b"', expected: [] },
  { name: 'missing =', header: 'Bearer error"invalid_token"', expected: [] },
  { name: 'parameter without a scheme', header: 'error="invalid_token"', expected: [] },
  { name: 'garbage', header: '%%%%%%%', expected: [{ scheme: '%%%%%%%', params: {} }] },
  { name: 'non-token garbage', header: '???', expected: [] },
  {
    name: 'two params without a comma',
    header: 'Bearer realm="x" error="y", Basic realm="b"',
    expected: [{ scheme: 'basic', params: { realm: 'b' } }],
  },
  {
    name: 'control character inside a quoted value',
    header: 'Bearer error_description="a\r\nSet-Cookie: x", Basic realm="b"',
    expected: [{ scheme: 'basic', params: { realm: 'b' } }],
  },
  {
    name: 'weird spacing',
    header: 'Bearer   realm =   "something"   ,error="bad_token" ,  error_description = " spaced "',
    expected: [{ scheme: 'bearer', params: { realm: 'something', error: 'bad_token', error_description: ' spaced ' } }],
  },
  {
    name: 'malformed middle challenge resynchronises at the next scheme',
    header: 'Bearer realm="foo", Digest ??, Basic realm="bar"',
    expected: [
      { scheme: 'bearer', params: { realm: 'foo' } },
      { scheme: 'basic', params: { realm: 'bar' } },
    ],
  },
  {
    name: 'malformed param spoils only its own challenge',
    header: 'Basic realm="x", Bearer error=\\bad, resource_metadata="https://evil.example", DPoP algs="ES256"',
    expected: [
      { scheme: 'basic', params: { realm: 'x' } },
      { scheme: 'dpop', params: { algs: 'ES256' } },
    ],
  },
];

describe('parseWWWAuthenticate', () => {
  for (const v of vectors) {
    it(v.name, () => {
      expect(plain(parseWWWAuthenticate(v.header))).toEqual(v.expected);
    });
  }

  it('never picks a parameter out of another parameter\'s quoted value', () => {
    const [c] = parseWWWAuthenticate('Bearer realm="resource_metadata=https://evil.example/prm"');
    expect(c?.params.resource_metadata).toBeUndefined();
    expect(c?.params.realm).toBe('resource_metadata=https://evil.example/prm');
  });

  it('keeps __proto__ as an ordinary parameter', () => {
    const [c] = parseWWWAuthenticate('Bearer __proto__="x", constructor="y"');
    expect(c?.params.__proto__).toBe('x');
    expect(Object.keys(c?.params ?? {})).toEqual(['__proto__', 'constructor']);
    expect(({} as Record<string, unknown>).x).toBeUndefined();
  });

  it('refuses a value longer than the cap instead of truncating it', () => {
    const head = 'Bearer scope="a", resource_metadata="https://mcp.example/prm", realm="';
    const exact = head + 'x'.repeat(MAX_WWW_AUTHENTICATE_LENGTH - head.length - 1) + '"';
    expect(exact.length).toBe(MAX_WWW_AUTHENTICATE_LENGTH);
    expect(parseWWWAuthenticate(exact)).toHaveLength(1);
    expect(parseWWWAuthenticate(exact + ' ')).toEqual([]);
  });

  it('stays linear on hostile input', () => {
    const evil = [
      'a'.repeat(16_000),
      '"'.repeat(16_000),
      '\\'.repeat(16_000),
      'B '.repeat(8_000),
      'a=,'.repeat(5_000),
      'Bearer ' + 'x="\\"'.repeat(3_000),
    ];
    const started = performance.now();
    for (let round = 0; round < 20; round++) for (const h of evil) parseWWWAuthenticate(h);
    expect(performance.now() - started).toBeLessThan(2_000);
  });

  it('does not throw on non-string input', () => {
    expect(parseWWWAuthenticate(undefined as unknown as string)).toEqual([]);
  });
});

describe('readBearerChallenge', () => {
  it('reads the MCP parameters from a Bearer challenge among others', () => {
    const header =
      'Basic realm="x", Bearer error="insufficient_scope", scope="files:read files:write", ' +
      'resource_metadata="https://mcp.example/.well-known/oauth-protected-resource/mcp", ' +
      'error_description="need \\"write\\""';
    expect(readBearerChallenge(header)).toEqual({
      scheme: 'bearer',
      error: 'insufficient_scope',
      scope: 'files:read files:write',
      resourceMetadata: 'https://mcp.example/.well-known/oauth-protected-resource/mcp',
      errorDescription: 'need "write"',
    });
  });

  it('prefers Bearer over an earlier DPoP challenge', () => {
    expect(readBearerChallenge('DPoP algs="ES256", Bearer scope="a"')).toEqual({ scheme: 'bearer', scope: 'a' });
  });

  it('falls back to DPoP', () => {
    expect(readBearerChallenge('DPoP error="use_dpop_nonce", algs="ES256 PS256"')).toEqual({
      scheme: 'dpop',
      error: 'use_dpop_nonce',
      algs: 'ES256 PS256',
    });
  });

  it('matches the scheme case-insensitively', () => {
    expect(readBearerChallenge('BEARER Resource_Metadata="https://a.example/prm"')).toEqual({
      scheme: 'bearer',
      resourceMetadata: 'https://a.example/prm',
    });
  });

  it('accepts several header lines and keeps a broken line from swallowing the next', () => {
    expect(readBearerChallenge(['Basic realm="unterminated', 'Bearer scope="s"'])).toEqual({ scheme: 'bearer', scope: 's' });
  });

  it('returns undefined without a Bearer or DPoP challenge', () => {
    expect(readBearerChallenge('Basic realm="x"')).toBeUndefined();
    expect(readBearerChallenge('')).toBeUndefined();
    expect(readBearerChallenge(undefined)).toBeUndefined();
    expect(readBearerChallenge(null)).toBeUndefined();
    expect(readBearerChallenge([])).toBeUndefined();
  });

  it('drops a Bearer challenge with a duplicate resource_metadata', () => {
    expect(
      readBearerChallenge('Bearer resource_metadata="https://a.example/prm", resource_metadata="https://evil.example/prm"'),
    ).toBeUndefined();
  });

  it('returns no resource_metadata hidden inside realm', () => {
    expect(readBearerChallenge('Bearer realm="resource_metadata=https://evil"')).toEqual({ scheme: 'bearer' });
  });

  it('applies the cap to the lines together', () => {
    const half = 'Basic realm="' + 'x'.repeat(MAX_WWW_AUTHENTICATE_LENGTH / 2) + '"';
    expect(readBearerChallenge([half, half, 'Bearer scope="s"'])).toBeUndefined();
    expect(readBearerChallenge([half, 'Bearer scope="s"'])).toEqual({ scheme: 'bearer', scope: 's' });
    expect(readBearerChallenge(['Basic realm="x"', 'Bearer scope="s"'])).toEqual({ scheme: 'bearer', scope: 's' });
  });
});
