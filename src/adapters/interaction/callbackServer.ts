/**
 * The loopback HTTP server that receives the authorization redirect (RFC 8252 §7.3).
 *
 * It only transports the query to `onCallback`; the flow decides whether the response is the one
 * it waits for (state, iss). A rejected callback is answered 400 and the server keeps listening,
 * so a stray or forged request cannot end the flow (policy 7).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Duplex } from 'node:stream';
import { OAuthConfigError, OAuthFlowError } from '../../machines/errors.js';

export type CallbackVerdict = 'accepted' | 'rejected';

export interface LoopbackCallbackServerOptions {
  /** Default `127.0.0.1`; `localhost` binds both 127.0.0.1 and ::1 on the same port (policy 8). */
  host?: '127.0.0.1' | '::1' | 'localhost';
  /** 0 (the default) picks an ephemeral port. */
  port?: number;
  /** Default `/callback`; matched exactly, byte for byte. */
  path?: string;
  onCallback: (params: URLSearchParams) => CallbackVerdict | Promise<CallbackVerdict>;
  /** Plain text shown on the success page. */
  successMessage?: string;
}

export interface LoopbackCallbackServer {
  redirectUri: string;
  port: number;
  close(): Promise<void>;
}

/** Longer than any real authorization response; bigger ones are abuse (C52). */
const MAX_QUERY_LENGTH = 8 * 1024;
/** A browser sends the whole request at once; a slow sender only holds the port. */
const REQUEST_TIMEOUT_MS = 10_000;
/** If ::1 is taken on the ephemeral port 127.0.0.1 got, try a fresh pair a few times. */
const DUAL_BIND_ATTEMPTS = 5;

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  'Cache-Control': 'no-store',
  'Referrer-Policy': 'no-referrer',
  'Content-Security-Policy': "default-src 'none'",
  'X-Content-Type-Options': 'nosniff',
  // A callback is one request; a lingering keep-alive socket would keep the port (and process) busy.
  Connection: 'close',
};

export async function startLoopbackCallbackServer(
  options: LoopbackCallbackServerOptions,
): Promise<LoopbackCallbackServer> {
  const host = options.host ?? '127.0.0.1';
  const requestedPort = options.port ?? 0;
  const path = options.path ?? '/callback';
  if (!Number.isInteger(requestedPort) || requestedPort < 0 || requestedPort > 65535) {
    throw new OAuthConfigError({
      code: 'callback.invalid_port',
      message: `Loopback callback port must be an integer from 0 to 65535, got ${String(requestedPort)}`,
    });
  }
  if (!/^\/[A-Za-z0-9\-._~!$&'()*+,;=:@/%]*$/.test(path)) {
    throw new OAuthConfigError({
      code: 'callback.invalid_path',
      message: 'Loopback callback path must start with "/" and contain no query, fragment or spaces',
    });
  }

  const successPage = page(options.successMessage ?? 'Authorization complete. You can close this tab.');
  const rejectedPage = page('This authorization response was not accepted.');

  let allowedHosts = new Set<string>();
  // Verdicts are given one at a time, so an async onCallback sees concurrent deliveries of the
  // same code in order and "first valid one wins" holds (C108).
  let queue: Promise<unknown> = Promise.resolve();

  const handle = (req: IncomingMessage, res: ServerResponse): void => {
    // A page on an attacker's domain that rebinds to 127.0.0.1 still sends its own name as Host.
    if (!allowedHosts.has((req.headers.host ?? '').toLowerCase())) {
      send(res, 400, page('Bad request.'));
      return;
    }
    const target = req.url ?? '';
    const mark = target.indexOf('?');
    const rawPath = mark === -1 ? target : target.slice(0, mark);
    const rawQuery = mark === -1 ? '' : target.slice(mark + 1);
    // Compared unnormalised: `/callback/../callback` or `/CALLBACK` is not the registered URI.
    if (rawPath !== path) {
      send(res, 404, page('Not found.'));
      return;
    }
    if (req.method !== 'GET') {
      send(res, 405, page('Method not allowed.'), { Allow: 'GET' });
      return;
    }
    if (rawQuery.length > MAX_QUERY_LENGTH) {
      send(res, 414, page('Request too long.'));
      return;
    }
    const params = new URLSearchParams(rawQuery);
    const verdict = queue.then(() => options.onCallback(params));
    queue = verdict.catch(() => undefined);
    verdict.then(
      (value) => {
        if (value === 'accepted') send(res, 200, successPage);
        else send(res, 400, rejectedPage);
      },
      () => send(res, 500, page('The authorization response could not be processed.')),
    );
  };

  const servers: Server[] = [];
  const cleanup = async (): Promise<void> => {
    await Promise.all(servers.splice(0).map(closeServer));
  };

  let port: number;
  try {
    if (host === 'localhost') {
      port = await bindBoth(requestedPort, handle, servers);
    } else {
      const server = makeServer(handle);
      servers.push(server);
      port = await listen(server, host, requestedPort);
    }
  } catch (error) {
    await cleanup();
    throw bindError(error, host, requestedPort);
  }

  allowedHosts = hostHeadersFor(host, port);
  const authority = host === '::1' ? `[::1]:${port}` : `${host}:${port}`;
  let closing: Promise<void> | undefined;
  return {
    redirectUri: `http://${authority}${path}`,
    port,
    close: () => (closing ??= cleanup()),
  };
}

function makeServer(handle: (req: IncomingMessage, res: ServerResponse) => void): Server {
  const server = createServer(
    { requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS },
    handle,
  );
  server.keepAliveTimeout = 1;
  server.maxRequestsPerSocket = 1;
  server.on('clientError', (error: NodeJS.ErrnoException, socket: Duplex) => {
    // Node's parser refuses a request line plus headers over 16 KiB before our handler runs; it
    // cannot say whether the URL or a header overflowed, hence 431 rather than 414.
    if (socket.writable && error.code !== 'ECONNRESET') {
      const status = error.code === 'HPE_HEADER_OVERFLOW' ? '431 Request Header Fields Too Large' : '400 Bad Request';
      socket.end(`HTTP/1.1 ${status}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n`);
    }
    socket.destroy();
  });
  return server;
}

async function bindBoth(
  requestedPort: number,
  handle: (req: IncomingMessage, res: ServerResponse) => void,
  servers: Server[],
): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const v4 = makeServer(handle);
    servers.push(v4);
    const port = await listen(v4, '127.0.0.1', requestedPort);
    const v6 = makeServer(handle);
    try {
      await listen(v6, '::1', port);
      servers.push(v6);
      return port;
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      // Without IPv6 loopback, `localhost` cannot resolve to ::1 either: IPv4 alone is enough.
      if (code === 'EADDRNOTAVAIL' || code === 'EAFNOSUPPORT') return port;
      if (requestedPort !== 0 || code !== 'EADDRINUSE' || attempt >= DUAL_BIND_ATTEMPTS) throw error;
      await Promise.all(servers.splice(0).map(closeServer));
    }
  }
}

function listen(server: Server, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (error: Error): void => {
      server.off('listening', onListening);
      reject(error);
    };
    const onListening = (): void => {
      server.off('error', onError);
      // Later socket-level errors must not crash the process that is waiting for a callback.
      server.on('error', () => undefined);
      resolve((server.address() as AddressInfo).port);
    };
    server.once('error', onError);
    server.once('listening', onListening);
    // Bind once and keep the socket: no probe-then-bind race (C109).
    server.listen({ host, port, exclusive: true });
  });
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    if (!server.listening) {
      resolve();
      return;
    }
    server.close(() => resolve());
    server.closeAllConnections();
  });
}

function hostHeadersFor(host: '127.0.0.1' | '::1' | 'localhost', port: number): Set<string> {
  const names = host === 'localhost' ? ['localhost', '127.0.0.1', '[::1]'] : [host === '::1' ? '[::1]' : host];
  const allowed = new Set(names.map((name) => `${name}:${port}`));
  // Browsers omit the default port from Host.
  if (port === 80) for (const name of names) allowed.add(name);
  return allowed;
}

function bindError(error: unknown, host: string, port: number): unknown {
  const code = (error as NodeJS.ErrnoException | undefined)?.code;
  if (code === 'EADDRINUSE' || code === 'EACCES') {
    return new OAuthFlowError(
      { code: 'callback.port_unavailable', message: `Loopback callback port ${port} on ${host} is unavailable (${code})` },
      { cause: error },
    );
  }
  return error;
}

function send(res: ServerResponse, status: number, body: string, extra: Record<string, string> = {}): void {
  if (res.headersSent || res.destroyed) return;
  res.writeHead(status, {
    ...SECURITY_HEADERS,
    'Content-Type': 'text/html; charset=utf-8',
    'Content-Length': Buffer.byteLength(body),
    ...extra,
  });
  res.end(body);
}

function page(message: string): string {
  return `<!doctype html><html><head><meta charset="utf-8"><title>mcp-oauth</title></head><body><p>${escapeHtml(message)}</p></body></html>\n`;
}

function escapeHtml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}
