/**
 * The client the official MCP conformance suite runs (`npm run conformance`): the MCP SDK v2
 * client over the engine's `session.fetch`, which does all authorization. The SDK gets no
 * authProvider; every behaviour a scenario checks (discovery, client identity, scopes, step-up,
 * `iss`, resource) comes from the engine.
 *
 * Contract (../shared/reference/conformance.md): the server URL is the last argument;
 * `MCP_CONFORMANCE_SCENARIO` names the scenario and `MCP_CONFORMANCE_CONTEXT` carries credentials
 * where the scenario hands some out. Connect (version negotiation: `server/discover`, else
 * `initialize`), `tools/list`, `tools/call test-tool {}`, exit 0; anything else exits 1 with the
 * engine's error code and state.
 */
import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client';
import { createHeadlessUserAgent } from '../src/adapters/interaction/headlessUserAgent.js';
import type { OAuthSessionOptions } from '../src/adapters/options.js';
import { createOAuthSession, type OAuthSession } from '../src/adapters/session.js';
import { OAuthFlowError } from '../src/machines/errors.js';

/** The runner kills us at 30 s; finishing first keeps the failure ours and readable. */
const RUN_DEADLINE_MS = 25_000;
/** Nothing listens here: the headless user agent reads the code from the redirect's Location. */
const REDIRECT_URI = 'http://localhost:3000/callback';
/** The only client_id the suite's CIMD check accepts; the engine uses it only when the AS advertises CIMD. */
const CLIENT_METADATA_URL = 'https://conformance-test.local/client-metadata.json';

class ClientFailure extends Error {
  override readonly name = 'ClientFailure';
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
  }
}

interface ConformanceContext {
  name?: string;
  client_id?: string;
  client_secret?: string;
  issuer?: string;
  private_key_pem?: string;
  signing_algorithm?: string;
  idp_client_id?: string;
  idp_id_token?: string;
  idp_issuer?: string;
  idp_token_endpoint?: string;
  valid_jwt?: string;
}

function need(context: ConformanceContext, scenario: string, ...fields: Array<keyof ConformanceContext>): void {
  const missing = fields.filter((field) => !context[field]);
  if (missing.length > 0) throw new ClientFailure('client.bad_context', `${scenario} needs ${missing.join(', ')} in MCP_CONFORMANCE_CONTEXT`);
}

/**
 * The machine-to-machine grant the application is set up with, as an operator would configure it
 * from the credentials it was handed: the scenario name chooses which credentials exist, never
 * which grant the engine guesses from a server.
 */
function grantOptions(scenario: string, context: ConformanceContext): OAuthSessionOptions['grant'] {
  switch (scenario) {
    case 'auth/client-credentials-basic':
      need(context, scenario, 'client_id', 'client_secret');
      return { type: 'client_credentials', clientId: context.client_id!, clientSecret: context.client_secret!, authMethod: 'client_secret_basic' };
    case 'auth/client-credentials-jwt': {
      need(context, scenario, 'client_id', 'private_key_pem');
      const alg = context.signing_algorithm === 'RS256' ? 'RS256' : 'ES256';
      return { type: 'client_credentials', clientId: context.client_id!, authMethod: 'private_key_jwt', privateKey: context.private_key_pem!, alg };
    }
    case 'auth/cross-app-access-complete-flow':
    case 'auth/enterprise-managed-authorization':
      need(context, scenario, 'client_id', 'client_secret', 'idp_client_id', 'idp_id_token', 'idp_token_endpoint');
      return {
        type: 'enterprise',
        clientId: context.client_id!,
        clientSecret: context.client_secret!,
        authMethod: 'client_secret_basic',
        idp: { tokenEndpoint: context.idp_token_endpoint!, clientId: context.idp_client_id!, idToken: context.idp_id_token! },
      };
    case 'auth/wif-jwt-bearer': {
      need(context, scenario, 'valid_jwt');
      const workloadJwt = context.valid_jwt!;
      return { type: 'jwt_bearer', assertionProvider: () => workloadJwt };
    }
    default:
      return undefined;
  }
}

function readContext(): ConformanceContext {
  const raw = process.env.MCP_CONFORMANCE_CONTEXT;
  if (raw === undefined || raw === '') return {};
  try {
    const parsed: unknown = JSON.parse(raw);
    return typeof parsed === 'object' && parsed !== null ? (parsed as ConformanceContext) : {};
  } catch {
    throw new ClientFailure('client.bad_context', 'MCP_CONFORMANCE_CONTEXT is not JSON');
  }
}

/** Which client identity the application is set up with: the scenario name acts as configuration only. */
function clientOptions(scenario: string, context: ConformanceContext): NonNullable<OAuthSessionOptions['client']> {
  const client: NonNullable<OAuthSessionOptions['client']> = {
    metadata: { client_name: 'mcp-oauth conformance client' },
    metadataUrl: CLIENT_METADATA_URL,
  };
  if (scenario === 'auth/pre-registration') {
    if (!context.client_id || !context.client_secret) {
      throw new ClientFailure('client.bad_context', 'auth/pre-registration needs client_id and client_secret in MCP_CONFORMANCE_CONTEXT');
    }
    client.preregistered = {
      client_id: context.client_id,
      client_secret: context.client_secret,
      token_endpoint_auth_method: 'client_secret_basic',
      ...(context.issuer ? { issuer: context.issuer } : {}),
    };
  }
  return client;
}

async function run(serverUrl: string, scenario: string): Promise<OAuthSession> {
  const context = readContext();
  const agent = createHeadlessUserAgent({ deliver: false });
  const grant = grantOptions(scenario, context);
  const session = createOAuthSession({
    serverUrl,
    ...(grant === undefined ? {} : { grant }),
    client: clientOptions(scenario, context),
    redirect: { uri: REDIRECT_URI },
    openAuthorizationUrl: (url, { redirectUri, signal }) => agent.authorize(url, redirectUri, signal),
  });
  sessionForReport = session;

  const client = new Client(
    { name: 'mcp-oauth-conformance', version: '0.1.0' },
    { capabilities: {}, versionNegotiation: { mode: 'auto' } },
  );
  const transport = new StreamableHTTPClientTransport(new URL(serverUrl), { fetch: session.fetch });
  try {
    await client.connect(transport);
    const tools = await client.listTools();
    if (!tools.tools.some((tool) => tool.name === 'test-tool')) {
      throw new ClientFailure('mcp.no_test_tool', `tools/list did not offer test-tool (got ${tools.tools.length} tools)`);
    }
    const result = await client.callTool({ name: 'test-tool', arguments: {} });
    if (result.isError === true) throw new ClientFailure('mcp.tool_error', 'tools/call test-tool returned isError');
    process.stdout.write(`conformance client: ok (${session.state})\n`);
  } finally {
    await client.close().catch(() => undefined);
  }
  return session;
}

let sessionForReport: OAuthSession | undefined;

/** The engine's typed error, wherever the SDK wrapped it. */
function engineError(error: unknown): OAuthFlowError | undefined {
  const seen = new Set<unknown>();
  for (let current = error; current !== undefined && current !== null && !seen.has(current); ) {
    seen.add(current);
    if (current instanceof OAuthFlowError) return current;
    current = (current as { cause?: unknown }).cause;
  }
  return undefined;
}

function report(error: unknown): void {
  const typed = engineError(error);
  const state = typed?.state ?? sessionForReport?.state ?? '(no session)';
  const code = typed?.code ?? (error instanceof ClientFailure ? error.code : (error as { code?: unknown } | null)?.code ?? 'unknown');
  const message = error instanceof Error ? error.message : String(error);
  process.stderr.write(`conformance client: failed: code=${String(code)} state=${state}\n  ${message}\n`);
  if (typed && typed !== error) process.stderr.write(`  engine: ${typed.name}: ${typed.message}\n`);
}

async function main(): Promise<number> {
  const serverUrl = process.argv.at(-1);
  if (serverUrl === undefined || !/^https?:\/\//.test(serverUrl)) {
    process.stderr.write('usage: client.ts <mcp server url>\n');
    return 2;
  }
  const scenario = process.env.MCP_CONFORMANCE_SCENARIO ?? '';
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new ClientFailure('client.deadline', `no result within ${RUN_DEADLINE_MS} ms`)), RUN_DEADLINE_MS);
  });
  try {
    await Promise.race([run(serverUrl, scenario), deadline]);
    return 0;
  } catch (error) {
    report(error);
    return 1;
  } finally {
    clearTimeout(timer);
    await sessionForReport?.close().catch(() => undefined);
  }
}

// An exit code, not a drained event loop: a stray keep-alive socket must not hold the runner.
main().then(
  (code) => process.exit(code),
  (error: unknown) => {
    report(error);
    process.exit(1);
  },
);
