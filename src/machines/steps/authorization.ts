/** The authorization request (PKCE S256, state, resource) and validation of the redirect back. */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { withQueryParams } from '../urls.js';
import { safeCode } from './registration.js';

export interface AuthorizationRequestInputs {
  authorizationEndpoint: string;
  clientId: string;
  redirectUri: string;
  codeChallenge: string;
  state: string;
  resource: string;
  scope?: string;
}

export function buildAuthorizationUrl(inputs: AuthorizationRequestInputs): string | undefined {
  return withQueryParams(inputs.authorizationEndpoint, {
    response_type: 'code',
    client_id: inputs.clientId,
    redirect_uri: inputs.redirectUri,
    code_challenge: inputs.codeChallenge,
    code_challenge_method: 'S256',
    state: inputs.state,
    scope: inputs.scope,
    resource: inputs.resource,
    // Without consent some servers silently drop offline_access (SEP-2207).
    prompt: inputs.scope?.split(' ').includes('offline_access') ? 'consent' : undefined,
  });
}

/** The redirect's query; a parameter that arrived more than once is an array. */
export type CallbackParams = Record<string, string | string[]>;

export interface CallbackExpectation {
  state: string;
  issuer: string;
  /** `authorization_response_iss_parameter_supported` from the validated metadata. */
  issAdvertised: boolean;
}

export type CallbackVerdict =
  | { kind: 'ignore'; reason: 'state_missing' | 'state_mismatch' }
  | { kind: 'fail'; error: FlowErrorData }
  | { kind: 'code'; code: string };

function single(params: CallbackParams, name: string): string | undefined | null {
  const value = params[name];
  if (Array.isArray(value)) return null;
  return value;
}

/**
 * Order matters: `state` first (a forged redirect is ignored, DESIGN policy 7), then RFC 9207 `iss`
 * with plain string comparison, and only then `error` or `code` (a mix-up attacker must not get
 * its error shown, nor its code redeemed).
 */
export function validateAuthorizationResponse(params: CallbackParams, expected: CallbackExpectation): CallbackVerdict {
  const state = single(params, 'state');
  if (state === undefined) return { kind: 'ignore', reason: 'state_missing' };
  if (state === null || !constantTimeEqual(state, expected.state)) return { kind: 'ignore', reason: 'state_mismatch' };

  const iss = single(params, 'iss');
  if (iss === null) return fail('callback.duplicate_parameter', 'the authorization response repeats iss');
  if (iss === undefined && expected.issAdvertised) {
    return fail('callback.iss_missing', 'the authorization server advertises iss but the response lacks it');
  }
  if (iss !== undefined && iss !== expected.issuer) {
    return fail('callback.iss_mismatch', `the authorization response came from issuer ${quoteUntrusted(iss)}, expected ${quoteUntrusted(expected.issuer)}`);
  }

  // Implicit, hybrid and JARM answers are never accepted from the front channel (RFC 9700 §2.1.2, C48).
  for (const name of ['access_token', 'id_token', 'response']) {
    if (params[name] !== undefined) return fail('callback.unexpected_parameter', `the authorization response carries ${name}, which this client never requested`);
  }
  for (const name of ['code', 'error', 'error_description']) {
    if (single(params, name) === null) return fail('callback.duplicate_parameter', `the authorization response repeats ${name}`);
  }
  const error = single(params, 'error');
  if (typeof error === 'string') {
    const description = single(params, 'error_description');
    return {
      kind: 'fail',
      error: flowError('flow', `authorize.${safeCode(error)}`, `authorization refused: ${quoteUntrusted(error)}${description ? ` ${quoteUntrusted(description)}` : ''}`, {
        oauthError: error,
      }),
    };
  }
  const code = single(params, 'code');
  if (typeof code !== 'string' || code.length === 0) return fail('callback.code_missing', 'the authorization response has neither code nor error');
  return { kind: 'code', code };
}

function fail(code: string, message: string): CallbackVerdict {
  return { kind: 'fail', error: flowError('flow', code, message) };
}

/** Comparison time independent of where the strings differ (the state is a CSRF secret). */
export function constantTimeEqual(a: string, b: string): boolean {
  let diff = a.length ^ b.length;
  const length = Math.max(a.length, b.length);
  for (let i = 0; i < length; i++) diff |= (a.charCodeAt(i) || 0) ^ (b.charCodeAt(i) || 0);
  return diff === 0;
}
