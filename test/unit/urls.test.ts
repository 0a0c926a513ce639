import { describe, it, expect } from 'vitest';
import {
  authorizationServerMetadataCandidates,
  canonicalServerUrl,
  classifyAddress,
  clientIdMetadataUrlProblem,
  isAllowedOAuthUrl,
  legacyAuthorizationBase,
  networkClassAllowed,
  originOf,
  protectedResourceMetadataCandidates,
  sameOrigin,
  sameResource,
  splitUrl,
  withQueryParams,
} from '../../src/machines/urls.js';

describe('splitUrl', () => {
  it('splits without normalising', () => {
    expect(splitUrl('HTTPS://User@MCP.Example:0443/a/%2e/b?x=1&y#frag')).toEqual({
      scheme: 'HTTPS',
      authority: 'User@MCP.Example:0443',
      host: 'MCP.Example',
      port: '0443',
      path: '/a/%2e/b',
      query: 'x=1&y',
      fragment: 'frag',
    });
  });

  it('distinguishes an empty query and fragment from none', () => {
    expect(splitUrl('https://a.example?#')).toMatchObject({ path: '', query: '', fragment: '' });
    expect(splitUrl('https://a.example')).toMatchObject({ path: '', query: undefined, fragment: undefined });
  });

  it('splits bracketed IPv6 hosts', () => {
    expect(splitUrl('http://[::1]:8080/cb')).toMatchObject({ host: '[::1]', port: '8080', path: '/cb' });
  });

  it.each([
    'mailto:a@b.example',
    'https:/a.example/x',
    'https:a.example',
    '//a.example/x',
    '/relative',
    'https://',
    'https:///x',
    'https://user@/x',
    'https://a.example:port/',
    'https://a.example:65536/',
    'https://[::1/',
    'https://[not-ip]/',
    'https://a.example\\@b.example/',
    ' https://a.example/',
    'https://a.example/\tx',
    'https://a b.example/',
    'https://%61.example/',
    'ftp://a.example/',
  ])('refuses %j', (value) => {
    expect(splitUrl(value)).toBeUndefined();
  });
});

describe('sameResource (policy 1)', () => {
  const table: [string, string, boolean][] = [
    ['https://mcp.example/mcp', 'https://mcp.example/mcp', true],
    ['https://mcp.example/mcp', 'HTTPS://MCP.EXAMPLE/mcp', true],
    ['https://mcp.example', 'https://mcp.example/', true],
    ['https://mcp.example/', 'https://mcp.example', true],
    ['https://mcp.example/mcp', 'https://mcp.example/mcp/', false],
    ['https://mcp.example/mcp', 'https://mcp.example:443/mcp', false],
    ['https://mcp.example/mcp', 'https://mcp.example:/mcp', false],
    ['https://mcp.example/mcp', 'https://mcp.example/MCP', false],
    ['https://mcp.example/mcp', 'https://mcp.example/mcp?tenant=a', false],
    ['https://mcp.example/mcp', 'https://mcp.example/mcp?', false],
    ['https://mcp.example/mcp?a=1&b=2', 'https://mcp.example/mcp?b=2&a=1', false],
    ['https://mcp.example/mcp', 'https://mcp.example/mcp#x', false],
    ['https://mcp.example/a%20b', 'https://mcp.example/a b', false],
    ['https://mcp.example/a%2Fb', 'https://mcp.example/a%2fb', false],
    ['https://mcp.example/%6dcp', 'https://mcp.example/mcp', false],
    ['https://mcp.example/a/../mcp', 'https://mcp.example/mcp', false],
    ['http://mcp.example/mcp', 'https://mcp.example/mcp', false],
    ['https://mcp.example/mcp', 'https://bank-mcp.example/mcp', false],
    ['https://u@mcp.example/mcp', 'https://mcp.example/mcp', false],
    ['https://mcp.example:8443/mcp', 'https://mcp.example:8443/mcp', true],
    ['not a url', 'not a url', false],
  ];
  it.each(table)('%s vs %s → %s', (a, b, expected) => {
    expect(sameResource(a, b)).toBe(expected);
    expect(sameResource(b, a)).toBe(expected);
  });
});

describe('canonicalServerUrl', () => {
  it.each([
    ['HTTPS://MCP.Example/MCP?Q=A#frag', 'https://mcp.example/MCP?Q=A'],
    ['https://mcp.example', 'https://mcp.example'],
    ['https://mcp.example/', 'https://mcp.example/'],
    ['https://mcp.example/mcp/', 'https://mcp.example/mcp/'],
    ['https://mcp.example:8443/mcp', 'https://mcp.example:8443/mcp'],
    ['https://user:pw@mcp.example/mcp', 'https://mcp.example/mcp'],
  ])('%s → %s', (input, expected) => {
    expect(canonicalServerUrl(input)).toBe(expected);
  });

  it('throws on a non-http(s) URL', () => {
    expect(() => canonicalServerUrl('javascript:alert(1)')).toThrow(TypeError);
  });
});

describe('origins', () => {
  it('originOf lower-cases and keeps the port as written', () => {
    expect(originOf('HTTPS://MCP.Example:8443/a?b#c')).toBe('https://mcp.example:8443');
    expect(originOf('https://u:p@mcp.example/a')).toBe('https://mcp.example');
    expect(originOf('http://[::1]:3000/mcp')).toBe('http://[::1]:3000');
  });

  it.each([
    ['https://mcp.example/a', 'https://MCP.example/b?x', true],
    ['https://mcp.example/a', 'http://mcp.example/a', false],
    ['https://mcp.example/a', 'https://mcp.example:8443/a', false],
    ['https://mcp.example/a', 'https://evil.example/a', false],
    ['https://mcp.example/a', 'https://mcp.example.evil.example/a', false],
    ['https://mcp.example/a', 'https://mcp.example@evil.example/a', false],
    ['https://127.0.0.1/', 'https://0x7f.1/', false],
    ['https://mcp.example/a', 'javascript:alert(1)', false],
  ])('sameOrigin(%s, %s) → %s', (a, b, expected) => {
    expect(sameOrigin(a, b)).toBe(expected);
  });
});

describe('protectedResourceMetadataCandidates', () => {
  it('root server URL: root well-known only', () => {
    expect(protectedResourceMetadataCandidates('https://mcp.example')).toEqual([
      { url: 'https://mcp.example/.well-known/oauth-protected-resource', expectedResource: 'https://mcp.example', source: 'root' },
    ]);
    expect(protectedResourceMetadataCandidates('https://mcp.example/')).toEqual([
      { url: 'https://mcp.example/.well-known/oauth-protected-resource', expectedResource: 'https://mcp.example', source: 'root' },
    ]);
  });

  it('path server URL: path-aware then root', () => {
    expect(protectedResourceMetadataCandidates('https://MCP.example/public/mcp?x=1')).toEqual([
      {
        url: 'https://mcp.example/.well-known/oauth-protected-resource/public/mcp',
        expectedResource: 'https://mcp.example/public/mcp?x=1',
        source: 'path',
      },
      { url: 'https://mcp.example/.well-known/oauth-protected-resource', expectedResource: 'https://mcp.example', source: 'root' },
    ]);
  });

  it('trailing slash is removed before inserting, but the expected resource keeps it', () => {
    expect(protectedResourceMetadataCandidates('https://mcp.example/mcp/')).toEqual([
      {
        url: 'https://mcp.example/.well-known/oauth-protected-resource/mcp',
        expectedResource: 'https://mcp.example/mcp/',
        source: 'path',
      },
      { url: 'https://mcp.example/.well-known/oauth-protected-resource', expectedResource: 'https://mcp.example', source: 'root' },
    ]);
  });

  it('header URL first, expecting the server URL', () => {
    const list = protectedResourceMetadataCandidates('http://localhost:3000/mcp', 'http://localhost:3000/custom/prm');
    expect(list.map((c) => [c.source, c.url, c.expectedResource])).toEqual([
      ['header', 'http://localhost:3000/custom/prm', 'http://localhost:3000/mcp'],
      ['path', 'http://localhost:3000/.well-known/oauth-protected-resource/mcp', 'http://localhost:3000/mcp'],
      ['root', 'http://localhost:3000/.well-known/oauth-protected-resource', 'http://localhost:3000'],
    ]);
  });

  it('de-duplicates, keeping the header entry', () => {
    const list = protectedResourceMetadataCandidates(
      'https://mcp.example/mcp',
      'https://mcp.example/.well-known/oauth-protected-resource/mcp',
    );
    expect(list.map((c) => c.source)).toEqual(['header', 'root']);
  });

  it('ignores a relative or invalid header URL', () => {
    for (const header of ['/.well-known/oauth-protected-resource', 'not a url', 'javascript:alert(1)', '']) {
      expect(protectedResourceMetadataCandidates('https://mcp.example/mcp', header).map((c) => c.source)).toEqual(['path', 'root']);
    }
  });

  it('returns nothing for an invalid server URL', () => {
    expect(protectedResourceMetadataCandidates('mcp.example/mcp')).toEqual([]);
  });
});

describe('authorizationServerMetadataCandidates', () => {
  it('issuer with a path: oauth insert, oidc insert, oidc append', () => {
    expect(authorizationServerMetadataCandidates('https://as.example/tenant1')).toEqual([
      { url: 'https://as.example/.well-known/oauth-authorization-server/tenant1', kind: 'oauth' },
      { url: 'https://as.example/.well-known/openid-configuration/tenant1', kind: 'oidc' },
      { url: 'https://as.example/tenant1/.well-known/openid-configuration', kind: 'oidc' },
    ]);
  });

  it('issuer with a trailing slash', () => {
    expect(authorizationServerMetadataCandidates('https://as.example/tenant1/').map((c) => c.url)).toEqual([
      'https://as.example/.well-known/oauth-authorization-server/tenant1',
      'https://as.example/.well-known/openid-configuration/tenant1',
      'https://as.example/tenant1/.well-known/openid-configuration',
    ]);
  });

  it('root issuer, with and without slash', () => {
    const expected = [
      { url: 'https://as.example/.well-known/oauth-authorization-server', kind: 'oauth' },
      { url: 'https://as.example/.well-known/openid-configuration', kind: 'oidc' },
    ];
    expect(authorizationServerMetadataCandidates('https://as.example')).toEqual(expected);
    expect(authorizationServerMetadataCandidates('https://as.example/')).toEqual(expected);
  });

  it('refuses issuers with a query, fragment or userinfo', () => {
    expect(authorizationServerMetadataCandidates('https://as.example/t?x=1')).toEqual([]);
    expect(authorizationServerMetadataCandidates('https://as.example/t#f')).toEqual([]);
    expect(authorizationServerMetadataCandidates('https://u@as.example/t')).toEqual([]);
    expect(authorizationServerMetadataCandidates('as.example')).toEqual([]);
  });
});

describe('legacyAuthorizationBase', () => {
  it('uses the server origin', () => {
    expect(legacyAuthorizationBase('https://MCP.example:8443/v1/mcp?x#y')).toEqual({
      issuer: 'https://mcp.example:8443',
      candidates: [
        { url: 'https://mcp.example:8443/.well-known/oauth-authorization-server', kind: 'oauth' },
        { url: 'https://mcp.example:8443/.well-known/openid-configuration', kind: 'oidc' },
      ],
      authorizationEndpoint: 'https://mcp.example:8443/authorize',
      tokenEndpoint: 'https://mcp.example:8443/token',
      registrationEndpoint: 'https://mcp.example:8443/register',
    });
  });
});

describe('clientIdMetadataUrlProblem', () => {
  it.each([
    ['https://app.example/oauth/client.json', undefined],
    ['https://app.example/c', undefined],
    ['http://app.example/client.json', 'not_https'],
    ['HTTP://app.example/client.json', 'not_https'],
    ['javascript:alert(1)', 'not_https'],
    ['https://app.example', 'root_path'],
    ['https://app.example/', 'root_path'],
    ['https://app.example/client.json#x', 'fragment'],
    ['https://app.example/client.json#', 'fragment'],
    ['https://user@app.example/client.json', 'userinfo'],
    ['https://app.example/a/../client.json', 'dot_segment'],
    ['https://app.example/./client.json', 'dot_segment'],
    ['https://app.example/a/%2e%2E/client.json', 'dot_segment'],
    ['https://app.example/a/.%2e', 'dot_segment'],
    ['https://app.example/client.json?v=1', 'query'],
    ['https://app.example/client.json?', 'query'],
    ['not a url', 'invalid'],
    ['https://app.example\\client.json', 'invalid'],
    ['', 'invalid'],
  ])('%j → %s', (url, problem) => {
    expect(clientIdMetadataUrlProblem(url)).toBe(problem);
  });

  it('does not mistake dots inside a segment for a dot segment', () => {
    expect(clientIdMetadataUrlProblem('https://app.example/.well-known/client...json')).toBeUndefined();
  });
});

describe('isAllowedOAuthUrl', () => {
  it.each([
    ['https://as.example/authorize', true],
    ['HTTPS://as.example/token', true],
    ['http://127.0.0.1:8080/callback', true],
    ['http://127.5.6.7/', true],
    ['http://localhost:3000/token', true],
    ['http://LOCALHOST/token', true],
    ['http://app.localhost/token', true],
    ['http://[::1]:3000/token', true],
    ['http://as.example/authorize', false],
    ['http://10.0.0.5/token', false],
    ['http://localhost.evil.example/', false],
    ['http://127.0.0.1.evil.example/', false],
    ['javascript:alert(1)', false],
    [' JaVaScRiPt:alert(1)', false],
    ['data:text/html,<script>alert(1)</script>', false],
    ['file:///etc/passwd', false],
    ['vbscript:msgbox(1)', false],
    ['ms-settings:', false],
    ['smb://evil.example/share', false],
    ['https://user:pw@as.example/token', false],
    ['https://as.example@evil.example/authorize', false],
    ['http://user@localhost/', false],
    ['https://as.example/auth\u0000ize', false],
    ['not a url', false],
  ])('%j → %s', (url, allowed) => {
    expect(isAllowedOAuthUrl(url)).toBe(allowed);
  });
});

describe('withQueryParams', () => {
  it('appends, form-encoding the values', () => {
    expect(
      withQueryParams('https://as.example/authorize', {
        response_type: 'code',
        scope: 'files:read files:write',
        resource: 'https://mcp.example/mcp',
        state: undefined,
      }),
    ).toBe(
      'https://as.example/authorize?response_type=code&scope=files%3Aread+files%3Awrite&resource=https%3A%2F%2Fmcp.example%2Fmcp',
    );
  });

  it('keeps an existing query as written', () => {
    expect(withQueryParams('https://as.example/authorize?tenant=A%20B', { client_id: 'c' })).toBe(
      'https://as.example/authorize?tenant=A%20B&client_id=c',
    );
    expect(withQueryParams('https://as.example/authorize?', { client_id: 'c' })).toBe('https://as.example/authorize?client_id=c');
    expect(withQueryParams('https://as.example/authorize?a=1&', { client_id: 'c' })).toBe(
      'https://as.example/authorize?a=1&client_id=c',
    );
  });

  it('rejects an endpoint with a fragment', () => {
    expect(withQueryParams('https://as.example/authorize#frag', { client_id: 'c' })).toBeUndefined();
    expect(withQueryParams('https://as.example/authorize#', { client_id: 'c' })).toBeUndefined();
  });

  it('rejects a parameter the endpoint already carries, however it is encoded', () => {
    expect(withQueryParams('https://as.example/authorize?client_id=evil', { client_id: 'c' })).toBeUndefined();
    expect(withQueryParams('https://as.example/authorize?redirect%5Furi=x', { redirect_uri: 'y' })).toBeUndefined();
    expect(withQueryParams('https://as.example/authorize?state', { state: 's' })).toBeUndefined();
  });

  it('ignores a parameter that is undefined even if present', () => {
    expect(withQueryParams('https://as.example/authorize?state=x', { state: undefined, a: 'b' })).toBe(
      'https://as.example/authorize?state=x&a=b',
    );
  });

  it('rejects a non-http(s) endpoint', () => {
    expect(withQueryParams('javascript:alert(1)', { a: 'b' })).toBeUndefined();
  });
});

describe('classifyAddress', () => {
  it.each([
    ['127.0.0.1', 'loopback'],
    ['127.255.255.254', 'loopback'],
    ['0177.0.0.1', 'loopback'],
    ['0x7f.1', 'loopback'],
    ['0X7F.0.0.1', 'loopback'],
    ['127.1', 'loopback'],
    ['2130706433', 'loopback'],
    ['017700000001', 'loopback'],
    ['0x7f000001', 'loopback'],
    ['127.0.0.1.', 'loopback'],
    ['localhost', 'loopback'],
    ['LocalHost', 'loopback'],
    ['localhost.', 'loopback'],
    ['app.localhost', 'loopback'],
    ['::1', 'loopback'],
    ['[::1]', 'loopback'],
    ['[0:0:0:0:0:0:0:1]', 'loopback'],
    ['[::ffff:127.0.0.1]', 'loopback'],
    ['[::ffff:7f00:1]', 'loopback'],
    ['0.0.0.0', 'loopback'],
    ['0', 'loopback'],
    ['[::]', 'loopback'],
    ['10.0.0.5', 'private'],
    ['012.0.0.5', 'private'],
    ['167772165', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['169.254.169.254', 'private'],
    ['0xa9.0xfe.0xa9.0xfe', 'private'],
    ['2852039166', 'private'],
    ['100.64.0.1', 'private'],
    ['100.127.255.255', 'private'],
    ['0.1.2.3', 'private'],
    ['224.0.0.1', 'private'],
    ['255.255.255.255', 'private'],
    ['198.18.0.1', 'private'],
    ['[::ffff:169.254.169.254]', 'private'],
    ['[::ffff:a9fe:a9fe]', 'private'],
    ['[fd00::1]', 'private'],
    ['fc00::1', 'private'],
    ['[fe80::1]', 'private'],
    ['fe80::1%eth0', 'private'],
    ['[ff02::1]', 'private'],
    ['[64:ff9b::a9fe:a9fe]', 'private'],
    ['[64:ff9b::7f00:1]', 'private'],
    ['[2002:7f00:1::]', 'private'],
    ['[2001:db8::1]', 'private'],
    ['[::127.0.0.1]', 'loopback'],
    ['8.8.8.8', 'public'],
    ['172.32.0.1', 'public'],
    ['100.128.0.1', 'public'],
    ['1.1.1.1.', 'public'],
    ['[2606:4700:4700::1111]', 'public'],
    ['[::ffff:8.8.8.8]', 'public'],
    ['[64:ff9b::808:808]', 'public'],
  ] as const)('%s → %s', (host, expected) => {
    expect(classifyAddress(host)).toBe(expected);
  });

  it('classifies percent-encoded and fullwidth forms as the URL parser will resolve them', () => {
    expect(classifyAddress('%31%32%37.0.0.1')).toBe('loopback');
    expect(classifyAddress('１２７.０.０.１')).toBe('loopback');
    expect(classifyAddress('１０.０.０.１')).toBe('private');
  });

  it.each([
    'mcp.example',
    'localhost.evil.example',
    '127.0.0.1.nip.io',
    '1.2.3.4.5',
    '256.0.0.1',
    '0x100000000',
    '09.0.0.1',
    '[127.0.0.1]',
    '[::1',
    '127.0.0.1:80',
    '',
    '1::2::3',
    'evil.example/@127.0.0.1',
  ])('returns undefined for %j', (host) => {
    expect(classifyAddress(host)).toBeUndefined();
  });

  it('agrees with the WHATWG parser on legacy IPv4 forms', () => {
    for (const host of ['0177.0.0.1', '0x7f.1', '2130706433', '127.1', '10.1', '0xa9fea9fe', '192.0x00A8.1']) {
      const normalised = new URL(`http://${host}/`).hostname;
      expect(classifyAddress(host)).toBe(classifyAddress(normalised));
    }
  });
});

describe('networkClassAllowed (policy 6)', () => {
  it.each([
    ['public', 'public', true],
    ['public', 'private', false],
    ['public', 'loopback', false],
    ['private', 'public', true],
    ['private', 'private', true],
    ['private', 'loopback', false],
    ['loopback', 'public', true],
    ['loopback', 'private', true],
    ['loopback', 'loopback', true],
  ] as const)('configured %s, target %s → %s', (configured, target, allowed) => {
    expect(networkClassAllowed(configured, target)).toBe(allowed);
  });
});
