/**
 * One error family with stable machine-readable codes. The machine keeps errors as plain JSON
 * (`FlowErrorData`) so snapshots stay serialisable; the adapter turns them into these classes.
 *
 * Codes read `<step>.<condition>`: `prm.resource_mismatch`, `asm.issuer_mismatch`,
 * `callback.state_mismatch`, `token.invalid_grant`, `network.timeout`… Messages never carry
 * secrets; text that came from a server is JSON-escaped and truncated (`quoteUntrusted`).
 */

export type ErrorKind = 'flow' | 'registration' | 'token' | 'network' | 'config' | 'store';

export interface FlowErrorData {
  kind: ErrorKind;
  code: string;
  message: string;
  /** The machine state the error was raised in, e.g. `flow.authServer.discovering`. */
  state?: string;
  /** The OAuth `error` value a server returned, when there was one. */
  oauthError?: string;
  status?: number;
}

const MAX_UNTRUSTED = 256;

/** Server-supplied text as it may appear in a message: JSON-escaped, at most 256 characters. */
export function quoteUntrusted(value: unknown): string {
  const text = typeof value === 'string' ? value : String(value);
  const cut = text.length > MAX_UNTRUSTED ? `${text.slice(0, MAX_UNTRUSTED - 1)}…` : text;
  return JSON.stringify(cut);
}

export class OAuthFlowError extends Error {
  override readonly name: string = 'OAuthFlowError';
  readonly code: string;
  readonly state: string | undefined;
  readonly oauthError: string | undefined;
  readonly status: number | undefined;

  constructor(data: Omit<FlowErrorData, 'kind'>, options?: { cause?: unknown }) {
    super(data.message, options);
    this.code = data.code;
    this.state = data.state;
    this.oauthError = data.oauthError;
    this.status = data.status;
  }

  toJSON(): FlowErrorData {
    return {
      kind: kindOf(this),
      code: this.code,
      message: this.message,
      ...(this.state === undefined ? {} : { state: this.state }),
      ...(this.oauthError === undefined ? {} : { oauthError: this.oauthError }),
      ...(this.status === undefined ? {} : { status: this.status }),
    };
  }
}

export class OAuthRegistrationError extends OAuthFlowError {
  override readonly name = 'OAuthRegistrationError';
}

export class OAuthTokenError extends OAuthFlowError {
  override readonly name = 'OAuthTokenError';
}

/** An OAuth call the engine made failed on the network; `cause` holds the original error. */
export class OAuthNetworkError extends OAuthFlowError {
  override readonly name = 'OAuthNetworkError';
}

/** The session's options were rejected before any network activity. */
export class OAuthConfigError extends OAuthFlowError {
  override readonly name = 'OAuthConfigError';
}

/** The credential store failed or refused (lease time-out, unreachable backend). */
export class OAuthStoreError extends OAuthFlowError {
  override readonly name = 'OAuthStoreError';
}

function kindOf(error: OAuthFlowError): ErrorKind {
  if (error instanceof OAuthRegistrationError) return 'registration';
  if (error instanceof OAuthTokenError) return 'token';
  if (error instanceof OAuthNetworkError) return 'network';
  if (error instanceof OAuthConfigError) return 'config';
  if (error instanceof OAuthStoreError) return 'store';
  return 'flow';
}

export function toError(data: FlowErrorData, cause?: unknown): OAuthFlowError {
  const options = cause === undefined ? undefined : { cause };
  switch (data.kind) {
    case 'registration':
      return new OAuthRegistrationError(data, options);
    case 'token':
      return new OAuthTokenError(data, options);
    case 'network':
      return new OAuthNetworkError(data, options);
    case 'config':
      return new OAuthConfigError(data, options);
    case 'store':
      return new OAuthStoreError(data, options);
    default:
      return new OAuthFlowError(data, options);
  }
}

export function flowError(kind: ErrorKind, code: string, message: string, extra?: Partial<FlowErrorData>): FlowErrorData {
  return { kind, code, message, ...extra };
}
