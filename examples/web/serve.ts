/**
 * The example's own loopback origin: a tiny static server for index.html (on `/` and on the
 * `/callback` route), app.css and the bundles. Nothing else is served, so the page's origin holds
 * only the example.
 *
 * `npx tsx examples/web/serve.ts [--port N]` builds the bundles when dist/ is missing, starts the
 * demo authorization server and MCP server on 127.0.0.1 too, and prints the URLs to open and enter.
 */
import { readFile, stat } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { buildWebExample, defaultDistDir } from './build.js';

const here = path.dirname(fileURLToPath(import.meta.url));

export interface WebExampleServer {
  /** http://127.0.0.1:<port> */
  origin: string;
  /** `GET /path` → how many times it was asked for. */
  counts: Record<string, number>;
  close(): Promise<void>;
}

const STATIC: Record<string, { file: string; type: string; dist?: boolean }> = {
  '/': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/callback': { file: 'index.html', type: 'text/html; charset=utf-8' },
  '/app.css': { file: 'app.css', type: 'text/css; charset=utf-8' },
  '/dist/app.js': { file: 'app.js', type: 'text/javascript; charset=utf-8', dist: true },
  '/dist/mcp-oauth.browser.js': { file: 'mcp-oauth.browser.js', type: 'text/javascript; charset=utf-8', dist: true },
};

const SECURITY_HEADERS = {
  'cache-control': 'no-store',
  // The callback URL carries the code: no Referer may repeat it to anyone.
  'referrer-policy': 'no-referrer',
  'x-content-type-options': 'nosniff',
  // 'unsafe-eval' only for the MCP SDK's default JSON Schema validator (ajv compiles tool output
  // schemas with `new Function`); the engine itself needs no eval and no inline script.
  'content-security-policy':
    "default-src 'self'; script-src 'self' 'unsafe-eval'; connect-src 'self' http://127.0.0.1:* http://localhost:* https:; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
};

export async function startWebExample(options: { port?: number; distDir?: string } = {}): Promise<WebExampleServer> {
  const distDir = options.distDir ?? defaultDistDir;
  const counts: Record<string, number> = {};

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const pathname = new URL(req.url ?? '/', 'http://127.0.0.1').pathname;
    const key = `${req.method ?? 'GET'} ${pathname}`;
    counts[key] = (counts[key] ?? 0) + 1;
    const entry = STATIC[pathname];
    if (req.method === 'GET' && pathname === '/favicon.ico') {
      res.writeHead(204, SECURITY_HEADERS);
      res.end();
      return;
    }
    if (req.method !== 'GET' || entry === undefined) {
      res.writeHead(req.method === 'GET' ? 404 : 405, { 'content-type': 'text/plain; charset=utf-8', ...SECURITY_HEADERS });
      res.end(req.method === 'GET' ? 'not found' : 'method not allowed');
      return;
    }
    const body = await readFile(path.join(entry.dist ? distDir : here, entry.file));
    res.writeHead(200, { 'content-type': entry.type, 'content-length': String(body.length), ...SECURITY_HEADERS });
    res.end(body);
  }

  const server = createServer((req, res) => {
    handle(req, res).catch(() => {
      if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' });
      res.end('server error');
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(options.port ?? 0, '127.0.0.1', () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port } = server.address() as AddressInfo;
  return {
    origin: `http://127.0.0.1:${port}`,
    counts,
    close: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => resolve());
      }),
  };
}

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { values } = parseArgs({ options: { port: { type: 'string' } } });
  const present = await stat(path.join(defaultDistDir, 'app.js')).then(
    () => true,
    () => false,
  );
  if (!present) await buildWebExample();
  const { startAuthorizationServer } = await import('../demo/authorizationServer.js');
  const { startMcpServer } = await import('../demo/mcpServer.js');
  const as = await startAuthorizationServer();
  const mcp = await startMcpServer({ authorizationServer: as });
  const web = await startWebExample({ port: values.port === undefined ? 0 : Number(values.port) });
  process.stdout.write(`web example:          ${web.origin}/\nMCP server to enter:  ${mcp.url}\nauthorization server: ${as.issuer}\n(Ctrl-C stops all three)\n`);
  const stop = () => {
    void Promise.all([web.close(), mcp.close(), as.close()]).then(() => process.exit(0));
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}
