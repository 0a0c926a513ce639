/**
 * A real `redis-server` for tests: its own temp directory, a free loopback port, no persistence
 * unless a stop asks for one save (so a restart keeps the data, as a production restart would).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:http';
import { connect, type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';

const START_DEADLINE_MS = 10_000;
const STOP_DEADLINE_MS = 10_000;

function findRedisServer(): string | undefined {
  for (const directory of (process.env.PATH ?? '').split(path.delimiter)) {
    if (directory === '') continue;
    const candidate = path.join(directory, 'redis-server');
    if (existsSync(candidate)) return candidate;
  }
  return existsSync('/usr/bin/redis-server') ? '/usr/bin/redis-server' : undefined;
}

export const redisServerBinary = findRedisServer();

/** Why Redis tests skip here, or undefined when they run. Under CI=true they always run (and fail when absent). */
export const redisSkipReason: string | undefined =
  redisServerBinary === undefined && process.env.CI !== 'true'
    ? 'redis-server not found on PATH (`npm run setup` installs it): Redis tests skipped'
    : undefined;

export interface RedisServer {
  readonly url: string;
  readonly port: number;
  readonly pid: number | undefined;
  /** Stops the server; `save: true` dumps the data first so the next `start()` has it back. */
  stop(options?: { save?: boolean }): Promise<void>;
  /** Starts it again on the same port and directory. */
  start(): Promise<void>;
  /** Stops it and removes its directory. */
  close(): Promise<void>;
}

export async function startRedisServer(): Promise<RedisServer> {
  const binary = redisServerBinary;
  if (binary === undefined) throw new Error('redis-server is not installed (run `npm run setup`); CI=true requires it');
  const directory = await mkdtemp(path.join(os.tmpdir(), 'mcp-oauth-redis-'));
  let port = await freePort();
  let child: ChildProcess | undefined;

  const launch = async (): Promise<void> => {
    const args = ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', '--dir', directory, '--logfile', ''];
    const proc = spawn(binary, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    child = proc;
    let output = '';
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => {
        proc.kill('SIGKILL');
        reject(new Error(`redis-server did not become ready within ${START_DEADLINE_MS} ms:\n${output.slice(-2000)}`));
      }, START_DEADLINE_MS);
      const onData = (chunk: Buffer): void => {
        output += chunk.toString('utf8');
        if (output.includes('Ready to accept connections')) {
          clearTimeout(timer);
          proc.off('exit', onExit);
          resolve();
        }
      };
      const onExit = (code: number | null): void => {
        clearTimeout(timer);
        reject(new Error(`redis-server exited (${code}) before it was ready:\n${output.slice(-2000)}`));
      };
      proc.stdout?.on('data', onData);
      proc.stderr?.on('data', onData);
      proc.once('exit', onExit);
    });
  };

  const exited = (proc: ChildProcess): Promise<void> =>
    proc.exitCode !== null || proc.signalCode !== null ? Promise.resolve() : new Promise((resolve) => proc.once('exit', () => resolve()));

  const stop = async (options: { save?: boolean } = {}): Promise<void> => {
    const proc = child;
    child = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const gone = exited(proc);
    if (options.save) await shutdownSave(port);
    else proc.kill('SIGTERM');
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((resolve) => (timer = setTimeout(() => resolve('late'), STOP_DEADLINE_MS)));
    if ((await Promise.race([gone, late])) === 'late') {
      proc.kill('SIGKILL');
      await gone;
    }
    clearTimeout(timer);
  };

  // A port taken between freePort() and the bind is the one race left: one more port, once.
  try {
    await launch();
  } catch {
    port = await freePort();
    await launch();
  }

  return {
    get url() {
      return `redis://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return child?.pid;
    },
    stop,
    start: launch,
    async close() {
      await stop();
      await rm(directory, { recursive: true, force: true });
    },
  };
}

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** `SHUTDOWN SAVE` over a raw socket: the server forces one dump although `--save ''` turned saving off. */
function shutdownSave(port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    const socket = connect({ host: '127.0.0.1', port });
    const timer = setTimeout(() => {
      socket.destroy();
      reject(new Error('SHUTDOWN SAVE got no answer'));
    }, STOP_DEADLINE_MS);
    socket.once('connect', () => socket.write('*2\r\n$8\r\nSHUTDOWN\r\n$4\r\nSAVE\r\n'));
    // The server closes the connection once it has saved and is going away.
    socket.once('close', () => {
      clearTimeout(timer);
      resolve();
    });
    socket.once('error', () => undefined);
    socket.resume();
  });
}
