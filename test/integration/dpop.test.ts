/**
 * DPoP (RFC 9449) over real loopback HTTP: on because the authorization server advertises ES256
 * (DESIGN policy 11), a fresh proof per request with the session's one key, `ath` on resource
 * requests, `htu` without query, and exactly one `use_dpop_nonce` retry at the AS and at the MCP
 * server. The server verifies every proof; tests count requests, never times.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import type { OAuthSessionOptions } from '../../src/adapters/options.js';
import { OAuthTokenError } from '../../src/machines/errors.js';
import { failure, track } from '../support/harness.js';
import { startM2MServer, type M2MServerOptions } from '../support/m2mServer.js';

const GRANT = { type: 'client_credentials', clientId: 'm2m-client', clientSecret: 'm2m-secret' } as const;

async function setup(dpop: M2MServerOptions['dpop'], extra: Partial<OAuthSessionOptions> = {}) {
  const server = await startM2MServer({ dpop });
  const session: OAuthSession = track(createOAuthSession({ serverUrl: server.mcpUrl, grant: GRANT, ...extra }));
  return { server, session };
}

async function call(session: OAuthSession, url: string): Promise<number> {
  const response = await session.fetch(url, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"jsonrpc":"2.0","id":1,"method":"tools/list"}' });
  await response.text();
  return response.status;
}

describe('DPoP', () => {
  it('advertised ES256: the token request carries a proof, the DPoP token is used with `Authorization: DPoP` and a fresh proof with ath per request, one key throughout', async () => {
    const { server, session } = await setup({});
    expect(await call(session, server.mcpUrl)).toBe(200);
    expect(await call(session, server.mcpUrl)).toBe(200);
    expect(server.counts['token:client_credentials']).toBe(1);
    const [asProof, ...rsProofs] = server.dpopProofs;
    expect(asProof?.where).toBe('as');
    expect(asProof?.header).toMatchObject({ typ: 'dpop+jwt', alg: 'ES256' });
    expect((asProof?.header.jwk as Record<string, unknown>).d).toBeUndefined();
    expect(asProof?.payload).toMatchObject({ htm: 'POST', htu: `${server.origin}/token` });
    expect(asProof?.payload.ath).toBeUndefined();
    expect(rsProofs.map((p) => p.where)).toEqual(['rs', 'rs']);
    expect(rsProofs.every((p) => typeof p.payload.ath === 'string')).toBe(true);
    const jtis = server.dpopProofs.map((p) => p.payload.jti);
    expect(new Set(jtis).size).toBe(jtis.length);
    const keys = server.dpopProofs.map((p) => JSON.stringify(p.header.jwk));
    expect(new Set(keys).size).toBe(1);
    expect(session.actor.getSnapshot().context.tokens?.token_type).toBe('dpop');
    const visible = JSON.stringify(session.trace()) + inspect(session);
    expect(visible).not.toContain('m2m-token-1');
    expect(visible).not.toContain('eyJ'); // no proof or other JWT in the trace
  });

  it('a resource URL with a query and fragment: the proof htu has neither', async () => {
    const { server, session } = await setup({});
    // The fixture's MCP endpoint checks htu = origin + /mcp; the query must not reach the proof.
    expect(await call(session, `${server.mcpUrl}?session=abc&x=1#frag`)).toBe(200);
    const rs = server.dpopProofs.filter((p) => p.where === 'rs');
    expect(rs.length).toBe(1);
    expect(rs[0]?.payload.htu).toBe(server.mcpUrl);
  });

  it('AS use_dpop_nonce once: exactly one retry with the nonce in a new proof', async () => {
    const { server, session } = await setup({ asNonce: 'once' });
    expect(await call(session, server.mcpUrl)).toBe(200);
    expect(server.counts['token:client_credentials']).toBe(2);
    expect(server.verdicts).toEqual(['use_dpop_nonce', 'ok']);
    const as = server.dpopProofs.filter((p) => p.where === 'as');
    expect(as[0]?.payload.nonce).toBeUndefined();
    expect(as[1]?.payload.nonce).toBe('as-nonce-1');
  });

  it('C113 a token endpoint answering use_dpop_nonce on every request: one retry, then a typed error', async () => {
    const { server, session } = await setup({ asNonce: 'always' });
    const error = await failure(call(session, server.mcpUrl));
    expect(error).toBeInstanceOf(OAuthTokenError);
    expect(error.code).toBe('token.use_dpop_nonce');
    expect(server.counts['token:client_credentials']).toBe(2);
  });

  it('a malformed nonce is refused: no retry, a typed error', async () => {
    const { server, session } = await setup({ asNonce: 'malformed' });
    const error = await failure(call(session, server.mcpUrl));
    expect(error.code).toBe('token.use_dpop_nonce');
    expect(server.counts['token:client_credentials']).toBe(1);
  });

  it('MCP server use_dpop_nonce: one retry with the nonce, without a new token', async () => {
    const { server, session } = await setup({ rsNonce: 'once' });
    expect(await call(session, server.mcpUrl)).toBe(200);
    expect(server.counts['mcp:nonce']).toBe(1);
    expect(server.counts['token:client_credentials']).toBe(1);
    const rs = server.dpopProofs.filter((p) => p.where === 'rs');
    expect(rs.map((p) => p.payload.nonce)).toEqual([undefined, 'rs-nonce-1']);
  });

  it('policy dpop off: no proof is sent, and a DPoP token_type is refused as a typed error', async () => {
    const { server, session } = await setup({ tokenType: 'DPoP' }, { policy: { dpop: 'off' } });
    const error = await failure(call(session, server.mcpUrl));
    // Without a proof the fixture refuses; the engine never sent one.
    expect(error.code).toBe('token.invalid_dpop_proof');
    expect(server.dpopProofs).toEqual([]);
  });

  it('DPoP in use but the AS issues a Bearer token: it is used as Bearer', async () => {
    const { server, session } = await setup({ tokenType: 'Bearer' });
    expect(await call(session, server.mcpUrl)).toBe(200);
    expect(session.actor.getSnapshot().context.tokens?.token_type).toBe('bearer');
    expect(server.dpopProofs.filter((p) => p.where === 'rs')).toEqual([]);
  });
});
