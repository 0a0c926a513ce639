/**
 * RFC 8628 device authorization grant: for a client with no browser of its own. The person opens
 * the verification URI on another device and enters the user code while the client polls the
 * token endpoint at the interval the server sets.
 */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { err, ok, parseJsonObject, type HttpRequest, type HttpResponseData, type Result } from '../http.js';
import { DeviceAuthorizationResponseSchema, OAuthErrorBodySchema } from '../schemas.js';
import type { ClientRecord } from '../store.js';
import { isAllowedOAuthUrl, splitUrl } from '../urls.js';
import { hasControlCharacter, safeCode } from './registration.js';
import { clientAuthenticatedPost } from './token.js';

export const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

/** RFC 8628 §3.2: five seconds when the server names no interval; §3.5: slow_down adds five. */
export const DEFAULT_DEVICE_INTERVAL_S = 5;
export const SLOW_DOWN_STEP_MS = 5_000;
/** A server cannot keep the client polling for longer than this, whatever `expires_in` says. */
export const MAX_DEVICE_CODE_LIFETIME_S = 1_800;
/** Back-off after a transient network failure doubles the interval up to this. */
export const MAX_DEVICE_INTERVAL_MS = 60_000;
/** What a person is asked to type: short, printable, no markup or terminal escapes. */
const MAX_USER_CODE_CHARS = 64;

type ClientAuth = Pick<ClientRecord, 'client_id' | 'client_secret' | 'token_endpoint_auth_method'>;

export interface DeviceAuthorizationInputs {
  endpoint: string;
  client: ClientAuth;
  scope?: string;
  /** RFC 8707: the same resource the token request will name. */
  resource: string;
}

export function buildDeviceAuthorizationRequest(id: string, inputs: DeviceAuthorizationInputs): HttpRequest {
  return clientAuthenticatedPost(id, 'device_authorization', inputs.endpoint, inputs.client, { scope: inputs.scope, resource: inputs.resource });
}

/** What the person is shown; the device code itself stays in the machine. */
export interface DevicePrompt {
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  /** Epoch milliseconds. */
  expiresAt: number;
}

export interface DeviceGrant extends DevicePrompt {
  deviceCode: string;
  intervalMs: number;
}

function printable(value: string, max: number): boolean {
  return value.length > 0 && value.length <= max && !hasControlCharacter(value, { c1: true });
}

/** A URI shown to a person to open: https (or http to loopback), no credentials, no control characters. */
function safeVerificationUri(value: string): boolean {
  return printable(value, 2_048) && isAllowedOAuthUrl(value) && splitUrl(value)?.authority.includes('@') === false;
}

export function processDeviceAuthorizationResponse(
  response: HttpResponseData,
  expected: { at: number; minIntervalMs: number },
): Result<DeviceGrant, FlowErrorData> {
  const json = parseJsonObject(response.body);
  if (response.status !== 200) {
    const oauth = OAuthErrorBodySchema.safeParse(json);
    if (oauth.success) {
      const description = oauth.data.error_description ? ` ${quoteUntrusted(oauth.data.error_description)}` : '';
      return err(
        flowError('flow', `device.${safeCode(oauth.data.error)}`, `device authorization refused: ${quoteUntrusted(oauth.data.error)}${description}`, {
          oauthError: oauth.data.error,
          status: response.status,
        }),
      );
    }
    return err(flowError('flow', 'device.http_status', `device authorization endpoint answered ${response.status}`, { status: response.status }));
  }
  const parsed = DeviceAuthorizationResponseSchema.safeParse(json);
  if (!parsed.success) {
    return err(flowError('flow', 'device.invalid_response', 'device authorization response lacks device_code, user_code, verification_uri or expires_in'));
  }
  const grant = parsed.data;
  if (!printable(grant.user_code, MAX_USER_CODE_CHARS)) {
    return err(flowError('flow', 'device.invalid_response', 'the user code is empty, too long or has control characters'));
  }
  if (!safeVerificationUri(grant.verification_uri)) {
    return err(flowError('flow', 'device.invalid_response', `verification_uri ${quoteUntrusted(grant.verification_uri)} is not an https URL a person can safely open`));
  }
  const interval = grant.interval ?? DEFAULT_DEVICE_INTERVAL_S;
  const lifetime = Math.min(grant.expires_in, MAX_DEVICE_CODE_LIFETIME_S);
  // A bad `verification_uri_complete` is dropped, not fatal: the plain URI and the code still work.
  const complete = grant.verification_uri_complete !== undefined && safeVerificationUri(grant.verification_uri_complete) ? grant.verification_uri_complete : undefined;
  return ok({
    deviceCode: grant.device_code,
    userCode: grant.user_code,
    verificationUri: grant.verification_uri,
    ...(complete === undefined ? {} : { verificationUriComplete: complete }),
    expiresAt: expected.at + lifetime * 1000,
    intervalMs: Math.min(Math.max(interval * 1000, expected.minIntervalMs), MAX_DEVICE_INTERVAL_MS),
  });
}

export interface DeviceTokenInputs {
  tokenEndpoint: string;
  client: ClientAuth;
  deviceCode: string;
  resource: string;
}

export function buildDeviceTokenRequest(id: string, inputs: DeviceTokenInputs): HttpRequest {
  return clientAuthenticatedPost(id, 'token', inputs.tokenEndpoint, inputs.client, {
    grant_type: DEVICE_CODE_GRANT,
    device_code: inputs.deviceCode,
    resource: inputs.resource,
  });
}

/** RFC 8628 §3.5: the two answers that mean "ask again later". */
export function devicePollStatus(response: HttpResponseData): 'authorization_pending' | 'slow_down' | undefined {
  if (response.status !== 400) return undefined;
  const oauth = OAuthErrorBodySchema.safeParse(parseJsonObject(response.body));
  if (!oauth.success) return undefined;
  return oauth.data.error === 'authorization_pending' || oauth.data.error === 'slow_down' ? oauth.data.error : undefined;
}

/** The interval after a poll that did not yield tokens: slow_down adds 5 s for good, a network failure backs off. */
export function nextDeviceInterval(intervalMs: number, answer: 'authorization_pending' | 'slow_down' | 'network'): number {
  if (answer === 'slow_down') return intervalMs + SLOW_DOWN_STEP_MS;
  if (answer === 'network') return Math.min(Math.max(intervalMs * 2, 1_000), MAX_DEVICE_INTERVAL_MS);
  return intervalMs;
}
