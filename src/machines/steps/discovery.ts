/**
 * Discovery: Protected Resource Metadata (RFC 9728) and authorization-server metadata (RFC 8414,
 * OpenID Connect Discovery), each a request builder and a response processor.
 */
import { flowError, quoteUntrusted, type FlowErrorData } from '../errors.js';
import { err, ok, parseJsonObject, type HttpRequest, type HttpResponseData, type Result } from '../http.js';
import {
  AuthorizationServerMetadataSchema,
  ProtectedResourceMetadataSchema,
  type AuthorizationServerMetadata,
  type ProtectedResourceMetadata,
} from '../schemas.js';
import {
  classifyAddress,
  isAllowedOAuthUrl,
  networkClassAllowed,
  originOf,
  sameOrigin,
  sameResource,
  splitUrl,
  type AsmCandidate,
  type NetworkClass,
  type PrmCandidate,
} from '../urls.js';

/** Skippable problems move discovery to the next candidate; fatal ones end the flow. */
export interface DiscoveryProblem {
  fatal: boolean;
  error: FlowErrorData;
}

export type ResourceMatch = 'exact' | 'same-origin';

export function buildMetadataRequest(id: string, step: 'prm' | 'asm', url: string, protocolVersion: string): HttpRequest {
  return {
    id,
    step,
    method: 'GET',
    url,
    headers: { accept: 'application/json', 'mcp-protocol-version': protocolVersion },
  };
}

function skip(code: string, message: string, status?: number): DiscoveryProblem {
  return { fatal: false, error: flowError('flow', code, message, status === undefined ? {} : { status }) };
}

function fatal(code: string, message: string): DiscoveryProblem {
  return { fatal: true, error: flowError('flow', code, message) };
}

/**
 * DESIGN policy 1: the document's `resource` must name exactly the identifier its URL was derived
 * from; on a mismatch none of the document is used (RFC 9728 §3.3, the LibreChat CVE-2026-54030).
 */
export function processResourceMetadataResponse(
  response: HttpResponseData,
  candidate: PrmCandidate,
  match: ResourceMatch,
): Result<ProtectedResourceMetadata, DiscoveryProblem> {
  if (response.status >= 500) {
    // A server error is transient: moving on to another candidate would silently switch documents (C16).
    return err({ fatal: true, error: flowError('flow', 'prm.http_status', `protected resource metadata at ${candidate.source} URL answered ${response.status}`, { status: response.status }) });
  }
  if (response.status !== 200) {
    return err(skip('prm.http_status', `protected resource metadata at ${candidate.source} URL answered ${response.status}`, response.status));
  }
  const json = parseJsonObject(response.body);
  if (!json) return err(skip('prm.invalid_json', `protected resource metadata at ${candidate.source} URL is not a JSON object`));
  const parsed = ProtectedResourceMetadataSchema.safeParse(json);
  if (!parsed.success) {
    return err(skip('prm.invalid_document', `protected resource metadata at ${candidate.source} URL lacks a usable resource or authorization_servers`));
  }
  const metadata = parsed.data;
  const matches =
    sameResource(metadata.resource, candidate.expectedResource) ||
    (match === 'same-origin' && isAllowedOAuthUrl(metadata.resource) && sameOrigin(metadata.resource, candidate.expectedResource));
  if (!matches) {
    return err(
      fatal(
        'prm.resource_mismatch',
        `protected resource metadata names resource ${quoteUntrusted(metadata.resource)}, expected ${quoteUntrusted(candidate.expectedResource)}`,
      ),
    );
  }
  const insecure = metadata.authorization_servers.find((issuer) => !isAllowedOAuthUrl(issuer));
  if (insecure !== undefined) {
    return err(fatal('prm.insecure_authorization_server', `authorization server ${quoteUntrusted(insecure)} is not an https URL`));
  }
  return ok(metadata);
}

export interface AsmExpectation {
  /** The issuer the metadata URL was built from (exact echo, RFC 8414 §3.3). */
  issuer: string;
  /** 2025-03-26 mode: the only trust anchor is the MCP server's origin (DESIGN policy 3). */
  legacyServerOrigin?: string;
  /**
   * The network class of the configured MCP server (DESIGN policy 6), once the adapter has resolved
   * it. Endpoints the engine will POST to may not be more internal (C20).
   */
  networkClass?: NetworkClass;
}

/** Endpoints the engine itself dials with a request body; `authorization_endpoint` goes to the browser. */
const DIALLED_ENDPOINTS = ['token_endpoint', 'registration_endpoint', 'revocation_endpoint', 'device_authorization_endpoint'] as const;

export function processAuthorizationServerMetadataResponse(
  response: HttpResponseData,
  candidate: AsmCandidate,
  expected: AsmExpectation,
): Result<AuthorizationServerMetadata, DiscoveryProblem> {
  if (response.status !== 200) {
    return err(skip('asm.http_status', `${candidate.kind} metadata answered ${response.status}`, response.status));
  }
  const json = parseJsonObject(response.body);
  if (!json) return err(skip('asm.invalid_json', `${candidate.kind} metadata is not a JSON object`));
  const parsed = AuthorizationServerMetadataSchema.safeParse(json);
  if (!parsed.success) {
    return err(skip('asm.invalid_document', `${candidate.kind} metadata lacks issuer, authorization_endpoint or token_endpoint`));
  }
  const metadata = parsed.data;
  if (expected.legacyServerOrigin !== undefined) {
    if (!isAllowedOAuthUrl(metadata.issuer) || originOf(metadata.issuer) !== expected.legacyServerOrigin) {
      return err(fatal('asm.issuer_mismatch', `legacy metadata issuer ${quoteUntrusted(metadata.issuer)} is not on the MCP server's origin`));
    }
  } else if (metadata.issuer !== expected.issuer) {
    return err(
      fatal('asm.issuer_mismatch', `metadata issuer ${quoteUntrusted(metadata.issuer)} differs from ${quoteUntrusted(expected.issuer)}`),
    );
  }
  for (const field of ['authorization_endpoint', ...DIALLED_ENDPOINTS] as const) {
    const value = metadata[field];
    if (value !== undefined && !isAllowedOAuthUrl(value)) {
      return err(fatal('asm.insecure_endpoint', `${field} ${quoteUntrusted(value)} is not an https URL`));
    }
  }
  // Refused at validation, before a client is registered or a browser opened: the adapter's
  // connect-time check would stop the packet, but only after the user was sent to authorize.
  if (expected.networkClass !== undefined) {
    for (const field of DIALLED_ENDPOINTS) {
      const value = metadata[field];
      const hostClass = value === undefined ? undefined : classifyAddress(new URL(value).hostname);
      if (hostClass !== undefined && !networkClassAllowed(expected.networkClass, hostClass)) {
        return err(fatal('asm.inward_endpoint', `${field} ${quoteUntrusted(value ?? '')} is more internal (${hostClass}) than the MCP server (${expected.networkClass})`));
      }
    }
  }
  // RFC 6749 §3.1: refused here, before a registration is made for a server that cannot be used (C23).
  if (splitUrl(metadata.authorization_endpoint)?.fragment !== undefined) {
    return err(fatal('asm.invalid_authorization_endpoint', 'the authorization endpoint has a fragment'));
  }
  if (metadata.response_types_supported && !metadata.response_types_supported.includes('code')) {
    return err(fatal('asm.code_flow_unsupported', 'the authorization server does not offer response_type=code'));
  }
  return ok(metadata);
}

export interface PkcePolicy {
  /** Issuers known to support S256 without advertising it (DESIGN policy 4 quirks). */
  quirkIssuers: readonly string[];
  /** The user opted in to proceed when the field is absent. */
  allowUnadvertised: boolean;
}

/**
 * Built-in quirk entries: large providers that support S256 but omit the field from metadata
 * (Entra ID, Amazon Cognito). Matched on the exact https host, never on a prefix an attacker
 * could register (`cognito-idp.attacker.example`).
 */
export function isPkceQuirkIssuer(issuer: string): boolean {
  const raw = splitUrl(issuer);
  if (!raw || raw.scheme.toLowerCase() !== 'https' || raw.port !== '') return false;
  const host = raw.host.toLowerCase();
  if (host === 'login.microsoftonline.com') return true;
  const region = host.startsWith('cognito-idp.') && host.endsWith('.amazonaws.com') ? host.slice('cognito-idp.'.length, -'.amazonaws.com'.length) : '';
  return region.length > 0 && [...region].every((c) => (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c === '-');
}

export type PkceVerdict = { ok: true; notice?: string } | { ok: false; error: FlowErrorData };

/** DESIGN policy 4, MCP "refuse when code_challenge_methods_supported is absent". */
export function checkPkceSupport(metadata: AuthorizationServerMetadata | undefined, policy: PkcePolicy): PkceVerdict {
  if (metadata === undefined) {
    return { ok: true, notice: 'legacy 2025-03-26 defaults: PKCE S256 used without advertisement' };
  }
  const methods = metadata.code_challenge_methods_supported;
  if (methods !== undefined) {
    return methods.includes('S256')
      ? { ok: true }
      : { ok: false, error: flowError('flow', 'asm.pkce_unsupported', 'the authorization server does not support PKCE S256') };
  }
  const quirk = policy.quirkIssuers.some((issuer) => issuer === metadata.issuer) || isPkceQuirkIssuer(metadata.issuer);
  if (quirk) return { ok: true, notice: `PKCE S256 assumed for ${metadata.issuer} (quirk entry: metadata omits code_challenge_methods_supported)` };
  if (policy.allowUnadvertised) return { ok: true, notice: `PKCE S256 assumed for ${metadata.issuer} (option: allowUnadvertisedPkce)` };
  return {
    ok: false,
    error: flowError('flow', 'asm.pkce_unadvertised', 'the authorization server metadata omits code_challenge_methods_supported; refusing without PKCE evidence'),
  };
}
