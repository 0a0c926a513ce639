/**
 * One benchmark driver, in its own process (forked by run.ts), so its peak RSS is its own. It
 * talks to the fixture over loopback and obeys the orchestrator over IPC. Only the modules its
 * kind needs are imported, so a baseline process carries nothing but its HTTP client.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { performance } from 'node:perf_hooks';
import type { DriverKind, DriverReply, DriverRequest, BurstResult, CallResult } from './protocol.js';

const ADMIN_TOOL = 'admin-reset';
const REDIRECT_URI = 'http://127.0.0.1:9/callback';
const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' } as const;

type Body = 'list' | 'admin';

interface Client {
  /** One MCP request, including whatever the library (or the app's documented pattern) does to get it through. */
  call(body: Body, id: number): Promise<CallResult>;
  close(): Promise<void>;
}

function rpc(body: Body, id: number): { jsonrpc: '2.0'; id: number; method: string; params: Record<string, unknown> } {
  return body === 'admin'
    ? { jsonrpc: '2.0', id, method: 'tools/call', params: { name: ADMIN_TOOL, arguments: {} } }
    : { jsonrpc: '2.0', id, method: 'tools/list', params: {} };
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    return `${error.constructor.name}${typeof code === 'string' || typeof code === 'number' ? `(${code})` : ''}: ${error.message.slice(0, 120)}`;
  }
  return String(error).slice(0, 120);
}

/**
 * The headless user agent every OAuth driver uses: GET the authorization URL without following,
 * and read the authorization response from the redirect it answers with. The SDK drivers do it
 * with the global fetch they already use, so their process never loads the undici package.
 */
async function authorizationResponse(url: string, via: 'undici' | 'global-fetch'): Promise<URLSearchParams> {
  let location: string | null | undefined;
  let status: number;
  if (via === 'undici') {
    const { request } = await import('undici');
    const response = await request(url, { method: 'GET' });
    await response.body.dump();
    status = response.statusCode;
    const header = response.headers.location;
    location = typeof header === 'string' ? header : undefined;
  } else {
    const response = await globalThis.fetch(url, { redirect: 'manual' });
    await response.body?.cancel();
    status = response.status;
    location = response.headers.get('location');
  }
  if (!location) throw new Error(`authorization endpoint answered ${status} without a redirect`);
  return new URL(location).searchParams;
}

async function createClient(kind: DriverKind, mcpUrl: string, token: string | undefined): Promise<Client> {
  switch (kind) {
    case 'bare-request': {
      const { Agent, request } = await import('undici');
      const dispatcher = new Agent();
      const headers = { ...HEADERS, authorization: `Bearer ${token}` };
      return {
        async call(body, id) {
          const response = await request(mcpUrl, { method: 'POST', headers, body: JSON.stringify(rpc(body, id)), dispatcher });
          await response.body.text();
          return { ok: response.statusCode === 200, status: response.statusCode };
        },
        close: () => dispatcher.close(),
      };
    }
    case 'bare-fetch': {
      const { fetch } = await import('undici');
      const headers = { ...HEADERS, authorization: `Bearer ${token}` };
      return {
        async call(body, id) {
          const response = await fetch(mcpUrl, { method: 'POST', headers, body: JSON.stringify(rpc(body, id)) });
          await response.text();
          return { ok: response.status === 200, status: response.status };
        },
        close: async () => undefined,
      };
    }
    case 'global-fetch': {
      const headers = { ...HEADERS, authorization: `Bearer ${token}` };
      return {
        async call(body, id) {
          const response = await globalThis.fetch(mcpUrl, { method: 'POST', headers, body: JSON.stringify(rpc(body, id)) });
          await response.text();
          return { ok: response.status === 200, status: response.status };
        },
        close: async () => undefined,
      };
    }
    case 'oauth-interceptor':
    case 'oauth-fetch': {
      const [{ createOAuthSession }, { Agent, request }] = await Promise.all([import('../src/index.js'), import('undici')]);
      const session = createOAuthSession({
        serverUrl: mcpUrl,
        redirect: { uri: REDIRECT_URI },
        client: { metadata: { client_name: 'bench mcp-oauth' } },
        openAuthorizationUrl: (url) => authorizationResponse(url, 'undici'),
      });
      if (kind === 'oauth-fetch') {
        return {
          async call(body, id) {
            const response = await session.fetch(mcpUrl, { method: 'POST', headers: HEADERS, body: JSON.stringify(rpc(body, id)) });
            await response.text();
            return { ok: response.status === 200, status: response.status };
          },
          close: () => session.close(),
        };
      }
      const dispatcher = new Agent().compose(session.interceptor);
      return {
        async call(body, id) {
          const response = await request(mcpUrl, { method: 'POST', headers: HEADERS, body: JSON.stringify(rpc(body, id)), dispatcher });
          await response.body.text();
          return { ok: response.statusCode === 200, status: response.statusCode };
        },
        async close() {
          await dispatcher.close();
          await session.close();
        },
      };
    }
    case 'sdk-withOAuth':
    case 'sdk-transport':
      return createSdkClient(kind, mcpUrl);
  }
}

/**
 * The official SDK with a complete in-memory OAuthClientProvider (discovery state kept, so the
 * code exchange does not discover again) and the documented headless pattern: on
 * UnauthorizedError, finish with the code the redirect produced, then send once more.
 */
async function createSdkClient(kind: 'sdk-withOAuth' | 'sdk-transport', mcpUrl: string): Promise<Client> {
  const [auth, middleware, streamable] = await Promise.all([
    import('@modelcontextprotocol/sdk/client/auth.js'),
    import('@modelcontextprotocol/sdk/client/middleware.js'),
    import('@modelcontextprotocol/sdk/client/streamableHttp.js'),
  ]);
  type Provider = import('@modelcontextprotocol/sdk/client/auth.js').OAuthClientProvider;
  type FetchLike = import('@modelcontextprotocol/sdk/shared/transport.js').FetchLike;
  // The SDK's own default. It must be the global fetch: the SDK tells OAuth error bodies apart with
  // `instanceof Response` (the global class), so undici's package fetch turns every OAuth error
  // into a ServerError "Invalid OAuth error response" and changes the flow.
  const fetchLike: FetchLike = (url, init) => globalThis.fetch(url, init);
  // Each request's own authorization response: concurrent flows must not finish with each other's code.
  const pending = new AsyncLocalStorage<{ code?: string }>();
  let lastCode: string | undefined;

  const state: {
    client?: Awaited<ReturnType<Provider['clientInformation']>>;
    tokens?: Awaited<ReturnType<Provider['tokens']>>;
    verifier?: string;
    discovery?: Awaited<ReturnType<NonNullable<Provider['discoveryState']>>>;
  } = {};
  const provider: Provider = {
    get redirectUrl() {
      return REDIRECT_URI;
    },
    get clientMetadata() {
      return {
        client_name: 'bench sdk',
        redirect_uris: [REDIRECT_URI],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none',
      };
    },
    clientInformation: () => state.client,
    saveClientInformation: (info) => void (state.client = info),
    tokens: () => state.tokens,
    saveTokens: (tokens) => void (state.tokens = tokens),
    saveCodeVerifier: (verifier) => void (state.verifier = verifier),
    codeVerifier: () => {
      if (!state.verifier) throw new Error('no code verifier saved');
      return state.verifier;
    },
    discoveryState: () => state.discovery,
    saveDiscoveryState: (discovery) => void (state.discovery = discovery),
    invalidateCredentials: (scope) => {
      if (scope === 'all' || scope === 'client') delete state.client;
      if (scope === 'all' || scope === 'tokens') delete state.tokens;
      if (scope === 'all' || scope === 'verifier') delete state.verifier;
      if (scope === 'all' || scope === 'discovery') delete state.discovery;
    },
    async redirectToAuthorization(url) {
      const code = (await authorizationResponse(url.href, 'global-fetch')).get('code') ?? undefined;
      lastCode = code;
      const slot = pending.getStore();
      if (slot) slot.code = code;
    },
  };
  const codeFor = (slot: { code?: string }): string => {
    const code = slot.code ?? lastCode;
    if (!code) throw new Error('no authorization code was received');
    return code;
  };

  if (kind === 'sdk-withOAuth') {
    const fetchWithAuth = middleware.withOAuth(provider, mcpUrl)(fetchLike);
    const once = async (body: Body, id: number): Promise<CallResult> => {
      const response = await fetchWithAuth(mcpUrl, { method: 'POST', headers: HEADERS, body: JSON.stringify(rpc(body, id)) });
      await response.text();
      return { ok: response.status === 200, status: response.status };
    };
    return {
      call: (body, id) =>
        pending.run({}, async () => {
          try {
            return await once(body, id);
          } catch (error) {
            if (!(error instanceof auth.UnauthorizedError)) throw error;
            const slot = pending.getStore() ?? {};
            const result = await auth.auth(provider, { serverUrl: mcpUrl, authorizationCode: codeFor(slot), fetchFn: fetchLike });
            if (result !== 'AUTHORIZED') throw new Error(`auth() returned ${result}`);
            return once(body, id);
          }
        }),
      close: async () => undefined,
    };
  }

  const transport = new streamable.StreamableHTTPClientTransport(new URL(mcpUrl), { authProvider: provider, fetch: fetchLike });
  const answered = new Set<number | string>();
  transport.onmessage = (message) => {
    if ('id' in message && message.id !== undefined && message.id !== null && ('result' in message || 'error' in message)) answered.add(message.id);
  };
  transport.onerror = () => undefined;
  await transport.start();
  const once = async (body: Body, id: number): Promise<CallResult> => {
    await transport.send(rpc(body, id));
    const ok = answered.delete(id);
    return { ok, status: ok ? 200 : 0, ...(ok ? {} : { error: 'no JSON-RPC response' }) };
  };
  return {
    call: (body, id) =>
      pending.run({}, async () => {
        try {
          return await once(body, id);
        } catch (error) {
          if (!(error instanceof auth.UnauthorizedError)) throw error;
          await transport.finishAuth(codeFor(pending.getStore() ?? {}));
          return once(body, id);
        }
      }),
    close: () => transport.close(),
  };
}

// ---------------------------------------------------------------- the IPC loop

/**
 * A cold flow starts with no pooled connection. Sessions and Agents are created per client, but the
 * global dispatcher (global fetch, and the undici package's `request`/`fetch` without a dispatcher,
 * share it through this symbol) would otherwise keep the previous flow's sockets warm.
 */
async function resetGlobalDispatcher(): Promise<void> {
  const key = Symbol.for('undici.globalDispatcher.1');
  const holder = globalThis as unknown as Record<symbol, { close(): Promise<void>; constructor: new () => unknown } | undefined>;
  const current = holder[key];
  if (!current) return;
  holder[key] = new current.constructor() as typeof current;
  await current.close().catch(() => undefined);
}

const kind = process.argv[2] as DriverKind;
let mcpUrl = '';
let token: string | undefined;
let client: Client | undefined;
let nextId = 1;

/** This process's CPU time since `since`: on a shared machine, wall time also holds other processes' turns. */
function cpuMs(since: NodeJS.CpuUsage): number {
  const used = process.cpuUsage(since);
  return (used.user + used.system) / 1000;
}

async function safeCall(body: Body): Promise<CallResult> {
  if (!client) throw new Error('no client');
  try {
    return await client.call(body, nextId++);
  } catch (error) {
    return { ok: false, status: 0, error: describe(error) };
  }
}

async function handle(message: DriverRequest): Promise<DriverReply['result']> {
  switch (message.op) {
    case 'init':
      await client?.close();
      client = undefined;
      mcpUrl = message.mcpUrl;
      token = message.token;
      // Module loading is not part of any timing: construction is.
      await createClient(kind, mcpUrl, token).then((c) => c.close());
      return { ok: true };
    case 'cold': {
      await client?.close();
      await resetGlobalDispatcher();
      const started = performance.now();
      const cpu = process.cpuUsage();
      client = await createClient(kind, mcpUrl, token);
      const result = await safeCall(message.body);
      return { ...result, ms: performance.now() - started, cpuMs: cpuMs(cpu) };
    }
    case 'fresh':
      await client?.close();
      client = await createClient(kind, mcpUrl, token);
      return { ok: true };
    case 'call': {
      const started = performance.now();
      const result = await safeCall(message.body);
      return { ...result, ms: performance.now() - started };
    }
    case 'block': {
      let failures = 0;
      let firstError: string | undefined;
      const started = performance.now();
      const cpu = process.cpuUsage();
      for (let i = 0; i < message.n; i++) {
        const result = await safeCall(message.body);
        if (!result.ok) {
          failures += 1;
          firstError ??= result.error ?? `status ${result.status}`;
        }
      }
      return { ms: performance.now() - started, cpuMs: cpuMs(cpu), failures, ...(firstError ? { firstError } : {}) };
    }
    case 'burst': {
      const started = performance.now();
      const results = await Promise.all(Array.from({ length: message.n }, () => safeCall(message.body)));
      const errors: Record<string, number> = {};
      for (const r of results) if (!r.ok) errors[r.error ?? `status ${r.status}`] = (errors[r.error ?? `status ${r.status}`] ?? 0) + 1;
      const burst: BurstResult = { ms: performance.now() - started, ok: results.filter((r) => r.ok).length, failed: results.filter((r) => !r.ok).length, errors };
      return burst;
    }
    case 'usage': {
      const usage = process.resourceUsage();
      return { maxRssKiB: usage.maxRSS, rss: process.memoryUsage().rss, heapUsed: process.memoryUsage().heapUsed };
    }
    case 'exit':
      await client?.close();
      setImmediate(() => process.exit(0));
      return { ok: true };
  }
}

process.on('message', (message: DriverRequest & { seq: number }) => {
  handle(message).then(
    (result) => process.send?.({ seq: message.seq, result } satisfies DriverReply),
    (error: unknown) => process.send?.({ seq: message.seq, error: describe(error) } satisfies DriverReply),
  );
});
process.send?.({ seq: 0, result: { ready: true } } satisfies DriverReply);
