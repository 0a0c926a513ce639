/** Client identity: dynamic client registration (RFC 7591) and the Client ID Metadata Document record. */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { err, ok, parseJsonObject, type HttpRequest, type HttpResponseData, type Result } from '../http.js';
import { ClientInformationSchema, OAuthErrorBodySchema, TokenEndpointAuthMethodSchema, type ClientMetadata } from '../schemas.js';
import type { ClientRecord } from '../store.js';
import { classifyAddress, splitUrl } from '../urls.js';
import { addsScope, unionScopes } from './scope.js';

type AuthMethod = ClientRecord['token_endpoint_auth_method'];

export const DEFAULT_GRANT_TYPES: readonly string[] = ['authorization_code', 'refresh_token'];

/** Configured method first; else a public client when the server allows it (PKCE protects the code). */
export function chooseTokenEndpointAuthMethod(configured: AuthMethod | undefined, supported: string[] | undefined): AuthMethod {
  if (configured) return configured;
  if (supported === undefined || supported.includes('none')) return 'none';
  if (supported.includes('client_secret_basic')) return 'client_secret_basic';
  if (supported.includes('client_secret_post')) return 'client_secret_post';
  return 'none';
}

/** SEP-837: `native` for loopback redirect URIs (CLI, desktop), `web` for a remote https one. */
export function applicationTypeFor(redirectUri: string): 'native' | 'web' {
  const host = splitUrl(redirectUri)?.host;
  return host !== undefined && classifyAddress(host) === 'loopback' ? 'native' : 'web';
}

export interface RegistrationInputs {
  endpoint: string;
  metadata: Omit<ClientMetadata, 'redirect_uris'>;
  redirectUri: string;
  scope?: string;
  authMethod: AuthMethod;
  /** RFC 7591 `grant_types` when the application configured none (the device grant joins when used). */
  grantTypes?: readonly string[];
}

export function buildRegistrationRequest(id: string, inputs: RegistrationInputs): HttpRequest {
  // RFC 7591 `scope` is what the client may ever request, and servers such as oidc-provider enforce
  // it: the configured scope is kept and the flow's selection added, never the one replacing the other.
  const scope = unionScopes(inputs.metadata.scope, inputs.scope);
  const body = {
    ...inputs.metadata,
    redirect_uris: [inputs.redirectUri],
    application_type: inputs.metadata.application_type ?? applicationTypeFor(inputs.redirectUri),
    grant_types: inputs.metadata.grant_types ?? inputs.grantTypes ?? DEFAULT_GRANT_TYPES,
    response_types: inputs.metadata.response_types ?? ['code'],
    token_endpoint_auth_method: inputs.authMethod,
    ...(scope === undefined ? {} : { scope }),
  };
  return {
    id,
    step: 'registration',
    method: 'POST',
    url: inputs.endpoint,
    headers: { 'content-type': 'application/json', accept: 'application/json' },
    body: JSON.stringify(body),
  };
}

function rejected(code: string, message: string, extra?: Partial<FlowErrorData>): FlowErrorData {
  return flowError('registration', code, message, extra);
}

/** A registration the client could not use is refused before anything is stored. */
export function processRegistrationResponse(
  response: HttpResponseData,
  inputs: { issuer: string; redirectUri: string; requestedMethod: AuthMethod; requestedGrantTypes?: string[] },
): Result<ClientRecord, FlowErrorData> {
  const json = parseJsonObject(response.body);
  if (response.status !== 200 && response.status !== 201) {
    const oauth = OAuthErrorBodySchema.safeParse(json);
    if (oauth.success) {
      const description = oauth.data.error_description ? `: ${quoteUntrusted(oauth.data.error_description)}` : '';
      return err(
        rejected(`registration.${safeCode(oauth.data.error)}`, `registration rejected with ${quoteUntrusted(oauth.data.error)}${description}`, {
          oauthError: oauth.data.error,
          status: response.status,
        }),
      );
    }
    return err(rejected('registration.http_status', `registration endpoint answered ${response.status}`, { status: response.status }));
  }
  const parsed = ClientInformationSchema.safeParse(json);
  if (!parsed.success) return err(rejected('registration.invalid_response', 'registration response lacks a client_id'));
  const info = parsed.data;
  // The client_id travels in URLs, form bodies and headers: control characters there are injection, not identity (C26).
  if (hasControlCharacter(info.client_id)) return err(rejected('registration.invalid_response', 'registration response has a client_id with control characters'));
  const method = TokenEndpointAuthMethodSchema.safeParse(info.token_endpoint_auth_method ?? inputs.requestedMethod);
  if (!method.success) {
    return err(rejected('registration.unusable_auth_method', `registered token_endpoint_auth_method ${quoteUntrusted(info.token_endpoint_auth_method)} is not supported`));
  }
  if (method.data !== 'none' && info.client_secret === undefined) {
    return err(rejected('registration.missing_secret', `registered method ${method.data} came without a client_secret`));
  }
  const redirectUris = info.redirect_uris ?? [inputs.redirectUri];
  // Only a server that answers with the registered scope is known to hold the client to it
  // (RFC 7591 §3.2.1 returns what was registered); without one, re-registering would be churn.
  const registeredScope = info.scope;
  if (!redirectUris.includes(inputs.redirectUri)) {
    return err(rejected('registration.redirect_uri_replaced', 'the server registered other redirect_uris than the one this client listens on'));
  }
  // RFC 7591 §3.2.1: the server answers with what it registered; without an answer, what was asked.
  const grantTypes = info.grant_types ?? inputs.requestedGrantTypes;
  return ok({
    client_id: info.client_id,
    ...(info.client_secret === undefined ? {} : { client_secret: info.client_secret }),
    ...(info.client_secret_expires_at === undefined ? {} : { client_secret_expires_at: info.client_secret_expires_at }),
    token_endpoint_auth_method: method.data,
    redirect_uris: redirectUris,
    issuer: inputs.issuer,
    source: 'dynamic',
    ...(registeredScope === undefined ? {} : { scope: registeredScope }),
    ...(grantTypes === undefined ? {} : { grant_types: grantTypes }),
  });
}

/** C0 controls and DEL; with `c1`, the C1 controls too (a terminal acts on those as well). */
export function hasControlCharacter(value: string, options: { c1?: boolean } = {}): boolean {
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || (options.c1 === true && c >= 0x80 && c <= 0x9f)) return true;
  }
  return false;
}

/** OAuth error codes are ASCII tokens by spec; anything else is folded so codes stay stable. */
export function safeCode(value: string): string {
  return /^[a-z0-9_]{1,64}$/i.test(value) ? value : 'unknown_error';
}

/**
 * A usable stored identity: bound to this issuer, secret unexpired, listening on our redirect URI,
 * and (for a dynamic client that registered a scope) registered for the scope about to be asked.
 */
export function clientUsable(
  client: ClientRecord | undefined,
  issuer: string,
  redirectUri: string | undefined,
  nowMs: number,
  scope?: string,
  grantType?: string,
): boolean {
  if (!client || client.issuer !== issuer) return false;
  if (client.client_secret_expires_at && client.client_secret_expires_at * 1000 <= nowMs) return false;
  if (client.source === 'dynamic' && client.scope !== undefined && addsScope(scope, client.scope)) return false;
  // A dynamic client registered before without this grant is registered again (older records name none: the defaults).
  if (grantType !== undefined && client.source === 'dynamic' && !(client.grant_types ?? DEFAULT_GRANT_TYPES).includes(grantType)) return false;
  return redirectUri === undefined || client.redirect_uris.includes(redirectUri);
}
