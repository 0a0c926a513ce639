/** RFC 7009 revocation: the pure request builder and response processor, and the machine's `revoking` state. */
import { describe, expect, it } from 'vitest';
import { createActor } from 'xstate';
import { resolveOptions } from '../../src/adapters/options.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineEffect } from '../../src/machines/oauth.types.js';
import { buildRevocationRequest, processRevocationResponse } from '../../src/machines/steps/revocation.js';

const tokens = { access_token: 'at-secret', refresh_token: 'rt-secret' };

describe('revocation request builder', () => {
  it('revokes the refresh token of a public client with its client_id in the body', () => {
    const request = buildRevocationRequest('req-1', {
      revocationEndpoint: 'https://as.example/revoke',
      client: { client_id: 'public', token_endpoint_auth_method: 'none' },
      tokens,
    });
    expect(request).toMatchObject({ id: 'req-1', step: 'revocation', method: 'POST', url: 'https://as.example/revoke' });
    const body = new URLSearchParams(request.body);
    expect(Object.fromEntries(body)).toEqual({ token: 'rt-secret', token_type_hint: 'refresh_token', client_id: 'public' });
    expect(request.headers.authorization).toBeUndefined();
  });

  it('authenticates a confidential client with Basic and never repeats the secret in the body; access token when there is no refresh token', () => {
    const request = buildRevocationRequest('req-2', {
      revocationEndpoint: 'https://as.example/revoke',
      client: { client_id: 'conf', client_secret: 's:e%cret', token_endpoint_auth_method: 'client_secret_basic' },
      tokens: { access_token: 'at-only' },
    });
    expect(request.headers.authorization).toMatch(/^Basic /);
    expect(Object.fromEntries(new URLSearchParams(request.body))).toEqual({ token: 'at-only', token_type_hint: 'access_token' });
  });

  it('reads 200 as revoked, an OAuth error as revocation.refused, anything else as revocation.http_status', () => {
    expect(processRevocationResponse({ status: 200, headers: {}, body: '' })).toEqual({ ok: true });
    const refused = processRevocationResponse({ status: 400, headers: {}, body: '{"error":"unsupported_token_type"}' });
    expect(refused).toMatchObject({ ok: false, error: { code: 'revocation.refused', oauthError: 'unsupported_token_type', status: 400 } });
    const broken = processRevocationResponse({ status: 503, headers: {}, body: '<html>' });
    expect(broken).toMatchObject({ ok: false, error: { code: 'revocation.http_status', status: 503 } });
  });
});

describe('the machine signs out', () => {
  const config = resolveOptions({ serverUrl: 'https://mcp.example/mcp' }).config;
  const issuer = 'https://as.example';
  const stored = {
    tokens: { value: { access_token: 'at', refresh_token: 'rt', token_type: 'bearer', obtained_at: 1, expires_at: 10_000_000, issuer, resource: 'https://mcp.example/mcp' }, generation: 4 },
    client: { value: { client_id: 'c', token_endpoint_auth_method: 'none' as const, redirect_uris: ['http://127.0.0.1:1/callback'], issuer, source: 'dynamic' as const }, generation: 2 },
  };

  function start(discovery: Record<string, unknown>) {
    const actor = createActor(oauthMachine, { input: config });
    const effects: EngineEffect[] = [];
    actor.on('*', (effect) => effects.push(effect as EngineEffect));
    actor.start();
    actor.send({ type: 'store.loaded', ...stored, discovery: { value: { issuer, token_endpoint: `${issuer}/token`, resource: 'https://mcp.example/mcp', legacy: false, ...discovery } as never, generation: 3 } });
    return { actor, effects };
  }

  it('with a revocation endpoint: revoking, one request, then compare-and-delete of the token generation it held', () => {
    const { actor, effects } = start({ revocation_endpoint: `${issuer}/revoke` });
    actor.send({ type: 'logout', at: 5 });
    expect(actor.getSnapshot().value).toBe('revoking');
    const request = effects.find((e): e is Extract<EngineEffect, { type: 'http.request' }> => e.type === 'http.request');
    expect(request?.request.url).toBe(`${issuer}/revoke`);
    actor.send({ type: 'http.response', id: request!.request.id, status: 200, headers: {}, body: '', at: 6 });
    expect(actor.getSnapshot().value).toEqual({ ready: 'unauthenticated' });
    expect(actor.getSnapshot().context.tokens).toBeUndefined();
    expect(effects).toContainEqual({ type: 'store.clear', kind: 'tokens', ifGeneration: 4 });
    expect(effects.some((e) => e.type === 'notice')).toBe(false);
  });

  it('a refusal is a notice and the tokens go anyway; without an endpoint nothing is sent', () => {
    const refused = start({ revocation_endpoint: `${issuer}/revoke` });
    refused.actor.send({ type: 'logout', at: 5 });
    const id = refused.actor.getSnapshot().context.pendingId!;
    refused.actor.send({ type: 'http.response', id, status: 503, headers: {}, body: '', at: 6 });
    expect(refused.actor.getSnapshot().context.tokens).toBeUndefined();
    expect(refused.effects).toContainEqual({ type: 'notice', notice: { code: 'revocation.http_status', message: 'revocation endpoint answered 503' } });

    const none = start({});
    none.actor.send({ type: 'logout', at: 5 });
    expect(none.actor.getSnapshot().value).toEqual({ ready: 'unauthenticated' });
    expect(none.effects.some((e) => e.type === 'http.request')).toBe(false);
    expect(none.effects).toContainEqual({ type: 'store.clear', kind: 'tokens', ifGeneration: 4 });
  });
});
