/**
 * The `mcp-oauth` CLI as a subprocess against the demo servers on loopback, with `$BROWSER` set to
 * a small node program that follows the authorization redirect to the CLI's callback server.
 * Assertions are on exit codes, output and what the servers counted, never on times.
 */
import { EventEmitter } from 'node:events';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { openSystemBrowser } from '../../src/adapters/interaction/browser.js';
import { createHeadlessUserAgent } from '../../src/adapters/interaction/headlessUserAgent.js';
import { createFileStore } from '../../src/adapters/stores/file.js';
import type { OAuthFlowError } from '../../src/machines/errors.js';
import { canonicalServerUrl } from '../../src/machines/urls.js';
import { cli, cliEnv, ROOT, startCli, startScript, waitForOutput } from '../support/cli.js';
import { deploy } from '../support/harness.js';
import { DEVICE_CODE_GRANT } from '../../examples/demo/authorizationServer.js';

describe('mcp-oauth: the commands end to end', { timeout: 120_000 }, () => {
  it('login, status, token, tools, call, logout (revocation seen by the server), status again', async () => {
    const d = await deploy();
    const e = await cliEnv();
    const trace = path.join(e.storeDir, '..', 'trace.json');

    const login = await cli(['login', d.mcp.url, '--trace', trace], e.env);
    expect(login.code, login.stderr).toBe(0);
    expect(login.stdout).toContain(`Signed in to ${d.mcp.url}`);
    expect(login.stdout).toContain('refresh token  present');
    // One line per state, and the URL printed too.
    for (const state of ['flow.resource.discovering', 'flow.authServer.discovering', 'flow.client.registering', 'flow.authorize.awaitingCallback', 'flow.token.exchanging', 'ready.authorized']) {
      expect(login.stderr).toContain(state);
    }
    const visits = await e.browserVisits();
    expect(visits).toHaveLength(1);
    expect(login.stderr).toContain(visits[0]);
    expect(d.as.counts.authorize).toBe(1);
    expect(d.as.counts.register).toBe(1);
    const traceJson = (await import('node:fs/promises')).readFile(trace, 'utf8');
    const traced = JSON.parse(await traceJson) as { format: string; entries: unknown[] };
    expect(traced.format).toBe('mcp-oauth-trace/1');
    expect(traced.entries.length).toBeGreaterThan(10);

    const status = await cli(['status'], e.env);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain(d.mcp.url);
    expect(status.stdout).toContain(`issuer         ${d.as.issuer}`);
    expect(status.stdout).toContain('refresh token  present');
    expect(status.stdout).toContain(`revocation     ${d.as.url}/revoke`);

    const token = await cli(['token', d.mcp.url], e.env);
    expect(token.code).toBe(0);
    const accessToken = token.stdout.trim();
    expect(d.as.verifyAccessToken(accessToken)).toBeDefined();
    // Secrets never reach the trace or the progress output; the token only goes to stdout, by design.
    expect(await traceJson).not.toContain(accessToken);
    expect(login.stderr + status.stdout + token.stderr).not.toContain(accessToken);

    const tools = await cli(['tools', d.mcp.url], e.env);
    expect(tools.code, tools.stderr).toBe(0);
    expect(tools.stdout).toMatch(/^echo\b/m);
    expect(tools.stdout).toMatch(/^whoami\b/m);

    const call = await cli(['call', d.mcp.url, 'echo', '{"text":"hello over the CLI"}'], e.env);
    expect(call.code, call.stderr).toBe(0);
    expect(call.stdout.trim()).toBe('hello over the CLI');
    expect(d.as.counts.authorize).toBe(1);

    const refreshToken = (await createFileStore({ directory: e.storeDir }).get(canonicalServerUrl(d.mcp.url), 'tokens'))!.value.refresh_token!;
    const logoutTrace = path.join(e.storeDir, '..', 'logout-trace.json');
    const logout = await cli(['logout', d.mcp.url, '--trace', logoutTrace], e.env);
    expect(logout.code, logout.stderr).toBe(0);
    expect(logout.stdout).toContain(`Revoked at ${d.as.url}/revoke`);
    expect(logout.stderr).toContain('revoking');
    expect(d.as.counts.revoke).toBe(1);
    // RFC 7009 §2.1: revoking the refresh token ended the grant's access token too.
    const revocation = d.as.requests.find((r) => r.path === '/revoke');
    expect(new URLSearchParams(revocation?.body).get('token_type_hint')).toBe('refresh_token');
    expect(d.as.verifyAccessToken(accessToken)).toBeUndefined();
    // The revocation request is in the trace, its `token` redacted.
    const logoutTraceText = await (await import('node:fs/promises')).readFile(logoutTrace, 'utf8');
    expect(logoutTraceText).toContain('"step": "revocation"');
    expect(logoutTraceText).not.toContain(refreshToken);
    expect(logoutTraceText).not.toContain(accessToken);
    expect(logout.stdout + logout.stderr).not.toContain(refreshToken);

    const after = await cli(['status', d.mcp.url], e.env);
    expect(after.code).toBe(6);
    expect(after.stdout).toContain('not signed in');
    const store = createFileStore({ directory: e.storeDir });
    const key = canonicalServerUrl(d.mcp.url);
    expect(await store.get(key, 'tokens')).toBeUndefined();
    expect(await store.get(key, 'client')).toBeUndefined();
    expect(await e.browserVisits()).toHaveLength(1);
  });

  it('--help for each command, usage errors exit 2, a failure names the state and the code', async () => {
    const e = await cliEnv();
    for (const command of ['login', 'status', 'token', 'tools', 'call', 'logout']) {
      const help = await cli([command, '--help'], e.env);
      expect(help.code).toBe(0);
      expect(help.stdout).toContain(`usage: mcp-oauth ${command}`);
    }
    const top = await cli(['--help'], e.env);
    expect(top.code).toBe(0);
    expect(top.stdout).toContain('exit codes:');
    expect((await cli(['frobnicate'], e.env)).code).toBe(2);
    expect((await cli(['login'], e.env)).code).toBe(2);
    expect((await cli(['login', 'http://127.0.0.1:1/mcp', '--bogus'], e.env)).code).toBe(2);
    expect((await cli(['call', 'http://127.0.0.1:1/mcp', 'echo', '[1]'], e.env)).code).toBe(2);

    // Nothing listens on port 1: discovery fails with a typed network error.
    const down = await cli(['login', 'http://127.0.0.1:1/mcp', '--quiet'], e.env);
    expect(down.code).toBe(4);
    expect(down.stderr).toMatch(/failed in state \S+/);
    expect(down.stderr).toMatch(/code: network\.\w+/);
    expect(await e.browserVisits()).toHaveLength(0);
  });
});

describe('mcp-oauth: several processes, one store', { timeout: 120_000 }, () => {
  it('two concurrent logins authorize once; two concurrent token commands on an expired token refresh once', async () => {
    const d = await deploy();
    const e = await cliEnv();
    const [a, b] = await Promise.all([cli(['login', d.mcp.url], e.env), cli(['login', d.mcp.url], e.env)]);
    expect(a.code, a.stderr).toBe(0);
    expect(b.code, b.stderr).toBe(0);
    expect(d.as.counts.authorize).toBe(1);
    expect(d.as.counts.register).toBe(1);
    expect(d.as.counts['token:authorization_code']).toBe(1);
    expect(await e.browserVisits()).toHaveLength(1);

    // The stored access token expires (as it would with time): both processes need a refresh.
    const store = createFileStore({ directory: e.storeDir });
    const key = canonicalServerUrl(d.mcp.url);
    const current = await store.get(key, 'tokens');
    expect(current).toBeDefined();
    const expired = { ...current!.value, obtained_at: Date.now() - 7200_000, expires_at: Date.now() - 3600_000 };
    expect((await store.set(key, 'tokens', expired, { ifGeneration: current!.generation })).ok).toBe(true);

    const [x, y] = await Promise.all([cli(['token', d.mcp.url], e.env), cli(['token', d.mcp.url], e.env)]);
    expect(x.code, x.stderr).toBe(0);
    expect(y.code, y.stderr).toBe(0);
    expect(d.as.counts['token:refresh_token']).toBe(1);
    expect(x.stdout.trim()).toBe(y.stdout.trim());
    expect(x.stdout.trim()).not.toBe(current!.value.access_token);
    expect(d.as.verifyAccessToken(x.stdout.trim())).toBeDefined();
    expect(d.as.counts['error:invalid_grant']).toBeUndefined();
    expect(d.as.counts.authorize).toBe(1);
  });

  it('kill -9 in the middle of token writes leaves the store readable (three kills at different write counts)', async () => {
    const d = await deploy();
    const e = await cliEnv();
    expect((await cli(['login', d.mcp.url, '--quiet'], e.env)).code).toBe(0);
    const key = canonicalServerUrl(d.mcp.url);
    const store = createFileStore({ directory: e.storeDir });
    const token = (await store.get(key, 'tokens'))!.value.access_token;

    for (const writes of [3, 17, 41]) {
      const { child, done } = startWriter(e.storeDir, key, e.env);
      await waitForOutput(child, new RegExp(`^${writes}$`, 'm'), 'stdout');
      child.kill('SIGKILL');
      const killed = await done;
      expect(killed.signal).toBe('SIGKILL');

      const record = await store.get(key, 'tokens');
      expect(record?.value.access_token).toBe(token);
      const status = await cli(['status', d.mcp.url], e.env);
      expect(status.code).toBe(0);
      expect(status.stdout).toContain('refresh token  present');
      const printed = await cli(['token', d.mcp.url], e.env);
      expect(printed.code, printed.stderr).toBe(0);
      expect(printed.stdout.trim()).toBe(token);
      // A write after the kill goes through: a lock the dead writer may have held is recognised as stale.
      const latest = await store.get(key, 'tokens');
      expect((await store.set(key, 'tokens', latest!.value, { ifGeneration: latest!.generation })).ok).toBe(true);
    }
    expect(d.as.counts.authorize).toBe(1);
  });
});

function startWriter(directory: string, key: string, env: NodeJS.ProcessEnv) {
  return startScript(path.join(ROOT, 'test/support/storeWriter.ts'), [directory, key], env);
}

describe('mcp-oauth: the browser opener', { timeout: 120_000 }, () => {
  const hostile = (url: string) => [
    ['javascript:', 'javascript:alert(document.cookie)//'],
    ['file:', 'file:///etc/passwd'],
    ['$(…)', `${url}/authorize$(touch${'${IFS}'}pwned)`],
    ['backticks', `${url}/authorize\`id\``],
    ['pipe and semicolon', `${url}/authorize;id|sh`],
    ['newline', `${url}/authorize\nid`],
  ];

  it('hostile authorization endpoints never reach $BROWSER; the CLI names the state and the code', async () => {
    const probe = await deploy();
    const cases = hostile(probe.as.url);
    for (const [name, endpoint] of cases) {
      const d = await deploy({ metadataOverrides: { authorization_endpoint: endpoint } });
      const e = await cliEnv();
      const result = await cli(['login', d.mcp.url], e.env);
      expect(result.code, name).toBe(3);
      expect(result.stderr, name).toMatch(/failed in state \S+\n {2}code: [a-z_]+\.[a-z_]+/);
      expect(await e.browserVisits(), name).toEqual([]);
      expect(d.as.counts.authorize ?? 0, name).toBe(0);
    }
  });

  it('--no-browser prints the URL instead; opening it completes the flow, $BROWSER untouched', async () => {
    const d = await deploy();
    const e = await cliEnv();
    const { child, done } = startCli(['login', d.mcp.url, '--no-browser'], e.env);
    const [, url] = await waitForOutput(child, /Open this URL[^\n]*\n\s+(\S+)\n/);
    expect(url?.startsWith(`${d.as.url}/authorize?`)).toBe(true);
    const redirectUri = new URL(url!).searchParams.get('redirect_uri')!;
    await createHeadlessUserAgent().authorize(url!, redirectUri, AbortSignal.timeout(10_000));
    const result = await done;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('Signed in');
    expect(await e.browserVisits()).toEqual([]);
    expect(d.as.counts.authorize).toBe(1);
  });
});

describe('login --force', () => {
  it('signs in again with valid tokens held: the old refresh token is revoked first, the client kept', async () => {
    const d = await deploy();
    const e = await cliEnv();
    expect((await cli(['login', d.mcp.url], e.env)).code).toBe(0);
    // Without --force a second login is a no-op.
    expect((await cli(['login', d.mcp.url], e.env)).code).toBe(0);
    expect(d.as.counts.authorize).toBe(1);

    const forced = await cli(['login', d.mcp.url, '--force'], e.env);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stderr).toContain('revoking');
    expect(d.as.counts.revoke).toBe(1);
    expect(new URLSearchParams(d.as.requests.find((r) => r.path === '/revoke')!.body).get('token_type_hint')).toBe('refresh_token');
    expect(d.as.counts.authorize).toBe(2);
    expect(d.as.counts.register).toBe(1);
    expect((await e.browserVisits()).length).toBe(2);

    const misuse = await cli(['token', d.mcp.url, '--force'], e.env);
    expect(misuse.code).toBe(2);
    expect(misuse.stderr).toContain('--force');
  });
});

describe('--no-browser with the device authorization grant (RFC 8628)', () => {
  it('shows the verification URI and the user code; approving on "another device" signs in, $BROWSER untouched', async () => {
    const d = await deploy({ grantTypes: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT], deviceAuthorization: { intervalSeconds: 0 } });
    const e = await cliEnv();
    const { child, done } = startCli(['login', d.mcp.url, '--no-browser'], e.env);
    const [, verificationUri, userCode] = await waitForOutput(child, /open (\S+)\n\s+and enter the code:\s+(\S+)\n/);
    expect(verificationUri).toBe(`${d.as.url}/device`);
    const approval = await fetch(verificationUri!, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams({ user_code: userCode!, decision: 'approve' }).toString(),
    });
    expect(approval.status).toBe(200);
    const result = await done;
    expect(result.code, result.stderr).toBe(0);
    expect(result.stdout).toContain('Signed in');
    expect(result.stderr).toContain('flow.authorize.awaitingDeviceApproval');
    // Polling is announced once, not once per poll.
    expect(result.stderr.split('flow.authorize.pollingDeviceToken').length - 1).toBe(1);
    expect(await e.browserVisits()).toEqual([]);
    expect(d.as.counts.authorize ?? 0).toBe(0);
    expect(d.as.deviceAuthorizations()[0]?.status).toBe('redeemed');

    const token = await cli(['token', d.mcp.url], e.env);
    expect(token.code, token.stderr).toBe(0);
    const tools = await fetch(d.mcp.url, {
      method: 'POST',
      headers: { authorization: `Bearer ${token.stdout.trim()}`, 'content-type': 'application/json', accept: 'application/json, text/event-stream' },
      body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-06-18', capabilities: {}, clientInfo: { name: 't', version: '1' } } }),
    });
    await tools.text();
    expect(tools.status).toBe(200);
  });
});

describe('$BROWSER in the system opener (no process spawned)', () => {
  function fakeSpawn() {
    const calls: Array<{ command: string; args: readonly string[]; options: unknown }> = [];
    const spawn = ((command: string, args: readonly string[], options: unknown) => {
      calls.push({ command, args, options });
      const child = new EventEmitter() as EventEmitter & { unref(): void };
      child.unref = () => undefined;
      queueMicrotask(() => child.emit('spawn'));
      return child;
    }) as unknown as typeof import('node:child_process').spawn;
    return { spawn, calls };
  }
  const url = 'https://as.example/authorize?response_type=code&client_id=c&state=s';

  it('runs $BROWSER with the URL as its one argument, without a shell, on every platform', async () => {
    for (const platform of ['linux', 'darwin', 'win32'] as const) {
      const { spawn, calls } = fakeSpawn();
      await openSystemBrowser(url, { platform, spawn, env: { BROWSER: '/opt/my browser/bin' } });
      expect(calls).toEqual([{ command: '/opt/my browser/bin', args: [url], options: expect.objectContaining({ shell: false }) }]);
    }
    const { spawn, calls } = fakeSpawn();
    await openSystemBrowser(url, { platform: 'linux', spawn, env: { BROWSER: 'firefox:chromium' } });
    expect(calls[0]?.command).toBe('firefox');
    const unset = fakeSpawn();
    await openSystemBrowser(url, { platform: 'linux', spawn: unset.spawn, env: { BROWSER: '' } });
    expect(unset.calls[0]?.command).toBe('xdg-open');
  });

  it('refuses unsafe URLs before $BROWSER is ever spawned', async () => {
    for (const bad of ['javascript:alert(1)', 'file:///etc/passwd', 'https://as.example/$(id)', 'https://as.example/a`id`', 'https://as.example/a\nb', 'https://as.example/a b']) {
      const { spawn, calls } = fakeSpawn();
      const error = await openSystemBrowser(bad, { platform: 'linux', spawn, env: { BROWSER: '/bin/echo' } }).then(
        () => undefined,
        (e: unknown) => e as OAuthFlowError,
      );
      expect(error?.code, bad).toBe('browser.unsafe_url');
      expect(calls, bad).toEqual([]);
    }
  });
});
