#!/usr/bin/env node
/**
 * `mcp-oauth`: log in to an OAuth-protected MCP server once, from a terminal, and use it.
 *
 * Every command drives the engine (`createOAuthSession`) over the file store, so two commands for
 * one server share one sign-in and one refresh (the store's lease). Progress goes to stderr, the
 * command's result to stdout. Exit codes are listed in `HELP` and in the README.
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { assertOpenableUrl, openSystemBrowser } from '../adapters/interaction/browser.js';
import type { AuthorizationUrlOpener, OAuthSessionOptions } from '../adapters/options.js';
import { createOAuthSession, type OAuthSession } from '../adapters/session.js';
import { createFileStore } from '../adapters/stores/file.js';
import {
  OAuthConfigError,
  OAuthFlowError,
  OAuthNetworkError,
  OAuthStoreError,
} from '../machines/errors.js';
import type { ClientRecord, CredentialStore, DiscoveryRecord, RecordKind, TokenRecord, Versioned } from '../machines/store.js';
import type { DevicePrompt } from '../machines/steps/device.js';
import { canonicalServerUrl } from '../machines/urls.js';
import { createProgress, type Progress } from './progress.js';

export const EXIT = {
  ok: 0,
  /** A bug or an error without a code. */
  internal: 1,
  usage: 2,
  /** The OAuth flow failed (the code says where): discovery, registration, authorization, token. */
  auth: 3,
  network: 4,
  store: 5,
  /** `status <url>` / `token` without a login where no browser may be used. */
  notSignedIn: 6,
  /** The MCP server answered an error (a failed `tools/list`, a tool result with `isError`). */
  mcp: 7,
  interrupted: 130,
} as const;

class UsageError extends Error {}

const HELP: Record<string, string> = {
  main: `usage: mcp-oauth <command> [options]

Sign in to OAuth-protected MCP servers from a terminal and use them.

commands:
  login <url>                     sign in (browser + loopback callback); prints each step
  status [url]                    servers known, issuer, scopes, token expiry, refresh token
  token <url>                     print a valid access token (refreshing if needed) on stdout
  tools <url>                     list the server's tools
  call <url> <tool> [json-args]   call a tool with a JSON object of arguments
  logout <url>                    revoke (RFC 7009) when offered, then delete the stored records

Run "mcp-oauth <command> --help" for a command's options.

environment:
  MCP_OAUTH_STORE_DIR   where credentials are kept (default: $XDG_STATE_HOME/mcp-oauth,
                        ~/.local/state/mcp-oauth; macOS ~/Library/Application Support/mcp-oauth;
                        Windows %LOCALAPPDATA%\\mcp-oauth). Files 0600 in a 0700 directory.
  BROWSER               a command that receives the authorization URL as its only argument
                        (run without a shell); default xdg-open / open / rundll32

exit codes:
  0  success
  1  internal error
  2  usage error (unknown command or option, bad argument)
  3  authorization failed (the message names the state and the error code)
  4  network error reaching an OAuth endpoint
  5  credential store error (lease time-out, unreadable directory)
  6  not signed in (status <url>)
  7  the MCP server answered an error (tools, call)
  130 interrupted (Ctrl-C)
`,
  login: `usage: mcp-oauth login <url> [options]

Runs the authorization flow for the MCP server at <url> unless valid tokens are already stored:
discovery, client registration, authorization code + PKCE in the browser, token exchange.

options:
  --scope <scopes>              scope to request on top of what the server asks for
  --client-id <id>              use a pre-registered client (needs --port: its redirect URI)
  --client-secret <secret>      its secret (client_secret_basic); prefer $MCP_OAUTH_CLIENT_SECRET
  --client-metadata-url <url>   use a Client ID Metadata Document (https, with a path; needs --port)
  --port <n>                    loopback callback port (redirect URI http://127.0.0.1:<n>/callback)
  --no-browser                  do not start a browser: when the authorization server offers the
                                device authorization grant (RFC 8628), show a code to enter on any
                                device; otherwise print the URL and wait for the callback
  --timeout <seconds>           how long to wait for the browser (default 300)
  --trace <file>                write the session's redacted trace (the visualizer's input)
  --force                       sign in again although valid tokens are stored: the held tokens are
                                revoked (RFC 7009, when offered) and forgotten first; the client
                                registration is kept
  -q, --quiet                   no progress lines
  -h, --help                    this help
`,
  status: `usage: mcp-oauth status [url] [--json]

Without <url>: every server in the store. With <url>: that server; exit code 6 when not signed in.
Shows the issuer, the scopes, the access token's expiry and whether a refresh token is held.
No secret is printed.
`,
  token: `usage: mcp-oauth token <url> [options]

Prints a valid access token for <url> on stdout (refreshing it if needed, signing in if there is
none), e.g.  curl -H "Authorization: Bearer $(mcp-oauth token https://mcp.example.com/mcp)" …
Progress, if any, goes to stderr. Takes login's options.
`,
  tools: `usage: mcp-oauth tools <url> [--json]

Lists the tools of the MCP server at <url> through the MCP SDK client, the engine signing in or
refreshing as needed. Takes login's options.
`,
  call: `usage: mcp-oauth call <url> <tool> [json-args] [--json]

Calls <tool> with [json-args] (a JSON object, default {}) and prints its text content. Exit code 7
when the tool reports an error. Takes login's options.
`,
  logout: `usage: mcp-oauth logout <url> [--trace <file>]

Revokes the refresh token (or the access token) at the authorization server's revocation endpoint
(RFC 7009) when its metadata advertised one, then deletes the stored tokens, client registration
and discovery record for <url>. A refused revocation is reported; the records are deleted anyway.
`,
};

const FLOW_OPTIONS = {
  scope: { type: 'string' },
  'client-id': { type: 'string' },
  'client-secret': { type: 'string' },
  'client-metadata-url': { type: 'string' },
  port: { type: 'string' },
  'no-browser': { type: 'boolean' },
  force: { type: 'boolean' },
  timeout: { type: 'string' },
  trace: { type: 'string' },
  quiet: { type: 'boolean', short: 'q' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const satisfies ParseArgsConfig['options'];

type Values = { [K in keyof typeof FLOW_OPTIONS]?: (typeof FLOW_OPTIONS)[K]['type'] extends 'string' ? string : boolean };

interface Io {
  out: (text: string) => void;
  progress: Progress;
}

export async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    process.stdout.write(HELP.main ?? '');
    return command === undefined ? EXIT.usage : EXIT.ok;
  }
  if (!(command in HELP) || command === 'main') {
    process.stderr.write(`mcp-oauth: unknown command ${JSON.stringify(command)}\n\n${HELP.main}`);
    return EXIT.usage;
  }
  let values: Values;
  let positionals: string[];
  try {
    ({ values, positionals } = parseArgs({ args: rest, options: FLOW_OPTIONS, allowPositionals: true, strict: true }) as { values: Values; positionals: string[] });
  } catch (error) {
    process.stderr.write(`mcp-oauth ${command}: ${(error as Error).message}\n\n${HELP[command]}`);
    return EXIT.usage;
  }
  if (values.help) {
    process.stdout.write(HELP[command] ?? '');
    return EXIT.ok;
  }
  const io: Io = { out: (text) => process.stdout.write(`${text}\n`), progress: createProgress(process.stderr, values.quiet === true) };
  let session: OAuthSession | undefined;
  const interrupt = (): void => {
    io.progress.stop();
    process.stderr.write('\nmcp-oauth: interrupted\n');
    void (session?.close() ?? Promise.resolve()).finally(() => process.exit(EXIT.interrupted));
  };
  process.once('SIGINT', interrupt);
  process.once('SIGTERM', interrupt);
  try {
    switch (command) {
      case 'status':
        return await status(positionals, values, io);
      case 'login':
      case 'token':
      case 'tools':
      case 'call':
      case 'logout': {
        const url = positionals[0];
        if (url === undefined) throw new UsageError('missing <url>');
        session = openSession(url, values, io);
        try {
          return await run(command, session, url, positionals.slice(1), values, io);
        } finally {
          await writeTrace(session, values.trace);
          await session.close();
        }
      }
      default:
        return EXIT.usage;
    }
  } catch (error) {
    io.progress.stop();
    return report(command, error, session);
  } finally {
    process.off('SIGINT', interrupt);
    process.off('SIGTERM', interrupt);
  }
}

function report(command: string, error: unknown, session: OAuthSession | undefined): number {
  if (error instanceof UsageError) {
    process.stderr.write(`mcp-oauth ${command}: ${error.message}\n\n${HELP[command] ?? HELP.main}`);
    return EXIT.usage;
  }
  if (error instanceof OAuthFlowError) {
    const state = error.state ?? session?.state ?? 'unknown';
    // Messages carry no secrets and quote server text JSON-escaped (the engine's error contract).
    process.stderr.write(`mcp-oauth ${command}: failed in state ${state}\n  code: ${error.code}\n  ${error.message}\n`);
    if (error instanceof OAuthConfigError) return EXIT.usage;
    if (error instanceof OAuthNetworkError) return EXIT.network;
    if (error instanceof OAuthStoreError) return EXIT.store;
    return EXIT.auth;
  }
  if (error instanceof McpError) {
    process.stderr.write(`mcp-oauth ${command}: ${error.message}\n  code: ${error.code}\n`);
    return EXIT.mcp;
  }
  const text = error instanceof Error ? `${error.name}: ${error.message}` : String(error);
  process.stderr.write(`mcp-oauth ${command}: unexpected error\n  code: internal\n  ${text.slice(0, 500)}\n`);
  return EXIT.internal;
}

class McpError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

// ------------------------------------------------------------------------------ the session

function openSession(url: string, values: Values, io: Io): OAuthSession {
  const port = values.port === undefined ? undefined : integer('--port', values.port, 1, 65535);
  const timeout = values.timeout === undefined ? 300 : integer('--timeout', values.timeout, 1, 24 * 3600);
  const secret = values['client-secret'] ?? process.env.MCP_OAUTH_CLIENT_SECRET;
  const clientId = values['client-id'];
  if (secret !== undefined && clientId === undefined) throw new UsageError('--client-secret needs --client-id');
  const options: OAuthSessionOptions = {
    serverUrl: url,
    store: createFileStore(),
    ...(values.scope === undefined ? {} : { scope: values.scope }),
    redirect: { loopback: { host: '127.0.0.1', ...(port === undefined ? {} : { port }), path: '/callback' } },
    client: {
      metadata: { client_name: 'mcp-oauth CLI' },
      ...(values['client-metadata-url'] === undefined ? {} : { metadataUrl: values['client-metadata-url'] }),
      ...(clientId === undefined
        ? {}
        : {
            preregistered: {
              client_id: clientId,
              ...(secret === undefined ? {} : { client_secret: secret }),
              token_endpoint_auth_method: secret === undefined ? ('none' as const) : ('client_secret_basic' as const),
            },
          }),
    },
    deadlines: { callbackMs: timeout * 1000 },
    openAuthorizationUrl: values['no-browser'] ? printingOpener(io) : browserOpener(io),
    ...(values['no-browser'] ? { interaction: 'device' as const, onDeviceAuthorization: devicePrompt(io) } : {}),
    observe: (entry) => io.progress.observe(entry),
  };
  return createOAuthSession(options);
}

function integer(name: string, raw: string, min: number, max: number): number {
  const value = Number(raw);
  if (!/^\d+$/.test(raw) || !Number.isSafeInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be an integer from ${min} to ${max}`);
  }
  return value;
}

/** The system browser (or `$BROWSER`), never through a shell; the URL is printed too. */
function browserOpener(io: Io): AuthorizationUrlOpener {
  return async (url) => {
    try {
      await openSystemBrowser(url);
      io.progress.line(`  Opened the browser. If it did not open, visit:\n    ${url}`);
    } catch (error) {
      if (error instanceof OAuthFlowError && error.code === 'browser.unavailable') {
        io.progress.line(`  Could not start a browser. Open this URL on this machine:\n    ${url}`);
        return;
      }
      // An unsafe URL is never printed either: it may carry terminal control sequences.
      throw error;
    }
  };
}

/** `--no-browser`: the same checks as the opener, then the URL is shown and the callback awaited. */
function printingOpener(io: Io): AuthorizationUrlOpener {
  return (url, { redirectUri }) => {
    const href = assertOpenableUrl(url);
    io.progress.line(`  Open this URL in a browser on this machine (the answer comes back to ${redirectUri}):\n    ${href}`);
  };
}

/** RFC 8628 §3.3: where to go and what to type; the engine has already refused control characters in both. */
function devicePrompt(io: Io): (prompt: DevicePrompt) => void {
  return ({ userCode, verificationUri, verificationUriComplete, expiresAt }) => {
    const minutes = Math.max(1, Math.round((expiresAt - Date.now()) / 60_000));
    io.progress.line(`  On any device, open ${verificationUri}\n  and enter the code:  ${userCode}`);
    if (verificationUriComplete !== undefined) io.progress.line(`  (or open ${verificationUriComplete})`);
    io.progress.line(`  The code expires in about ${minutes} min.`);
  };
}

async function writeTrace(session: OAuthSession, file: string | undefined): Promise<void> {
  if (file === undefined) return;
  await writeFile(path.resolve(file), `${JSON.stringify(session.trace(), null, 2)}\n`, { mode: 0o600 });
}

// ------------------------------------------------------------------------------ commands

async function run(command: string, session: OAuthSession, url: string, args: string[], values: Values, io: Io): Promise<number> {
  if (values.force && command !== 'login') throw new UsageError('--force is an option of login only');
  switch (command) {
    case 'login': {
      if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`);
      // Through the engine: the same revocation and compare-and-delete as `logout`, then a new flow.
      if (values.force) await session.logout();
      await session.authorize();
      const tokens = session.actor.getSnapshot().context.tokens;
      io.progress.stop();
      io.out(`Signed in to ${canonicalServerUrl(url)}`);
      if (tokens) io.out(describeTokens(tokens, Date.now()).map((line) => `  ${line}`).join('\n'));
      return EXIT.ok;
    }
    case 'token': {
      if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`);
      const token = await session.getAccessToken();
      io.progress.stop();
      // By design the one place a secret is printed: stdout, for `$(mcp-oauth token …)`.
      process.stdout.write(`${token}\n`);
      return EXIT.ok;
    }
    case 'tools':
    case 'call':
      return mcp(command, session, url, args, values, io);
    case 'logout': {
      if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`);
      const store = createFileStore();
      const key = canonicalServerUrl(url);
      const discovery = (await store.get(key, 'discovery'))?.value;
      const result = await session.logout();
      io.progress.stop();
      if (!result.hadTokens) io.out(`Not signed in to ${key}; nothing to revoke`);
      else if (result.revoked) io.out(`Revoked at ${discovery?.revocation_endpoint ?? 'the revocation endpoint'}`);
      else if (result.problem) io.out(`Revocation did not succeed (${result.problem.code}: ${result.problem.message}); the tokens are deleted here`);
      else io.out('The authorization server offers no revocation endpoint; the tokens are deleted here only');
      const deleted = await deleteRecords(store, key);
      io.out(`Deleted the stored records for ${key}${deleted.length ? ` (${deleted.join(', ')})` : ''}`);
      return EXIT.ok;
    }
    default:
      return EXIT.usage;
  }
}

/** The tokens went through the engine (compare-and-delete); the identity and discovery follow. */
async function deleteRecords(store: CredentialStore, key: string): Promise<RecordKind[]> {
  const deleted: RecordKind[] = [];
  for (const kind of ['client', 'discovery'] as const) {
    const current = await store.get(key, kind);
    if (current && (await store.delete(key, kind, { ifGeneration: current.generation }))) deleted.push(kind);
  }
  return deleted;
}

async function mcp(command: 'tools' | 'call', session: OAuthSession, url: string, args: string[], values: Values, io: Io): Promise<number> {
  let toolName: string | undefined;
  let toolArgs: Record<string, unknown> = {};
  if (command === 'call') {
    toolName = args[0];
    if (toolName === undefined) throw new UsageError('missing <tool>');
    if (args.length > 2) throw new UsageError(`unexpected argument ${JSON.stringify(args[2])}`);
    if (args[1] !== undefined) {
      let parsed: unknown;
      try {
        parsed = JSON.parse(args[1]);
      } catch {
        throw new UsageError('json-args is not valid JSON');
      }
      if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) throw new UsageError('json-args must be a JSON object');
      toolArgs = parsed as Record<string, unknown>;
    }
  } else if (args.length > 0) throw new UsageError(`unexpected argument ${JSON.stringify(args[0])}`);

  // The MCP SDK is needed only here: login, token, status and logout work without it.
  const [{ Client }, { StreamableHTTPClientTransport }] = await Promise.all([
    import('@modelcontextprotocol/sdk/client/index.js'),
    import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
  ]);
  const client = new Client({ name: 'mcp-oauth-cli', version: '0.1.0' });
  const transport = new StreamableHTTPClientTransport(new URL(url), { fetch: session.fetch });
  try {
    try {
      await client.connect(transport);
    } catch (error) {
      throw asMcpError(error, 'connect');
    }
    if (command === 'tools') {
      const { tools } = await client.listTools().catch((error: unknown) => {
        throw asMcpError(error, 'tools/list');
      });
      io.progress.stop();
      if (values.json) io.out(JSON.stringify(tools, null, 2));
      else for (const tool of tools) io.out(`${tool.name}${tool.description ? `  ${tool.description.split('\n')[0]}` : ''}`);
      return EXIT.ok;
    }
    const result = await client.callTool({ name: toolName as string, arguments: toolArgs }).catch((error: unknown) => {
      throw asMcpError(error, 'tools/call');
    });
    io.progress.stop();
    if (values.json) io.out(JSON.stringify(result, null, 2));
    else {
      const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
      for (const part of content) io.out(part.type === 'text' ? (part.text ?? '') : `[${part.type}]`);
    }
    return (result as { isError?: boolean }).isError ? EXIT.mcp : EXIT.ok;
  } finally {
    await client.close().catch(() => undefined);
  }
}

function asMcpError(error: unknown, step: string): Error {
  // The engine's own failures keep their type and code; the rest is the MCP server's answer.
  if (error instanceof OAuthFlowError) return error;
  const cause = (error as { cause?: unknown }).cause;
  if (cause instanceof OAuthFlowError) return cause;
  const code = (error as { code?: unknown }).code;
  const message = error instanceof Error ? error.message : String(error);
  return new McpError(`mcp.${step}${typeof code === 'number' || typeof code === 'string' ? `.${code}` : ''}`, `${step} failed: ${JSON.stringify(message.slice(0, 300))}`);
}

// ------------------------------------------------------------------------------ status

function describeTokens(tokens: TokenRecord, now: number): string[] {
  const expiry =
    tokens.expires_at === undefined
      ? 'no expiry given'
      : tokens.expires_at > now
        ? `valid until ${new Date(tokens.expires_at).toISOString()} (${Math.round((tokens.expires_at - now) / 60_000)} min)`
        : `expired at ${new Date(tokens.expires_at).toISOString()}`;
  return [
    `issuer         ${tokens.issuer}`,
    `scopes         ${tokens.scope ?? '(none granted)'}`,
    `access token   ${expiry}`,
    `refresh token  ${tokens.refresh_token === undefined ? 'absent' : 'present'}`,
  ];
}

interface ServerRecords {
  key: string;
  tokens?: Versioned<TokenRecord> | undefined;
  client?: Versioned<ClientRecord> | undefined;
  discovery?: Versioned<DiscoveryRecord> | undefined;
}

async function status(positionals: string[], values: Values, io: Io): Promise<number> {
  if (positionals.length > 1) throw new UsageError(`unexpected argument ${JSON.stringify(positionals[1])}`);
  const store = createFileStore();
  const keys = positionals[0] !== undefined ? [canonicalServerUrl(positionals[0])] : await knownKeys(store.directory);
  const servers: ServerRecords[] = [];
  for (const key of keys) {
    const [tokens, client, discovery] = await Promise.all([store.get(key, 'tokens'), store.get(key, 'client'), store.get(key, 'discovery')]);
    servers.push({ key, tokens, client, discovery });
  }
  const now = Date.now();
  if (values.json) {
    io.out(
      JSON.stringify(
        servers.map(({ key, tokens, client, discovery }) => ({
          server: key,
          signedIn: tokens !== undefined,
          issuer: tokens?.value.issuer ?? discovery?.value.issuer ?? client?.value.issuer,
          scope: tokens?.value.scope,
          expiresAt: tokens?.value.expires_at === undefined ? undefined : new Date(tokens.value.expires_at).toISOString(),
          expired: tokens?.value.expires_at === undefined ? undefined : tokens.value.expires_at <= now,
          refreshToken: tokens === undefined ? undefined : tokens.value.refresh_token !== undefined,
          client: client === undefined ? undefined : { client_id: client.value.client_id, source: client.value.source },
          revocation: discovery?.value.revocation_endpoint !== undefined,
        })),
        null,
        2,
      ),
    );
  } else {
    if (servers.length === 0) io.out(`No servers known (store: ${store.directory})`);
    for (const { key, tokens, client, discovery } of servers) {
      io.out(key);
      if (tokens) for (const line of describeTokens(tokens.value, now)) io.out(`  ${line}`);
      else io.out('  not signed in');
      if (client) io.out(`  client         ${client.value.client_id} (${client.value.source})`);
      if (discovery) io.out(`  revocation     ${discovery.value.revocation_endpoint ?? 'not offered'}`);
    }
  }
  return positionals[0] !== undefined && servers[0]?.tokens === undefined ? EXIT.notSignedIn : EXIT.ok;
}

/** Record files name their key inside; the file names are hashes. */
async function knownKeys(directory: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(directory);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw new OAuthStoreError({ code: 'store.unreadable', message: `cannot list ${directory}` }, { cause: error });
  }
  const keys = new Set<string>();
  for (const name of names.filter((n) => /\.(tokens|client|discovery)\.json$/.test(n)).sort()) {
    try {
      const parsed = JSON.parse(await readFile(path.join(directory, name), 'utf8')) as { key?: unknown };
      if (typeof parsed.key === 'string') keys.add(parsed.key);
    } catch {
      // A torn or foreign file: the store's own read quarantines it; status skips it.
    }
  }
  return [...keys].sort();
}

const entry = process.argv[1] === undefined ? '' : path.resolve(process.argv[1]);
if (entry.endsWith(`${path.sep}cli${path.sep}main.ts`) || entry.endsWith(`${path.sep}cli${path.sep}main.js`) || path.basename(entry) === 'mcp-oauth') {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`mcp-oauth: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(EXIT.internal);
    },
  );
}
