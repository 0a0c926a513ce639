/**
 * RFC 8628 through the real adapter: the session with `interaction: 'device'` against the demo
 * authorization server's device endpoints over loopback HTTP. The person is played by a fetch that
 * approves (or denies) the user code at the verification URI, as a phone's browser would.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { DEVICE_CODE_GRANT } from '../../examples/demo/authorizationServer.js';
import { createOAuthSession, type OAuthSession } from '../../src/adapters/session.js';
import type { OAuthSessionOptions } from '../../src/adapters/options.js';
import { createMemoryStore } from '../../src/adapters/stores/memory.js';
import type { DevicePrompt } from '../../src/machines/steps/device.js';
import type { CredentialStore } from '../../src/machines/store.js';
import { headlessOpener } from '../support/deployment.js';
import { deploy, failure, listTools, track } from '../support/harness.js';

const DEVICE_AS = { grantTypes: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT] as const, deviceAuthorization: { intervalSeconds: 0 } };

/** What the person does on the other device: open the verification URI and decide. */
async function decide(prompt: DevicePrompt, decision: 'approve' | 'deny'): Promise<number> {
  const page = await fetch(prompt.verificationUriComplete ?? prompt.verificationUri);
  await page.text();
  const response = await fetch(prompt.verificationUri, {
    method: 'POST',
    headers: { 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams({ user_code: prompt.userCode, decision }).toString(),
  });
  await response.text();
  return response.status;
}

function deviceSession(serverUrl: string, options: Partial<OAuthSessionOptions> & { onPrompt: (prompt: DevicePrompt) => void }): OAuthSession {
  const { onPrompt, ...rest } = options;
  return track(
    createOAuthSession({
      serverUrl,
      interaction: 'device',
      onDeviceAuthorization: onPrompt,
      openAuthorizationUrl: () => {
        throw new Error('the device flow never opens a browser here');
      },
      policy: { minDevicePollIntervalMs: 20 },
      ...rest,
    }),
  );
}

function visible(s: OAuthSession, error?: unknown): string {
  return JSON.stringify(s.trace()) + inspect(s) + JSON.stringify(s) + (error === undefined ? '' : `${String(error)} ${JSON.stringify(error)} ${inspect(error)}`);
}

describe('device authorization grant (RFC 8628) through the session', () => {
  it('prompts once, polls while pending, and the approval yields tokens bound to the resource; no browser, no authorize request', async () => {
    const d = await deploy({ ...DEVICE_AS, grantTypes: [...DEVICE_AS.grantTypes] });
    const prompts: DevicePrompt[] = [];
    let approved: Promise<number> | undefined;
    const s = deviceSession(d.mcp.url, {
      onPrompt: (prompt) => {
        prompts.push(prompt);
        // Approve after a few pending polls, as a person typing the code would.
        approved = new Promise((resolve) => setTimeout(resolve, 150)).then(() => decide(prompt, 'approve'));
      },
    });
    // Twenty concurrent first requests: one device authorization between them.
    const statuses = await Promise.all(Array.from({ length: 20 }, () => listTools(s, d.mcp.url)));
    expect(statuses).toEqual(Array(20).fill(200));
    expect(await approved).toBe(200);
    expect(prompts).toHaveLength(1);
    expect(prompts[0]!.verificationUri).toBe(`${d.as.url}/device`);
    expect(prompts[0]!.userCode).toMatch(/^[B-Z]{4}-[B-Z]{4}$/);
    const [authorization] = d.as.deviceAuthorizations();
    expect(d.as.deviceAuthorizations()).toHaveLength(1);
    expect(authorization?.status).toBe('redeemed');
    expect(authorization!.polls).toBeGreaterThanOrEqual(2);
    expect(d.as.counts.authorize ?? 0).toBe(0);
    expect(d.as.counts.device_authorization).toBe(1);

    const registration = JSON.parse(d.as.requests.find((r) => r.path === '/register')!.body) as { grant_types: string[] };
    expect(registration.grant_types).toContain(DEVICE_CODE_GRANT);
    const polls = d.as.requests.filter((r) => r.path === '/token').map((r) => new URLSearchParams(r.body));
    expect(polls.every((p) => p.get('grant_type') === DEVICE_CODE_GRANT && p.get('resource') === d.mcp.url)).toBe(true);
    const deviceCode = polls[0]!.get('device_code')!;
    expect(deviceCode.length).toBeGreaterThan(16);
    // The device code is redeemable: it is a secret like an authorization code.
    expect(visible(s)).not.toContain(deviceCode);
    const states = s.trace().entries.map((entry) => entry.state);
    expect(states).toContain('flow.authorize.awaitingDeviceApproval');
    expect(states).toContain('flow.authorize.pollingDeviceToken');
    expect(s.state).toBe('ready.authorized');
  });

  it('a denial ends the flow with token.access_denied and stores no tokens', async () => {
    const d = await deploy({ ...DEVICE_AS, grantTypes: [...DEVICE_AS.grantTypes] });
    const store = createMemoryStore();
    const s = deviceSession(d.mcp.url, { store, onPrompt: (prompt) => void decide(prompt, 'deny') });
    const error = await failure(listTools(s, d.mcp.url));
    expect(error.code).toBe('token.access_denied');
    expect(await store.get(d.mcp.url, 'tokens')).toBeUndefined();
    expect(d.as.deviceAuthorizations()[0]?.status).toBe('denied');
  });

  it('nobody approves: the approval deadline ends the wait with callback.timeout, polling stops, no timer is left', async () => {
    const d = await deploy({ ...DEVICE_AS, grantTypes: [...DEVICE_AS.grantTypes] });
    const s = deviceSession(d.mcp.url, { deadlines: { callbackMs: 400 }, onPrompt: () => undefined });
    const error = await failure(listTools(s, d.mcp.url));
    expect(error.code).toBe('callback.timeout');
    const polls = d.as.deviceAuthorizations()[0]!.polls;
    expect(polls).toBeGreaterThanOrEqual(1);
    await new Promise((resolve) => setTimeout(resolve, 150));
    expect(d.as.deviceAuthorizations()[0]!.polls).toBe(polls);
  });

  it('a server without device_authorization_endpoint: the browser flow runs through the opener instead', async () => {
    const d = await deploy();
    const prompts: DevicePrompt[] = [];
    const s = track(
      createOAuthSession({
        serverUrl: d.mcp.url,
        interaction: 'device',
        onDeviceAuthorization: (prompt) => prompts.push(prompt),
        openAuthorizationUrl: headlessOpener(),
      }),
    );
    expect(await listTools(s, d.mcp.url)).toBe(200);
    expect(prompts).toEqual([]);
    expect(d.as.counts.authorize).toBe(1);
    const registration = JSON.parse(d.as.requests.find((r) => r.path === '/register')!.body) as { grant_types: string[] };
    expect(registration.grant_types).not.toContain(DEVICE_CODE_GRANT);
  });

  it('a client registered by an earlier browser login is registered again with the device grant', async () => {
    const d = await deploy({ ...DEVICE_AS, grantTypes: [...DEVICE_AS.grantTypes] });
    const store: CredentialStore = createMemoryStore();
    const browser = track(createOAuthSession({ serverUrl: d.mcp.url, store, openAuthorizationUrl: headlessOpener() }));
    expect(await listTools(browser, d.mcp.url)).toBe(200);
    await browser.close();
    const tokens = await store.get(d.mcp.url, 'tokens');
    await store.delete(d.mcp.url, 'tokens', { ifGeneration: tokens!.generation });

    const s = deviceSession(d.mcp.url, { store, onPrompt: (prompt) => void decide(prompt, 'approve') });
    expect(await listTools(s, d.mcp.url)).toBe(200);
    expect(d.as.counts['POST /register']).toBe(2);
    const client = await store.get(d.mcp.url, 'client');
    expect(client?.value.grant_types).toContain(DEVICE_CODE_GRANT);
    expect(d.as.deviceAuthorizations()[0]?.clientId).toBe(client?.value.client_id);
  });

  it("interaction: 'device' without onDeviceAuthorization is a configuration error, before any request", async () => {
    const d = await deploy({ ...DEVICE_AS, grantTypes: [...DEVICE_AS.grantTypes] });
    expect(() => createOAuthSession({ serverUrl: d.mcp.url, interaction: 'device' })).toThrow(/onDeviceAuthorization/);
    expect(d.totalRequests()).toBe(0);
  });
});
