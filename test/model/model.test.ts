/**
 * Model-based tests: paths generated from the machine with `createTestModel` (xstate/graph), every
 * one executed against the real adapter over loopback HTTP, with coverage of every state and every
 * transition of the machine definition counted on those executions. Below 100% of either fails.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActor, transition } from 'xstate';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineEvent } from '../../src/machines/oauth.types.js';
import { CoverageTracker, inventory } from './coverage.js';
import { COVERAGE_FILE } from './coverageReporter.js';
import { executePath, planPath, ScriptedServer } from './execute.js';
import { engineConfig, eventCases, testModel, type ClientKind, type Snapshot, type World } from './model.js';

const KINDS: ClientKind[] = ['dynamic', 'noLegacy', 'preregistered', 'preregisteredElsewhere', 'clientCredentials', 'jwtBearer', 'enterprise', 'device'];
const server = new ScriptedServer();
const tracker = new CoverageTracker(inventory(oauthMachine));
let world: World;

async function reservePort(): Promise<number> {
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, '127.0.0.1', resolve));
  const { port } = probe.address() as { port: number };
  await new Promise<void>((resolve) => probe.close(() => resolve()));
  return port;
}

async function occupyPort(port: number): Promise<() => Promise<void>> {
  const holder = createServer();
  await new Promise<void>((resolve, reject) => {
    holder.once('error', reject);
    holder.listen(port, '127.0.0.1', resolve);
  });
  return () => new Promise<void>((resolve) => holder.close(() => resolve()));
}

function describePath(events: EngineEvent[]): string {
  return events.map((event) => (event.type === 'http.response' ? `${event.type}(${event.status})` : event.type)).join(' → ');
}

await server.start();
const preregisteredPort = await reservePort();
world = {
  origin: server.origin,
  serverUrl: `${server.origin}/mcp`,
  issuer: server.origin,
  redirect: `${server.origin}/callback`,
  otherRedirect: `${server.origin}/elsewhere`,
  preregisteredPort,
  clientMetadataUrl: 'https://client.example/mcp-oauth/client.json',
};

const generated = KINDS.map((kind) => {
  const model = testModel(world, kind);
  return { kind, model, paths: model.getShortestPaths().map((path) => path.steps.slice(1).map((step) => step.event as EngineEvent)) };
});

afterAll(async () => {
  await server.close();
  const report = tracker.report();
  mkdirSync('.cache', { recursive: true });
  writeFileSync(COVERAGE_FILE, JSON.stringify({ states: report.states, transitions: report.transitions }));
  if (report.missingStates.length + report.missingTransitions.length > 0) {
    process.stdout.write(`missing:\n  ${[...report.missingStates, ...report.missingTransitions].join('\n  ')}\n`);
  }
  // The gate: a run that executed every path must have reached every state and transition.
  if (!process.env.VITEST_FILTERED) {
    expect(report.missingStates).toEqual([]);
    expect(report.missingTransitions).toEqual([]);
  }
});

beforeAll(() => {
  expect(generated.reduce((sum, g) => sum + g.paths.length, 0)).toBeGreaterThan(0);
});

for (const { kind, paths } of generated) {
  describe(`executed against the real adapter: ${kind}`, () => {
    paths.forEach((events, index) => {
      it(`#${index} ${describePath(events)}`, async () => {
        const result = await executePath(world, kind, events, server, tracker, occupyPort);
        // The session may go on after the path's last event (the next request is held): compare the path's length.
        expect(result.log.slice(0, result.planned.expected.length)).toEqual(result.planned.expected);
        expect(result.serverMismatches).toEqual([]);
        expect(result.received).toBeGreaterThanOrEqual(result.planned.script.length);
        const model = result.planned.final.context;
        if (model.error && result.planned.final.matches('failed')) expect(result.finalError).toBe(model.error.code);
        // What the store holds is what the model holds: nothing stored that the model refused.
        expect(result.storedAccessToken).toBe(model.tokens?.access_token);
        if (model.client) expect(result.storedClientId).toBe(model.client.client_id);
      });
    });
  });
}

describe('snapshots and determinism (pure)', () => {
  for (const { kind, model } of generated) {
    it(`${kind}: every reachable snapshot survives persist → JSON → restore and behaves identically for every event case`, () => {
      const cases = eventCases(world, kind);
      const vertices = Object.values(model.getAdjacencyMap());
      expect(vertices.length).toBeGreaterThan(10);
      for (const { state } of vertices) {
        const snapshot = state as Snapshot;
        expect(snapshot.status).not.toBe('error');
        const persisted = JSON.parse(JSON.stringify(oauthMachine.getPersistedSnapshot(snapshot))) as unknown;
        const restored = createActor(oauthMachine, { snapshot: persisted as never, input: engineConfig(world, kind) }).getSnapshot();
        expect(restored.value).toEqual(snapshot.value);
        for (const event of cases(snapshot)) {
          const [a, actionsA] = transition(oauthMachine, snapshot, event);
          const [b, actionsB] = transition(oauthMachine, restored, event);
          expect(b.value).toEqual(a.value);
          expect(b.context).toEqual(a.context);
          const effects = (actions: ReadonlyArray<{ type: string; params?: unknown }>) =>
            JSON.stringify(actions.filter((x) => x.type === 'xstate.emit').map((x) => (x.params as { event: unknown }).event));
          expect(effects(actionsB)).toBe(effects(actionsA));
        }
      }
    });

    it(`${kind}: the same event script gives byte-identical snapshots and effects`, () => {
      const paths = generated.find((g) => g.kind === kind)!.paths;
      for (const events of paths) {
        const first = planPath(world, kind, events);
        const second = planPath(world, kind, events);
        expect(JSON.stringify(second.final)).toBe(JSON.stringify(first.final));
        expect(JSON.stringify(second.script)).toBe(JSON.stringify(first.script));
        expect(JSON.stringify(second.expected)).toBe(JSON.stringify(first.expected));
      }
    });
  }
});
