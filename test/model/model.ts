/**
 * The test model: the OAuth machine plus event cases for every guard branch, as a function of the
 * snapshot (a response answers the pending request; a good PRM names the candidate's resource).
 * URLs point at the scripted loopback server the paths are later executed against.
 */
import { generateKeyPairSync } from 'node:crypto';
import { createTestModel } from 'xstate/graph';
import type { SnapshotFrom } from 'xstate';
import { resolveOptions, type OAuthSessionOptions } from '../../src/adapters/options.js';
import { flowError } from '../../src/machines/errors.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineConfig, EngineContext, EngineEvent } from '../../src/machines/oauth.types.js';
import type { ClientRecord, DiscoveryRecord, TokenRecord } from '../../src/machines/store.js';
import { statePath } from '../../src/adapters/trace.js';

export type Snapshot = SnapshotFrom<typeof oauthMachine>;

/** A fixed instant: the session under test gets the same clock, so expiry decisions agree. */
export const NOW = 1_800_000_000_000;
export const RANDOM = { state: 'model-state', codeVerifier: 'model-verifier-0123456789-0123456789-0123', codeChallenge: 'model-challenge' };
export const FORGED_STATE = 'forged-state';
export const EVIL = 'https://evil.example';

export type ClientKind = 'dynamic' | 'noLegacy' | 'preregistered' | 'preregisteredElsewhere' | 'clientCredentials' | 'jwtBearer' | 'enterprise' | 'device';

/** A fresh P-256 key for the private_key_jwt paths: the adapter really signs what the machine marks. */
const MODEL_PRIVATE_KEY = generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ type: 'pkcs8', format: 'pem' }).toString();

const isGrant = (kind: ClientKind) => kind === 'clientCredentials' || kind === 'jwtBearer' || kind === 'enterprise';

function grantFor(world: World, kind: ClientKind): OAuthSessionOptions['grant'] {
  switch (kind) {
    case 'clientCredentials':
      return { type: 'client_credentials', clientId: 'm2m-client', authMethod: 'private_key_jwt', privateKey: MODEL_PRIVATE_KEY, alg: 'ES256' };
    case 'jwtBearer':
      return { type: 'jwt_bearer', assertionProvider: () => 'model-workload-jwt' };
    case 'enterprise':
      return {
        type: 'enterprise',
        clientId: 'xaa-client',
        clientSecret: 'xaa-secret',
        authMethod: 'client_secret_basic',
        idp: { tokenEndpoint: `${world.origin}/idp/token`, clientId: 'idp-client', idToken: 'model-id-token' },
      };
    default:
      return undefined;
  }
}

export interface World {
  origin: string;
  serverUrl: string;
  issuer: string;
  redirect: string;
  /** A redirect URI the pre-registered client did not register. */
  otherRedirect: string;
  /** The loopback port of the pre-registered redirect URI (occupied to make binding fail). */
  preregisteredPort: number;
  clientMetadataUrl: string;
}

const isDynamic = (kind: ClientKind) => kind === 'dynamic' || kind === 'noLegacy' || kind === 'device' || isGrant(kind);

export function sessionOptions(world: World, kind: ClientKind): OAuthSessionOptions {
  const redirect = isDynamic(kind) ? world.redirect : `http://127.0.0.1:${world.preregisteredPort}/callback`;
  const grant = grantFor(world, kind);
  return {
    serverUrl: world.serverUrl,
    ...(grant === undefined ? {} : { grant }),
    ...(kind === 'noLegacy' ? { policy: { legacyFallback: false } } : {}),
    // RFC 8628 with a server-set interval of 0 and no floor: polls follow each other without waiting.
    ...(kind === 'device' ? { interaction: 'device' as const, onDeviceAuthorization: () => undefined, policy: { minDevicePollIntervalMs: 0 } } : {}),
    redirect: { uri: redirect },
    client: {
      metadata: { client_name: 'model', redirect_uris: [redirect] },
      ...(isDynamic(kind) ? { metadataUrl: world.clientMetadataUrl } : {}),
      ...(isDynamic(kind)
        ? {}
        : {
            preregistered: {
              client_id: 'pre-client',
              client_secret: 'pre-secret',
              token_endpoint_auth_method: 'client_secret_basic' as const,
              redirect_uris: [redirect],
              ...(kind === 'preregisteredElsewhere' ? { issuer: 'https://other-as.example' } : {}),
            },
          }),
    },
  };
}

export function engineConfig(world: World, kind: ClientKind): EngineConfig {
  return resolveOptions(sessionOptions(world, kind)).config;
}

// ---------------------------------------------------------------- documents

const freshTokens = (world: World): TokenRecord => ({
  access_token: 'stored-access',
  token_type: 'bearer',
  refresh_token: 'stored-refresh',
  expires_at: NOW + 3600_000,
  obtained_at: NOW - 60_000,
  scope: 'mcp:read',
  issuer: world.issuer,
  resource: world.serverUrl,
});

const storedClient = (world: World): ClientRecord => ({
  client_id: 'stored-client',
  token_endpoint_auth_method: 'none',
  redirect_uris: [world.redirect],
  issuer: world.issuer,
  source: 'dynamic',
});

const storedDiscovery = (world: World): DiscoveryRecord => ({
  issuer: world.issuer,
  token_endpoint: `${world.issuer}/token`,
  revocation_endpoint: `${world.issuer}/revoke`,
  resource: world.serverUrl,
  legacy: false,
});

export interface StoredRecords {
  tokens?: TokenRecord;
  client?: ClientRecord;
  discovery?: DiscoveryRecord;
}

function loaded(records: StoredRecords): EngineEvent {
  return {
    type: 'store.loaded',
    ...(records.tokens ? { tokens: { value: records.tokens, generation: 1 } } : {}),
    ...(records.client ? { client: { value: records.client, generation: 1 } } : {}),
    ...(records.discovery ? { discovery: { value: records.discovery, generation: 1 } } : {}),
  };
}

export function storeCases(world: World, full: boolean): EngineEvent[] {
  const expiredRefreshable = { ...freshTokens(world), expires_at: NOW - 1000, obtained_at: NOW - 3601_000 };
  const expiredBare: TokenRecord = { ...expiredRefreshable, refresh_token: undefined as unknown as string };
  delete (expiredBare as Partial<TokenRecord>).refresh_token;
  const cases = [
    loaded({}),
    loaded({ tokens: freshTokens(world), client: storedClient(world), discovery: storedDiscovery(world) }),
  ];
  if (full) {
    cases.push(loaded({ tokens: expiredRefreshable, client: storedClient(world), discovery: storedDiscovery(world) }));
    cases.push(loaded({ tokens: expiredBare }));
  }
  return cases;
}

function response(context: EngineContext, status: number, body: unknown): EngineEvent {
  return {
    type: 'http.response',
    id: context.pendingId ?? 'none',
    status,
    headers: { 'content-type': 'application/json' },
    body: typeof body === 'string' ? body : JSON.stringify(body),
    at: NOW,
  };
}

function unreachable(context: EngineContext): EngineEvent {
  return { type: 'http.failed', id: context.pendingId ?? 'none', reason: 'unreachable', message: 'connection failed', at: NOW };
}

function asmDocument(issuer: string, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    registration_endpoint: `${issuer}/register`,
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
    scopes_supported: ['mcp:read', 'mcp:write'],
    ...extra,
  };
}

/** Machine-to-machine grants usually issue no refresh token: a new token comes from the same grant. */
const M2M_TOKEN_RESPONSE = { access_token: 'issued-m2m-access', token_type: 'Bearer', expires_in: 3600, scope: 'mcp:read' };
/** RFC 8628 §3.2, with interval 0 so the executed paths poll without waiting. */
const DEVICE_AUTHORIZATION = (world: World) => ({
  device_code: 'model-device-code-0123456789',
  user_code: 'WDJB-MJHT',
  verification_uri: `${world.origin}/device`,
  verification_uri_complete: `${world.origin}/device?user_code=WDJB-MJHT`,
  expires_in: 600,
  interval: 0,
});
const TOKEN_RESPONSE = { access_token: 'issued-access', token_type: 'Bearer', expires_in: 3600, refresh_token: 'issued-refresh', scope: 'mcp:read' };

// ---------------------------------------------------------------- event cases per state

export function eventCases(world: World, kind: ClientKind): (snapshot: Snapshot) => EngineEvent[] {
  return (snapshot) => {
    const context = snapshot.context;
    const state = statePath(snapshot.value);
    const version = context.tokenVersion;
    const unauthorized = (extra: Partial<Extract<EngineEvent, { type: 'unauthorized' }>>): EngineEvent => ({
      type: 'unauthorized',
      status: 401,
      tokenVersion: context.tokens ? version : null,
      authorizations: 0,
      at: NOW,
      ...extra,
    });
    const challenge = `Bearer resource_metadata="${world.origin}/custom/prm.json", scope="mcp:read"`;
    switch (state) {
      case 'restoring':
        return storeCases(world, true);
      case 'ready.unauthenticated':
        return [
          unauthorized({ wwwAuthenticate: challenge }),
          unauthorized({ wwwAuthenticate: 'Bearer' }),
          unauthorized({ authorizations: 3 }),
          ...storeCases(world, false).slice(1),
          { type: 'logout', at: NOW },
        ];
      case 'ready.authorized':
        return [
          { type: 'token.check', at: NOW },
          unauthorized({ tokenVersion: version + 100 }),
          unauthorized({ authorizations: 3 }),
          unauthorized({ status: 403, wwwAuthenticate: 'Bearer error="insufficient_scope", scope="mcp:read mcp:write"' }),
          unauthorized({ status: 403, wwwAuthenticate: `Bearer error="insufficient_scope", scope="${context.tokens?.scope ?? 'mcp:read'}"` }),
          unauthorized({ wwwAuthenticate: 'Bearer error="invalid_token"' }),
          unauthorized({ wwwAuthenticate: 'Bearer error="invalid_token"', refreshes: 1 }),
          storeCases(world, false)[0]!,
          { type: 'logout', at: NOW },
        ];
      case 'failed':
        return [unauthorized({ wwwAuthenticate: 'Bearer' }), { type: 'token.check', at: NOW }, ...storeCases(world, false), { type: 'logout', at: NOW }];
      case 'revoking':
        return [
          response(context, 200, ''),
          response(context, 400, { error: 'unsupported_token_type' }),
          unreachable(context),
          { type: 'cancel' },
        ];
      case 'refreshing':
        return [
          response(context, 200, { ...TOKEN_RESPONSE, refresh_token: 'rotated-refresh' }),
          response(context, 400, { error: 'invalid_grant' }),
          response(context, 401, { error: 'invalid_client' }),
          response(context, 500, 'oops'),
          unreachable(context),
          { type: 'cancel' },
        ];
      case 'flow.resource.discovering': {
        const candidate = context.prmCandidates[context.prmIndex];
        return [
          response(context, 200, { resource: candidate?.expectedResource, authorization_servers: [world.issuer], scopes_supported: ['mcp:read'] }),
          response(context, 200, { resource: `${EVIL}/mcp`, authorization_servers: [world.issuer] }),
          response(context, 404, { error: 'not found' }),
          response(context, 200, '{"resource":'),
          unreachable(context),
          { type: 'cancel' },
        ];
      }
      case 'flow.authServer.discovering': {
        const issuer = context.issuer ?? world.issuer;
        return [
          response(context, 200, asmDocument(issuer)),
          response(context, 200, asmDocument(issuer, { client_id_metadata_document_supported: true })),
          response(context, 200, asmDocument(issuer, { registration_endpoint: undefined, authorization_response_iss_parameter_supported: false })),
          response(context, 200, asmDocument(issuer, { authorization_endpoint: `${issuer}/authorize?client_id=preset` })),
          response(context, 200, asmDocument(`${EVIL}`)),
          response(context, 200, asmDocument(issuer, { code_challenge_methods_supported: undefined })),
          // DESIGN policy 11: ES256 advertised turns DPoP on (proofs from the adapter, token_type DPoP accepted).
          response(context, 200, asmDocument(issuer, { dpop_signing_alg_values_supported: ['ES256'] })),
          // RFC 8628 offered: only a session configured for device interaction uses it.
          ...(kind === 'device' ? [response(context, 200, asmDocument(issuer, { device_authorization_endpoint: `${issuer}/device_authorization` }))] : []),
          response(context, 404, { error: 'not found' }),
          unreachable(context),
        ];
      }
      case 'flow.authorize.requestingDeviceCode':
        return [
          response(context, 200, DEVICE_AUTHORIZATION(world)),
          response(context, 200, { ...DEVICE_AUTHORIZATION(world), verification_uri: 'javascript:alert(1)' }),
          response(context, 400, { error: 'unauthorized_client' }),
          unreachable(context),
        ];
      case 'flow.authorize.awaitingDeviceApproval':
        return [
          { type: 'timeout', id: 'device.poll' },
          { type: 'timeout', id: 'callback' },
          { type: 'interaction.failed', error: flowError('flow', 'interaction.failed', 'the device authorization prompt could not be shown') },
        ];
      case 'flow.authorize.pollingDeviceToken':
        return [
          response(context, 200, TOKEN_RESPONSE),
          response(context, 400, { error: 'authorization_pending' }),
          response(context, 400, { error: 'access_denied' }),
          unreachable(context),
          // Not a transient failure: a token endpoint redirect is never followed and the wait ends.
          { type: 'http.failed', id: context.pendingId ?? 'none', reason: 'redirect', message: 'token endpoint answered 307 with a redirect; not followed', at: NOW },
          // The approval deadline passes while the poll is in flight.
          { type: 'timeout', id: 'callback' },
        ];
      case 'flow.redirect': {
        if (isDynamic(kind)) return [{ type: 'redirect.ready', redirectUri: world.redirect }];
        // One session has one way to receive redirects: a path keeps the mode its first flow used.
        const registered = `http://127.0.0.1:${world.preregisteredPort}/callback`;
        const before = context.redirectUri;
        const cases: EngineEvent[] = [];
        if (before === undefined || before === registered) cases.push({ type: 'redirect.ready', redirectUri: registered });
        if (before === undefined || before === world.otherRedirect) cases.push({ type: 'redirect.ready', redirectUri: world.otherRedirect });
        if (before === undefined) cases.push({ type: 'redirect.failed', error: flowError('flow', 'callback.port_unavailable', 'port taken') });
        return cases;
      }
      case 'flow.client.registering':
        return [
          response(context, 201, { client_id: 'registered-client', redirect_uris: [context.redirectUri], token_endpoint_auth_method: 'none' }),
          response(context, 400, { error: 'invalid_redirect_uri', error_description: 'no' }),
          unreachable(context),
        ];
      case 'flow.authorize.redirecting':
        return [{ type: 'random', ...RANDOM }, { type: 'interaction.failed', error: flowError('flow', 'entropy.unavailable', 'no entropy') }];
      case 'flow.authorize.awaitingCallback': {
        const iss = context.transaction?.issuer ?? world.issuer;
        return [
          { type: 'callback', params: { code: 'model-code', state: RANDOM.state, iss }, at: NOW },
          { type: 'callback', params: { code: 'attacker-code', state: FORGED_STATE, iss }, at: NOW },
          { type: 'callback', params: { code: 'model-code', state: RANDOM.state, iss: EVIL }, at: NOW },
          { type: 'callback', params: { error: 'access_denied', state: RANDOM.state, iss }, at: NOW },
          { type: 'callback', params: { state: RANDOM.state, iss }, at: NOW },
          { type: 'timeout', id: 'callback' },
          { type: 'interaction.failed', error: flowError('flow', 'browser.unavailable', 'no browser') },
        ];
      }
      case 'flow.token.exchanging':
        return [response(context, 200, TOKEN_RESPONSE), response(context, 200, { ...TOKEN_RESPONSE, token_type: 'DPoP' }), response(context, 400, { error: 'invalid_grant' }), unreachable(context)];
      case 'flow.token.clientCredentials':
        return [
          response(context, 200, M2M_TOKEN_RESPONSE),
          response(context, 200, { ...M2M_TOKEN_RESPONSE, token_type: 'DPoP' }),
          response(context, 400, { error: 'use_dpop_nonce' }),
          response(context, 401, { error: 'invalid_client' }),
          unreachable(context),
        ];
      case 'flow.token.jwtBearer':
        return [response(context, 200, M2M_TOKEN_RESPONSE), response(context, 400, { error: 'invalid_grant' }), unreachable(context)];
      case 'flow.token.tokenExchange':
        return [
          response(context, 200, { access_token: 'model-id-jag', issued_token_type: 'urn:ietf:params:oauth:token-type:id-jag', token_type: 'N_A', expires_in: 300 }),
          response(context, 400, { error: 'invalid_grant' }),
          unreachable(context),
        ];
      default:
        return [];
    }
  };
}

/**
 * Vertices: the state and only the context facts the guards of that stage read. Each path is still
 * replayed from the start with its full context, so merging vertices can only drop combinations,
 * never produce a path the machine would not take; the coverage gate shows if one was needed.
 */
export function serializeSnapshot(snapshot: Snapshot, event?: EngineEvent, previous?: Snapshot): string {
  const c = snapshot.context;
  const state = statePath(snapshot.value);
  const tokens = c.tokens ? [c.tokens.expires_at !== undefined && c.tokens.expires_at < NOW, c.tokens.refresh_token !== undefined] : null;
  let facts: unknown = null;
  const revocable = c.discovery?.revocation_endpoint !== undefined;
  if (state.startsWith('ready') || state === 'refreshing' || state === 'revoking') facts = [tokens, c.client?.source ?? null, c.discovery !== undefined, c.asm !== undefined, revocable];
  else if (state === 'failed') facts = [c.tokens !== undefined, c.asm !== undefined, c.error?.code, revocable];
  else if (state.startsWith('flow.resource')) facts = [c.prmIndex, c.prmCandidates.length];
  else if (state.startsWith('flow.authServer')) facts = [c.asmIndex, c.asmCandidates.length, c.legacy];
  else if (state.startsWith('flow.scope') || state.startsWith('flow.redirect') || state.startsWith('flow.client')) {
    facts = [c.redirectUri ?? null, c.asm?.registration_endpoint !== undefined, c.asm?.client_id_metadata_document_supported === true, c.client?.source ?? null, c.client?.issuer === c.issuer, c.asm?.authorization_endpoint, c.asm?.device_authorization_endpoint !== undefined];
  } else if (state.startsWith('flow.token')) {
    facts = [c.asm?.dpop_signing_alg_values_supported !== undefined];
  } else if (state.startsWith('flow.authorize')) {
    facts = [c.asm?.authorization_response_iss_parameter_supported === true, c.transaction !== undefined, c.client?.source ?? null, c.asm?.authorization_endpoint, c.asm?.device_authorization_endpoint !== undefined, c.device !== undefined];
  }
  // Arriving by another event or from another state is another transition to cover.
  return JSON.stringify([state, facts, event ? eventSignature(event) : null, previous ? statePath(previous.value) : null]);
}

/** What distinguishes two cases of one event type for the guards. */
function eventSignature(event: EngineEvent): string {
  switch (event.type) {
    case 'unauthorized':
      return `unauthorized:${event.status}:${event.authorizations >= 3}:${(event.refreshes ?? 0) > 0}:${event.tokenVersion}`;
    case 'http.response':
      return `http.response:${event.status}:${event.body.includes('"DPoP"')}`;
    case 'http.failed':
      return `http.failed:${event.reason}`;
    case 'timeout':
      return `timeout:${event.id}`;
    case 'store.loaded':
      return `store.loaded:${event.tokens !== undefined}`;
    default:
      return event.type;
  }
}

export function testModel(world: World, kind: ClientKind) {
  const cases = eventCases(world, kind);
  return createTestModel(oauthMachine, {
    input: engineConfig(world, kind),
    events: cases as never,
    // createTestModel adds a bare `{ type }` for every accepted type without cases (the root's
    // store.saved, cancel everywhere); only the listed cases are inputs the world can produce.
    filterEvents: (snapshot, event) => cases(snapshot as Snapshot).some((candidate) => JSON.stringify(candidate) === JSON.stringify(event)),
    serializeState: (snapshot, event, previous) => serializeSnapshot(snapshot as Snapshot, event as EngineEvent | undefined, previous as Snapshot | undefined),
    serializeEvent: (event) => JSON.stringify(event),
  });
}
