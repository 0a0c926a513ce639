/**
 * The request path's helpers: the cached origin check must give `sameOrigin`'s verdict on every
 * input, and the header helpers replace the caller's `authorization` (any case, any header form)
 * without touching the rest or the caller's own object.
 */
import { describe, expect, it } from 'vitest';
import { fetchHeadersWith, ServerOriginCheck, withAuthorization } from '../../src/adapters/session.js';
import { sameOrigin } from '../../src/machines/urls.js';

const SERVERS = [
  'http://127.0.0.1:3000/mcp',
  'https://mcp.example/mcp',
  'https://MCP.Example/mcp',
  'https://mcp.example:443/mcp',
  'https://mcp.example:8443',
  'http://[::1]:8080/mcp',
  'http://[::1]/mcp',
  'https://user:pw@mcp.example/mcp',
  'https://xn--bcher-kva.example/mcp',
  'HTTP://127.0.0.1:3000',
];

const REQUESTS = [
  'http://127.0.0.1:3000/mcp',
  'http://127.0.0.1:3000',
  'http://127.0.0.1:3000/',
  'http://127.0.0.1:3000?x=1',
  'http://127.0.0.1:3000#frag',
  'http://127.0.0.1:3000/a/../mcp?q#f',
  'HTTP://127.0.0.1:3000/mcp',
  'http://127.0.0.1:03000/mcp',
  'http://127.0.0.1:3000:/mcp',
  'http://127.0.0.1:/mcp',
  'http://127.0.0.1:80/mcp',
  'http://127.1:3000/mcp',
  'http://2130706433:3000/mcp',
  'http://localhost:3000/mcp',
  'http://user@127.0.0.1:3000/mcp',
  'http://user:pw@127.0.0.1:3000/mcp',
  'http://evil.example@127.0.0.1:3000/mcp',
  'http://127.0.0.1:3000@evil.example/mcp',
  'http://127.0.0.1:3000\\@evil.example/mcp',
  'http://127.0.0.1:3000/a b',
  'http://127.0.0.1:3000/\tx',
  ' http://127.0.0.1:3000/mcp',
  'http://127.0.0.1:3000/mcp\n',
  'http://127.0.0.1:3000//evil.example/',
  'http://127.0.0.1:3000?@evil.example/',
  'http://127.0.0.1:3000#@evil.example/',
  'http:127.0.0.1:3000/mcp',
  'http:/127.0.0.1:3000/mcp',
  'http:///127.0.0.1:3000/mcp',
  'https://mcp.example/mcp',
  'https://mcp.example',
  'https://mcp.example:443/mcp',
  'https://mcp.example:0443/mcp',
  'https://mcp.example:/mcp',
  'https://MCP.EXAMPLE/mcp',
  'HTTPS://Mcp.Example:443/x',
  'https://mcp.example./mcp',
  'https://mcp.example.evil/mcp',
  'https://mcp.example:8443/mcp',
  'https://mcp.example:65536/mcp',
  'http://mcp.example/mcp',
  'https://user:pw@mcp.example/mcp',
  'https://bücher.example/mcp',
  'https://BÜCHER.example/mcp',
  'https://xn--bcher-kva.example/mcp',
  'https://mcp%2eexample/mcp',
  'http://[::1]:8080/mcp',
  'http://[::1]:8080',
  'http://[0:0:0:0:0:0:0:1]:8080/mcp',
  'http://[::0001]:8080/mcp',
  'http://[::1]:80/mcp',
  'http://[::1]/mcp',
  'http://[::1]',
  'http://[::1/mcp',
  'http://[::g]/mcp',
  'http://u@[::1]:8080/mcp',
  'ftp://mcp.example/mcp',
  'ws://127.0.0.1:3000/mcp',
  'http:',
  'http://',
  'http:///',
  '',
  '/mcp',
  'mcp.example/mcp',
];

describe('ServerOriginCheck', () => {
  it('gives sameOrigin’s verdict for whole URLs, first and cached', () => {
    for (const server of SERVERS) {
      const check = new ServerOriginCheck(server);
      for (let round = 0; round < 2; round++) {
        for (const url of REQUESTS) expect(check.matches(url), `${url} against ${server}`).toBe(sameOrigin(url, server));
      }
    }
  });

  it('gives sameOrigin’s verdict for an origin and a path given apart (the interceptor’s opts.origin + opts.path)', () => {
    for (const server of SERVERS) {
      const check = new ServerOriginCheck(server);
      for (const url of REQUESTS) {
        for (let at = 0; at <= url.length; at++) {
          const head = url.slice(0, at);
          const tail = url.slice(at);
          expect(check.matches(head, tail), `${JSON.stringify(head)} + ${JSON.stringify(tail)} against ${server}`).toBe(sameOrigin(url, server));
        }
      }
    }
  });

  it('cannot be fooled by the one-entry memo: a longer or different origin sharing a prefix is checked again', () => {
    const check = new ServerOriginCheck('http://127.0.0.1:3000/mcp');
    expect(check.matches('http://127.0.0.1:3000', '/mcp')).toBe(true);
    expect(check.matches('http://127.0.0.1:30001', '/mcp')).toBe(false);
    expect(check.matches('http://127.0.0.1:3000/mcp')).toBe(true);
    expect(check.matches('http://127.0.0.1:30001/mcp')).toBe(false);
    expect(check.matches('http://127.0.0.1:3000.evil/mcp')).toBe(false);
    expect(check.matches('http://127.0.0.1:3000', '//evil/mcp')).toBe(true); // the host is still 127.0.0.1:3000
    expect(check.matches('http:', '//127.0.0.1:3000/mcp')).toBe(true);
    expect(check.matches('http:', '//evil/mcp')).toBe(false);
    expect(check.matches('http://127.0.0.1', ':3000/mcp')).toBe(true);
    expect(check.matches('http://127.0.0.1', ':3001/mcp')).toBe(false);
  });

  it('keeps its cache bounded under many distinct origins', () => {
    const check = new ServerOriginCheck('http://127.0.0.1:3000/mcp');
    for (let port = 1; port < 1_000; port++) expect(check.matches(`http://127.0.0.1:${port}`, '/mcp')).toBe(port === 3000);
    expect(check.matches('http://127.0.0.1:3000', '/mcp')).toBe(true);
  });
});

describe('withAuthorization (interceptor headers)', () => {
  it('adds the header to a flat array, replacing any casing of the caller’s, without touching the caller’s array', () => {
    const caller = ['content-type', 'application/json', 'Authorization', 'Bearer stale', 'X-Trace', 'a', 'AUTHORIZATION', 'Bearer other'];
    const copy = [...caller];
    const out = withAuthorization(caller, 'Bearer fresh', undefined);
    expect(out).toEqual(['content-type', 'application/json', 'X-Trace', 'a', 'authorization', 'Bearer fresh']);
    expect(caller).toEqual(copy);
  });

  it('keeps repeated headers of a flat array as they are', () => {
    expect(withAuthorization(['accept', 'a', 'Accept', 'b'], 'Bearer t', undefined)).toEqual(['accept', 'a', 'Accept', 'b', 'authorization', 'Bearer t']);
  });

  it('replaces in an object whatever the key’s case, keeping the other keys as written', () => {
    const caller = { 'Content-Type': 'application/json', AuthoriZation: 'Bearer stale', accept: ['a', 'b'] };
    const out = withAuthorization(caller, 'Bearer fresh', undefined);
    expect(out).toEqual({ 'Content-Type': 'application/json', accept: ['a', 'b'], authorization: 'Bearer fresh' });
    expect(caller.AuthoriZation).toBe('Bearer stale');
  });

  it('reads iterables of pairs (Map, Headers, arrays of pairs) into a flat array', () => {
    const map = new Map([
      ['Authorization', 'Bearer stale'],
      ['x-a', '1'],
    ]);
    expect(withAuthorization(map as never, 'Bearer t', undefined)).toEqual(['x-a', '1', 'authorization', 'Bearer t']);
    const headers = new Headers({ Authorization: 'Bearer stale', 'X-B': '2' });
    expect(withAuthorization(headers as never, 'Bearer t', undefined)).toEqual(['x-b', '2', 'authorization', 'Bearer t']);
    const pairs = [
      ['authorization', 'Bearer stale'],
      ['x-c', '3'],
    ];
    expect(withAuthorization(pairs as never, 'Bearer t', undefined)).toEqual(['x-c', '3', 'authorization', 'Bearer t']);
  });

  it('without a token removes the caller’s authorization, and leaves headers without one alone', () => {
    expect(withAuthorization(['Authorization', 'Bearer stale', 'x', '1'], undefined, undefined)).toEqual(['x', '1']);
    expect(withAuthorization({ authorization: 'Bearer stale', x: '1' }, undefined, undefined)).toEqual({ x: '1' });
    const caller = { x: '1' };
    expect(withAuthorization(caller, undefined, undefined)).toEqual({ x: '1' });
    expect(withAuthorization(undefined, undefined, undefined)).toBeUndefined();
    expect(withAuthorization(null, 'Bearer t', undefined)).toEqual({ authorization: 'Bearer t' });
  });

  it('replaces the caller’s DPoP header only when it adds a proof', () => {
    expect(withAuthorization({ DPoP: 'caller', x: '1' }, 'DPoP t', 'proof')).toEqual({ x: '1', authorization: 'DPoP t', dpop: 'proof' });
    expect(withAuthorization(['DPoP', 'caller'], 'DPoP t', 'proof')).toEqual(['authorization', 'DPoP t', 'dpop', 'proof']);
    expect(withAuthorization({ DPoP: 'caller' }, 'Bearer t', undefined)).toEqual({ DPoP: 'caller', authorization: 'Bearer t' });
  });
});

describe('fetchHeadersWith (fetch headers)', () => {
  it('replaces in the normalised list built once per call, without changing it', () => {
    const list: Array<[string, string]> = [
      ['accept', 'application/json'],
      ['authorization', 'Bearer stale'],
      ['dpop', 'caller'],
    ];
    expect(fetchHeadersWith(list, 'Bearer t', undefined)).toEqual([
      ['accept', 'application/json'],
      ['dpop', 'caller'],
      ['authorization', 'Bearer t'],
    ]);
    expect(fetchHeadersWith(list, 'DPoP t', 'proof')).toEqual([
      ['accept', 'application/json'],
      ['authorization', 'DPoP t'],
      ['dpop', 'proof'],
    ]);
    expect(list).toHaveLength(3);
  });

  it('copies a caller’s record, replacing any casing of authorization', () => {
    const caller = { Accept: 'application/json', Authorization: 'Bearer stale' };
    expect(fetchHeadersWith(caller, 'Bearer t', undefined)).toEqual({ Accept: 'application/json', authorization: 'Bearer t' });
    expect(caller.Authorization).toBe('Bearer stale');
    expect(fetchHeadersWith(undefined, 'Bearer t', undefined)).toEqual({ authorization: 'Bearer t' });
  });
});
