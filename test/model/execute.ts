/**
 * Runs one generated path against the real adapter: the session performs every effect over real
 * loopback HTTP against a server scripted with the path's responses; the inputs a caller or a
 * browser would give (a 401 seen, a callback, a cancel) are delivered as the path says. The
 * machine's own event log is compared step by step with the path, and what reached the server and
 * the store is checked against the model.
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { initialTransition, transition, type AnyTransitionDefinition } from 'xstate';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import { OAuthFlowError } from '../../src/machines/errors.js';
import type { HttpRequest } from '../../src/machines/http.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineEffect, EngineEvent } from '../../src/machines/oauth.types.js';
import type { CallbackParams } from '../../src/machines/steps/authorization.js';
import type { CoverageTracker } from './coverage.js';
import { engineConfig, NOW, RANDOM, sessionOptions, type ClientKind, type Snapshot, type World } from './model.js';

type Answer = { status: number; headers: Record<string, string>; body: string } | 'unreachable';

interface ScriptEntry {
  method: string;
  url: string;
  answer: Answer;
}

/** One loopback origin playing PRM, metadata, registration and token endpoints from a script. */
export class ScriptedServer {
  private server: Server | undefined;
  private script: ScriptEntry[] = [];
  private readonly held = new Set<ServerResponse>();
  private readonly sockets = new Set<Socket>();
  readonly received: Array<{ method: string; url: string; body: string }> = [];
  origin = '';
  mismatches: string[] = [];

  async start(): Promise<void> {
    this.server = createServer((req, res) => void this.handle(req, res));
    this.server.on('connection', (socket) => {
      this.sockets.add(socket);
      socket.on('close', () => this.sockets.delete(socket));
    });
    await new Promise<void>((resolve) => this.server!.listen(0, '127.0.0.1', resolve));
    this.origin = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  load(script: ScriptEntry[]): void {
    this.release();
    this.script = [...script];
    this.received.length = 0;
    this.mismatches = [];
  }

  /** Answers held past the end of the script, so the session stays where the path ended. */
  release(): void {
    for (const res of this.held) res.destroy();
    this.held.clear();
  }

  private async handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const chunk of req) chunks.push(chunk as Buffer);
    const url = `${this.origin}${req.url ?? ''}`;
    const index = this.received.length;
    this.received.push({ method: req.method ?? '', url, body: Buffer.concat(chunks).toString('utf8') });
    const entry = this.script[index];
    if (!entry) {
      this.held.add(res);
      return;
    }
    if (entry.method !== req.method || entry.url !== url) this.mismatches.push(`#${index}: expected ${entry.method} ${entry.url}, got ${req.method} ${url}`);
    if (entry.answer === 'unreachable') {
      req.socket.destroy();
      return;
    }
    res.writeHead(entry.answer.status, entry.answer.headers);
    res.end(entry.answer.body);
  }

  async close(): Promise<void> {
    this.release();
    for (const socket of this.sockets) socket.destroy();
    await new Promise<void>((resolve) => this.server?.close(() => resolve()));
  }
}

const INJECTED = new Set(['store.loaded', 'unauthorized', 'token.check', 'cancel', 'callback', 'logout']);
const IGNORED = new Set(['xstate.init', 'store.saved', 'network.classified']);

export interface PlannedPath {
  events: EngineEvent[];
  /** The state each event arrived in. */
  before: string[];
  /** `[event type, state value]` after each event, as the model says. */
  expected: Array<[string, string]>;
  script: ScriptEntry[];
  final: Snapshot;
}

function emitted(actions: ReadonlyArray<{ type: string; params?: unknown }>): EngineEffect[] {
  return actions.filter((a) => a.type === 'xstate.emit').map((a) => (a.params as { event: EngineEffect }).event);
}

/** The pure replay of a path: what the machine emits, so the server can be scripted with the path's answers. */
export function planPath(world: World, kind: ClientKind, events: EngineEvent[]): PlannedPath {
  let [snapshot] = initialTransition(oauthMachine, engineConfig(world, kind));
  const requests = new Map<string, HttpRequest>();
  const expected: PlannedPath['expected'] = [];
  const script: ScriptEntry[] = [];
  const before: string[] = [];
  for (const event of events) {
    before.push(JSON.stringify(snapshot.value));
    if (event.type === 'http.response' || event.type === 'http.failed') {
      const request = requests.get(event.id);
      if (!request) throw new Error(`path answers request ${event.id}, which was never sent`);
      script.push({
        method: request.method,
        url: request.url,
        answer:
          event.type === 'http.response'
            ? { status: event.status, headers: event.headers, body: event.body }
            : event.reason === 'redirect'
              ? { status: 307, headers: { location: `${world.origin}/elsewhere` }, body: '' }
              : 'unreachable',
      });
    }
    const [next, actions] = transition(oauthMachine, snapshot, event);
    for (const effect of emitted(actions)) if (effect.type === 'http.request') requests.set(effect.request.id, effect.request);
    expected.push([event.type, JSON.stringify(next.value)]);
    snapshot = next;
  }
  return { events, before, expected, script, final: snapshot };
}

function substituteState(params: CallbackParams, realState: string | undefined): CallbackParams {
  return params.state === RANDOM.state && realState !== undefined ? { ...params, state: realState } : params;
}

export interface ExecutionResult {
  log: Array<[string, string]>;
  planned: PlannedPath;
  storedAccessToken: string | undefined;
  storedClientId: string | undefined;
  finalError: string | undefined;
  serverMismatches: string[];
  received: number;
}

export async function executePath(
  world: World,
  kind: ClientKind,
  events: EngineEvent[],
  server: ScriptedServer,
  tracker: CoverageTracker,
  occupyPort: (port: number) => Promise<() => Promise<void>>,
): Promise<ExecutionResult> {
  const planned = planPath(world, kind, events);
  server.load(planned.script);
  const store = createMemoryStore();
  /** A `store.loaded` is what the store holds: put exactly those records there (another writer's work). */
  const writeStore = async (event: Extract<EngineEvent, { type: 'store.loaded' }>) => {
    for (const kindName of ['tokens', 'client', 'discovery'] as const) {
      const current = await store.get(world.serverUrl, kindName);
      const record = event[kindName];
      if (record) await store.set(world.serverUrl, kindName, record.value as never, { ifGeneration: current?.generation ?? 0 });
      else if (current) await store.delete(world.serverUrl, kindName, { ifGeneration: current.generation });
    }
  };
  const first = events[0];
  if (first?.type === 'store.loaded') await writeStore(first);

  const usesFailedRedirect = events.some((e) => e.type === 'redirect.failed');
  const otherRedirect = events.some((e) => e.type === 'redirect.ready' && e.redirectUri === world.otherRedirect);
  const release = usesFailedRedirect ? await occupyPort(world.preregisteredPort) : undefined;
  const base = sessionOptions(world, kind);
  const failsIn = (state: string) =>
    events.some((e, i) => e.type === 'interaction.failed' && planned.before[i]?.includes(state));
  let realState: string | undefined;
  const session: OAuthSession = createOAuthSession({
    ...base,
    ...(usesFailedRedirect ? { redirect: { loopback: { port: world.preregisteredPort } } } : {}),
    ...(otherRedirect ? { redirect: { uri: world.otherRedirect } } : {}),
    store,
    clock: () => NOW,
    ...(failsIn('redirecting')
      ? {
          randomBytes: () => {
            throw new Error('no entropy source');
          },
        }
      : {}),
    deadlines: { oauthRequestMs: 5_000, callbackMs: events.some((e) => e.type === 'timeout' && e.id === 'callback') ? 150 : 60_000 },
    // A path where the approval deadline passes: the next poll is held off until after it.
    ...(kind === 'device' && events.some((e, i) => e.type === 'timeout' && e.id === 'callback' && planned.before[i]?.includes('awaitingDeviceApproval'))
      ? { policy: { minDevicePollIntervalMs: 60_000 } }
      : {}),
    ...(kind === 'device'
      ? {
          onDeviceAuthorization: () => {
            if (failsIn('awaitingDeviceApproval')) throw new Error('no terminal to show the code on');
          },
        }
      : {}),
    openAuthorizationUrl: (url) => {
      realState = new URL(url).searchParams.get('state') ?? undefined;
      if (failsIn('awaitingCallback')) throw new OAuthFlowError({ code: 'browser.unavailable', message: 'no browser here' });
    },
  });

  const log: Array<[string, string]> = [];
  let wake: (() => void) | undefined;
  tracker.visitSnapshot(session.actor.getSnapshot() as never);
  const subscription = session.actor.system.inspect((inspection) => {
    if (inspection.actorRef !== session.actor) return;
    if (inspection.type === '@xstate.microstep') {
      tracker.visitTransitions((inspection as { _transitions: AnyTransitionDefinition[] })._transitions);
      tracker.visitSnapshot(inspection.snapshot as never);
    }
    if (inspection.type === '@xstate.snapshot' && !IGNORED.has(inspection.event.type)) {
      tracker.visitSnapshot(inspection.snapshot as never);
      log.push([inspection.event.type, JSON.stringify((inspection.snapshot as Snapshot).value)]);
      wake?.();
    }
  });

  const waitForLog = async (length: number) => {
    const deadline = Date.now() + 5_000;
    while (log.length < length && Date.now() < deadline) {
      await new Promise<void>((resolve) => {
        wake = resolve;
        setTimeout(resolve, 50);
      });
    }
  };

  try {
    for (const [index, event] of events.entries()) {
      if (index > 0 && INJECTED.has(event.type)) {
        await waitForLog(index);
        if (log.length !== index) break;
        if (event.type === 'callback') session.handleCallback(substituteState(event.params, realState));
        // Sign-out goes through the session's own method: it drains writes and takes the lease first.
        else if (event.type === 'logout') void session.logout().catch(() => undefined);
        else {
          if (event.type === 'store.loaded') await writeStore(event);
          session.actor.send(event);
        }
      }
      await waitForLog(index + 1);
      if (log.length < index + 1) break;
    }
  } finally {
    subscription.unsubscribe();
  }
  const finalError = session.actor.getSnapshot().context.error?.code;
  server.release();
  await session.close();
  await release?.();
  const tokens = await store.get(world.serverUrl, 'tokens');
  const client = await store.get(world.serverUrl, 'client');
  return {
    log,
    planned,
    storedAccessToken: tokens?.value.access_token,
    storedClientId: client?.value.client_id,
    finalError,
    serverMismatches: [...server.mismatches],
    received: server.received.length,
  };
}
