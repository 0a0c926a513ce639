/**
 * Session options, validated before any network activity: a bad option fails on the spot with an
 * error naming the field, before a browser opens or a registration is half made.
 */
import type { Dispatcher } from 'undici';
import * as z from 'zod';
import { OAuthConfigError } from '../machines/errors.js';
import type { EngineConfig, EnginePolicy, PreregisteredClient } from '../machines/oauth.types.js';
import { DEFAULT_POLICY } from '../machines/policy.js';
import { ClientMetadataSchema, TokenEndpointAuthMethodSchema, type ClientMetadata } from '../machines/schemas.js';
import type { CredentialStore } from '../machines/store.js';
import { canonicalServerUrl, clientIdMetadataUrlProblem, isAllowedOAuthUrl } from '../machines/urls.js';
import type { RandomBytes } from './entropy.js';
import type { Resolver } from './oauthHttp.js';
import type { NetworkClass } from '../machines/urls.js';
import type { TraceEntry } from './trace.js';

export const DEFAULT_PROTOCOL_VERSION = '2025-11-25';

export type AuthorizationUrlOpener = (
  url: string,
  context: { redirectUri: string; signal: AbortSignal },
) => void | URLSearchParams | Promise<void | URLSearchParams>;

export interface OAuthSessionOptions {
  /** The MCP server URL (the resource). */
  serverUrl: string;
  store?: CredentialStore;
  /** Store key; default the canonical server URL. */
  storeKey?: string;
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
}


export interface ResolvedOptions {
  config: EngineConfig;
  storeKey: string;
  redirect: { kind: 'loopback'; host: '127.0.0.1' | '::1' | 'localhost'; port: number; path: string } | { kind: 'fixed'; uri: string };
  deadlines: { oauthRequestMs: number; callbackMs: number; mcpHeadersMs: number; connectMs: number; storeMs: number };
  maxBodyBytes: number;
}

const positiveMs = z.number().int().positive().max(24 * 3600 * 1000);

const OptionsSchema = z.object({
  serverUrl: z.url({ protocol: /^https?$/ }),
  storeKey: z.string().min(1).optional(),
  client: z
    .object({
      metadata: ClientMetadataSchema.partial().optional(),
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
    })
    .optional(),
  allowInsecureServerUrl: z.boolean().optional(),
});

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
  const config: EngineConfig = {
    serverUrl,
    protocolVersion: input.protocolVersion ?? DEFAULT_PROTOCOL_VERSION,
    clientMetadata: {
      client_name: 'mcp-oauth',
      ...metadata,
      ...(clientRedirects === undefined ? {} : { redirect_uris: clientRedirects }),
    },
    ...(metadataUrl === undefined ? {} : { clientMetadataUrl: metadataUrl }),
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
  };
}

export function loopbackUri(redirect: { host: string; path: string }, port: number): string {
  const host = redirect.host === '::1' ? '[::1]' : redirect.host;
  return `http://${host}:${port}${redirect.path}`;
}

function stripUndefined<T extends object>(value: T): Partial<T> {
  return Object.fromEntries(Object.entries(value).filter(([, v]) => v !== undefined)) as Partial<T>;
}
