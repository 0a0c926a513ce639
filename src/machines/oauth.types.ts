/** The machine's input, context, events in and effects out. Everything here is plain JSON. */
import type { FlowErrorData } from './errors.js';
import type { HttpRequest } from './http.js';
import type { AuthorizationServerMetadata, ClientMetadata, ProtectedResourceMetadata } from './schemas.js';
import type { CallbackParams } from './steps/authorization.js';
import type { ResourceMatch } from './steps/discovery.js';
import type { ClientRecord, DiscoveryRecord, RecordKind, RecordTypes, TokenRecord, Versioned } from './store.js';
import type { AsmCandidate, NetworkClass, PrmCandidate } from './urls.js';

export interface PreregisteredClient {
  client_id: string;
  client_secret?: string;
  token_endpoint_auth_method: ClientRecord['token_endpoint_auth_method'];
  redirect_uris: string[];
  /** Without it the credentials bind to the first issuer they are used with (DESIGN policy 10). */
  issuer?: string;
}

export interface EnginePolicy {
  resourceMatch: ResourceMatch;
  /** Origins besides the MCP server's own from which `resource_metadata` may be fetched (DESIGN policy 2). */
  allowedMetadataOrigins: string[];
  /** 2025-03-26 back-compat when no PRM is found (DESIGN policy 3). */
  legacyFallback: boolean;
  pkceQuirkIssuers: string[];
  allowUnadvertisedPkce: boolean;
  refreshSkewMs: number;
  /** Authorizations per operation, counting the first (DESIGN policy 9). */
  maxAuthorizations: number;
  minTokenLifetimeSeconds: number;
  maxTokenLifetimeSeconds: number;
  /** Floor under a server's RFC 8628 polling interval (a server saying 0 is not polled in a loop). */
  minDevicePollIntervalMs: number;
  /** RFC 9449 DPoP: `auto` when the AS lists ES256 in `dpop_signing_alg_values_supported` (DESIGN policy 11). */
  dpop: 'auto' | 'always' | 'off';
}

/**
 * A machine-to-machine grant (issue 4): configuration, never guessed from a server. Only what the
 * machine needs to build requests lives here; private keys and assertion providers stay in the
 * adapter, which completes requests the machine marks (`clientAuth`, `assertion`).
 */
export type GrantAuthMethod = 'none' | 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt';

export type GrantConfig =
  | { type: 'client_credentials'; clientId: string; clientSecret?: string; authMethod: GrantAuthMethod }
  | { type: 'jwt_bearer'; clientId?: string; clientSecret?: string; authMethod: GrantAuthMethod }
  | {
      type: 'enterprise';
      clientId: string;
      clientSecret?: string;
      authMethod: GrantAuthMethod;
      idp: { tokenEndpoint: string; clientId: string; clientSecret?: string };
    };

export interface EngineConfig {
  /** Canonical MCP server URL. */
  serverUrl: string;
  protocolVersion: string;
  clientMetadata: Omit<ClientMetadata, 'redirect_uris'> & { redirect_uris?: string[] };
  clientMetadataUrl?: string;
  preregistered?: PreregisteredClient;
  /** Scope always requested on top of what the server hints (a CLI's `--scope`). */
  scope?: string;
  /** A machine-to-machine grant instead of the browser flow. */
  grant?: GrantConfig;
  /**
   * How the person authorizes: `browser` (authorization code with PKCE, a loopback or web
   * redirect), or `device` (RFC 8628 when the server offers it, else the browser flow, whose URL the
   * application may only print).
   */
  interaction?: 'browser' | 'device';
  policy: EnginePolicy;
}

export interface AuthorizationTransaction {
  state: string;
  codeVerifier: string;
  issuer: string;
  issAdvertised: boolean;
  redirectUri: string;
  resource: string;
  scope?: string;
  clientId: string;
  authorizationUrl: string;
}

/** RFC 8628: a device authorization in progress (the device code is a secret, like a code). */
export interface DeviceTransaction {
  deviceCode: string;
  userCode: string;
  verificationUri: string;
  verificationUriComplete?: string;
  expiresAt: number;
  intervalMs: number;
  issuer: string;
  resource: string;
  scope?: string;
  clientId: string;
}

export type LastResponse =
  | { kind: 'response'; status: number; headers: Record<string, string>; body: string; at: number }
  | { kind: 'failed'; reason: string; message: string; at: number };

export interface Notice {
  code: string;
  message: string;
}

export interface EngineContext {
  config: EngineConfig;
  /** Request-id counter: a response whose id is not the pending one matches no transition. */
  seq: number;
  pendingId?: string;
  now: number;

  tokens?: TokenRecord;
  /** Bumped on every new token set; the adapter tags each request with the version it carried. */
  tokenVersion: number;
  client?: ClientRecord;
  discovery?: DiscoveryRecord;
  generations: Record<RecordKind, number>;

  challenge?: { resourceMetadata?: string; scope?: string; error?: string };
  prmCandidates: PrmCandidate[];
  prmIndex: number;
  prm?: ProtectedResourceMetadata;
  resource?: string;
  resourceMetadataUrl?: string;
  issuer?: string;
  legacy: boolean;
  asmCandidates: AsmCandidate[];
  asmIndex: number;
  asm?: AuthorizationServerMetadata;
  lastResponse?: LastResponse;

  /** Scopes a step-up must keep (held and previously requested). */
  scopeFloor?: string;
  requestedScope?: string;
  redirectUri?: string;
  transaction?: AuthorizationTransaction;
  code?: string;
  device?: DeviceTransaction;
  lastCallback?: CallbackParams;
  rejectedCallbacks: number;
  /** Why the last ignored callback was ignored (shown to the person, kept for the visualizer). */
  lastRejection?: 'state_missing' | 'state_mismatch';
  /** Authorizations started by this session (the adapter reads it to count per operation). */
  authorizationCount: number;
  /** Refreshes completed by this session. */
  refreshCount: number;
  /** Authorizations already spent on the operation that started the current flow. */
  operationAuthorizations: number;

  /** Enterprise-managed authorization: the ID-JAG from the IdP, single-use, cleared once redeemed. */
  idJag?: string;

  /** The configured server's network class (DESIGN policy 6), as the adapter resolved it. */
  networkClass?: NetworkClass;

  error?: FlowErrorData;
  notices: Notice[];
}

export type EngineInput = EngineConfig;

export type EngineEvent =
  | {
      type: 'store.loaded';
      tokens?: Versioned<TokenRecord> | undefined;
      client?: Versioned<ClientRecord> | undefined;
      discovery?: Versioned<DiscoveryRecord> | undefined;
    }
  | { type: 'store.saved'; kind: RecordKind; generation: number }
  /** The adapter resolved the configured server's addresses: endpoints learned later are checked against them. */
  | { type: 'network.classified'; networkClass: NetworkClass }
  | { type: 'token.check'; at: number }
  | {
      type: 'unauthorized';
      status: number;
      wwwAuthenticate?: string | string[] | undefined;
      /** The token version the rejected request carried; null when it carried none. */
      tokenVersion: number | null;
      /** Authorizations already run on behalf of this operation. */
      authorizations: number;
      /** Refreshes already run on behalf of this operation: a refreshed token rejected again means re-discovery. */
      refreshes?: number;
      at: number;
    }
  | { type: 'http.response'; id: string; status: number; headers: Record<string, string>; body: string; at: number }
  | { type: 'http.failed'; id: string; reason: string; message: string; at: number }
  | { type: 'redirect.ready'; redirectUri: string }
  | { type: 'redirect.failed'; error: FlowErrorData }
  | { type: 'random'; state: string; codeVerifier: string; codeChallenge: string }
  | { type: 'callback'; params: CallbackParams; at: number }
  | { type: 'timeout'; id: string }
  /** The user agent could not be opened or gave up (a browser that failed to launch, a headless agent's error). */
  | { type: 'interaction.failed'; error: FlowErrorData }
  | { type: 'cancel' }
  /** Sign out: revoke (RFC 7009) when the server offers it, then forget the tokens. */
  | { type: 'logout'; at: number };

export type EngineEffect =
  | { type: 'http.request'; request: HttpRequest }
  | { type: 'redirect.prepare'; preferredRedirectUri?: string; fixed: boolean }
  | { type: 'random.needed' }
  | { type: 'browser.open'; url: string; redirectUri: string }
  /** RFC 8628 §3.3: show the person where to go and what to type. */
  | { type: 'device.prompt'; userCode: string; verificationUri: string; verificationUriComplete?: string; expiresAt: number }
  /** Answered with `timeout` carrying the same id once `delayMs` has passed. */
  | { type: 'timer.start'; id: string; delayMs: number }
  | { type: 'store.save'; kind: RecordKind; value: RecordTypes[RecordKind]; ifGeneration: number }
  | { type: 'store.clear'; kind: RecordKind; ifGeneration: number }
  | { type: 'notice'; notice: Notice }
  | { type: 'flow.done' }
  | { type: 'flow.failed'; error: FlowErrorData };
