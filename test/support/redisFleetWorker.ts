/**
 * One worker of the Redis fleet test, run as its own process (`node --import tsx`): a session on a
 * shared Redis store, driven over IPC by the test. It never signs in: the identity comes from the
 * store, and a worker that would need a browser counts that as a failure.
 *
 * argv: <redis url> <MCP server url>
 * in:  { type: 'run', round, requests, offsetMs }  out: { type: 'result', round, statuses, errors }
 *      { type: 'exit' }                                   { type: 'ready' } once the store is loaded
 */
import { createOAuthSession } from '../../src/adapters/session.js';
import { createRedisStore } from '../../src/adapters/stores/redis.js';

export interface RunMessage {
  type: 'run';
  round: number;
  requests: number;
  /** Added to the wall clock: the test moves time for the whole fleet at once. */
  offsetMs: number;
}

export interface ResultMessage {
  type: 'result';
  round: number;
  /** HTTP status → count. */
  statuses: Record<string, number>;
  /** Error class and code → count, for requests that threw. */
  errors: Record<string, number>;
}

const [redisUrl, serverUrl] = process.argv.slice(2);
if (!redisUrl || !serverUrl || !process.send) {
  process.stderr.write('usage: node --import tsx redisFleetWorker.ts <redis url> <mcp url> (with an IPC channel)\n');
  process.exit(2);
}
const send = (message: unknown): void => {
  process.send?.(message);
};

let offsetMs = 0;
const store = createRedisStore({ url: redisUrl });
const session = createOAuthSession({
  serverUrl,
  store,
  clock: () => Date.now() + offsetMs,
  // The lease's ttl is 3 × oauthRequestMs = 9 s, renewed while the holder works: a killed holder
  // is outwaited after at most 9 s, while a refresh still gets 3 s on a loaded CI machine (a
  // timed-out refresh that the server did rotate would cost the whole fleet its refresh token).
  deadlines: { oauthRequestMs: 3_000, callbackMs: 1_000 },
  openAuthorizationUrl: () => {
    throw new Error('a fleet worker never signs in');
  },
});

let nextId = 1;
async function listTools(): Promise<string> {
  const id = nextId++;
  const response = await session.fetch(serverUrl as string, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
    body: JSON.stringify({ jsonrpc: '2.0', id, method: 'tools/list', params: {} }),
  });
  await response.text();
  return String(response.status);
}

async function run(message: RunMessage): Promise<void> {
  offsetMs = message.offsetMs;
  const statuses: Record<string, number> = {};
  const errors: Record<string, number> = {};
  await Promise.all(
    Array.from({ length: message.requests }, async () => {
      try {
        const status = await listTools();
        statuses[status] = (statuses[status] ?? 0) + 1;
      } catch (error) {
        const name = error instanceof Error ? error.name : 'non-error';
        const code = (error as { code?: unknown } | null)?.code;
        const label = typeof code === 'string' ? `${name}:${code}` : name;
        errors[label] = (errors[label] ?? 0) + 1;
      }
    }),
  );
  const result: ResultMessage = { type: 'result', round: message.round, statuses, errors };
  send(result);
}

process.on('message', (message: { type?: string }) => {
  if (message.type === 'run') void run(message as RunMessage);
  if (message.type === 'exit') {
    void session
      .close()
      .then(() => store.close())
      .finally(() => process.exit(0));
  }
});
// The test process went away: nobody will read results or send `exit`.
process.on('disconnect', () => process.exit(0));

await session.ready();
send({ type: 'ready' });
