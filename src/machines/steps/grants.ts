/**
 * Machine-to-machine grants (issue 4), as request-builder / response-processor pairs:
 * client credentials (RFC 6749 §4.4), JWT bearer (RFC 7523 §2.1) and the enterprise-managed
 * authorization token exchange (RFC 8693 → ID-JAG, SEP-990). Token responses are read by
 * `processTokenResponse` in token.ts; only the IdP's exchange answer has its own reader here.
 *
 * Secrets the machine never holds (private keys, workload JWTs, ID tokens) are marked on the
 * request (`clientAuth`, `assertion`) and added by the adapter just before sending.
 */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { basicCredentials, err, formEncode, ok, parseJsonObject, type HttpRequest, type HttpResponseData, type Result } from '../http.js';
import type { GrantAuthMethod } from '../oauth.types.js';
import { OAuthErrorBodySchema } from '../schemas.js';
import { safeCode } from './registration.js';

export const GRANT_JWT_BEARER = 'urn:ietf:params:oauth:grant-type:jwt-bearer';
export const GRANT_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';
export const TOKEN_TYPE_ID_JAG = 'urn:ietf:params:oauth:token-type:id-jag';
export const TOKEN_TYPE_ID_TOKEN = 'urn:ietf:params:oauth:token-type:id_token';

export interface GrantClient {
  clientId?: string;
  clientSecret?: string;
  authMethod: GrantAuthMethod;
}

/** Client authentication for a grant request; `private_key_jwt` is marked for the adapter to sign. */
function grantRequest(id: string, endpoint: string, client: GrantClient, audience: string, params: Record<string, string | undefined>, signingAlgValuesSupported?: string[]): HttpRequest {
  const headers: Record<string, string> = { 'content-type': 'application/x-www-form-urlencoded', accept: 'application/json' };
  const auth: Record<string, string | undefined> = {};
  let clientAuth: HttpRequest['clientAuth'];
  switch (client.authMethod) {
    case 'client_secret_basic':
      headers.authorization = basicCredentials(client.clientId ?? '', client.clientSecret ?? '');
      break;
    case 'client_secret_post':
      auth.client_id = client.clientId;
      auth.client_secret = client.clientSecret;
      break;
    case 'private_key_jwt':
      if (client.clientId !== undefined) {
        clientAuth = { method: 'private_key_jwt', clientId: client.clientId, audience, ...(signingAlgValuesSupported === undefined ? {} : { signingAlgValuesSupported: [...signingAlgValuesSupported] }) };
      }
      break;
    default:
      auth.client_id = client.clientId;
  }
  return {
    id,
    step: 'token',
    method: 'POST',
    url: endpoint,
    headers,
    body: formEncode({ ...params, ...auth }),
    ...(clientAuth === undefined ? {} : { clientAuth }),
  };
}

export interface ClientCredentialsInputs {
  tokenEndpoint: string;
  /** The authorization server's issuer: the only `aud` of a client assertion. */
  issuer: string;
  client: GrantClient;
  resource: string;
  scope?: string;
  /** The AS's `token_endpoint_auth_signing_alg_values_supported`, passed to the adapter with a `private_key_jwt` mark (C77). */
  signingAlgValuesSupported?: string[];
}

export function buildClientCredentialsRequest(id: string, inputs: ClientCredentialsInputs): HttpRequest {
  return grantRequest(
    id,
    inputs.tokenEndpoint,
    inputs.client,
    inputs.issuer,
    { grant_type: 'client_credentials', resource: inputs.resource, scope: inputs.scope },
    inputs.signingAlgValuesSupported,
  );
}

export interface JwtBearerInputs extends ClientCredentialsInputs {
  /** The ID-JAG of enterprise-managed authorization; without it the adapter asks the application's provider. */
  assertion?: string;
}

export function buildJwtBearerRequest(id: string, inputs: JwtBearerInputs): HttpRequest {
  const request = grantRequest(id, inputs.tokenEndpoint, inputs.client, inputs.issuer, {
    grant_type: GRANT_JWT_BEARER,
    ...(inputs.assertion === undefined ? {} : { assertion: inputs.assertion }),
    resource: inputs.resource,
    scope: inputs.scope,
  }, inputs.signingAlgValuesSupported);
  return inputs.assertion === undefined
    ? { ...request, assertion: { param: 'assertion', source: 'jwt_bearer', audience: inputs.issuer, resource: inputs.resource } }
    : request;
}

export interface TokenExchangeInputs {
  /** The enterprise identity provider's token endpoint. */
  idpTokenEndpoint: string;
  idpClient: GrantClient;
  /** The MCP authorization server's issuer: the ID-JAG's audience. */
  audience: string;
  resource: string;
  scope?: string;
}

/** RFC 8693 at the IdP: ID token → ID-JAG; the adapter adds the ID token as `subject_token`. */
export function buildTokenExchangeRequest(id: string, inputs: TokenExchangeInputs): HttpRequest {
  const request = grantRequest(id, inputs.idpTokenEndpoint, inputs.idpClient, inputs.idpTokenEndpoint, {
    grant_type: GRANT_TOKEN_EXCHANGE,
    requested_token_type: TOKEN_TYPE_ID_JAG,
    subject_token_type: TOKEN_TYPE_ID_TOKEN,
    audience: inputs.audience,
    resource: inputs.resource,
    scope: inputs.scope,
  });
  return { ...request, assertion: { param: 'subject_token', source: 'id_token', audience: inputs.audience, resource: inputs.resource } };
}

/** The IdP's answer: an ID-JAG (`issued_token_type` id-jag) in `access_token`, or a typed error. */
export function processTokenExchangeResponse(response: HttpResponseData): Result<string, FlowErrorData> {
  const json = parseJsonObject(response.body);
  if (response.status !== 200) {
    const oauth = OAuthErrorBodySchema.safeParse(json);
    if (oauth.success) {
      return err(
        flowError('token', `idp.${safeCode(oauth.data.error)}`, `identity provider refused the token exchange: ${quoteUntrusted(oauth.data.error)}`, {
          oauthError: oauth.data.error,
          status: response.status,
        }),
      );
    }
    return err(flowError('token', 'idp.http_status', `identity provider answered ${response.status}`, { status: response.status }));
  }
  const token = json?.access_token;
  if (typeof token !== 'string' || token.length === 0 || token.length > 16_384) {
    return err(flowError('token', 'idp.invalid_response', 'token exchange response lacks access_token'));
  }
  if (json?.issued_token_type !== TOKEN_TYPE_ID_JAG) {
    return err(flowError('token', 'idp.unexpected_token_type', `token exchange issued ${quoteUntrusted(json?.issued_token_type ?? '(none)')}, not an ID-JAG`));
  }
  return ok(token);
}
