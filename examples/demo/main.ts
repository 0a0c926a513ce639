/**
 * `npm run demo`: the whole engine on loopback, no network beyond 127.0.0.1.
 *
 * Starts the demo authorization server and a bearer-protected MCP server, points the MCP SDK client
 * at it through `session.fetch`, and prints every step of the OAuth statechart as it happens: the
 * cold flow (discovery, registration, authorization code + PKCE, exchange), the hot path (no machine
 * at all), and a refresh after the server expires the access token. It writes the redacted trace to
 * `demo-trace.json` (or `--trace <file>`) and checks that no secret the servers saw leaked into it.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { parseArgs } from 'node:util';
import { Client } from '@modelcontextprotocol/sdk/client/index.js';
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js';
import {
  createFileStore,
  createHeadlessUserAgent,
  createOAuthSession,
  type AuthorizationUrlOpener,
  type OAuthSession,
  type TraceEntry,
} from '../../src/index.js';
import { startAuthorizationServer, type AuthorizationServer } from './authorizationServer.js';
import { startMcpServer, type McpServer } from './mcpServer.js';

const RUN_DEADLINE_MS = 30_000;

const { values: args } = parseArgs({
  options: { trace: { type: 'string' }, help: { type: 'boolean', short: 'h' } },
  allowPositionals: false,
});
if (args.help) {
  process.stdout.write('usage: npm run demo [-- --trace <file>]   (default trace file: ./demo-trace.json)\n');
  process.exit(0);
}
const tracePath = path.resolve(args.trace ?? 'demo-trace.json');

// ---------------------------------------------------------------------------- output

const color = process.stdout.isTTY && !process.env.NO_COLOR;
const paint = (code: string) => (text: string) => (color ? `\x1b[${code}m${text}\x1b[0m` : text);
const dim = paint('2');
const bold = paint('1');
const green = paint('32');
const cyan = paint('36');
const red = paint('31');

/** Everything printed, so the secret scan covers the terminal as well as the trace file. */
const printed: string[] = [];
function print(line = ''): void {
  printed.push(line);
  process.stdout.write(`${line}\n`);
}

function heading(text: string): void {
  print();
  print(bold(text));
}

/** `http://127.0.0.1:PORT/x?code=…` with the query kept short: the trace has the rest. */
function shortUrl(url: string, max = 90): string {
  return url.length > max ? `${url.slice(0, max - 1)}…` : url;
}

const STATE_WIDTH = 38;
let lastState = '';

/** One line per machine step: effects (→) with what they ask for, states (✓) when one is entered. */
function describeEntry(entry: TraceEntry): string | undefined {
  const state = entry.state.padEnd(STATE_WIDTH);
  if (entry.kind === 'effect') {
    const effect = entry.effect ?? {};
    const type = String(effect.type);
    switch (type) {
      case 'http.request': {
        const request = effect.request as { method: string; url: string; step: string };
        return `  ${cyan('→')} ${state} ${request.method.padEnd(4)} ${shortUrl(request.url)} ${dim(`(${request.step})`)}`;
      }
      case 'browser.open':
        return `  ${cyan('→')} ${state} open ${shortUrl(String(effect.url))}`;
      case 'redirect.prepare':
        return `  ${cyan('→')} ${state} ${dim('start the loopback callback server')}`;
      case 'random.needed':
        return `  ${cyan('→')} ${state} ${dim('draw PKCE verifier and state')}`;
      case 'store.save':
      case 'store.clear':
        return `  ${cyan('→')} ${state} ${type} ${String(effect.kind)}`;
      case 'notice': {
        const notice = effect.notice as { code?: string; message?: string } | undefined;
        return `  ${cyan('!')} ${state} notice ${notice?.code ?? ''} ${notice?.message ?? ''}`;
      }
      case 'flow.failed': {
        const error = effect.error as { code?: string; message?: string } | undefined;
        return `  ${red('✗')} ${state} flow.failed ${error?.code ?? ''}: ${error?.message ?? ''}`;
      }
      default:
        return `  ${cyan('→')} ${state} ${type}`;
    }
  }
  const event = entry.event ?? {};
  const type = String(event.type);
  const changed = entry.state !== lastState;
  lastState = entry.state;
  // Bookkeeping events that leave the machine where it was add nothing a reader needs.
  if (!changed && (type === 'store.saved' || type === 'redirect.ready' || type === 'random')) return undefined;
  let detail = type;
  if (type === 'http.response') detail = `http.response ${String(event.status)}`;
  else if (type === 'http.failed') detail = `http.failed ${String(event.reason)}`;
  else if (type === 'unauthorized') {
    const error = /error="([^"]*)"/.exec(String(event.wwwAuthenticate ?? ''))?.[1];
    detail = `unauthorized ${String(event.status)}${error === undefined ? '' : ` ${error}`}`;
  }
  else if (type === 'store.saved') detail = `store.saved ${String(event.kind)}`;
  else if (type === 'redirect.ready') detail = `redirect.ready ${String(event.redirectUri)}`;
  else if (type === 'callback') detail = `callback (${Object.keys((event.params as object) ?? {}).join(', ')})`;
  const mark = entry.state === 'failed' ? red('✗') : green('✓');
  return `  ${mark} ${state} ${dim(`← ${detail}`)}`;
}

/**
 * The session records an event after the effects its transition emitted (both synchronously, inside
 * one `send`), so effects are held back until the event that caused them has been printed. Effects
 * with no event behind them (a store-write notice) are printed on the next microtask.
 */
let pendingEffects: string[] = [];
let observing = true;
function flushEffects(): void {
  const lines = pendingEffects;
  pendingEffects = [];
  for (const line of lines) print(line);
}
function observe(entry: TraceEntry): void {
  if (!observing) return;
  const line = describeEntry(entry);
  if (entry.kind === 'effect') {
    if (line === undefined) return;
    if (pendingEffects.length === 0) queueMicrotask(flushEffects);
    pendingEffects.push(line);
    return;
  }
  if (line !== undefined) print(line);
  flushEffects();
}

// ---------------------------------------------------------------------------- the run

interface Resources {
  as?: AuthorizationServer;
  mcp?: McpServer;
  session?: OAuthSession;
  client?: Client;
  storeDirectory?: string;
}

function textOf(result: unknown): string {
  const content = (result as { content?: Array<{ type: string; text?: string }> }).content ?? [];
  return content.map((part) => (part.type === 'text' ? part.text : `[${part.type}]`)).join(' ');
}

async function run(resources: Resources): Promise<void> {
  print(bold('mcp-oauth demo: an MCP client talking to an OAuth-protected MCP server, all on 127.0.0.1'));

  const as = (resources.as = await startAuthorizationServer({ accessTokenTtlSeconds: 300, rotateRefreshTokens: true }));
  const mcp = (resources.mcp = await startMcpServer({ authorizationServer: as }));
  print(`  authorization server  ${as.issuer}`);
  print(`  MCP server            ${mcp.url}   (Streamable HTTP, bearer token required)`);

  resources.storeDirectory = await mkdtemp(path.join(tmpdir(), 'mcp-oauth-demo-'));
  const store = createFileStore({ directory: resources.storeDirectory });
  print(`  token store           ${resources.storeDirectory}`);

  const userAgent = createHeadlessUserAgent();
  let authorizationsOpened = 0;
  // A browser stand-in: it follows the AS's redirects and delivers the code to the session's loopback callback server.
  const openAuthorizationUrl: AuthorizationUrlOpener = async (url, { redirectUri, signal }) => {
    authorizationsOpened += 1;
    await userAgent.authorize(url, redirectUri, signal);
  };

  const session = (resources.session = createOAuthSession({ serverUrl: mcp.url, store, openAuthorizationUrl, observe }));
  const client = (resources.client = new Client({ name: 'mcp-oauth-demo-client', version: '0.1.0' }));

  heading('1. Cold start: connect, and let the engine sign in on the first 401');
  await client.connect(new StreamableHTTPClientTransport(new URL(mcp.url), { fetch: session.fetch }));
  print(`  connected to ${client.getServerVersion()?.name ?? 'the server'}; state ${session.state}`);

  const { tools } = await client.listTools();
  print(`  tools: ${tools.map((tool) => tool.name).join(', ')}`);
  const echo = await client.callTool({ name: 'echo', arguments: { text: 'hello through OAuth 2.1' } });
  print(`  echo   → ${textOf(echo)}`);
  const whoami = await client.callTool({ name: 'whoami', arguments: {} });
  print(`  whoami → ${textOf(whoami)}`);

  heading('2. Hot path: the token is read from the snapshot, the machine is not involved');
  const stepsBefore = session.trace().entries.length;
  const asBefore = as.requests.length;
  const started = performance.now();
  const calls = 5;
  for (let i = 0; i < calls; i++) await client.callTool({ name: 'echo', arguments: { text: `ping ${i}` } });
  const elapsed = performance.now() - started;
  print(
    `  ${calls} tool calls in ${elapsed.toFixed(1)} ms: ${session.trace().entries.length - stepsBefore} machine steps, ` +
      `${as.requests.length - asBefore} authorization-server requests`,
  );

  heading('3. The authorization server expires every access token; the next call gets a 401 and the engine refreshes');
  as.expireAllAccessTokens();
  const again = await client.callTool({ name: 'echo', arguments: { text: 'still here after a refresh' } });
  print(`  echo   → ${textOf(again)}   (state ${session.state})`);

  heading('Summary');
  const mcpCalls = mcp.counts['rpc:tools/call'] ?? 0;
  print(`  MCP server            ${mcp.requests.length} requests (${mcpCalls} tool calls, ${mcp.counts['status:401'] ?? 0} answered 401)`);
  print(`  authorization server  ${as.requests.length} requests (${describeCounts(as.counts)})`);
  print(`  authorizations opened ${authorizationsOpened}`);
  print(`  refreshes             ${as.counts['token:refresh_token'] ?? 0}`);
  print(`  final state           ${session.state}`);

  observing = false;
  flushEffects();
  const trace = session.trace();
  const json = `${JSON.stringify(trace, null, 2)}\n`;
  const leaks = findSecrets(json + printed.join('\n'), issuedSecrets(as, mcp));
  if (leaks.length > 0) {
    throw Object.assign(new Error(`the trace or the output contains ${leaks.length} secret(s): ${leaks.join(', ')}`), {
      code: 'demo.secret_in_trace',
    });
  }
  await writeFile(tracePath, json, { mode: 0o644 });
  print();
  print(`Trace: ${trace.entries.length} redacted steps (${trace.format}) written to ${tracePath}`);
  print(dim('  checked: none of the codes, verifiers, states, refresh or access tokens the servers saw appears in it'));
}

function describeCounts(counts: Record<string, number>): string {
  const keys = ['metadata', 'register', 'authorize', 'token:authorization_code', 'token:refresh_token'];
  return keys.filter((key) => counts[key]).map((key) => `${key} ${counts[key]}`).join(', ');
}

/** Every secret either server received: the values a redacted trace must never contain. */
function issuedSecrets(as: AuthorizationServer, mcp: McpServer): Map<string, string> {
  const secrets = new Map<string, string>();
  const add = (what: string, value: string | null | undefined): void => {
    if (value && value.length >= 8) secrets.set(value, what);
  };
  const bearer = (header: string | undefined): string | undefined => /^(?:Bearer|Basic|DPoP) +(.+)$/i.exec(header ?? '')?.[1];
  for (const request of as.requests) {
    const form = new URLSearchParams(request.body);
    for (const field of ['code', 'code_verifier', 'refresh_token', 'client_secret', 'client_assertion']) add(field, form.get(field));
    const query = new URLSearchParams(request.query);
    add('state', query.get('state'));
    add('authorization header', bearer(request.headers.authorization));
  }
  for (const request of mcp.requests) add('access token', bearer(request.authorization));
  return secrets;
}

function findSecrets(text: string, secrets: Map<string, string>): string[] {
  if (secrets.size === 0) throw Object.assign(new Error('no secrets were recorded by the servers; the scan would prove nothing'), { code: 'demo.no_secrets' });
  const found: string[] = [];
  for (const [value, what] of secrets) if (text.includes(value)) found.push(what);
  return found;
}

async function closeAll({ client, session, mcp, as, storeDirectory }: Resources): Promise<void> {
  const steps: Array<[string, () => Promise<unknown>]> = [];
  if (client) steps.push(['client', () => client.close()]);
  if (session) steps.push(['session', () => session.close()]);
  if (mcp) steps.push(['MCP server', () => mcp.close()]);
  if (as) steps.push(['authorization server', () => as.close()]);
  if (storeDirectory) steps.push(['token store', () => rm(storeDirectory, { recursive: true, force: true })]);
  for (const [name, close] of steps) {
    try {
      await close();
    } catch (error) {
      process.stderr.write(`warning: closing the ${name} failed: ${error instanceof Error ? error.message : String(error)}\n`);
    }
  }
}

async function main(): Promise<number> {
  const resources: Resources = {};
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(
      () => reject(Object.assign(new Error(`the demo did not finish within ${RUN_DEADLINE_MS / 1000} s`), { code: 'demo.timeout' })),
      RUN_DEADLINE_MS,
    );
  });
  let status = 0;
  try {
    await Promise.race([run(resources), deadline]);
    print();
    print(green('Demo finished.'));
  } catch (error) {
    status = 1;
    const { code, message, state } = (error ?? {}) as { code?: unknown; message?: unknown; state?: unknown };
    print();
    print(red(`Demo failed: ${typeof code === 'string' ? code : 'error'}: ${typeof message === 'string' ? message : String(error)}`));
    const now = resources.session?.state;
    const at = typeof state === 'string' ? state : now;
    print(`  engine state: ${at ?? '(no session)'}${now !== undefined && now !== at ? ` (session now ${now})` : ''}`);
  } finally {
    observing = false;
    // Closing gets its own bound: a stuck close must not hang the demo either.
    const closing = setTimeout(() => {
      process.stderr.write('error: closing did not finish within 5 s\n');
      process.exit(1);
    }, 5_000);
    await closeAll(resources);
    clearTimeout(closing);
    clearTimeout(timer);
  }
  return status;
}

process.exit(await main());
