/** Token revocation (RFC 7009): the request builder and the response processor. */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { parseJsonObject, type HttpRequest, type HttpResponseData } from '../http.js';
import { OAuthErrorBodySchema } from '../schemas.js';
import type { ClientRecord, TokenRecord } from '../store.js';
import { clientAuthenticatedPost } from './token.js';

export interface RevocationInputs {
  revocationEndpoint: string;
  client: Pick<ClientRecord, 'client_id' | 'client_secret' | 'token_endpoint_auth_method'>;
  tokens: Pick<TokenRecord, 'access_token' | 'refresh_token'>;
}

/**
 * Revokes the refresh token when there is one (RFC 7009 §2.1: the server then ends the access
 * tokens of the same grant too), else the access token. The client authenticates as at the token
 * endpoint; a public client sends its `client_id`.
 */
export function buildRevocationRequest(id: string, inputs: RevocationInputs): HttpRequest {
  const refresh = inputs.tokens.refresh_token;
  return clientAuthenticatedPost(id, 'revocation', inputs.revocationEndpoint, inputs.client, {
    token: refresh ?? inputs.tokens.access_token,
    token_type_hint: refresh === undefined ? 'access_token' : 'refresh_token',
  });
}

/** RFC 7009 §2.2: 200 means revoked (an unknown or already invalid token included); anything else is a refusal. */
export function processRevocationResponse(response: HttpResponseData): { ok: true } | { ok: false; error: FlowErrorData } {
  if (response.status === 200) return { ok: true };
  const oauth = OAuthErrorBodySchema.safeParse(parseJsonObject(response.body));
  if (oauth.success) {
    return {
      ok: false,
      error: flowError('token', 'revocation.refused', `revocation endpoint refused: ${quoteUntrusted(oauth.data.error)}`, {
        oauthError: oauth.data.error,
        status: response.status,
      }),
    };
  }
  return { ok: false, error: flowError('token', 'revocation.http_status', `revocation endpoint answered ${response.status}`, { status: response.status }) };
}
