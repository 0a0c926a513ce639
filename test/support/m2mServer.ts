/**
 * A loopback MCP resource + authorization server + enterprise IdP on one origin, for the
 * machine-to-machine grants (issue 4). It really verifies what it is sent: Basic and post secrets,
 * RFC 7523 client assertions (signature, iss = sub, aud = issuer only, exp, unique jti), JWT bearer
 * assertions (signature, audience, expiry) and the RFC 8693 exchange parameters.
 */
import { calculateJwkThumbprint, EmbeddedJWK, exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK } from 'jose';
import { createHash } from 'node:crypto';
import type { IncomingMessage, ServerResponse } from 'node:http';
import { startRawServer } from './harness.js';

export const GRANT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';

export interface M2MServer {
  origin: string;
  mcpUrl: string;
  issuer: string;
  idpTokenEndpoint: string;
  /** Requests by path (and grant type for /token). */
  counts: Record<string, number>;
  tokenBodies: URLSearchParams[];
  tokenHeaders: Array<Record<string, string | string[] | undefined>>;
  /** What the server concluded about each token request ('ok' or the error it returned). */
  verdicts: string[];
  clientAssertions: Array<{ header: Record<string, unknown>; payload: Record<string, unknown> }>;
  dpopProofs: DpopProofSeen[];
  /** Forget every issued token: the next MCP request gets 401. */
  revokeAll(): void;
  /** Sign a workload JWT with the server-trusted key. */
  workloadJwt(claims: { aud: string; expiresIn?: number; issuedAt?: number }): Promise<string>;
}

export interface M2MServerOptions {
  clientId?: string;
  clientSecret?: string;
  /** Public key of the private_key_jwt client. */
  clientPublicKey?: CryptoKey | JWK;
  idToken?: string;
  /** Scope the MCP server demands (403 insufficient_scope otherwise). */
  requiredScope?: string;
  /** Extra authorization server metadata. */
  metadata?: Record<string, unknown>;
  /**
   * RFC 9449: advertise ES256, demand a valid proof at /token and on /mcp for DPoP tokens, and
   * answer `use_dpop_nonce` from the AS (`once`, `always`, or with a `malformed` nonce) and the RS (`once`).
   */
  dpop?: { asNonce?: 'once' | 'always' | 'malformed'; rsNonce?: 'once'; tokenType?: 'DPoP' | 'Bearer' };
}

export interface DpopProofSeen {
  where: 'as' | 'rs';
  header: Record<string, unknown>;
  payload: Record<string, unknown>;
}

function readBody(req: IncomingMessage): Promise<string> {
  return new Promise((resolve) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
  });
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}): void {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

export async function startM2MServer(options: M2MServerOptions = {}): Promise<M2MServer> {
  const clientId = options.clientId ?? 'm2m-client';
  const clientSecret = options.clientSecret ?? 'm2m-secret';
  const workload = await generateKeyPair('ES256');
  const valid = new Map<string, string>();
  const seenJti = new Set<string>();
  let issued = 0;
  const state = {
    counts: {} as Record<string, number>,
    tokenBodies: [] as URLSearchParams[],
    tokenHeaders: [] as Array<Record<string, string | string[] | undefined>>,
    verdicts: [] as string[],
    clientAssertions: [] as Array<{ header: Record<string, unknown>; payload: Record<string, unknown> }>,
    dpopProofs: [] as DpopProofSeen[],
  };
  const AS_NONCE = 'as-nonce-1';
  const RS_NONCE = 'rs-nonce-1';
  /** Verifies a DPoP proof; returns its key thumbprint, or an error name. */
  const checkProof = async (req: IncomingMessage, where: 'as' | 'rs', htu: string, accessToken?: string): Promise<{ jkt: string; nonce?: unknown } | string> => {
    const proof = req.headers.dpop;
    if (typeof proof !== 'string') return 'invalid_dpop_proof';
    try {
      const { payload, protectedHeader } = await jwtVerify(proof, EmbeddedJWK, { typ: 'dpop+jwt', algorithms: ['ES256'] });
      state.dpopProofs.push({ where, header: { ...protectedHeader }, payload: { ...payload } });
      if (payload.htm !== req.method || payload.htu !== htu || typeof payload.jti !== 'string' || seenJti.has(payload.jti)) return 'invalid_dpop_proof';
      seenJti.add(payload.jti);
      if (accessToken !== undefined && payload.ath !== createHash('sha256').update(accessToken).digest('base64url')) return 'invalid_dpop_proof';
      return { jkt: await calculateJwkThumbprint(protectedHeader.jwk as JWK), nonce: payload.nonce };
    } catch {
      return 'invalid_dpop_proof';
    }
  };
  const bound = new Map<string, string>();
  const count = (key: string) => (state.counts[key] = (state.counts[key] ?? 0) + 1);
  let origin = '';

  const clientKey = async () => {
    const key = options.clientPublicKey;
    if (key === undefined) throw new Error('no client key');
    if ('kty' in key) {
      const { importJWK } = await import('jose');
      return importJWK(key as JWK, (key as JWK).alg ?? 'ES256');
    }
    return key;
  };

  /** Client authentication as the server sees it: which method, and whether it passed. */
  const authenticate = async (req: IncomingMessage, form: URLSearchParams, expectedId: string, expectedSecret: string): Promise<string | undefined> => {
    const header = req.headers.authorization;
    if (header?.startsWith('Basic ')) {
      const [id, secret] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':').map((v) => decodeURIComponent(v.replace(/\+/g, ' ')));
      return id === expectedId && secret === expectedSecret ? expectedId : undefined;
    }
    if (form.get('client_assertion_type') === 'urn:ietf:params:oauth:client-assertion-type:jwt-bearer') {
      try {
        const { payload, protectedHeader } = await jwtVerify(form.get('client_assertion') ?? '', await clientKey(), { audience: origin, issuer: expectedId, subject: expectedId });
        state.clientAssertions.push({ header: { ...protectedHeader }, payload: { ...payload } });
        if (typeof payload.jti !== 'string' || seenJti.has(payload.jti)) return undefined;
        seenJti.add(payload.jti);
        if (typeof payload.exp !== 'number' || typeof payload.iat !== 'number' || payload.exp - payload.iat > 300) return undefined;
        if (Array.isArray(payload.aud)) return undefined;
        return expectedId;
      } catch {
        return undefined;
      }
    }
    if (form.get('client_secret') !== null) return form.get('client_id') === expectedId && form.get('client_secret') === expectedSecret ? expectedId : undefined;
    return form.get('client_id') === expectedId ? expectedId : undefined;
  };

  const issue = async (res: ServerResponse, form: URLSearchParams, req: IncomingMessage) => {
    const token = `m2m-token-${++issued}`;
    let tokenType = 'Bearer';
    if (options.dpop) {
      const nonceMode = options.dpop.asNonce;
      const proof = await checkProof(req, 'as', `${origin}/token`);
      if (typeof proof === 'string') return refuse(res, 400, proof);
      const wantNonce = nonceMode === 'always' || ((nonceMode === 'once' || nonceMode === 'malformed') && proof.nonce !== AS_NONCE);
      if (wantNonce) {
        state.verdicts.push('use_dpop_nonce');
        const nonce = nonceMode === 'malformed' ? 'bad "nonce" with spaces' : AS_NONCE;
        json(res, 400, { error: 'use_dpop_nonce', error_description: 'nonce required' }, { 'dpop-nonce': nonce });
        return;
      }
      tokenType = options.dpop.tokenType ?? 'DPoP';
      if (tokenType === 'DPoP') bound.set(token, proof.jkt);
    }
    valid.set(token, form.get('scope') ?? '');
    state.verdicts.push('ok');
    json(res, 200, { access_token: token, token_type: tokenType, expires_in: 3600, ...(form.get('scope') ? { scope: form.get('scope') } : {}) });
  };
  const refuse = (res: ServerResponse, status: number, error: string) => {
    state.verdicts.push(error);
    json(res, status, { error, error_description: 'refused by the test server' });
  };

  const { url } = await startRawServer((req, res) => {
    void (async () => {
      const path = (req.url ?? '/').split('?')[0] ?? '/';
      const body = await readBody(req);
      if (path === '/mcp') {
        count('mcp');
        const auth = req.headers.authorization ?? '';
        const token = auth.startsWith('Bearer ') ? auth.slice(7) : auth.startsWith('DPoP ') ? auth.slice(5) : undefined;
        if (token !== undefined && bound.has(token)) {
          const proof = await checkProof(req, 'rs', `${origin}/mcp`, token);
          if (typeof proof === 'string' || proof.jkt !== bound.get(token) || !auth.startsWith('DPoP ')) {
            count('mcp:401');
            res.writeHead(401, { 'www-authenticate': 'DPoP error="invalid_token", algs="ES256"' });
            res.end();
            return;
          }
          if (options.dpop?.rsNonce === 'once' && proof.nonce !== RS_NONCE) {
            count('mcp:nonce');
            res.writeHead(401, { 'www-authenticate': 'DPoP error="use_dpop_nonce", algs="ES256"', 'dpop-nonce': RS_NONCE });
            res.end();
            return;
          }
        }
        if (token === undefined || !valid.has(token)) {
          count('mcp:401');
          res.writeHead(401, { 'www-authenticate': `Bearer error="invalid_token", resource_metadata="${origin}/.well-known/oauth-protected-resource/mcp"` });
          res.end();
          return;
        }
        const required = options.requiredScope;
        if (required && !(valid.get(token) ?? '').split(' ').includes(required)) {
          count('mcp:403');
          res.writeHead(403, { 'www-authenticate': `Bearer error="insufficient_scope", scope="${required}"` });
          res.end();
          return;
        }
        json(res, 200, { jsonrpc: '2.0', id: 1, result: { tools: [] } });
        return;
      }
      if (path === '/.well-known/oauth-protected-resource/mcp') {
        count('prm');
        json(res, 200, { resource: `${origin}/mcp`, authorization_servers: [origin], scopes_supported: ['mcp:read'] });
        return;
      }
      if (path === '/.well-known/oauth-authorization-server') {
        count('asm');
        json(res, 200, {
          issuer: origin,
          authorization_endpoint: `${origin}/authorize`,
          token_endpoint: `${origin}/token`,
          grant_types_supported: ['client_credentials', GRANT_JWT_BEARER],
          token_endpoint_auth_methods_supported: ['client_secret_basic', 'client_secret_post', 'private_key_jwt', 'none'],
          token_endpoint_auth_signing_alg_values_supported: ['ES256', 'RS256'],
          ...(options.dpop ? { dpop_signing_alg_values_supported: ['ES256'] } : {}),
          ...options.metadata,
        });
        return;
      }
      const form = new URLSearchParams(body);
      if (path === '/idp/token') {
        count('idp');
        state.tokenBodies.push(form);
        state.tokenHeaders.push({ ...req.headers });
        const ok =
          form.get('grant_type') === 'urn:ietf:params:oauth:grant-type:token-exchange' &&
          form.get('requested_token_type') === ID_JAG &&
          form.get('subject_token_type') === 'urn:ietf:params:oauth:token-type:id_token' &&
          form.get('subject_token') === (options.idToken ?? 'enterprise-id-token') &&
          form.get('audience') === origin &&
          form.get('resource') === `${origin}/mcp`;
        if (!ok) return refuse(res, 400, 'invalid_grant');
        state.verdicts.push('ok');
        json(res, 200, { access_token: `id-jag-for-${clientId}`, issued_token_type: ID_JAG, token_type: 'N_A', expires_in: 300 });
        return;
      }
      if (path === '/token') {
        const grant = form.get('grant_type') ?? '';
        count(`token:${grant}`);
        state.tokenBodies.push(form);
        state.tokenHeaders.push({ ...req.headers });
        if (form.get('resource') !== `${origin}/mcp`) return refuse(res, 400, 'invalid_target');
        if (grant === 'client_credentials') {
          if ((await authenticate(req, form, clientId, clientSecret)) === undefined) return refuse(res, 401, 'invalid_client');
          return issue(res, form, req);
        }
        if (grant === GRANT_JWT_BEARER) {
          const assertion = form.get('assertion') ?? '';
          if (assertion.startsWith('id-jag-for-')) {
            if ((await authenticate(req, form, clientId, clientSecret)) === undefined) return refuse(res, 401, 'invalid_client');
            return assertion === `id-jag-for-${clientId}` ? issue(res, form, req) : refuse(res, 400, 'invalid_grant');
          }
          try {
            await jwtVerify(assertion, workload.publicKey, { audience: origin });
          } catch {
            return refuse(res, 400, 'invalid_grant');
          }
          return issue(res, form, req);
        }
        return refuse(res, 400, 'unsupported_grant_type');
      }
      res.writeHead(404);
      res.end();
    })();
  });
  origin = url;
  return {
    origin,
    mcpUrl: `${origin}/mcp`,
    issuer: origin,
    idpTokenEndpoint: `${origin}/idp/token`,
    get counts() {
      return state.counts;
    },
    tokenBodies: state.tokenBodies,
    tokenHeaders: state.tokenHeaders,
    verdicts: state.verdicts,
    clientAssertions: state.clientAssertions,
    dpopProofs: state.dpopProofs,
    revokeAll: () => valid.clear(),
    workloadJwt: async ({ aud, expiresIn = 300, issuedAt }) => {
      const iat = issuedAt ?? Math.floor(Date.now() / 1000);
      return new SignJWT({}).setProtectedHeader({ alg: 'ES256' }).setIssuer('https://idp.example').setSubject('workload').setAudience(aud).setIssuedAt(iat).setExpirationTime(iat + expiresIn).sign(workload.privateKey);
    },
  };
}

export { exportJWK, generateKeyPair };
