/**
 * The engine in a web page: headless Chromium drives examples/web (served from its own loopback
 * origin) against the demo authorization server and MCP server. Every request that is not to
 * loopback is aborted and recorded, and the test asserts that none happened.
 */
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { chromium, type BrowserContext, type Page, type Route } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildWebExample, nodeDependencies, projectRoot, type WebBuild } from '../../examples/web/build.js';
import { startWebExample, type WebExampleServer } from '../../examples/web/serve.js';
import { createWebStorageStore } from '../../src/browser/webStorageStore.js';
import type { Deployment } from '../support/deployment.js';
import { deploy, onCleanup } from '../support/harness.js';

const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const HAVE_CHROMIUM = existsSync(CHROMIUM);
const IN_CI = process.env.CI === 'true';
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];
/** Upper bound for one page step (a redirect round trip, a tool call); the loopback servers answer in milliseconds. */
const STEP_MS = 15_000;
const BROWSER_TEST_MS = 90_000;

let bundle: WebBuild;
let distDir: string;

beforeAll(async () => {
  distDir = await mkdtemp(path.join(tmpdir(), 'mcp-oauth-web-dist-'));
  bundle = await buildWebExample({ outdir: distDir });
}, 60_000);

afterAll(async () => {
  if (distDir) await rm(distDir, { recursive: true, force: true });
});

describe('the browser bundle', () => {
  it('contains the same src/machines module the Node session imports, and nothing from Node', async () => {
    const outputs = Object.entries(bundle.metafile.outputs).filter(([file]) => file.endsWith('.js'));
    expect(outputs.map(([file]) => path.basename(file)).sort()).toEqual(['app.js', 'mcp-oauth.browser.js']);
    for (const [, output] of outputs) {
      expect(output.inputs['src/machines/oauth.machine.ts']?.bytesInOutput ?? 0).toBeGreaterThan(0);
      expect(output.inputs['src/browser/session.ts']?.bytesInOutput ?? 0).toBeGreaterThan(0);
      // One statechart: no second copy of the protocol logic from anywhere else.
      const machineFiles = Object.keys(output.inputs).filter((input) => /oauth\.(machine|logic)\.[jt]s$/.test(input));
      expect(machineFiles.sort()).toEqual(['src/machines/oauth.logic.ts', 'src/machines/oauth.machine.ts']);
      expect(output.imports).toEqual([]);
    }
    expect(nodeDependencies(bundle.metafile)).toEqual([]);
    expect(Object.keys(bundle.metafile.inputs).filter((input) => input.startsWith('node:') || input.includes('node_modules/undici/'))).toEqual([]);

    // The Node adapter imports that very file.
    const nodeSession = await readFile(path.join(projectRoot, 'src/adapters/session.ts'), 'utf8');
    expect(nodeSession).toContain("from '../machines/oauth.machine.js'");
    // And the browser adapter's own sources name no Node module, not even for types.
    for (const name of await readdir(path.join(projectRoot, 'src/browser'))) {
      const source = await readFile(path.join(projectRoot, 'src/browser', name), 'utf8');
      expect(source, name).not.toMatch(/from\s+['"](node:|undici)/);
    }
    for (const size of bundle.sizes) expect(size.gzippedBytes).toBeLessThan(size.minifiedBytes);
  });
});

describe('the Web Storage credential store', () => {
  function memoryStorage(): Storage & { data: Map<string, string> } {
    const data = new Map<string, string>();
    return {
      data,
      get length() {
        return data.size;
      },
      clear: () => data.clear(),
      key: (index: number) => [...data.keys()][index] ?? null,
      getItem: (key: string) => data.get(key) ?? null,
      setItem: (key: string, value: string) => void data.set(key, String(value)),
      removeItem: (key: string) => void data.delete(key),
    };
  }
  const tokens = { access_token: 'a', token_type: 'bearer', obtained_at: 1, issuer: 'https://as.example', resource: 'https://mcp.example/mcp' };

  it('keeps the store contract: generations, compare-and-swap, compare-and-delete, corrupt slots dropped', async () => {
    const storage = memoryStorage();
    const store = createWebStorageStore({ storage, locks: undefined });
    expect(store.lease).toBeUndefined();
    expect(await store.set('k', 'tokens', tokens, { ifGeneration: 0 })).toEqual({ ok: true, generation: 1 });
    expect(await store.set('k', 'tokens', { ...tokens, access_token: 'b' }, { ifGeneration: 0 })).toMatchObject({ ok: false, current: { generation: 1 } });
    expect(await store.set('k', 'tokens', { ...tokens, access_token: 'b' }, { ifGeneration: 1 })).toEqual({ ok: true, generation: 2 });
    expect(await store.delete('k', 'tokens', { ifGeneration: 1 })).toBe(false);
    expect((await store.get('k', 'tokens'))?.value.access_token).toBe('b');
    expect(await store.delete('k', 'tokens', { ifGeneration: 2 })).toBe(true);
    expect(await store.get('k', 'tokens')).toBeUndefined();
    // A deleted generation is never handed out again.
    expect(await store.set('k', 'tokens', tokens, { ifGeneration: 0 })).toEqual({ ok: true, generation: 3 });
    storage.setItem('mcp-oauth:record:client:k', '{not json');
    expect(await store.get('k', 'client')).toBeUndefined();
    expect(storage.data.has('mcp-oauth:record:client:k')).toBe(false);
    await expect(store.set('k', 'tokens', tokens, { ifGeneration: -1 })).rejects.toMatchObject({ code: 'store.invalid_argument' });
  });
});

if (!HAVE_CHROMIUM) {
  if (IN_CI) {
    describe('browser (Chromium)', () => {
      it('needs Chromium under CI', () => {
        throw new Error(`no Chromium at ${CHROMIUM}: run npm run setup (installs Debian's chromium) or set CHROMIUM_PATH`);
      });
    });
  } else {
    process.stderr.write(`browser.test: skipping the Chromium tests: no Chromium at ${CHROMIUM} (npm run setup installs it; or set CHROMIUM_PATH)\n`);
  }
}

const describeInChromium = HAVE_CHROMIUM ? describe : describe.skip;

interface Browser {
  context: BrowserContext;
  userDataDir: string;
  /** Every request to a non-loopback host, aborted before it left. */
  blocked: string[];
  /** Uncaught errors in any page. */
  pageErrors: string[];
}

function isLoopback(url: string): boolean {
  const { protocol, hostname } = new URL(url);
  if (protocol === 'data:' || protocol === 'about:' || protocol === 'blob:') return true;
  return hostname === '127.0.0.1' || hostname === 'localhost' || hostname === '[::1]';
}

/** A Chromium with a fresh user-data-dir (or a given one, for a second visit after a restart). */
async function launch(userDataDir?: string): Promise<Browser> {
  const dir = userDataDir ?? (await mkdtemp(path.join(tmpdir(), 'mcp-oauth-chromium-')));
  if (userDataDir === undefined) onCleanup(() => rm(dir, { recursive: true, force: true, maxRetries: 5 }));
  const context = await chromium.launchPersistentContext(dir, { executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 30_000 });
  onCleanup(() => context.close().catch(() => undefined));
  const browser: Browser = { context, userDataDir: dir, blocked: [], pageErrors: [] };
  await context.route('**/*', (route) => {
    const url = route.request().url();
    if (isLoopback(url)) return route.fallback();
    browser.blocked.push(url);
    return route.abort('blockedbyclient');
  });
  context.on('page', (page) => page.on('pageerror', (error) => browser.pageErrors.push(error.message)));
  for (const page of context.pages()) page.on('pageerror', (error) => browser.pageErrors.push(error.message));
  return browser;
}

async function setUp(asOptions: Parameters<typeof deploy>[0] = {}): Promise<{ d: Deployment; web: WebExampleServer }> {
  const d = await deploy(asOptions);
  const web = await startWebExample({ distDir });
  onCleanup(() => web.close());
  return { d, web };
}

async function newPage(browser: Browser): Promise<Page> {
  const page = await browser.context.newPage();
  page.setDefaultTimeout(STEP_MS);
  return page;
}

/** Waits until the page settles on a status or shows an error; returns the status. */
async function settledStatus(page: Page, statuses: string[]): Promise<string> {
  const selector = [...statuses.map((s) => `#status[data-status="${s}"]`), '#error:not([hidden])'].join(', ');
  await page.waitForSelector(selector, { timeout: STEP_MS });
  return (await page.getAttribute('#status', 'data-status')) ?? '';
}

async function expectConnected(page: Page): Promise<void> {
  const status = await settledStatus(page, ['connected']);
  const error = (await page.isHidden('#error')) ? '' : await page.textContent('#error');
  expect({ status, error }).toEqual({ status: 'connected', error: '' });
}

async function errorCode(page: Page): Promise<string> {
  await page.waitForSelector('#error:not([hidden])', { timeout: STEP_MS });
  return (await page.getAttribute('#error', 'data-code')) ?? '';
}

async function startSignIn(page: Page, web: WebExampleServer, d: Deployment): Promise<void> {
  await page.goto(`${web.origin}/`);
  await page.fill('#server-url', d.mcp.url);
  await page.click('#connect');
}

async function storage(page: Page, which: 'localStorage' | 'sessionStorage'): Promise<Record<string, string>> {
  return page.evaluate((name) => {
    const area = window[name];
    const out: Record<string, string> = {};
    for (let i = 0; i < area.length; i++) {
      const key = area.key(i);
      if (key !== null) out[key] = area.getItem(key) ?? '';
    }
    return out;
  }, which);
}

function storedRecord(records: Record<string, string>, kind: string, key: string): { value: Record<string, unknown>; generation: number } | undefined {
  const raw = records[`mcp-oauth:record:${kind}:${key}`];
  return raw === undefined ? undefined : (JSON.parse(raw) as { current?: { value: Record<string, unknown>; generation: number } }).current;
}

function flowRecords(records: Record<string, string>): string[] {
  return Object.keys(records).filter((key) => key.startsWith('mcp-oauth:flow:'));
}

/** Lets the test hold or rewrite the navigation to the authorization endpoint, once. */
async function interceptAuthorize(browser: Browser, d: Deployment, first: (route: Route) => Promise<void>): Promise<void> {
  let seen = false;
  await browser.context.route(`${d.as.url}/authorize?*`, async (route) => {
    if (seen) return route.fallback();
    seen = true;
    await first(route);
  });
}

async function callEcho(page: Page, text: string): Promise<string> {
  await page.fill('#echo-text', text);
  await page.click('#call');
  await page.waitForSelector('#result[data-tool="echo"]', { timeout: STEP_MS });
  return (await page.textContent('#result')) ?? '';
}

describeInChromium('browser (Chromium)', () => {
  it('the Web Locks lease renews while held, lapses after its ttl, and answers false once released', async () => {
    const { build } = await import('esbuild');
    const bundled = await build({
      stdin: { contents: `export { createWebStorageStore } from './src/browser/webStorageStore.ts';`, resolveDir: projectRoot, loader: 'ts' },
      bundle: true,
      format: 'iife',
      globalName: 'webStore',
      platform: 'browser',
      write: false,
    });
    const web = await startWebExample({ distDir });
    onCleanup(() => web.close());
    const browser = await launch();
    const page = await newPage(browser);
    await page.goto(`${web.origin}/`);
    // Evaluated through the DevTools protocol: the page's CSP allows no inline script tag.
    await page.evaluate(`${bundled.outputFiles[0]!.text}; globalThis.webStore = webStore;`);
    const result = await page.evaluate(async () => {
      const { createWebStorageStore: create } = (globalThis as unknown as { webStore: { createWebStorageStore: typeof createWebStorageStore } }).webStore;
      const store = create({ storage: window.sessionStorage, locks: navigator.locks });
      const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
      const lease = await store.lease!('k', { ttlMs: 200, waitMs: 1_000 });
      const renewals: boolean[] = [];
      // Renewed every 50 ms for 600 ms: a waiter with 300 ms to wait never gets it.
      const waiter = store.lease!('k', { ttlMs: 1_000, waitMs: 300 }).then(
        () => 'granted',
        (error: { code?: string }) => error.code,
      );
      for (let i = 0; i < 12; i++) {
        await sleep(50);
        renewals.push(await lease.renew(200));
      }
      const whileRenewed = await waiter;
      // No renewal: the ttl frees it for the next holder.
      const next = store.lease!('k', { ttlMs: 1_000, waitMs: 2_000 });
      const taken = await next;
      const lapsedRenew = await lease.renew(200);
      await taken.release();
      const releasedRenew = await taken.renew(200);
      const badTtl = await taken.renew(0).then(
        () => 'accepted',
        (error: { code?: string }) => error.code,
      );
      return { renewals, whileRenewed, lapsedRenew, releasedRenew, badTtl, fences: [lease.fencingToken, taken.fencingToken] };
    });
    expect(result.renewals).toEqual(Array(12).fill(true));
    expect(result.whileRenewed).toBe('store.lease_timeout');
    expect(result.lapsedRenew).toBe(false);
    expect(result.releasedRenew).toBe(false);
    expect(result.badTtl).toBe('store.invalid_argument');
    expect(result.fences[1]).toBeGreaterThan(result.fences[0]!);
  });

  it(
    'signs in through a full-page redirect, finishes on the callback route, lists and calls tools',
    async () => {
      const { d, web } = await setUp();
      const browser = await launch();
      const page = await newPage(browser);
      const visited: string[] = [];
      page.on('framenavigated', (frame) => {
        if (frame === page.mainFrame()) visited.push(frame.url());
      });

      await startSignIn(page, web, d);
      await expectConnected(page);

      // The page went to the authorization server and came back on its own callback route.
      const callbackUrl = visited.find((url) => url.startsWith(`${web.origin}/callback?`));
      expect(callbackUrl).toBeDefined();
      expect(new URL(callbackUrl!).searchParams.get('iss')).toBe(d.as.issuer);
      expect(page.url()).toBe(`${web.origin}/`);

      expect(await page.$$eval('#tool-list li', (items) => items.map((item) => item.getAttribute('data-tool')))).toEqual(['echo', 'whoami', 'admin-reset']);
      expect(await callEcho(page, 'hello from Chromium')).toBe('hello from Chromium');

      expect(d.as.counts.register).toBe(1);
      expect(d.as.counts.authorize).toBe(1);
      expect(d.as.counts['token:authorization_code']).toBe(1);
      expect(d.mcp.counts['status:401']).toBe(1);
      expect(d.mcp.counts['tool:echo']).toBe(1);
      // A web client: registered as such, public, with the page's callback route.
      const registration = JSON.parse(d.as.requests.find((r) => r.path === '/register')!.body) as Record<string, unknown>;
      expect(registration).toMatchObject({ application_type: 'web', token_endpoint_auth_method: 'none', redirect_uris: [`${web.origin}/callback`] });

      const local = await storage(page, 'localStorage');
      const tokens = storedRecord(local, 'tokens', d.mcp.url);
      expect(tokens?.value.issuer).toBe(d.as.issuer);
      expect([storedRecord(local, 'client', d.mcp.url)?.value.client_id]).toEqual([...d.as.clients.keys()]);
      expect(flowRecords(await storage(page, 'sessionStorage'))).toEqual([]);
      // The token is used, never shown.
      expect(await page.content()).not.toContain(String(tokens?.value.access_token));

      // The callback URL replayed (a reload, the back button): nothing is waiting, nothing redeemed.
      await page.goto(callbackUrl!);
      expect(await errorCode(page)).toBe('callback.no_flow');
      expect(d.as.counts['token:authorization_code']).toBe(1);

      expect(browser.pageErrors).toEqual([]);
      expect(browser.blocked).toEqual([]);
    },
    BROWSER_TEST_MS,
  );

  it(
    'a reload on the authorization server page finishes the same sign-in with one code redemption',
    async () => {
      const { d, web } = await setUp();
      const browser = await launch();
      const page = await newPage(browser);
      let asAnswer: { status: number; location: string } | undefined;
      await interceptAuthorize(browser, d, async (route) => {
        // The authorization server answers (it would redirect back at once); the person sees its page instead and reloads.
        const response = await route.fetch({ maxRedirects: 0 });
        asAnswer = { status: response.status(), location: response.headers().location ?? '' };
        await route.fulfill({ status: 200, contentType: 'text/html', body: '<!doctype html><title>Sign in</title><h1 id="as-page">Authorization server</h1>' });
      });

      await startSignIn(page, web, d);
      await page.waitForSelector('#as-page', { timeout: STEP_MS });
      expect(new URL(page.url()).origin).toBe(d.as.url);
      expect(asAnswer?.status).toBe(302);
      expect(asAnswer?.location.startsWith(`${web.origin}/callback?`)).toBe(true);
      expect(d.as.counts['token:authorization_code']).toBeUndefined();

      await page.reload();
      await expectConnected(page);

      expect(d.as.counts.authorize).toBe(2);
      expect(d.as.counts['token:authorization_code']).toBe(1);
      expect(d.as.counts.register).toBe(1);
      expect(d.as.counts['error:invalid_grant']).toBeUndefined();
      expect(browser.pageErrors).toEqual([]);
      expect(browser.blocked).toEqual([]);
    },
    BROWSER_TEST_MS,
  );

  it(
    'a reload before the redirect completes finds the persisted sign-in and resumes it',
    async () => {
      const { d, web } = await setUp();
      const browser = await launch();
      const page = await newPage(browser);
      let release: (() => Promise<void>) | undefined;
      let held!: () => void;
      const leaving = new Promise<void>((resolve) => (held = resolve));
      await interceptAuthorize(browser, d, async (route) => {
        // The navigation is in flight but not answered: the person reloads the page before it lands.
        release = () => route.abort('aborted').catch(() => undefined);
        held();
      });

      await startSignIn(page, web, d);
      await leaving;
      // The navigation never lands (the person pressed reload first): the page is reloaded where it was.
      const failed = page.waitForEvent('requestfailed', { predicate: (request) => request.url().startsWith(`${d.as.url}/authorize`), timeout: STEP_MS });
      await release?.();
      await failed;
      await page.reload();
      await page.waitForSelector('#pending:not([hidden])', { timeout: STEP_MS });
      expect(flowRecords(await storage(page, 'sessionStorage'))).toHaveLength(1);
      expect(d.as.counts.authorize).toBeUndefined();

      await page.click('#resume');
      await expectConnected(page);
      expect(d.as.counts.authorize).toBe(1);
      expect(d.as.counts.register).toBe(1);
      expect(d.as.counts['token:authorization_code']).toBe(1);
      expect(flowRecords(await storage(page, 'sessionStorage'))).toEqual([]);
      expect(browser.pageErrors).toEqual([]);
      expect(browser.blocked).toEqual([]);
    },
    BROWSER_TEST_MS,
  );

  it(
    'refuses a callback with a forged state: nothing stored, no token request, the genuine response still accepted',
    async () => {
      const { d, web } = await setUp();
      const browser = await launch();
      const page = await newPage(browser);
      let genuine = '';
      await interceptAuthorize(browser, d, async (route) => {
        const response = await route.fetch({ maxRedirects: 0 });
        genuine = response.headers().location ?? '';
        const forged = new URL(genuine);
        forged.searchParams.set('state', 'forged-state-value-0123456789abcdefghijklmnop');
        await route.fulfill({ status: 302, headers: { location: forged.href, 'cache-control': 'no-store' } });
      });

      await startSignIn(page, web, d);
      expect(await errorCode(page)).toBe('callback.state_mismatch');
      expect(genuine.startsWith(`${web.origin}/callback?`)).toBe(true);
      expect(d.as.counts['POST /token']).toBeUndefined();
      expect(d.as.counts['token:authorization_code']).toBeUndefined();
      const local = await storage(page, 'localStorage');
      expect(storedRecord(local, 'tokens', d.mcp.url)).toBeUndefined();
      expect(flowRecords(await storage(page, 'sessionStorage'))).toHaveLength(1);
      expect(await page.isVisible('#pending')).toBe(true);

      // A callback in a tab where no sign-in is waiting is refused as well.
      const stranger = await newPage(browser);
      const foreign = new URL(genuine);
      foreign.searchParams.set('state', 'another-forged-state-value-0123456789abcdefgh');
      await stranger.goto(foreign.href);
      expect(await errorCode(stranger)).toBe('callback.no_flow');
      expect(d.as.counts['POST /token']).toBeUndefined();

      // The genuine response, arriving later, completes the sign-in that kept waiting.
      await page.goto(genuine);
      await expectConnected(page);
      expect(d.as.counts['token:authorization_code']).toBe(1);
      expect(d.as.counts.authorize).toBe(1);
      expect(browser.pageErrors).toEqual([]);
      expect(browser.blocked).toEqual([]);
    },
    BROWSER_TEST_MS,
  );

  it(
    'refuses a response whose iss is not the issuer: a typed error, nothing redeemed or stored',
    async () => {
      const { d, web } = await setUp({ issParameter: 'wrong' });
      const browser = await launch();
      const page = await newPage(browser);
      await startSignIn(page, web, d);
      expect(await errorCode(page)).toBe('callback.iss_mismatch');
      expect(d.as.counts['POST /token']).toBeUndefined();
      expect(storedRecord(await storage(page, 'localStorage'), 'tokens', d.mcp.url)).toBeUndefined();
      expect(flowRecords(await storage(page, 'sessionStorage'))).toEqual([]);
      expect(browser.blocked).toEqual([]);
    },
    BROWSER_TEST_MS,
  );

  it(
    'a second visit, after the browser restarted, uses the stored token with no new authorization',
    async () => {
      const { d, web } = await setUp();
      const first = await launch();
      const page = await newPage(first);
      await startSignIn(page, web, d);
      await expectConnected(page);
      const before = { ...d.as.counts };
      const unauthorizedBefore = d.mcp.counts['status:401'];
      await first.context.close();

      const again = await launch(first.userDataDir);
      const visit = await newPage(again);
      await visit.goto(`${web.origin}/`);
      expect(await visit.inputValue('#server-url')).toBe(d.mcp.url);
      const mcpRequestsBefore = d.mcp.requests.length;
      await visit.click('#connect');
      await expectConnected(visit);
      expect(await callEcho(visit, 'second visit')).toBe('second visit');

      expect(d.as.counts).toEqual(before);
      expect(d.mcp.counts['status:401']).toBe(unauthorizedBefore);
      const sent = d.mcp.requests.slice(mcpRequestsBefore).filter((r) => r.method !== 'OPTIONS');
      expect(sent.length).toBeGreaterThan(0);
      expect(sent.every((r) => r.authorization?.startsWith('Bearer '))).toBe(true);

      // The server stops honouring the token: one 401, one refresh in the page, the call replayed.
      d.as.expireAllAccessTokens();
      expect(await callEcho(visit, 'after a refresh')).toBe('after a refresh');
      expect(d.as.counts['token:refresh_token']).toBe(1);
      expect(d.as.counts.authorize).toBe(before.authorize);
      expect(d.mcp.counts['status:401']).toBe(unauthorizedBefore! + 1);
      expect(d.mcp.counts['tool:echo']).toBe(2);
      expect(first.blocked).toEqual([]);
      expect(again.blocked).toEqual([]);
      expect(again.pageErrors).toEqual([]);
    },
    BROWSER_TEST_MS,
  );
});
