/** HTTP as plain data: what the machine asks for and what the adapter reports back. */

export type OAuthStep = 'prm' | 'asm' | 'registration' | 'device_authorization' | 'token' | 'refresh' | 'revocation';

export interface HttpRequest {
  id: string;
  step: OAuthStep;
  method: 'GET' | 'POST';
  url: string;
  headers: Record<string, string>;
  body?: string;
  /**
   * RFC 7523 client authentication the adapter completes just before sending: it signs a JWT
   * (iss = sub = clientId, aud = audience only, short exp, unique jti) and appends
   * `client_assertion_type` and `client_assertion` to the form body. Keys never enter the machine.
   * `signingAlgValuesSupported` is the AS's `token_endpoint_auth_signing_alg_values_supported`, as
   * published: the adapter signs only with an algorithm its key supports and, when the list is
   * there, one it names; otherwise it sends nothing and reports `SIGNING_ALG_UNSUPPORTED` (C77).
   */
  clientAuth?: { method: 'private_key_jwt'; clientId: string; audience: string; signingAlgValuesSupported?: string[] };
  /**
   * A form parameter the adapter fills from the application's credential source just before
   * sending: the JWT bearer `assertion` (RFC 7523) or the token-exchange `subject_token` (RFC 8693).
   */
  assertion?: { param: 'assertion' | 'subject_token'; source: 'jwt_bearer' | 'id_token'; audience: string; resource: string };
  /** RFC 9449: the adapter adds a fresh DPoP proof (its session key) and honours one `use_dpop_nonce`. */
  dpop?: boolean;
}

/**
 * `http.failed` reasons of a marked request the adapter did not send because it could not complete
 * it. `credential`: no key or provider, or the provider failed (`token.credential_unavailable`).
 * `signing_alg_unsupported`: no client-assertion algorithm both the key and the authorization
 * server accept (`token.signing_alg_unsupported`, C77).
 */
export const CREDENTIAL_UNAVAILABLE = 'credential';
export const SIGNING_ALG_UNSUPPORTED = 'signing_alg_unsupported';
export const SIGNING_ALG_UNSUPPORTED_MESSAGE = 'no client assertion algorithm';

export interface HttpResponseData {
  status: number;
  /** Lower-cased names. */
  headers: Record<string, string>;
  /** The body as text, already size-capped by the adapter. */
  body: string;
}

export type Result<T, E> = { ok: true; value: T } | { ok: false; error: E };

export const ok = <T>(value: T): { ok: true; value: T } => ({ ok: true, value });
export const err = <E>(error: E): { ok: false; error: E } => ({ ok: false, error });

/** Metadata bodies: parse first, content-type advisory (DESIGN policy 5). */
export function parseJsonObject(body: string): Record<string, unknown> | undefined {
  try {
    const value: unknown = JSON.parse(body);
    return value !== null && typeof value === 'object' && !Array.isArray(value)
      ? (value as Record<string, unknown>)
      : undefined;
  } catch {
    return undefined;
  }
}

export function formEncode(params: Record<string, string | undefined>): string {
  const form = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) if (value !== undefined) form.set(name, value);
  return form.toString();
}

/**
 * RFC 6749 §2.3.1: client id and secret are form-urlencoded *before* Base64, which the TS SDK
 * skips (a secret with `:` or `%` then authenticates as someone else or not at all).
 */
export function basicCredentials(clientId: string, clientSecret: string): string {
  const encode = (value: string) => encodeURIComponent(value).replace(/%20/g, '+');
  return `Basic ${btoa(`${encode(clientId)}:${encode(clientSecret)}`)}`;
}
