/** A real loopback deployment for integration tests: the demo authorization server and MCP server. */
import { startAuthorizationServer, type AuthorizationServer, type AuthorizationServerOptions } from '../../examples/demo/authorizationServer.js';
import { startMcpServer, type McpServer, type McpServerOptions } from '../../examples/demo/mcpServer.js';
import { createHeadlessUserAgent } from '../../src/adapters/interaction/headlessUserAgent.js';
import type { AuthorizationUrlOpener } from '../../src/adapters/options.js';

export interface Deployment {
  as: AuthorizationServer;
  mcp: McpServer;
  /** Requests both servers received, in total. */
  totalRequests(): number;
  resetCounts(): void;
  close(): Promise<void>;
}

export async function startDeployment(
  asOptions: AuthorizationServerOptions = {},
  mcpOptions: Omit<McpServerOptions, 'authorizationServer'> = {},
): Promise<Deployment> {
  const as = await startAuthorizationServer(asOptions);
  const mcp = await startMcpServer({ ...mcpOptions, authorizationServer: as });
  return {
    as,
    mcp,
    totalRequests: () => as.requests.length + mcp.requests.length,
    resetCounts() {
      as.resetCounts();
      mcp.resetCounts();
    },
    async close() {
      // A test may have stopped a server on purpose to see the engine cope.
      await mcp.close().catch(() => undefined);
      await as.close().catch(() => undefined);
    },
  };
}

/** The headless user agent as the session's opener: it walks the AS redirects and delivers the callback. */
export function headlessOpener(counter?: { opened: number }): AuthorizationUrlOpener {
  const agent = createHeadlessUserAgent();
  return async (url, { redirectUri, signal }) => {
    if (counter) counter.opened += 1;
    await agent.authorize(url, redirectUri, signal);
  };
}

export function rpc(method: string, params: Record<string, unknown> = {}, id = 1): RequestInit {
  return {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id, method, params }),
  };
}
