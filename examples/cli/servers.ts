/**
 * Starts the demo authorization server and MCP server on 127.0.0.1 for trying the CLI by hand:
 *   npx tsx examples/cli/servers.ts        # prints the MCP server URL, Ctrl-C stops both
 *   npx tsx src/cli/main.ts login <url>
 *   npx tsx src/cli/main.ts login <url> --no-browser   # device authorization: approve at the printed URI
 */
import { DEVICE_CODE_GRANT, startAuthorizationServer } from '../demo/authorizationServer.js';
import { startMcpServer } from '../demo/mcpServer.js';

const as = await startAuthorizationServer({
  accessTokenTtlSeconds: 3600,
  grantTypes: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
  deviceAuthorization: { intervalSeconds: 2 },
});
const mcp = await startMcpServer({ authorizationServer: as });
process.stdout.write(`authorization server ${as.issuer}\nMCP server ${mcp.url}\n`);
const stop = () => void Promise.all([mcp.close(), as.close()]).finally(() => process.exit(0));
process.once('SIGINT', stop);
process.once('SIGTERM', stop);
