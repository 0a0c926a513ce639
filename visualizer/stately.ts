/**
 * `npx tsx visualizer/stately.ts [trace.json] [--port 8080] [--no-open]`: the machine in Stately's
 * inspector, offline or online.
 *
 * Offline it replays the trace's (redacted) events through the real machine and checks that every
 * recorded state comes back, which is what the inspector would show. When `@statelyai/inspect` is
 * installed (deliberately not a dependency: `npm install --no-save @statelyai/inspect@0.7.2`), the
 * same replay is relayed to Stately's hosted inspector UI over a local WebSocket; that UI needs a
 * network connection, the replay and the check do not.
 */
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { createActor, type AnyEventObject, type InspectionEvent, type Observer } from 'xstate';
import { resolveOptions } from '../src/adapters/options.js';
import { statePath, type Trace } from '../src/adapters/trace.js';
import type { EngineContext, EngineEvent } from '../src/machines/oauth.types.js';
import { oauthMachine } from '../src/machines/oauth.machine.js';
import { redactContext, redactEvent } from '../src/machines/redact.js';
import { assertRedacted, parseTrace } from './frames.js';

export interface ReplayResult {
  /** Event entries sent to the machine. */
  events: number;
  /** Entries whose recorded state the replay did not reach (a trace from a differently configured session). */
  diverged: Array<{ seq: number; event: string; recorded: string; replayed: string }>;
}

/**
 * What may leave the process for an inspector. `xstate.init` carries the machine's input, which can
 * hold a pre-registered client secret; `redactEvent` passes unknown event types through whole.
 */
export function sanitizeEvent(event: AnyEventObject): AnyEventObject {
  if (event.type === 'xstate.init') return { type: event.type };
  return redactEvent(event as EngineEvent) as AnyEventObject;
}

export function sanitizeContext(context: unknown): Record<string, unknown> {
  return redactContext(context as EngineContext);
}

/**
 * Sends the trace's event entries to a fresh actor of the real machine. The trace is redacted, but
 * consistently (`state` and the callback's `state` are both `[redacted]`), so a flow replays.
 */
export function replayTrace(trace: Trace, inspect?: Observer<InspectionEvent>): ReplayResult {
  assertRedacted(trace);
  const input = resolveOptions({ serverUrl: trace.serverUrl }).config;
  const actor = createActor(oauthMachine, { input, ...(inspect ? { inspect } : {}) });
  actor.start();
  const result: ReplayResult = { events: 0, diverged: [] };
  for (const entry of trace.entries) {
    if (entry.kind !== 'event' || !entry.event) continue;
    actor.send(entry.event as EngineEvent);
    result.events += 1;
    const replayed = statePath(actor.getSnapshot().value);
    if (replayed !== entry.state) result.diverged.push({ seq: entry.seq, event: String(entry.event.type), recorded: entry.state, replayed });
  }
  // Left running under an inspector, so its UI shows the final state rather than a stopped actor.
  if (!inspect) actor.stop();
  return result;
}

interface StatelyInspect {
  createWebSocketInspector(options: {
    url: string;
    sanitizeEvent?: (event: AnyEventObject) => AnyEventObject;
    sanitizeContext?: (context: unknown) => unknown;
  }): { inspect: Observer<InspectionEvent>; stop(): void };
}
interface StatelyInspectServer {
  createInspectorServer(options: { port?: number; autoOpen?: boolean }): { stop(): void };
}

/** Not a dependency: present only when the user installed it for an online session. */
async function loadStately(): Promise<{ inspect: StatelyInspect; server: StatelyInspectServer } | undefined> {
  const client = '@statelyai/inspect';
  const relay = '@statelyai/inspect/server';
  try {
    return { inspect: (await import(client)) as StatelyInspect, server: (await import(relay)) as StatelyInspectServer };
  } catch {
    return undefined;
  }
}

const PLACEHOLDER_SERVER = 'https://mcp.example.com/mcp';

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    options: { port: { type: 'string', default: '8080' }, 'no-open': { type: 'boolean' }, help: { type: 'boolean', short: 'h' } },
    allowPositionals: true,
  });
  if (values.help || positionals.length > 1) {
    process.stdout.write('usage: npx tsx visualizer/stately.ts [trace.json] [--port 8080] [--no-open]\n');
    return values.help ? 0 : 2;
  }
  const tracePath = positionals[0];
  const trace: Trace = tracePath
    ? parseTrace(await readFile(tracePath, 'utf8'), tracePath)
    : { format: 'mcp-oauth-trace/1', serverUrl: PLACEHOLDER_SERVER, entries: [] };

  const offline = replayTrace(trace);
  if (!tracePath) {
    process.stdout.write('no trace given: the inspector shows the machine at rest, in its initial state\n');
  } else if (offline.diverged.length === 0) {
    process.stdout.write(`replayed ${offline.events} events of ${path.basename(tracePath)} through src/machines/oauth.machine.ts: every recorded state reached\n`);
  } else {
    process.stdout.write(`replayed ${offline.events} events of ${path.basename(tracePath)}: ${offline.diverged.length} differ (the trace came from a session configured otherwise)\n`);
    for (const d of offline.diverged) process.stdout.write(`  seq ${d.seq} ${d.event}: recorded ${d.recorded}, replayed ${d.replayed}\n`);
  }

  const stately = await loadStately();
  if (!stately) {
    const offlinePage = tracePath ? `npm run visualize -- ${tracePath}` : 'npm run visualize';
    process.stdout.write(
      [
        '@statelyai/inspect is not installed, so nothing was sent anywhere.',
        `  offline statechart and replay:  ${offlinePage}`,
        '  Stately inspector (online):     npm install --no-save @statelyai/inspect@0.7.2, then run this command again',
        '  Stately Studio (online):        import src/machines/oauth.machine.ts (see visualizer/README.md)',
        '',
      ].join('\n'),
    );
    return 0;
  }

  const port = Number(values.port);
  if (!Number.isInteger(port) || port <= 0 || port > 65535) throw new Error(`--port: not a port: ${values.port}`);
  const server = stately.server.createInspectorServer({ port, autoOpen: !values['no-open'] });
  const inspector = stately.inspect.createWebSocketInspector({ url: `ws://localhost:${port}`, sanitizeEvent, sanitizeContext });
  replayTrace(trace, inspector.inspect);
  process.stdout.write(
    `Stately inspector relay on http://localhost:${port} (that page embeds https://stately.ai/inspect and needs a network connection).\n` +
      'Only the redacted trace and redacted snapshots are sent. Ctrl-C to stop.\n',
  );
  await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
  inspector.stop();
  server.stop();
  return 0;
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).then(
    (code) => process.exit(code),
    (error: unknown) => {
      process.stderr.write(`stately: ${error instanceof Error ? error.message : String(error)}\n`);
      process.exit(1);
    },
  );
}
