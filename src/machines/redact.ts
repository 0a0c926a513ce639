/**
 * The redacted projection of snapshots, events and effects: what traces, logs and the visualizer
 * may see. Secrets (tokens, codes, verifiers, client secrets, state, assertions) never pass; what
 * remains says which step ran and what it decided.
 */
import type { EngineContext, EngineEffect, EngineEvent } from './oauth.types.js';

export const REDACTED = '[redacted]';

// `token`: the RFC 7009 revocation request carries the refresh or access token under that name.
const SECRET_FORM_FIELDS = new Set(['token', 'code', 'device_code', 'code_verifier', 'refresh_token', 'client_secret', 'client_assertion', 'assertion', 'subject_token', 'actor_token', 'id_token', 'access_token', 'state', 'password']);
const SECRET_JSON_FIELDS = new Set(['access_token', 'refresh_token', 'id_token', 'client_secret', 'registration_access_token', 'code', 'device_code', 'assertion', 'client_assertion']);

function redactForm(body: string): string {
  const form = new URLSearchParams(body);
  for (const name of [...form.keys()]) if (SECRET_FORM_FIELDS.has(name)) form.set(name, REDACTED);
  return form.toString();
}

function redactJsonText(body: string): string {
  try {
    const value: unknown = JSON.parse(body);
    if (value === null || typeof value !== 'object' || Array.isArray(value)) return body.length > 0 ? REDACTED : body;
    const copy: Record<string, unknown> = { ...(value as Record<string, unknown>) };
    for (const name of Object.keys(copy)) if (SECRET_JSON_FIELDS.has(name)) copy[name] = REDACTED;
    return JSON.stringify(copy);
  } catch {
    return body.length > 0 ? REDACTED : body;
  }
}

/** Authorization URLs carry `state`; callbacks carry `code` and `state`. */
export function redactUrl(url: string): string {
  const query = url.indexOf('?');
  if (query < 0) return url;
  const hash = url.indexOf('#', query);
  const search = hash < 0 ? url.slice(query + 1) : url.slice(query + 1, hash);
  return `${url.slice(0, query)}?${redactForm(search)}${hash < 0 ? '' : url.slice(hash)}`;
}

function redactHeaders(headers: Record<string, string>): Record<string, string> {
  const copy: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    copy[name] = name === 'authorization' || name === 'dpop' || name === 'cookie' || name === 'set-cookie' ? REDACTED : value;
  }
  return copy;
}

export function redactEvent(event: EngineEvent): Record<string, unknown> {
  switch (event.type) {
    case 'http.response':
      return { ...event, headers: redactHeaders(event.headers), body: redactJsonText(event.body) };
    case 'random':
      return { type: event.type, state: REDACTED, codeVerifier: REDACTED, codeChallenge: REDACTED };
    case 'callback': {
      const params: Record<string, unknown> = {};
      for (const [name, value] of Object.entries(event.params)) params[name] = SECRET_FORM_FIELDS.has(name) ? REDACTED : value;
      return { ...event, params };
    }
    case 'store.loaded':
      return {
        type: event.type,
        tokens: event.tokens ? { generation: event.tokens.generation } : undefined,
        client: event.client ? { generation: event.client.generation, client_id: event.client.value.client_id } : undefined,
        discovery: event.discovery ? { generation: event.discovery.generation, issuer: event.discovery.value.issuer } : undefined,
      };
    default:
      // xstate.init carries the machine input, which can hold a pre-registered client secret.
      return 'input' in event ? { type: event.type } : { ...event };
  }
}

export function redactEffect(effect: EngineEffect): Record<string, unknown> {
  switch (effect.type) {
    case 'http.request': {
      const { request } = effect;
      const body =
        request.body === undefined
          ? undefined
          : request.headers['content-type'] === 'application/x-www-form-urlencoded'
            ? redactForm(request.body)
            : redactJsonText(request.body);
      return { type: effect.type, request: { ...request, headers: redactHeaders(request.headers), ...(body === undefined ? {} : { body }) } };
    }
    case 'browser.open':
      return { ...effect, url: redactUrl(effect.url) };
    case 'store.save':
      return { type: effect.type, kind: effect.kind, ifGeneration: effect.ifGeneration };
    default:
      return { ...effect };
  }
}

/** What of the context may be shown: which records are held and what the flow has learned. */
export function redactContext(context: EngineContext): Record<string, unknown> {
  const { tokens, client, transaction } = context;
  return {
    serverUrl: context.config.serverUrl,
    tokenVersion: context.tokenVersion,
    tokens: tokens && {
      token_type: tokens.token_type,
      expires_at: tokens.expires_at,
      scope: tokens.scope,
      issuer: tokens.issuer,
      resource: tokens.resource,
      refresh_token: tokens.refresh_token === undefined ? undefined : REDACTED,
      access_token: REDACTED,
    },
    client: client && { client_id: client.client_id, source: client.source, issuer: client.issuer, token_endpoint_auth_method: client.token_endpoint_auth_method, has_secret: client.client_secret !== undefined },
    discovery: context.discovery,
    generations: context.generations,
    challenge: context.challenge,
    resource: context.prm?.resource,
    resourceMetadataUrl: context.resourceMetadataUrl,
    issuer: context.issuer,
    legacy: context.legacy,
    requestedScope: context.requestedScope,
    redirectUri: context.redirectUri,
    transaction: transaction && { issuer: transaction.issuer, redirectUri: transaction.redirectUri, resource: transaction.resource, scope: transaction.scope, clientId: transaction.clientId },
    // The user code is shown to the person anyway; the device code is the secret the client redeems.
    device: context.device && { userCode: context.device.userCode, verificationUri: context.device.verificationUri, expiresAt: context.device.expiresAt, intervalMs: context.device.intervalMs },
    rejectedCallbacks: context.rejectedCallbacks,
    authorizationCount: context.authorizationCount,
    error: context.error,
    notices: context.notices,
  };
}

/**
 * The secret values a context holds. Redacting by field name misses a secret a server echoes back
 * in free text (an `error_description` quoting the client secret); these values are scrubbed by value.
 */
export function secretValues(context: EngineContext): string[] {
  const values = [
    context.tokens?.access_token,
    context.tokens?.refresh_token,
    context.client?.client_secret,
    context.config.preregistered?.client_secret,
    context.transaction?.state,
    context.transaction?.codeVerifier,
    context.code,
    context.device?.deviceCode,
  ];
  // Very short values would scrub ordinary words; real secrets are long random strings.
  return values.filter((value): value is string => typeof value === 'string' && value.length >= 8);
}

export function scrubSecrets(text: string, secrets: readonly string[]): string {
  let out = text;
  for (const secret of secrets) if (out.includes(secret)) out = out.split(secret).join(REDACTED);
  return out;
}
