/**
 * Pure decisions over the machine's context: what each guard asks and what each action computes.
 * The machine file names them; this file holds their bodies, so both read straight.
 */
import { flowError, type FlowErrorData } from './errors.js';
import { CREDENTIAL_UNAVAILABLE, SIGNING_ALG_UNSUPPORTED, type HttpRequest, type HttpResponseData, type Result } from './http.js';
import type { EngineContext, EngineEvent, LastResponse } from './oauth.types.js';
import type { AuthorizationServerMetadata, ProtectedResourceMetadata } from './schemas.js';
import { buildAuthorizationUrl, validateAuthorizationResponse, type CallbackVerdict } from './steps/authorization.js';
import {
  buildMetadataRequest,
  checkPkceSupport,
  processAuthorizationServerMetadataResponse,
  processResourceMetadataResponse,
  type DiscoveryProblem,
} from './steps/discovery.js';
import { chooseTokenEndpointAuthMethod, clientUsable, DEFAULT_GRANT_TYPES, processRegistrationResponse } from './steps/registration.js';
import {
  buildDeviceAuthorizationRequest,
  buildDeviceTokenRequest,
  DEVICE_CODE_GRANT,
  devicePollStatus,
  processDeviceAuthorizationResponse,
  type DeviceGrant,
} from './steps/device.js';
import { addsScope, selectScope, unionScopes, withOfflineAccess } from './steps/scope.js';
import { needsRefresh, processTokenResponse } from './steps/token.js';
import { buildClientCredentialsRequest, buildJwtBearerRequest, buildTokenExchangeRequest, processTokenExchangeResponse } from './steps/grants.js';
import { processRevocationResponse } from './steps/revocation.js';
import type { ClientRecord, TokenRecord } from './store.js';
import { readBearerChallenge } from './wwwAuthenticate.js';
import {
  authorizationServerMetadataCandidates,
  canonicalServerUrl,
  clientIdMetadataUrlProblem,
  legacyAuthorizationBase,
  originOf,
  protectedResourceMetadataCandidates,
  sameOrigin,
} from './urls.js';

export function nextRequestId(context: EngineContext): { seq: number; id: string } {
  const seq = context.seq + 1;
  return { seq, id: `req-${seq}` };
}

export function responseOf(last: LastResponse | undefined): HttpResponseData | undefined {
  return last?.kind === 'response' ? last : undefined;
}

export function lastResponseFrom(event: EngineEvent): LastResponse | undefined {
  if (event.type === 'http.response') {
    return { kind: 'response', status: event.status, headers: event.headers, body: event.body, at: event.at };
  }
  if (event.type === 'http.failed') return { kind: 'failed', reason: event.reason, message: event.message, at: event.at };
  return undefined;
}

export function isPending(context: EngineContext, event: EngineEvent): boolean {
  return (event.type === 'http.response' || event.type === 'http.failed') && event.id === context.pendingId;
}

/** A network failure of an OAuth call, as a typed error naming the step. */
export function networkError(step: HttpRequest['step'], event: EngineEvent): FlowErrorData {
  const reason = event.type === 'http.failed' ? event.reason : 'unknown';
  const message = event.type === 'http.failed' ? event.message : 'request failed';
  // The adapter could not complete a marked request (no key, the assertion provider failed): not the network.
  // C77: the key's algorithm is not one the AS accepts (or the key has none we sign with): nothing was sent.
  if (reason === SIGNING_ALG_UNSUPPORTED) {
    return flowError('token', 'token.signing_alg_unsupported', `${step} request not sent: ${message}`);
  }
  if (reason === CREDENTIAL_UNAVAILABLE) return flowError('token', 'token.credential_unavailable', `${step} request not sent: ${message}`);
  return flowError('network', `network.${reason}`, `${step} request failed: ${message}`);
}

/** Every candidate failed: say why the last one did (a dead network reads differently from a 404). */
export function discoveryExhausted(context: EngineContext, step: 'prm' | 'asm'): FlowErrorData {
  const last = context.lastResponse;
  if (last?.kind === 'failed') return flowError('network', `network.${last.reason}`, `${step} request failed: ${last.message}`);
  const status = last?.kind === 'response' ? ` (last answer: ${last.status})` : '';
  return step === 'prm'
    ? flowError('flow', 'prm.not_found', `no usable protected resource metadata${status}`)
    : flowError('flow', 'asm.not_found', `no usable authorization server metadata${status}`);
}

// ---------------------------------------------------------------- challenge and triggers

export function challengeFrom(event: EngineEvent): EngineContext['challenge'] {
  if (event.type !== 'unauthorized') return undefined;
  const bearer = readBearerChallenge(event.wwwAuthenticate);
  if (!bearer) return {};
  return {
    ...(bearer.resourceMetadata === undefined ? {} : { resourceMetadata: bearer.resourceMetadata }),
    ...(bearer.scope === undefined ? {} : { scope: bearer.scope }),
    ...(bearer.error === undefined ? {} : { error: bearer.error }),
  };
}

export function isInsufficientScope(event: EngineEvent): boolean {
  return event.type === 'unauthorized' && event.status === 403 && challengeFrom(event)?.error === 'insufficient_scope';
}

/** The rejected request carried an older token (or none) than the one now held: just replay it. */
export function requestUsedStaleToken(context: EngineContext, event: EngineEvent): boolean {
  return event.type === 'unauthorized' && context.tokens !== undefined && event.tokenVersion !== context.tokenVersion;
}

export function authorizationBudgetSpent(context: EngineContext, event: EngineEvent): boolean {
  return event.type === 'unauthorized' && event.authorizations >= context.config.policy.maxAuthorizations;
}

export function tokenFresh(context: EngineContext, event: EngineEvent): boolean {
  return (
    event.type === 'token.check' &&
    context.tokens !== undefined &&
    !needsRefresh(context.tokens, event.at, context.config.policy.refreshSkewMs)
  );
}

/** A refresh needs the refresh token, where to send it and who to be, all bound to one issuer. */
export function canRefresh(context: EngineContext): boolean {
  const { tokens, discovery, client } = context;
  return (
    tokens?.refresh_token !== undefined &&
    discovery !== undefined &&
    discovery.issuer === tokens.issuer &&
    client !== undefined &&
    client.issuer === tokens.issuer
  );
}

/** A 401 is worth a refresh once per operation; a refreshed token rejected again needs re-discovery (R07). */
export function refreshAlreadyTried(event: EngineEvent): boolean {
  return event.type === 'unauthorized' && (event.refreshes ?? 0) > 0;
}

// ---------------------------------------------------------------- protected resource metadata

/** DESIGN policy 2: a `resource_metadata` on another origin is not fetched unless allow-listed. */
export function prmCandidatesFor(context: EngineContext, challenge: EngineContext['challenge']): EngineContext['prmCandidates'] {
  const { serverUrl, policy } = context.config;
  const header = challenge?.resourceMetadata;
  const headerAllowed =
    header !== undefined &&
    (sameOrigin(header, serverUrl) || policy.allowedMetadataOrigins.some((origin) => sameOrigin(origin, header)));
  return protectedResourceMetadataCandidates(serverUrl, headerAllowed ? header : undefined);
}

export function prmRequest(context: EngineContext, id: string): HttpRequest | undefined {
  const candidate = context.prmCandidates[context.prmIndex];
  return candidate && buildMetadataRequest(id, 'prm', candidate.url, context.config.protocolVersion);
}

export function prmOutcome(context: EngineContext): Result<ProtectedResourceMetadata, DiscoveryProblem> {
  const candidate = context.prmCandidates[context.prmIndex];
  const response = responseOf(context.lastResponse);
  if (!candidate || !response) {
    return { ok: false, error: { fatal: false, error: flowError('flow', 'prm.unreachable', context.lastResponse?.kind === 'failed' ? context.lastResponse.message : 'no response') } };
  }
  return processResourceMetadataResponse(response, candidate, context.config.policy.resourceMatch);
}

export function morePrmCandidates(context: EngineContext): boolean {
  return context.prmIndex + 1 < context.prmCandidates.length;
}

/** DESIGN "multiple authorization servers": prefer one this client already holds credentials for. */
export function chooseIssuer(context: EngineContext, prm: ProtectedResourceMetadata): string {
  const bound = [context.tokens?.issuer, context.client?.issuer, context.config.preregistered?.issuer];
  return prm.authorization_servers.find((issuer) => bound.includes(issuer)) ?? (prm.authorization_servers[0] as string);
}

// ---------------------------------------------------------------- authorization server metadata

export function asmCandidatesFor(issuer: string): EngineContext['asmCandidates'] {
  return authorizationServerMetadataCandidates(issuer);
}

export function legacyCandidates(context: EngineContext): { issuer: string; candidates: EngineContext['asmCandidates'] } {
  const base = legacyAuthorizationBase(context.config.serverUrl);
  return { issuer: base.issuer, candidates: base.candidates };
}

export function asmRequest(context: EngineContext, id: string): HttpRequest | undefined {
  const candidate = context.asmCandidates[context.asmIndex];
  return candidate && buildMetadataRequest(id, 'asm', candidate.url, context.config.protocolVersion);
}

export function asmOutcome(context: EngineContext): Result<AuthorizationServerMetadata, DiscoveryProblem> {
  const candidate = context.asmCandidates[context.asmIndex];
  const response = responseOf(context.lastResponse);
  if (!candidate || !response || context.issuer === undefined) {
    return { ok: false, error: { fatal: false, error: flowError('flow', 'asm.unreachable', context.lastResponse?.kind === 'failed' ? context.lastResponse.message : 'no response') } };
  }
  const outcome = processAuthorizationServerMetadataResponse(response, candidate, {
    issuer: context.issuer,
    ...(context.legacy ? { legacyServerOrigin: originOf(context.config.serverUrl) } : {}),
    ...(context.networkClass === undefined ? {} : { networkClass: context.networkClass }),
  });
  if (!outcome.ok) return outcome;
  // PKCE protects the authorization code; a machine-to-machine grant has none.
  if (context.config.grant !== undefined) return outcome;
  const pkce = checkPkceSupport(outcome.value, {
    quirkIssuers: context.config.policy.pkceQuirkIssuers,
    allowUnadvertised: context.config.policy.allowUnadvertisedPkce,
  });
  return pkce.ok ? outcome : { ok: false, error: { fatal: true, error: pkce.error } };
}

export function pkceNotice(context: EngineContext): string | undefined {
  if (context.config.grant !== undefined) return undefined;
  const verdict = checkPkceSupport(context.asm, {
    quirkIssuers: context.config.policy.pkceQuirkIssuers,
    allowUnadvertised: context.config.policy.allowUnadvertisedPkce,
  });
  return verdict.ok ? verdict.notice : undefined;
}

export function moreAsmCandidates(context: EngineContext): boolean {
  return context.asmIndex + 1 < context.asmCandidates.length;
}

/** 2025-03-26 defaults when the server origin publishes no metadata at all. */
export function legacyDefaultMetadata(context: EngineContext): AuthorizationServerMetadata {
  const base = legacyAuthorizationBase(context.config.serverUrl);
  return {
    issuer: base.issuer,
    authorization_endpoint: base.authorizationEndpoint,
    token_endpoint: base.tokenEndpoint,
    registration_endpoint: base.registrationEndpoint,
  };
}

/** Without PRM the canonical server URL is the resource; with it, the PRM's string verbatim. */
export function resourceFor(context: EngineContext): string {
  return context.prm?.resource ?? canonicalServerUrl(context.config.serverUrl);
}

// ---------------------------------------------------------------- scope

export function wantsRefreshTokens(context: EngineContext): boolean {
  // A machine-to-machine grant is simply run again; it asks for no refresh token (no offline_access).
  if (context.config.grant !== undefined) return false;
  const grants = context.config.clientMetadata.grant_types;
  return grants === undefined || grants.includes('refresh_token');
}

export function scopeForFlow(context: EngineContext): string | undefined {
  const selected = selectScope({
    ...(context.challenge?.scope === undefined ? {} : { challengeScope: context.challenge.scope }),
    ...(context.prm?.scopes_supported === undefined ? {} : { prmScopesSupported: context.prm.scopes_supported }),
    ...(context.asm?.scopes_supported === undefined ? {} : { asScopesSupported: context.asm.scopes_supported }),
    wantsRefreshTokens: wantsRefreshTokens(context),
  });
  return unionScopes(context.scopeFloor, context.config.scope, selected ?? context.config.clientMetadata.scope);
}

/** SEP-2350: held ∪ requested ∪ challenged. */
export function stepUpScope(context: EngineContext, event: EngineEvent): string | undefined {
  return unionScopes(context.tokens?.scope, context.requestedScope, challengeFrom(event)?.scope);
}

/** DESIGN policy 9: a 403 whose union adds nothing to what is granted is final. */
export function stepUpAddsNothing(context: EngineContext, event: EngineEvent): boolean {
  return !addsScope(stepUpScope(context, event), context.tokens?.scope);
}

// ---------------------------------------------------------------- client identity

export type ClientPlan = 'stored' | 'preregistered' | 'preregisteredElsewhere' | 'cimd' | 'dynamic' | 'none';

export function planClient(context: EngineContext, redirectUri: string | undefined): ClientPlan {
  const issuer = context.issuer;
  if (issuer === undefined) return 'none';
  const pre = context.config.preregistered;
  const grantType = deviceAuthorizationOffered(context) ? DEVICE_CODE_GRANT : undefined;
  if (clientUsable(context.client, issuer, redirectUri, context.now, context.requestedScope, grantType) && (pre === undefined || context.client?.client_id === pre.client_id)) {
    return 'stored';
  }
  if (pre) {
    const bound = pre.issuer ?? (context.client?.client_id === pre.client_id ? context.client.issuer : undefined);
    return bound === undefined || bound === issuer ? 'preregistered' : 'preregisteredElsewhere';
  }
  const cimd = context.config.clientMetadataUrl;
  if (cimd !== undefined && clientIdMetadataUrlProblem(cimd) === undefined && context.asm?.client_id_metadata_document_supported === true) {
    return 'cimd';
  }
  return context.asm?.registration_endpoint !== undefined ? 'dynamic' : 'none';
}

/** The loopback port to ask for first: the one registered with the identity we expect to use (DESIGN policy 12). */
export function preferredRedirect(context: EngineContext): { preferredRedirectUri?: string; fixed: boolean } {
  const plan = planClient(context, undefined);
  const preferred =
    plan === 'stored'
      ? context.client?.redirect_uris[0]
      : plan === 'preregistered'
        ? context.config.preregistered?.redirect_uris[0]
        : context.config.clientMetadata.redirect_uris?.[0];
  const fixed = plan === 'preregistered' || plan === 'cimd' || (plan === 'stored' && context.client?.source !== 'dynamic');
  return { ...(preferred === undefined ? {} : { preferredRedirectUri: preferred }), fixed };
}

/** The plan for this flow's redirect URI, as the `client.selecting` guards ask it. */
export function clientPlan(context: EngineContext): ClientPlan {
  return planClient(context, context.redirectUri);
}

export function fixedRedirectMismatch(context: EngineContext): boolean {
  const plan = clientPlan(context);
  const uri = context.redirectUri;
  if (uri === undefined) return true;
  if (plan === 'preregistered') return !(context.config.preregistered?.redirect_uris.includes(uri) ?? false);
  if (plan === 'cimd') return !(context.config.clientMetadata.redirect_uris?.includes(uri) ?? false);
  return false;
}

export function preregisteredRecord(context: EngineContext): ClientRecord | undefined {
  const pre = context.config.preregistered;
  if (!pre || context.issuer === undefined) return undefined;
  return {
    client_id: pre.client_id,
    ...(pre.client_secret === undefined ? {} : { client_secret: pre.client_secret }),
    token_endpoint_auth_method: pre.token_endpoint_auth_method,
    redirect_uris: pre.redirect_uris,
    issuer: context.issuer,
    source: 'preregistered',
  };
}

export function cimdRecord(context: EngineContext): ClientRecord | undefined {
  const url = context.config.clientMetadataUrl;
  if (url === undefined || context.issuer === undefined) return undefined;
  return {
    client_id: url,
    token_endpoint_auth_method: 'none',
    redirect_uris: context.config.clientMetadata.redirect_uris ?? [],
    issuer: context.issuer,
    source: 'cimd',
  };
}

/**
 * What to register as the client's scope: everything this resource offers (PRM `scopes_supported`,
 * kept to what the AS lists when it lists any), the scope of this flow, the configured scope and
 * `offline_access` when offered, so a later step-up within the resource's scopes stays allowed.
 */
export function registrationScope(context: EngineContext): string | undefined {
  const offered = context.asm?.scopes_supported;
  const resourceScopes = (context.prm?.scopes_supported ?? []).filter((scope) => offered === undefined || offered.includes(scope));
  const base = unionScopes(context.config.clientMetadata.scope, context.requestedScope, resourceScopes.join(' '));
  return withOfflineAccess(base, {
    ...(offered === undefined ? {} : { asScopesSupported: offered }),
    wantsRefreshTokens: wantsRefreshTokens(context),
  });
}

/** What a dynamic client registers for: the code flow with refresh, and the device grant when it will be used. */
export function registrationGrantTypes(context: EngineContext): string[] {
  return deviceAuthorizationOffered(context) ? [...DEFAULT_GRANT_TYPES, DEVICE_CODE_GRANT] : [...DEFAULT_GRANT_TYPES];
}

/** A registration response as the guard, the action and the failure all judge it. */
export function registrationOutcome(context: EngineContext, event: EngineEvent): Result<ClientRecord, FlowErrorData> {
  return event.type === 'http.response'
    ? processRegistrationResponse(event, {
        issuer: context.issuer ?? '',
        redirectUri: context.redirectUri ?? '',
        requestedMethod: registrationAuthMethod(context),
        requestedGrantTypes: registrationGrantTypes(context),
      })
    : { ok: false, error: flowError('flow', 'flow.internal', 'an internal invariant failed') };
}

export function registrationAuthMethod(context: EngineContext): ClientRecord['token_endpoint_auth_method'] {
  return chooseTokenEndpointAuthMethod(context.config.clientMetadata.token_endpoint_auth_method, context.asm?.token_endpoint_auth_methods_supported);
}

/** The one authorization URL for this flow; the guard and the action both use it, so they agree. */
export function authorizationUrlFor(context: EngineContext, event: EngineEvent): string | undefined {
  if (event.type !== 'random' || !context.asm || !context.client || context.redirectUri === undefined) return undefined;
  return buildAuthorizationUrl({
    authorizationEndpoint: context.asm.authorization_endpoint,
    clientId: context.client.client_id,
    redirectUri: context.redirectUri,
    codeChallenge: event.codeChallenge,
    state: event.state,
    resource: resourceFor(context),
    ...(context.requestedScope === undefined ? {} : { scope: context.requestedScope }),
  });
}

// ---------------------------------------------------------------- callback and tokens

export function callbackVerdict(context: EngineContext): CallbackVerdict {
  const transaction = context.transaction;
  if (!transaction || !context.lastCallback) return { kind: 'ignore', reason: 'state_missing' };
  return validateAuthorizationResponse(context.lastCallback, {
    state: transaction.state,
    issuer: transaction.issuer,
    issAdvertised: transaction.issAdvertised,
  });
}

export function tokenOutcome(context: EngineContext, event: EngineEvent, previous?: TokenRecord): Result<TokenRecord, FlowErrorData> {
  if (event.type !== 'http.response') {
    return { ok: false, error: flowError('token', 'token.no_response', 'no token response') };
  }
  const authorization = context.transaction ?? context.device;
  const issuer = previous?.issuer ?? authorization?.issuer ?? context.issuer ?? '';
  const resource = previous?.resource ?? authorization?.resource ?? resourceFor(context);
  const requestedScope = previous ? undefined : context.config.grant !== undefined ? context.requestedScope : authorization?.scope;
  return processTokenResponse(event, {
    at: event.at,
    issuer,
    resource,
    ...(requestedScope === undefined ? {} : { requestedScope }),
    ...(previous === undefined ? {} : { previous }),
    minLifetimeSeconds: context.config.policy.minTokenLifetimeSeconds,
    maxLifetimeSeconds: context.config.policy.maxTokenLifetimeSeconds,
    dpop: dpopInUse(context, previous),
  });
}

/**
 * DESIGN policy 11: DPoP when the authorization server lists ES256 in
 * `dpop_signing_alg_values_supported` (the option forces or disables it). A refresh keeps the
 * binding the held token has.
 */
export function dpopInUse(context: EngineContext, previous?: TokenRecord): boolean {
  const mode = context.config.policy.dpop;
  if (mode === 'off') return false;
  if (mode === 'always') return true;
  if (previous !== undefined) return previous.token_type === 'dpop';
  return context.asm?.dpop_signing_alg_values_supported?.includes('ES256') === true;
}

/** Marks a token request for a DPoP proof when DPoP is in use. */
export function withDpop(context: EngineContext, request: HttpRequest, previous?: TokenRecord): HttpRequest {
  return dpopInUse(context, previous) ? { ...request, dpop: true } : request;
}

/** `invalid_grant` and its kin mean the refresh token is dead: forget that generation, authorize anew. */
export function refreshRejectedGrant(context: EngineContext, event: EngineEvent): boolean {
  const outcome = tokenOutcome(context, event, context.tokens);
  return !outcome.ok && (outcome.error.oauthError === 'invalid_grant' || outcome.error.oauthError === 'invalid_token');
}

/** The client identity itself is dead (an expired DCR secret, a deleted client): re-register. */
export function refreshRejectedClient(context: EngineContext, event: EngineEvent): boolean {
  const outcome = tokenOutcome(context, event, context.tokens);
  return !outcome.ok && (outcome.error.oauthError === 'invalid_client' || outcome.error.oauthError === 'unauthorized_client');
}

// ---------------------------------------------------------------- revocation (RFC 7009)

/** Revocation needs tokens, the endpoint the issuer advertised and the identity they were issued to. */
export function canRevoke(context: EngineContext): boolean {
  const { tokens, discovery, client } = context;
  return (
    tokens !== undefined &&
    discovery?.revocation_endpoint !== undefined &&
    discovery.issuer === tokens.issuer &&
    client !== undefined &&
    client.issuer === tokens.issuer
  );
}

export function revocationAccepted(context: EngineContext, event: EngineEvent): boolean {
  return event.type === 'http.response' && isPending(context, event) && processRevocationResponse(event).ok;
}

/** What a refused or failed revocation is reported as (the tokens are forgotten locally either way). */
export function revocationProblem(event: EngineEvent): FlowErrorData {
  if (event.type === 'http.response') {
    const outcome = processRevocationResponse(event);
    return outcome.ok ? flowError('token', 'revocation.internal', 'revocation accepted') : outcome.error;
  }
  return networkError('revocation', event);
}

// ---------------------------------------------------------------- machine-to-machine grants (issue 4)

export type GrantKind = NonNullable<EngineContext['config']['grant']>['type'];

export function grantIs(context: EngineContext, kind: GrantKind): boolean {
  return context.config.grant?.type === kind;
}

/** The grant request for this flow: same `resource` and scope selection as the browser flow. */
export function grantRequest(context: EngineContext, id: string): HttpRequest | undefined {
  const grant = context.config.grant;
  const { asm, issuer } = context;
  if (!grant || !asm || issuer === undefined) return undefined;
  const common = {
    tokenEndpoint: asm.token_endpoint,
    issuer,
    client: { ...(grant.clientId === undefined ? {} : { clientId: grant.clientId }), ...(grant.clientSecret === undefined ? {} : { clientSecret: grant.clientSecret }), authMethod: grant.authMethod },
    resource: resourceFor(context),
    ...(context.requestedScope === undefined ? {} : { scope: context.requestedScope }),
    // C77: the adapter signs a client assertion only with an algorithm this list names (when present).
    ...(asm.token_endpoint_auth_signing_alg_values_supported === undefined ? {} : { signingAlgValuesSupported: asm.token_endpoint_auth_signing_alg_values_supported }),
  };
  if (grant.type === 'client_credentials') return buildClientCredentialsRequest(id, common);
  return buildJwtBearerRequest(id, { ...common, ...(context.idJag === undefined ? {} : { assertion: context.idJag }) });
}

export function tokenExchangeRequest(context: EngineContext, id: string): HttpRequest | undefined {
  const grant = context.config.grant;
  if (grant?.type !== 'enterprise' || context.issuer === undefined) return undefined;
  const idp = grant.idp;
  return buildTokenExchangeRequest(id, {
    idpTokenEndpoint: idp.tokenEndpoint,
    idpClient: { clientId: idp.clientId, ...(idp.clientSecret === undefined ? {} : { clientSecret: idp.clientSecret }), authMethod: idp.clientSecret === undefined ? 'none' : 'client_secret_post' },
    audience: context.issuer,
    resource: resourceFor(context),
    ...(context.requestedScope === undefined ? {} : { scope: context.requestedScope }),
  });
}

export function tokenExchangeOutcome(event: EngineEvent): Result<string, FlowErrorData> {
  if (event.type !== 'http.response') return { ok: false, error: flowError('token', 'idp.no_response', 'no token exchange response') };
  return processTokenExchangeResponse(event);
}

// ---------------------------------------------------------------- RFC 8628 device authorization

/** Chosen by configuration, used only when the server offers it (a 2025-03-26 server has no metadata to say so). */
export function deviceAuthorizationOffered(context: EngineContext): boolean {
  return context.config.interaction === 'device' && context.config.grant === undefined && !context.legacy && context.asm?.device_authorization_endpoint !== undefined;
}

export function deviceAuthorizationRequest(context: EngineContext, id: string): HttpRequest | undefined {
  const endpoint = context.asm?.device_authorization_endpoint;
  if (endpoint === undefined || !context.client) return undefined;
  return buildDeviceAuthorizationRequest(id, {
    endpoint,
    client: context.client,
    ...(context.requestedScope === undefined ? {} : { scope: context.requestedScope }),
    resource: resourceFor(context),
  });
}

export function deviceAuthorizationOutcome(context: EngineContext, event: EngineEvent): Result<DeviceGrant, FlowErrorData> {
  if (event.type !== 'http.response') return { ok: false, error: flowError('flow', 'device.no_response', 'no device authorization response') };
  return processDeviceAuthorizationResponse(event, { at: event.at, minIntervalMs: context.config.policy.minDevicePollIntervalMs });
}

export function deviceTokenRequest(context: EngineContext, id: string): HttpRequest | undefined {
  const { asm, client, device } = context;
  if (!asm || !client || !device) return undefined;
  return withDpop(context, buildDeviceTokenRequest(id, { tokenEndpoint: asm.token_endpoint, client, deviceCode: device.deviceCode, resource: device.resource }));
}

/** RFC 8628 §3.5: `authorization_pending` or `slow_down` while the device code is still valid means poll again. */
export function devicePollAgain(context: EngineContext, event: EngineEvent): boolean {
  if (event.type !== 'http.response' || !context.device || event.at >= context.device.expiresAt) return false;
  return devicePollStatus(event) !== undefined;
}

/** RFC 8628 §3.5: a timeout or a refused connection while polling backs off instead of ending the wait. */
export function devicePollRetryable(context: EngineContext, event: EngineEvent): boolean {
  if (event.type !== 'http.failed' || !context.device || event.at >= context.device.expiresAt) return false;
  return event.reason === 'timeout' || event.reason === 'unreachable';
}

export function devicePollFailure(context: EngineContext, event: EngineEvent): FlowErrorData {
  const pollAgain = event.type === 'http.response' && devicePollStatus(event) !== undefined;
  const lapsed = (event.type === 'http.response' || event.type === 'http.failed') && context.device !== undefined && event.at >= context.device.expiresAt;
  if (pollAgain || (lapsed && event.type === 'http.failed')) return flowError('flow', 'device.expired', 'the device code expired before the authorization was approved');
  if (event.type === 'http.failed') return networkError('token', event);
  const outcome = tokenOutcome(context, event);
  return outcome.ok ? flowError('flow', 'flow.internal', 'an internal invariant failed') : outcome.error;
}
