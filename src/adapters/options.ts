/**
 * Session options, validated before any network activity: a bad option fails on the spot with an
 * error naming the field, before a browser opens or a registration is half made.
 */
import type { Dispatcher } from 'undici';
import * as z from 'zod';
// src/machines' schemas are zod/mini (no `.partial()` method); the core is shared, so they nest in classic schemas.
import { partial } from 'zod/mini';
import { OAuthConfigError } from '../machines/errors.js';
import type { EngineConfig, EnginePolicy, GrantConfig, PreregisteredClient } from '../machines/oauth.types.js';
import { DEFAULT_POLICY } from '../machines/policy.js';
import { ClientMetadataSchema, TokenEndpointAuthMethodSchema, type ClientMetadata } from '../machines/schemas.js';
import type { CredentialStore } from '../machines/store.js';
import { canonicalServerUrl, clientIdMetadataUrlProblem, isAllowedOAuthUrl } from '../machines/urls.js';
import type { RandomBytes } from './entropy.js';
import type { Resolver } from './oauthHttp.js';
import type { NetworkClass } from '../machines/urls.js';
import type { TraceEntry } from './trace.js';
import type { DevicePrompt } from '../machines/steps/device.js';

export const DEFAULT_PROTOCOL_VERSION = '2025-11-25';

export type AuthorizationUrlOpener = (
  url: string,
  context: { redirectUri: string; signal: AbortSignal },
) => void | URLSearchParams | Promise<void | URLSearchParams>;

/** What a JWT assertion is for: the adapter passes it to the application's provider. */
export interface AssertionRequest {
  /** The authorization server's issuer (or, for an ID token, the MCP authorization server it is exchanged for). */
  audience: string;
  /** The PRM `resource` the token is for. */
  resource: string;
}
export type AssertionProvider = (request: AssertionRequest) => string | Promise<string>;

/** A private key: PKCS#8 PEM, or a JWK (with `d`). */
export type PrivateKeyInput = string | (Record<string, unknown> & { kty: string });

interface ClientAuthOptions {
  clientId: string;
  clientSecret?: string;
  /** Default: `private_key_jwt` with a key or provider, else `client_secret_basic` with a secret, else `none`. */
  authMethod?: 'none' | 'client_secret_basic' | 'client_secret_post' | 'private_key_jwt';
  /** For `private_key_jwt`: the key the adapter signs client assertions with (it never enters the machine). */
  privateKey?: PrivateKeyInput;
  /**
   * The client assertion's JWS algorithm. Default: the key's own (EC P-256 → ES256, RSA → RS256).
   * Never `none` or HS*; when the AS lists `token_endpoint_auth_signing_alg_values_supported` and
   * this algorithm is not in it, no token request is sent (`token.signing_alg_unsupported`).
   */
  alg?: 'ES256' | 'RS256';
  /**
   * Seconds added to the local clock when stamping a client assertion's `iat` and `exp`: `-600`
   * when this host's clock runs ten minutes fast (an AS then answers `invalid_client`, "iat in the
   * future", and is not asked again). Integer, within ±86,400 (one day). Default 0.
   */
  assertionClockOffsetSeconds?: number;
}

/**
 * A machine-to-machine grant, chosen by configuration (never guessed from a server's answers).
 * Discovery, `resource`, issuer binding and errors are those of the browser flow.
 */
export type GrantOptions =
  | (ClientAuthOptions & {
      type: 'client_credentials';
      /** For `private_key_jwt` without a key: returns a signed client assertion. */
      assertionProvider?: AssertionProvider;
    })
  | (Partial<ClientAuthOptions> & {
      type: 'jwt_bearer';
      /** Returns the JWT bearer assertion (RFC 7523), e.g. a workload identity token. */
      assertionProvider: AssertionProvider;
    })
  | (ClientAuthOptions & {
      type: 'enterprise';
      idp: { tokenEndpoint: string; clientId: string; clientSecret?: string; idToken?: string; idTokenProvider?: AssertionProvider };
    });

/** What only the adapter holds: keys and providers. */
export interface GrantCredentials {
  privateKey?: PrivateKeyInput;
  /** As configured; absent → the key's own algorithm (GrantSigner). */
  alg?: 'ES256' | 'RS256';
  /** Added to the local clock for client assertions' `iat`/`exp` (C79). */
  clockOffsetSeconds: number;
  clientAssertionProvider?: AssertionProvider;
  assertionProvider?: AssertionProvider;
  idTokenProvider?: AssertionProvider;
}

export interface OAuthSessionOptions {
  /** The MCP server URL (the resource). */
  serverUrl: string;
  store?: CredentialStore;
  /** Store key; default the canonical server URL. */
  storeKey?: string;
  /** Scope requested in every authorization, in addition to what the server asks for. */
  scope?: string;
  client?: {
    /** RFC 7591 client metadata for dynamic registration (redirect URIs are filled in by the session). */
    metadata?: Partial<ClientMetadata> & Record<string, unknown>;
    /** Client ID Metadata Document URL: https with a path, validated here. */
    metadataUrl?: string;
    preregistered?: Omit<PreregisteredClient, 'redirect_uris'> & { redirect_uris?: string[] };
  };
  /**
   * Where the authorization response arrives. Default: a loopback server on 127.0.0.1 started
   * for each flow (RFC 8252). `{ uri }`: the application receives it and calls `handleCallback`.
   */
  redirect?: { loopback: { host?: '127.0.0.1' | '::1' | 'localhost'; port?: number; path?: string } } | { uri: string };
  /** Shows the authorization URL to the user; may return the redirect's query itself (headless agents). */
  openAuthorizationUrl?: AuthorizationUrlOpener;
  /**
   * `device`: RFC 8628 device authorization when the authorization server offers it (the person
   * approves on another device; `onDeviceAuthorization` shows them the code), else the browser flow
   * through `openAuthorizationUrl`. Default `browser`.
   */
  interaction?: 'browser' | 'device';
  /** Required with `interaction: 'device'`: shows the user code and where to enter it. */
  onDeviceAuthorization?: (prompt: DevicePrompt) => void;
  deadlines?: { oauthRequestMs?: number; callbackMs?: number; mcpHeadersMs?: number; connectMs?: number; storeMs?: number };
  maxBodyBytes?: number;
  policy?: Partial<EnginePolicy>;
  protocolVersion?: string;
  /** Dispatcher for the caller's MCP requests; default an Agent with a headers deadline. */
  dispatcher?: Dispatcher;
  /** Name resolution for OAuth calls (tests map names to loopback). */
  resolver?: Resolver;
  classifyAddress?: (address: string) => NetworkClass | undefined;
  /** http:// for a non-loopback MCP server (development only). */
  allowInsecureServerUrl?: boolean;
  clock?: () => number;
  randomBytes?: RandomBytes;
  /** A persisted snapshot from `persist()`, to resume a flow (e.g. after the page navigated away). */
  resume?: unknown;
  /** Receives each redacted step of the machine as it happens. */
  observe?: (entry: TraceEntry) => void;
  /** A machine-to-machine grant instead of the browser flow (client credentials, JWT bearer, enterprise). */
  grant?: GrantOptions;
}


export interface ResolvedOptions {
  config: EngineConfig;
  storeKey: string;
  redirect: { kind: 'loopback'; host: '127.0.0.1' | '::1' | 'localhost'; port: number; path: string } | { kind: 'fixed'; uri: string };
  deadlines: { oauthRequestMs: number; callbackMs: number; mcpHeadersMs: number; connectMs: number; storeMs: number };
  maxBodyBytes: number;
  /** Keys and providers of a machine-to-machine grant: the adapter's, never the machine's. */
  grantCredentials?: GrantCredentials;
}

const providerSchema = z.custom<AssertionProvider>((value) => typeof value === 'function', 'must be a function');
const privateKeySchema = z.union([z.string().includes('PRIVATE KEY'), z.looseObject({ kty: z.string(), d: z.string() })]);
/** A host clock more than a day off is broken, not skewed: refuse the configuration (C79). */
export const MAX_ASSERTION_CLOCK_OFFSET_S = 86_400;
const clientAuthShape = {
  clientId: z.string().min(1),
  clientSecret: z.string().min(1).optional(),
  authMethod: z.enum(['none', 'client_secret_basic', 'client_secret_post', 'private_key_jwt']).optional(),
  privateKey: privateKeySchema.optional(),
  alg: z.enum(['ES256', 'RS256']).optional(),
  assertionClockOffsetSeconds: z.number().int().min(-MAX_ASSERTION_CLOCK_OFFSET_S).max(MAX_ASSERTION_CLOCK_OFFSET_S).optional(),
};
const GrantSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('client_credentials'), ...clientAuthShape, assertionProvider: providerSchema.optional() }),
  z.object({
    type: z.literal('jwt_bearer'),
    ...clientAuthShape,
    clientId: z.string().min(1).optional(),
    assertionProvider: providerSchema,
  }),
  z.object({
    type: z.literal('enterprise'),
    ...clientAuthShape,
    idp: z.object({
      tokenEndpoint: z.url({ protocol: /^https?$/ }),
      clientId: z.string().min(1),
      clientSecret: z.string().min(1).optional(),
      idToken: z.string().min(1).optional(),
      idTokenProvider: providerSchema.optional(),
    }),
  }),
]);

const positiveMs = z.number().int().positive().max(24 * 3600 * 1000);

const OptionsSchema = z.object({
  serverUrl: z.url({ protocol: /^https?$/ }),
  storeKey: z.string().min(1).optional(),
  scope: z.string().regex(/^[\x21\x23-\x5b\x5d-\x7e]+( [\x21\x23-\x5b\x5d-\x7e]+)*$/).optional(),
  client: z
    .object({
      metadata: z.optional(partial(ClientMetadataSchema)),
      metadataUrl: z.string().optional(),
      preregistered: z
        .object({
          client_id: z.string().min(1),
          client_secret: z.string().min(1).optional(),
          token_endpoint_auth_method: TokenEndpointAuthMethodSchema,
          redirect_uris: z.array(z.url()).min(1).optional(),
          issuer: z.url().optional(),
        })
        .optional(),
    })
    .optional(),
  redirect: z
    .union([
      z.object({
        loopback: z.object({
          host: z.enum(['127.0.0.1', '::1', 'localhost']).optional(),
          port: z.number().int().min(0).max(65535).optional(),
          path: z.string().startsWith('/').optional(),
        }),
      }),
      z.object({ uri: z.url() }),
    ])
    .optional(),
  deadlines: z
    .object({ oauthRequestMs: positiveMs.optional(), callbackMs: positiveMs.optional(), mcpHeadersMs: positiveMs.optional(), connectMs: positiveMs.optional(), storeMs: positiveMs.optional() })
    .optional(),
  maxBodyBytes: z.number().int().min(1024).max(64 * 1024 * 1024).optional(),
  protocolVersion: z.string().regex(/^\d{4}-\d{2}-\d{2}$/).optional(),
  policy: z
    .object({
      resourceMatch: z.enum(['exact', 'same-origin']).optional(),
      allowedMetadataOrigins: z.array(z.url()).optional(),
      legacyFallback: z.boolean().optional(),
      pkceQuirkIssuers: z.array(z.string()).optional(),
      allowUnadvertisedPkce: z.boolean().optional(),
      refreshSkewMs: z.number().int().min(0).max(3600_000).optional(),
      maxAuthorizations: z.number().int().min(1).max(10).optional(),
      minTokenLifetimeSeconds: z.number().int().min(0).optional(),
      maxTokenLifetimeSeconds: z.number().int().positive().optional(),
      dpop: z.enum(['auto', 'always', 'off']).optional(),
      minDevicePollIntervalMs: z.number().int().min(0).max(60_000).optional(),
    })
    .optional(),
  interaction: z.enum(['browser', 'device']).optional(),
  allowInsecureServerUrl: z.boolean().optional(),
  grant: GrantSchema.optional(),
});

/** The grant as the machine sees it (no keys, no providers) and what the adapter keeps. */
function resolveGrant(grant: z.infer<typeof GrantSchema>): { config: GrantConfig; credentials: GrantCredentials } {
  const clientAssertionProvider = grant.type === 'client_credentials' ? grant.assertionProvider : undefined;
  const canSign = grant.privateKey !== undefined || clientAssertionProvider !== undefined;
  const authMethod = grant.authMethod ?? (canSign ? 'private_key_jwt' : grant.clientSecret !== undefined ? 'client_secret_basic' : 'none');
  if ((authMethod === 'client_secret_basic' || authMethod === 'client_secret_post') && grant.clientSecret === undefined) {
    throw configError('grant.clientSecret', `required for ${authMethod}`);
  }
  if (authMethod === 'private_key_jwt' && !canSign) throw configError('grant.privateKey', 'private_key_jwt needs a private key (PKCS#8 PEM or JWK) or an assertionProvider');
  if (authMethod === 'private_key_jwt' && grant.clientId === undefined) throw configError('grant.clientId', 'required for private_key_jwt');
  if (authMethod !== 'none' && grant.clientId === undefined) throw configError('grant.clientId', `required for ${authMethod}`);
  const client = {
    ...(grant.clientId === undefined ? {} : { clientId: grant.clientId }),
    ...(grant.clientSecret === undefined ? {} : { clientSecret: grant.clientSecret }),
    authMethod,
  };
  const credentials: GrantCredentials = {
    ...(grant.alg === undefined ? {} : { alg: grant.alg }),
    clockOffsetSeconds: grant.assertionClockOffsetSeconds ?? 0,
    ...(grant.privateKey === undefined ? {} : { privateKey: grant.privateKey as PrivateKeyInput }),
    ...(clientAssertionProvider === undefined ? {} : { clientAssertionProvider }),
  };
  switch (grant.type) {
    case 'client_credentials':
      return { config: { type: 'client_credentials', clientId: grant.clientId, ...client, authMethod }, credentials };
    case 'jwt_bearer':
      return { config: { type: 'jwt_bearer', ...client }, credentials: { ...credentials, assertionProvider: grant.assertionProvider } };
    case 'enterprise': {
      const { idp } = grant;
      if (!isAllowedOAuthUrl(idp.tokenEndpoint)) throw configError('grant.idp.tokenEndpoint', 'must be https (http only on loopback)');
      const idToken = idp.idToken;
      const idTokenProvider = idp.idTokenProvider ?? (idToken === undefined ? undefined : () => idToken);
      if (idTokenProvider === undefined) throw configError('grant.idp.idToken', 'an ID token or an idTokenProvider is required');
      return {
        config: {
          type: 'enterprise',
          clientId: grant.clientId,
          ...client,
          authMethod,
          idp: { tokenEndpoint: idp.tokenEndpoint, clientId: idp.clientId, ...(idp.clientSecret === undefined ? {} : { clientSecret: idp.clientSecret }) },
        },
        credentials: { ...credentials, idTokenProvider },
      };
    }
  }
}

function configError(field: string, problem: string): OAuthConfigError {
  return new OAuthConfigError({ code: 'config.invalid_option', message: `${field}: ${problem}` });
}

export function resolveOptions(options: OAuthSessionOptions): ResolvedOptions {
  const parsed = OptionsSchema.safeParse(options);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw configError(issue?.path.join('.') || '(options)', issue?.message ?? 'invalid');
  }
  const input = parsed.data;
  if (!input.allowInsecureServerUrl && !isAllowedOAuthUrl(input.serverUrl)) {
    throw configError('serverUrl', 'must be https (http only on loopback)');
  }
  const serverUrl = canonicalServerUrl(input.serverUrl);

  const metadataUrl = input.client?.metadataUrl;
  if (metadataUrl !== undefined) {
    const problem = clientIdMetadataUrlProblem(metadataUrl);
    if (problem !== undefined) throw configError('client.metadataUrl', `not a valid Client ID Metadata Document URL (${problem})`);
  }

  const redirect: ResolvedOptions['redirect'] =
    input.redirect && 'uri' in input.redirect
      ? { kind: 'fixed', uri: input.redirect.uri }
      : {
          kind: 'loopback',
          host: input.redirect?.loopback.host ?? '127.0.0.1',
          port: input.redirect?.loopback.port ?? 0,
          path: input.redirect?.loopback.path ?? '/callback',
        };
  if (redirect.kind === 'fixed' && !isAllowedOAuthUrl(redirect.uri)) {
    throw configError('redirect.uri', 'must be https or a loopback http URL');
  }

  const pre = input.client?.preregistered;
  if (pre && pre.token_endpoint_auth_method !== 'none' && pre.client_secret === undefined) {
    throw configError('client.preregistered.client_secret', `required for ${pre.token_endpoint_auth_method}`);
  }
  const fixedRedirects = redirect.kind === 'fixed' ? [redirect.uri] : undefined;
  const preRedirects = pre?.redirect_uris ?? fixedRedirects ?? (redirect.kind === 'loopback' && redirect.port !== 0 ? [loopbackUri(redirect, redirect.port)] : undefined);
  if (pre && preRedirects === undefined) {
    throw configError('client.preregistered.redirect_uris', 'required unless the redirect URI is fixed (a fixed loopback port or redirect.uri)');
  }
  const metadataRedirects = input.client?.metadata?.redirect_uris ?? fixedRedirects;
  if (metadataUrl !== undefined && metadataRedirects === undefined && !(redirect.kind === 'loopback' && redirect.port !== 0)) {
    throw configError('client.metadata.redirect_uris', 'a Client ID Metadata Document lists fixed redirect URIs: give them, or a fixed loopback port');
  }

  const { redirect_uris: _ignored, ...metadata } = (input.client?.metadata ?? {}) as Partial<ClientMetadata>;
  const clientRedirects = metadataRedirects ?? (redirect.kind === 'loopback' && redirect.port !== 0 ? [loopbackUri(redirect, redirect.port)] : undefined);
  const grant = input.grant === undefined ? undefined : resolveGrant(input.grant);
  const interaction = input.interaction ?? 'browser';
  if (interaction === 'device' && typeof options.onDeviceAuthorization !== 'function') {
    throw configError('onDeviceAuthorization', "required with interaction: 'device' (the person must be shown the user code)");
  }
  const config: EngineConfig = {
    ...(grant === undefined ? {} : { grant: grant.config }),
    serverUrl,
    interaction,
    protocolVersion: input.protocolVersion ?? DEFAULT_PROTOCOL_VERSION,
    clientMetadata: {
      client_name: 'mcp-oauth',
      ...metadata,
      ...(clientRedirects === undefined ? {} : { redirect_uris: clientRedirects }),
    },
    ...(metadataUrl === undefined ? {} : { clientMetadataUrl: metadataUrl }),
    ...(input.scope === undefined ? {} : { scope: input.scope }),
    ...(pre === undefined || preRedirects === undefined
      ? {}
      : {
          preregistered: {
            client_id: pre.client_id,
            ...(pre.client_secret === undefined ? {} : { client_secret: pre.client_secret }),
            token_endpoint_auth_method: pre.token_endpoint_auth_method,
            redirect_uris: preRedirects,
            ...(pre.issuer === undefined ? {} : { issuer: pre.issuer }),
          },
        }),
    policy: { ...DEFAULT_POLICY, ...stripUndefined(input.policy ?? {}) },
  };
  return {
    config,
    storeKey: input.storeKey ?? serverUrl,
    redirect,
    deadlines: {
      oauthRequestMs: input.deadlines?.oauthRequestMs ?? 10_000,
      callbackMs: input.deadlines?.callbackMs ?? 300_000,
      mcpHeadersMs: input.deadlines?.mcpHeadersMs ?? 60_000,
      connectMs: input.deadlines?.connectMs ?? 10_000,
      storeMs: input.deadlines?.storeMs ?? 20_000,
    },
    maxBodyBytes: input.maxBodyBytes ?? 1024 * 1024,
    ...(grant === undefined ? {} : { grantCredentials: grant.credentials }),
  };
}

export function loopbackUri(redirect: { host: string; path: string }, port: number): string {
  const host = redirect.host === '::1' ? '[::1]' : redirect.host;
  return `http://${host}:${port}${redirect.path}`;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
