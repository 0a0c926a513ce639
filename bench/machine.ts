/**
 * Scenario (g): the pure machine alone. Full cold flows (401 → PRM → AS metadata → registration →
 * authorization → code exchange → authorized) through xstate's pure `initialTransition` /
 * `transition`, every effect answered from canned responses, no I/O and no actor. Runs in its own
 * process; reports flows per second as the median of timed blocks.
 */
import { performance } from 'node:perf_hooks';
import { createActor, initialTransition, transition, type SnapshotFrom } from 'xstate';
import { DEFAULT_POLICY } from '../src/machines/policy.js';
import { oauthMachine } from '../src/machines/oauth.machine.js';
import type { EngineConfig, EngineEffect, EngineEvent } from '../src/machines/oauth.types.js';

const SERVER = 'https://mcp.example/mcp';
const PRM_URL = 'https://mcp.example/.well-known/oauth-protected-resource/mcp';
const ISSUER = 'https://auth.example';
const REDIRECT = 'http://127.0.0.1:33418/callback';
const AT = 1_000_000;

const CONFIG: EngineConfig = {
  serverUrl: SERVER,
  protocolVersion: '2025-11-25',
  clientMetadata: { client_name: 'bench', redirect_uris: [REDIRECT] },
  policy: DEFAULT_POLICY,
};

const ROUTES: Record<string, { status: number; body: string }> = {
  [`GET ${PRM_URL}`]: { status: 200, body: JSON.stringify({ resource: SERVER, authorization_servers: [ISSUER], scopes_supported: ['mcp:read'] }) },
  [`GET ${ISSUER}/.well-known/oauth-authorization-server`]: {
    status: 200,
    body: JSON.stringify({
      issuer: ISSUER,
      authorization_endpoint: `${ISSUER}/authorize`,
      token_endpoint: `${ISSUER}/token`,
      registration_endpoint: `${ISSUER}/register`,
      response_types_supported: ['code'],
      code_challenge_methods_supported: ['S256'],
      authorization_response_iss_parameter_supported: true,
      scopes_supported: ['mcp:read', 'mcp:write', 'offline_access'],
    }),
  },
  [`POST ${ISSUER}/register`]: { status: 201, body: JSON.stringify({ client_id: 'client-1', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' }) },
  [`POST ${ISSUER}/token`]: { status: 200, body: JSON.stringify({ access_token: 'access-1', token_type: 'Bearer', expires_in: 3600, refresh_token: 'refresh-1' }) },
};

const UNAUTHORIZED: EngineEvent = {
  type: 'unauthorized',
  status: 401,
  wwwAuthenticate: `Bearer resource_metadata="${PRM_URL}", scope="mcp:read"`,
  tokenVersion: null,
  authorizations: 0,
  at: AT,
};

function answer(effect: EngineEffect): EngineEvent | undefined {
  switch (effect.type) {
    case 'http.request': {
      const route = ROUTES[`${effect.request.method} ${effect.request.url}`] ?? { status: 404, body: 'not found' };
      return { type: 'http.response', id: effect.request.id, status: route.status, headers: { 'content-type': 'application/json' }, body: route.body, at: AT };
    }
    case 'redirect.prepare':
      return { type: 'redirect.ready', redirectUri: REDIRECT };
    case 'random.needed':
      return { type: 'random', state: 'state-abc', codeVerifier: 'verifier-xyz', codeChallenge: 'challenge-123' };
    case 'browser.open':
      return { type: 'callback', params: { code: 'code-1', state: new URL(effect.url).searchParams.get('state') ?? '', iss: ISSUER }, at: AT };
    default:
      // Store writes are fire-and-forget for the flow: nothing answers them here, as in the unit tests.
      return undefined;
  }
}

type Snapshot = SnapshotFrom<typeof oauthMachine>;

function emitted(actions: ReadonlyArray<{ type: string; params?: unknown }>): EngineEffect[] {
  const out: EngineEffect[] = [];
  for (const a of actions) if (a.type === 'xstate.emit') out.push((a.params as { event: EngineEffect }).event);
  return out;
}

/** One full cold flow through xstate's pure API; returns whether it ended authorized. */
function coldFlowPure(): boolean {
  let [snapshot] = initialTransition(oauthMachine, CONFIG) as [Snapshot, unknown];
  [snapshot] = transition(oauthMachine, snapshot, { type: 'store.loaded' });
  const [next, actions] = transition(oauthMachine, snapshot, UNAUTHORIZED);
  snapshot = next;
  const queue = emitted(actions);
  for (let steps = 0; queue.length > 0 && steps < 64; steps++) {
    const reply = answer(queue.shift() as EngineEffect);
    if (!reply) continue;
    const [after, more] = transition(oauthMachine, snapshot, reply);
    snapshot = after;
    queue.push(...emitted(more));
  }
  return snapshot.matches('ready.authorized' as never);
}

/** The same flow through an actor, the way the adapter runs the machine (effects still answered in-process). */
function coldFlowActor(): boolean {
  const actor = createActor(oauthMachine, { input: CONFIG });
  const queue: EngineEffect[] = [];
  actor.on('*', (effect) => void queue.push(effect as EngineEffect));
  actor.start();
  actor.send({ type: 'store.loaded' });
  actor.send(UNAUTHORIZED);
  for (let steps = 0; queue.length > 0 && steps < 64; steps++) {
    const reply = answer(queue.shift() as EngineEffect);
    if (reply) actor.send(reply);
  }
  const done = actor.getSnapshot().matches('ready.authorized' as never);
  actor.stop();
  return done;
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

function measure(coldFlow: () => boolean, blocks: number, blockMs: number) {
  let failures = 0;
  // Warm-up lets the JIT settle; a process pays it once, a benchmark of steady throughput should not.
  for (let i = 0; i < 300; i++) if (!coldFlow()) failures += 1;
  const rates: number[] = [];
  const cpuRates: number[] = [];
  let flows = 0;
  for (let b = 0; b < blocks; b++) {
    const started = performance.now();
    const cpu = process.cpuUsage();
    let n = 0;
    // Bounded in time and in count.
    while (performance.now() - started < blockMs && n < 200_000) {
      if (!coldFlow()) failures += 1;
      n += 1;
    }
    const used = process.cpuUsage(cpu);
    rates.push((n * 1000) / (performance.now() - started));
    // On a shared machine wall time includes other processes' turns; CPU time of this process does not.
    cpuRates.push((n * 1e6) / Math.max(1, used.user + used.system));
    flows += n;
  }
  return { flowsPerSecond: median(rates), flowsPerCpuSecond: median(cpuRates), rates, cpuRates, flows, failures, usPerFlow: 1e6 / median(rates) };
}

function main(): void {
  const quick = process.argv.includes('--quick');
  const blocks = quick ? 3 : 5;
  const blockMs = quick ? 300 : 600;
  // `--only=actor|pure` runs one variant, for profiling (`node --cpu-prof bench/.build/machine.js --only=actor`).
  const only = process.argv.find((a) => a.startsWith('--only='))?.slice('--only='.length);
  const result = {
    ...(only === 'pure' ? {} : { actor: measure(coldFlowActor, blocks, blockMs) }),
    ...(only === 'actor' ? {} : { pure: measure(coldFlowPure, blocks, blockMs) }),
  };
  if (process.send) process.send(result);
  else process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
}

main();
