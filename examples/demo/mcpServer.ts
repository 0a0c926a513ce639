/**
 * A loopback MCP server protected by bearer tokens, for the demo and the engine's integration tests.
 *
 * The MCP side is the real SDK (stateless Streamable HTTP with JSON responses); the OAuth side follows
 * RFC 6750 challenges, RFC 9728 Protected Resource Metadata and MCP's step-up on insufficient_scope.
 * Every request is recorded and counted so tests can assert what the engine sent.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { McpServer as SdkMcpServer } from '@modelcontextprotocol/sdk/server/mcp.js';
import { StreamableHTTPServerTransport } from '@modelcontextprotocol/sdk/server/streamableHttp.js';
import type { AuthInfo } from '@modelcontextprotocol/sdk/server/auth/types.js';
import { z } from 'zod';
import type { AuthorizationServer } from './authorizationServer.js';

export interface McpServerOptions {
  /** Read once at start. 0 (default) picks a free port. */
  port?: number;
  authorizationServer: { issuer: string; verifyAccessToken: AuthorizationServer['verifyAccessToken'] };
  /** Needed by every /mcp request; default 'mcp:read'. */
  requiredScope?: string;
  /** Needed, on top of requiredScope, by the admin-reset tool; default 'mcp:write'. */
  adminScope?: string;
  /**
   * Where PRM is served: 'path' (default) at /.well-known/oauth-protected-resource/mcp; 'root' at
   * /.well-known/oauth-protected-resource; 'header-only' at /prm/custom-metadata.json, reachable only
   * through the challenge's resource_metadata; 'none' nowhere (and no resource_metadata in challenges:
   * the 2025-03-26 legacy case).
   */
  prm?: 'path' | 'root' | 'none' | 'header-only';
  /** false: challenges omit resource_metadata although PRM is served (tests well-known probing). */
  resourceMetadataInChallenge?: boolean;
  /** Include scope= in the 401 challenge; default true. 403 insufficient_scope always carries it. */
  challengeScope?: boolean;
  /** The PRM `resource` and the audience tokens must carry; default '<origin>/mcp'. */
  resource?: string;
  /** Merged over the PRM document; a key set to undefined is removed. */
  prmOverrides?: Record<string, unknown>;
  latencyMs?: number;
}

export interface McpRecordedRequest {
  method: string;
  path: string;
  authorization?: string;
}

export interface McpServer {
  /** http://127.0.0.1:<port>/mcp */
  url: string;
  /** The resource_metadata URL of the current `prm` mode, undefined for 'none'. */
  readonly resourceMetadataUrl: string | undefined;
  counts: Record<string, number>;
  requests: McpRecordedRequest[];
  options: McpServerOptions;
  close(): Promise<void>;
  resetCounts(): void;
}

const BODY_LIMIT = 4 * 1024 * 1024;

function readBody(req: IncomingMessage): Promise<string | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (chunk: Buffer) => {
      size += chunk.length;
      if (size > BODY_LIMIT) {
        resolve(undefined);
        req.destroy();
        return;
      }
      chunks.push(chunk);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function quote(value: string): string {
  return `"${value.replace(/["\\]/g, '\\$&')}"`;
}

function toolCallNames(message: unknown): string[] {
  const messages = Array.isArray(message) ? message : [message];
  const names: string[] = [];
  for (const m of messages) {
    if (typeof m !== 'object' || m === null) continue;
    const { method, params } = m as { method?: unknown; params?: unknown };
    if (method !== 'tools/call' || typeof params !== 'object' || params === null) continue;
    const name = (params as { name?: unknown }).name;
    if (typeof name === 'string') names.push(name);
  }
  return names;
}

function rpcMethods(message: unknown): string[] {
  const messages = Array.isArray(message) ? message : [message];
  return messages.flatMap((m) =>
    typeof m === 'object' && m !== null && typeof (m as { method?: unknown }).method === 'string'
      ? [(m as { method: string }).method]
      : [],
  );
}

function buildSdkServer(adminScope: string): SdkMcpServer {
  const server = new SdkMcpServer({ name: 'mcp-oauth-demo', version: '0.1.0' });
  server.registerTool(
    'echo',
    { description: 'Returns the text it is given.', inputSchema: { text: z.string() } },
    ({ text }) => ({ content: [{ type: 'text', text }] }),
  );
  server.registerTool('whoami', { description: 'Returns the calling client id and its scopes.' }, (extra) => ({
    content: [
      {
        type: 'text',
        text: JSON.stringify({ clientId: extra.authInfo?.clientId, scopes: extra.authInfo?.scopes ?? [] }),
      },
    ],
  }));
  server.registerTool('admin-reset', { description: `Pretends to reset state; needs ${adminScope}.` }, (extra) => {
    // The HTTP layer already answered 403; this guards against that check ever being bypassed.
    if (!(extra.authInfo?.scopes ?? []).includes(adminScope)) {
      return { isError: true, content: [{ type: 'text', text: `missing scope ${adminScope}` }] };
    }
    return { content: [{ type: 'text', text: 'reset done' }] };
  });
  return server;
}

export async function startMcpServer(input: McpServerOptions): Promise<McpServer> {
  const options: McpServerOptions = {
    port: 0,
    requiredScope: 'mcp:read',
    adminScope: 'mcp:write',
    prm: 'path',
    resourceMetadataInChallenge: true,
    challengeScope: true,
    latencyMs: 0,
    ...input,
  };
  const counts: Record<string, number> = {};
  const requests: McpRecordedRequest[] = [];
  const bump = (key: string): void => {
    counts[key] = (counts[key] ?? 0) + 1;
  };

  const server = createServer((req, res) => {
    handle(req, res).catch((err: unknown) => {
      if (!res.headersSent) {
        res.writeHead(500, { 'content-type': 'application/json' });
        res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32603, message: String(err) } }));
      } else {
        res.destroy();
      }
    });
  });
  // Idle keep-alive sockets outlive the client's own keep-alive (undici: 4 s), so a loaded machine
  // whose timers fire late never reuses a socket the server has just closed.
  server.keepAliveTimeout = 30_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const origin = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  const mcpUrl = `${origin}/mcp`;

  const resource = (): string => options.resource ?? mcpUrl;
  const prmPath = (): string | undefined => {
    switch (options.prm) {
      case 'none':
        return undefined;
      case 'root':
        return '/.well-known/oauth-protected-resource';
      case 'header-only':
        return '/prm/custom-metadata.json';
      default:
        return '/.well-known/oauth-protected-resource/mcp';
    }
  };
  const resourceMetadataUrl = (): string | undefined => {
    const path = prmPath();
    return path === undefined ? undefined : `${origin}${path}`;
  };

  function prmDocument(): Record<string, unknown> {
    const doc: Record<string, unknown> = {
      resource: resource(),
      authorization_servers: [options.authorizationServer.issuer],
      scopes_supported: [options.requiredScope ?? 'mcp:read', options.adminScope ?? 'mcp:write'],
      bearer_methods_supported: ['header'],
      resource_name: 'mcp-oauth demo server',
      ...options.prmOverrides,
    };
    return Object.fromEntries(Object.entries(doc).filter(([, v]) => v !== undefined));
  }

  /** RFC 6750 §3 challenge with RFC 9728 §5.1 resource_metadata; no error attribute when no token came. */
  function challenge(error: string | undefined, scope: string | undefined): string {
    const params: string[] = [];
    if (error !== undefined) params.push(`error=${quote(error)}`);
    const metadataUrl = resourceMetadataUrl();
    if (metadataUrl !== undefined && options.resourceMetadataInChallenge !== false) {
      params.push(`resource_metadata=${quote(metadataUrl)}`);
    }
    if (scope !== undefined) params.push(`scope=${quote(scope)}`);
    return params.length === 0 ? 'Bearer' : `Bearer ${params.join(', ')}`;
  }

  function reject(res: ServerResponse, status: 401 | 403, error: string | undefined, scope: string | undefined): void {
    bump(`status:${status}`);
    if (error !== undefined) bump(`challenge:${error}`);
    res.writeHead(status, {
      'www-authenticate': challenge(error, scope),
      'content-type': 'application/json',
    });
    res.end(JSON.stringify({ error: error ?? 'unauthorized' }));
  }

  function setCors(req: IncomingMessage, res: ServerResponse): void {
    res.setHeader('access-control-allow-origin', req.headers.origin ?? '*');
    res.setHeader('vary', 'origin');
    res.setHeader('access-control-expose-headers', 'www-authenticate, mcp-session-id, mcp-protocol-version');
    if (req.method === 'OPTIONS') {
      res.setHeader('access-control-allow-methods', 'GET, POST, DELETE, OPTIONS');
      res.setHeader(
        'access-control-allow-headers',
        req.headers['access-control-request-headers'] ??
          'authorization, content-type, accept, mcp-protocol-version, mcp-session-id, last-event-id, dpop',
      );
      res.setHeader('access-control-max-age', '600');
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const method = req.method ?? 'GET';
    const path = new URL(req.url ?? '/', origin).pathname;
    const recorded: McpRecordedRequest = { method, path };
    if (req.headers.authorization !== undefined) recorded.authorization = req.headers.authorization;
    requests.push(recorded);
    bump(`${method} ${path}`);
    if ((options.latencyMs ?? 0) > 0) await new Promise((r) => setTimeout(r, options.latencyMs));
    setCors(req, res);

    if (method === 'OPTIONS') {
      res.writeHead(204);
      res.end();
      return;
    }

    const documentPath = prmPath();
    if (documentPath !== undefined && path === documentPath) {
      if (method !== 'GET') {
        res.writeHead(405, { allow: 'GET' });
        res.end();
        return;
      }
      bump('prm');
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(prmDocument()));
      return;
    }

    if (path !== '/mcp') {
      res.writeHead(404, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ error: 'not_found' }));
      return;
    }

    const requiredScope = options.requiredScope ?? 'mcp:read';
    const adminScope = options.adminScope ?? 'mcp:write';
    const scopeHint = options.challengeScope === false ? undefined : requiredScope;
    const header = req.headers.authorization;
    const match = header === undefined ? null : /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i.exec(header);
    if (match === null || match[1] === undefined) {
      // A non-Bearer or malformed header counts as no Bearer token at all.
      return reject(res, 401, undefined, scopeHint);
    }
    const token = match[1];
    const info = options.authorizationServer.verifyAccessToken(token);
    // Audience binding (RFC 8707): a token minted for another resource is as good as no token here.
    if (info === undefined || info.resource !== resource()) {
      return reject(res, 401, 'invalid_token', scopeHint);
    }
    if (!info.scopes.includes(requiredScope)) {
      return reject(res, 403, 'insufficient_scope', requiredScope);
    }
    bump('auth:ok');

    if (method !== 'POST') {
      // Stateless: no standalone SSE stream (GET) and no session to end (DELETE).
      res.writeHead(405, { allow: 'POST', 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32000, message: 'Method not allowed.' } }));
      return;
    }

    const raw = await readBody(req);
    let parsed: unknown;
    try {
      if (raw === undefined) throw new Error('too large');
      parsed = JSON.parse(raw);
    } catch {
      res.writeHead(400, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ jsonrpc: '2.0', id: null, error: { code: -32700, message: 'Parse error' } }));
      return;
    }
    for (const rpc of rpcMethods(parsed)) bump(`rpc:${rpc}`);
    const tools = toolCallNames(parsed);
    for (const tool of tools) bump(`tool:${tool}`);
    if (tools.includes('admin-reset') && !info.scopes.includes(adminScope)) {
      // MCP step-up: name every scope the call needs, not only the missing one.
      return reject(res, 403, 'insufficient_scope', [...new Set([requiredScope, adminScope])].join(' '));
    }

    const authInfo: AuthInfo = {
      token,
      clientId: info.clientId,
      scopes: info.scopes,
      expiresAt: info.expiresAt,
      resource: new URL(info.resource),
    };
    const sdkServer = buildSdkServer(adminScope);
    const transport = new StreamableHTTPServerTransport({ sessionIdGenerator: undefined, enableJsonResponse: true });
    res.on('close', () => {
      void transport.close();
      void sdkServer.close();
    });
    await sdkServer.connect(transport);
    await transport.handleRequest(Object.assign(req, { auth: authInfo }), res, parsed);
  }

  return {
    url: mcpUrl,
    get resourceMetadataUrl() {
      return resourceMetadataUrl();
    },
    counts,
    requests,
    options,
    resetCounts() {
      for (const key of Object.keys(counts)) delete counts[key];
      requests.length = 0;
    },
    close() {
      return new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        server.closeAllConnections();
      });
    },
  };
}
