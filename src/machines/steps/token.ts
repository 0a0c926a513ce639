/** Token endpoint requests (code exchange, refresh) and the token response (RFC 6749 §5). */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { basicCredentials, err, formEncode, ok, parseJsonObject, type HttpRequest, type HttpResponseData, type Result } from '../http.js';
import { OAuthErrorBodySchema, TokenResponseSchema } from '../schemas.js';
import type { ClientRecord, TokenRecord } from '../store.js';
import { safeCode } from './registration.js';

type ClientAuth = Pick<ClientRecord, 'client_id' | 'client_secret' | 'token_endpoint_auth_method'>;

/** RFC 6749 §2.3.1: Basic carries the credentials in the header; the body never repeats the secret. */
export function clientAuthentication(client: ClientAuth): { headers: Record<string, string>; params: Record<string, string | undefined> } {
  switch (client.token_endpoint_auth_method) {
    case 'client_secret_basic':
      return { headers: { authorization: basicCredentials(client.client_id, client.client_secret ?? '') }, params: {} };
    case 'client_secret_post':
      return { headers: {}, params: { client_id: client.client_id, client_secret: client.client_secret } };
    default:
      return { headers: {}, params: { client_id: client.client_id } };
  }
}

/** A form POST to an endpoint where the client authenticates as at the token endpoint (token, revocation, device authorization). */
export function clientAuthenticatedPost(id: string, step: HttpRequest['step'], endpoint: string, client: ClientAuth, params: Record<string, string | undefined>): HttpRequest {
  const auth = clientAuthentication(client);
  return {
    id,
    step,
    method: 'POST',
    url: endpoint,
    headers: { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json', ...auth.headers },
    body: formEncode({ ...params, ...auth.params }),
  };
}

export interface CodeExchangeInputs {
  tokenEndpoint: string;
  client: ClientAuth;
  code: string;
  codeVerifier: string;
  redirectUri: string;
  /** Identical to the `resource` of the authorization request (RFC 8707). */
  resource: string;
}

export function buildCodeExchangeRequest(id: string, inputs: CodeExchangeInputs): HttpRequest {
  return clientAuthenticatedPost(id, 'token', inputs.tokenEndpoint, inputs.client, {
    grant_type: 'authorization_code',
    code: inputs.code,
    redirect_uri: inputs.redirectUri,
    code_verifier: inputs.codeVerifier,
    resource: inputs.resource,
  });
}

export interface RefreshInputs {
  tokenEndpoint: string;
  client: ClientAuth;
  refreshToken: string;
  resource: string;
}

export function buildRefreshRequest(id: string, inputs: RefreshInputs): HttpRequest {
  return clientAuthenticatedPost(id, 'refresh', inputs.tokenEndpoint, inputs.client, {
    grant_type: 'refresh_token',
    refresh_token: inputs.refreshToken,
    resource: inputs.resource,
  });
}

export interface TokenExpectation {
  at: number;
  issuer: string;
  resource: string;
  requestedScope?: string;
  /** On refresh: the record being replaced (its refresh token and scope survive when not reissued). */
  previous?: TokenRecord;
  /** `expires_in` is clamped into [minLifetimeSeconds, maxLifetimeSeconds]. */
  minLifetimeSeconds: number;
  maxLifetimeSeconds: number;
  /** DPoP proofs were sent: a `DPoP` token_type is accepted only then (RFC 9449 §5). */
  dpop?: boolean;
}

export function processTokenResponse(response: HttpResponseData, expected: TokenExpectation): Result<TokenRecord, FlowErrorData> {
  const json = parseJsonObject(response.body);
  if (response.status !== 200 && response.status !== 201) {
    const oauth = OAuthErrorBodySchema.safeParse(json);
    if (oauth.success) {
      const description = oauth.data.error_description ? ` ${quoteUntrusted(oauth.data.error_description)}` : '';
      return err(
        flowError('token', `token.${safeCode(oauth.data.error)}`, `token endpoint refused: ${quoteUntrusted(oauth.data.error)}${description}`, {
          oauthError: oauth.data.error,
          status: response.status,
        }),
      );
    }
    return err(flowError('token', 'token.http_status', `token endpoint answered ${response.status}`, { status: response.status }));
  }
  const parsed = TokenResponseSchema.safeParse(json);
  if (!parsed.success) return err(flowError('token', 'token.invalid_response', 'token response lacks access_token or token_type'));
  const tokens = parsed.data;
  const tokenType = tokens.token_type.toLowerCase();
  if (tokenType !== 'bearer' && !(tokenType === 'dpop' && expected.dpop === true)) {
    return err(flowError('token', 'token.unsupported_token_type', `token_type ${quoteUntrusted(tokens.token_type)} is not supported`));
  }
  const lifetime = tokens.expires_in === undefined ? undefined : Number(tokens.expires_in);
  if (lifetime !== undefined && !Number.isFinite(lifetime)) {
    return err(flowError('token', 'token.invalid_response', 'expires_in is not a finite number'));
  }
  const refreshToken = tokens.refresh_token ?? expected.previous?.refresh_token;
  const scope = tokens.scope ?? expected.previous?.scope ?? expected.requestedScope;
  return ok({
    access_token: tokens.access_token,
    token_type: tokenType,
    ...(refreshToken === undefined ? {} : { refresh_token: refreshToken }),
    ...(lifetime === undefined
      ? {}
      : { expires_at: expected.at + clamp(lifetime, expected.minLifetimeSeconds, expected.maxLifetimeSeconds) * 1000 }),
    obtained_at: expected.at,
    ...(scope === undefined ? {} : { scope }),
    issuer: expected.issuer,
    resource: expected.resource,
  });
}

function clamp(value: number, min: number, max: number): number {
  return Math.min(Math.max(value, min), max);
}

/**
 * Whether a token should be refreshed before use. The skew never exceeds half the token's lifetime,
 * so a 30 s token with a 60 s skew is still used instead of refreshed on every request.
 */
export function needsRefresh(tokens: TokenRecord, at: number, skewMs: number): boolean {
  if (tokens.expires_at === undefined) return false;
  const lifetime = tokens.expires_at - tokens.obtained_at;
  return at >= tokens.expires_at - Math.min(skewMs, lifetime / 2);
}
