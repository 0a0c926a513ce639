/**
 * The visualizer end to end: a trace recorded by a real session against the demo servers is built
 * into the page, which is opened from file:// in headless Chromium with every other request
 * aborted, and stepped frame by frame; the highlighted node must be the state the trace recorded.
 */
import { existsSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { describe, expect, it } from 'vitest';
import { createOAuthSession } from '../../src/adapters/session.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import type { Trace } from '../../src/adapters/trace.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import { buildVisualizer, DATA_FILE } from '../../visualizer/build.js';
import { UnredactedTraceError } from '../../visualizer/frames.js';
import { replayTrace, sanitizeEvent } from '../../visualizer/stately.js';
import { generateStatechart, nodeIdFor } from '../../visualizer/statechart.js';
import { headlessOpener } from '../support/deployment.js';
import { deploy, listTools, onCleanup, track } from '../support/harness.js';

const executablePath = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const visualizerDir = fileURLToPath(new URL('../../visualizer/', import.meta.url));
/** The committed screenshot is refreshed on request only: every run differs (ports, times). */
const updateScreenshot = process.env.VISUALIZER_UPDATE_SCREENSHOT === '1';
const WAIT_MS = 60_000;

const chart = generateStatechart(oauthMachine);

function expectedIds(state: string): { active: string; ancestors: string[] } {
  const segments = state.split('.');
  return {
    active: nodeIdFor(segments),
    ancestors: segments.slice(0, -1).map((_, i) => nodeIdFor(segments.slice(0, i + 1))),
  };
}

/** Every secret the demo servers received: none may appear in the built page. */
function secretsSeen(d: Awaited<ReturnType<typeof deploy>>): string[] {
  const secrets = new Set<string>();
  const add = (value: string | null | undefined): void => {
    if (value && value.length >= 8) secrets.add(value);
  };
  for (const request of d.as.requests) {
    const form = new URLSearchParams(request.body);
    for (const field of ['code', 'code_verifier', 'refresh_token', 'client_secret', 'client_assertion']) add(form.get(field));
    add(new URLSearchParams(request.query).get('state'));
    add(/^\S+ +(.+)$/.exec(request.headers.authorization ?? '')?.[1]);
  }
  for (const request of d.mcp.requests) add(/^\S+ +(.+)$/.exec(request.authorization ?? '')?.[1]);
  return [...secrets];
}

/** A cold sign-in, then a refresh after the server expires the token: the demo's flow. */
async function recordRealTrace(): Promise<{ trace: Trace; secrets: string[] }> {
  const d = await deploy({ rotateRefreshTokens: true });
  const session = track(createOAuthSession({ serverUrl: d.mcp.url, store: createMemoryStore(), openAuthorizationUrl: headlessOpener() }));
  expect(await listTools(session, d.mcp.url)).toBe(200);
  d.as.expireAllAccessTokens();
  expect(await listTools(session, d.mcp.url)).toBe(200);
  expect(d.as.counts['token:refresh_token']).toBe(1);
  return { trace: session.trace(), secrets: secretsSeen(d) };
}

async function tempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(path.join(tmpdir(), prefix));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

interface Network {
  attempted: string[];
  seen: string[];
}

async function launch(): Promise<{ context: BrowserContext; network: Network }> {
  const context = await chromium.launchPersistentContext(await tempDir('mcp-oauth-viz-profile-'), {
    executablePath,
    headless: true,
    viewport: { width: 1600, height: 1000 },
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  onCleanup(() => context.close());
  const network: Network = { attempted: [], seen: [] };
  context.on('request', (request) => network.seen.push(request.url()));
  await context.route('**/*', async (route) => {
    const url = route.request().url();
    if (url.startsWith('file:')) return route.continue();
    network.attempted.push(url);
    return route.abort('blockedbyclient');
  });
  await context.addInitScript(() => {
    const violations: string[] = [];
    (window as unknown as { cspViolations: string[] }).cspViolations = violations;
    document.addEventListener('securitypolicyviolation', (event) => violations.push(`${event.violatedDirective} ${event.blockedURI}`));
  });
  return { context, network };
}

async function openPage(context: BrowserContext, file: string, hash = ''): Promise<{ page: Page; errors: string[] }> {
  const page = await context.newPage();
  const errors: string[] = [];
  page.on('pageerror', (error) => errors.push(error.message));
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(message.text());
  });
  page.on('websocket', (socket) => errors.push(`websocket ${socket.url()}`));
  await page.goto(`${pathToFileURL(file).href}${hash}`);
  await page.waitForFunction(() => document.body.dataset.ready === 'true', null, { timeout: WAIT_MS });
  expect(await page.evaluate(() => document.body.dataset.error ?? '')).toBe('');
  return { page, errors };
}

/** Mermaid ids of the drawn nodes carrying a class: clusters have data-id, leaves an id ending in -state-<id>-<n>. */
async function idsWithClass(page: Page, className: string): Promise<string[]> {
  return page.evaluate((name) => {
    return [...document.querySelectorAll(`#diagram svg g.${name}`)].map((g) => g.getAttribute('data-id') ?? /-state-(.+)-\d+$/.exec(g.id)?.[1] ?? `?${g.id}`);
  }, className);
}

async function drawnStateIds(page: Page): Promise<string[]> {
  return page.evaluate(() => {
    const ids = new Set<string>();
    for (const g of document.querySelectorAll('#diagram svg g[id], #diagram svg g[data-id]')) {
      const id = g.getAttribute('data-id') ?? /-state-(.+)-\d+$/.exec(g.id)?.[1];
      if (id) ids.add(id);
    }
    return [...ids];
  });
}

async function waitForFrame(page: Page, index: number): Promise<void> {
  await page.waitForFunction((i) => document.body.dataset.frame === String(i), index, { timeout: WAIT_MS });
}

async function expectFrame(page: Page, trace: Trace, index: number): Promise<void> {
  const entry = trace.entries[index];
  if (!entry) throw new Error(`no entry ${index}`);
  await waitForFrame(page, index);
  const where = `frame ${index + 1} (seq ${entry.seq}, ${entry.state})`;
  const expected = expectedIds(entry.state);
  expect(await idsWithClass(page, 'active'), where).toEqual([expected.active]);
  expect((await idsWithClass(page, 'activeAncestor')).sort(), where).toEqual([...expected.ancestors].sort());
  expect(await page.textContent('#state-path'), where).toBe(entry.state);
  expect(await page.textContent('#counter'), where).toBe(`Step ${index + 1} / ${trace.entries.length}`);
  const lastEvent = trace.entries.slice(0, index + 1).reverse().find((e) => e.kind === 'event');
  if (lastEvent) expect(await page.textContent('#event'), where).toContain(`"type": "${String(lastEvent.event?.type)}"`);
  const request = entry.effect?.type === 'http.request' ? (entry.effect.request as { method: string; url: string }) : undefined;
  if (request) {
    const http = (await page.textContent('#http')) ?? '';
    expect(http, where).toContain(request.method);
    expect(http, where).toContain(request.url);
  }
}

describe('the generated statechart', () => {
  it('has every state and transition of the machine, and() guards spelled out, nothing inline', () => {
    expect(chart.warnings).toEqual([]);
    const walk = (node: typeof oauthMachine.root): number =>
      1 + (Object.values(node.states) as Array<typeof oauthMachine.root>).reduce((sum, child) => sum + walk(child), 0);
    expect(Object.keys(chart.states)).toHaveLength(walk(oauthMachine.root));
    for (const state of Object.values(chart.states)) {
      if (state.path !== '') expect(chart.mermaid).toContain(`as ${state.id}`);
    }
    const transitions = Object.values(chart.states).reduce((sum, state) => sum + state.transitions.length, 0);
    expect(chart.edges.reduce((sum, edge) => sum + edge.labels.length, 0)).toBe(transitions);
    expect(chart.mermaid).toContain('http.response [isPending and refreshSucceeded]');
    expect(chart.mermaid).toContain('unauthorized [canRefresh and not refreshAlreadyTried]');
    expect(chart.mermaid).toContain('always [prmUsable]');
    expect(chart.mermaid).toContain('class S_flow__authorize__awaitingCallback tagWaiting');
  });

  it('refuses a trace that carries a secret', async () => {
    const trace: Trace = {
      format: 'mcp-oauth-trace/1',
      serverUrl: 'http://127.0.0.1:1/mcp',
      entries: [{ seq: 1, at: 0, kind: 'event', state: 'flow.token.exchanging', event: { type: 'callback', params: { code: 'a-real-code', state: '[redacted]' }, at: 0 } }],
    };
    await expect(buildVisualizer({ trace, outDir: await tempDir('mcp-oauth-viz-') })).rejects.toBeInstanceOf(UnredactedTraceError);
  });
});

describe('the Stately replay', () => {
  it('reaches every recorded state when a real redacted trace is replayed through the machine', async () => {
    const { trace } = await recordRealTrace();
    const result = replayTrace(trace);
    expect(result.events).toBe(trace.entries.filter((entry) => entry.kind === 'event').length);
    expect(result.diverged).toEqual([]);
  });

  it('keeps the machine input (a pre-registered secret) out of what an inspector is sent', () => {
    const init = { type: 'xstate.init', input: { preregistered: { client_secret: 'not-for-stately' } } };
    expect(JSON.stringify(sanitizeEvent(init))).not.toContain('not-for-stately');
    expect(JSON.stringify(sanitizeEvent({ type: 'callback', params: { code: 'a-code', state: 'a-state' }, at: 0 }))).not.toMatch(/a-code|a-state/);
  });
});

describe('the replay page in headless Chromium', () => {
  it('steps through a real flow from file:// with the recorded state highlighted at every frame and no request leaving the page', async (ctx) => {
    if (!existsSync(executablePath)) {
      const message = `chromium not found at ${executablePath}: run npm run setup (Debian chromium) or set CHROMIUM_PATH`;
      if (process.env.CI === 'true') throw new Error(message);
      process.stderr.write(`skipped: ${message}\n`);
      ctx.skip(message);
    }
    const { trace, secrets } = await recordRealTrace();
    const states = new Set(trace.entries.map((entry) => entry.state));
    for (const state of ['flow.resource.discovering', 'flow.authorize.awaitingCallback', 'flow.token.exchanging', 'ready.authorized', 'refreshing']) expect(states).toContain(state);

    const outDir = await tempDir('mcp-oauth-viz-');
    const built = await buildVisualizer({ trace, outDir, traceSource: 'session.trace()' });
    expect(built.frames).toBe(trace.entries.length);
    expect(built.unknownStates).toEqual([]);
    const data = await readFile(path.join(outDir, DATA_FILE), 'utf8');
    expect(secrets.length).toBeGreaterThan(0);
    for (const secret of secrets) expect(data.includes(secret), 'a secret the servers saw is in the page data').toBe(false);

    const { context, network } = await launch();
    const { page, errors } = await openPage(context, built.indexHtml);
    expect(await page.evaluate(() => document.body.dataset.renderMode)).toBe('classes');
    const allIds = Object.values(chart.states).map((state) => state.id);
    expect(await drawnStateIds(page)).toEqual(expect.arrayContaining(allIds));

    // Arrow keys for most steps, the buttons for some: both must move exactly one frame.
    await expectFrame(page, trace, 0);
    for (let i = 1; i < trace.entries.length; i++) {
      if (i % 5 === 0) await page.click('#next');
      else await page.keyboard.press('ArrowRight');
      await expectFrame(page, trace, i);
    }
    const last = trace.entries.length - 1;
    expect(await page.isDisabled('#next')).toBe(true);
    await page.keyboard.press('ArrowRight');
    await expectFrame(page, trace, last);
    await page.click('#prev');
    await expectFrame(page, trace, last - 1);
    await page.keyboard.press('ArrowLeft');
    await expectFrame(page, trace, last - 2);
    await page.keyboard.press('Home');
    await expectFrame(page, trace, 0);
    expect(await page.isDisabled('#prev')).toBe(true);

    // The documentation shot: the browser step, whose URL and entropy show up redacted.
    const shot = trace.entries.findIndex((entry) => entry.effect?.type === 'browser.open');
    expect(shot).toBeGreaterThan(0);
    await page.click(`#timeline li:nth-child(${shot + 1})`);
    await expectFrame(page, trace, shot);
    expect(await page.textContent('#http')).toContain('state=%5Bredacted%5D');
    await page.click('#zoom-out');
    await page.click('#zoom-out');
    expect(await page.textContent('#zoom-level')).toBe('70%');
    await mkdir(path.join(visualizerDir, 'out'), { recursive: true });
    const testCopy = path.join(visualizerDir, 'out', 'screenshot.png');
    await page.screenshot({ path: testCopy });
    if (updateScreenshot) await copyFile(testCopy, path.join(visualizerDir, 'screenshot.png'));

    // The fallback that re-renders the diagram text plus class lines per frame must agree.
    const rerender = await openPage(context, built.indexHtml, '#rerender');
    expect(await rerender.page.evaluate(() => document.body.dataset.renderMode)).toBe('rerender');
    await expectFrame(rerender.page, trace, 0);
    await rerender.page.keyboard.press('End');
    await expectFrame(rerender.page, trace, last);

    // Without a trace the page still draws the whole machine.
    const bare = await buildVisualizer({ outDir: await tempDir('mcp-oauth-viz-bare-') });
    expect(bare.frames).toBe(0);
    const alone = await openPage(context, bare.indexHtml);
    expect(await alone.page.textContent('#counter')).toBe('no trace');
    expect(await drawnStateIds(alone.page)).toEqual(expect.arrayContaining(allIds));
    expect(await idsWithClass(alone.page, 'active')).toEqual([]);

    expect(network.attempted, 'requests that tried to leave file://').toEqual([]);
    expect(network.seen.filter((url) => !url.startsWith('file:'))).toEqual([]);
    expect(network.seen.length).toBeGreaterThan(0);
    for (const p of [page, rerender.page, alone.page]) expect(await p.evaluate(() => (window as unknown as { cspViolations: string[] }).cspViolations)).toEqual([]);
    expect([...errors, ...rerender.errors, ...alone.errors]).toEqual([]);
  }, 240_000);
});
