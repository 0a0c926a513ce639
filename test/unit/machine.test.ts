import { describe, it, expect } from 'vitest';
import { DEFAULT_POLICY } from '../../src/machines/policy.js';
import { createActor, initialTransition, transition, type SnapshotFrom } from 'xstate';
import type { HttpRequest } from '../../src/machines/http.js';
import { oauthMachine } from '../../src/machines/oauth.machine.js';
import type { EngineConfig, EngineEffect, EngineEvent, EnginePolicy } from '../../src/machines/oauth.types.js';
import type { CallbackParams } from '../../src/machines/steps/authorization.js';
import type { ClientRecord, DiscoveryRecord, TokenRecord } from '../../src/machines/store.js';

// ---------------------------------------------------------------- fixtures

const SERVER = 'https://mcp.example/mcp';
const PRM_PATH_URL = 'https://mcp.example/.well-known/oauth-protected-resource/mcp';
const PRM_ROOT_URL = 'https://mcp.example/.well-known/oauth-protected-resource';
const ISSUER = 'https://auth.example';
const ISSUER_B = 'https://auth-b.example';
const REDIRECT = 'http://127.0.0.1:33418/callback';
const PROTOCOL = '2025-11-25';
const RANDOM = { state: 'state-abc', codeVerifier: 'verifier-xyz', codeChallenge: 'challenge-123' };

const POLICY: EnginePolicy = DEFAULT_POLICY;

function config(extra: Partial<EngineConfig> = {}): EngineConfig {
  return {
    serverUrl: SERVER,
    protocolVersion: PROTOCOL,
    clientMetadata: { client_name: 'Test client', redirect_uris: [REDIRECT] },
    policy: POLICY,
    ...extra,
  };
}

function prmDoc(issuers: string[] = [ISSUER], resource = SERVER): Record<string, unknown> {
  return { resource, authorization_servers: issuers, scopes_supported: ['mcp:read'] };
}

function asmDoc(issuer = ISSUER, extra: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    issuer,
    authorization_endpoint: `${issuer}/authorize`,
    token_endpoint: `${issuer}/token`,
    registration_endpoint: `${issuer}/register`,
    response_types_supported: ['code'],
    code_challenge_methods_supported: ['S256'],
    authorization_response_iss_parameter_supported: true,
    scopes_supported: ['mcp:read', 'mcp:write', 'offline_access'],
    ...extra,
  };
}

const asmUrl = (issuer: string) => `${issuer}/.well-known/oauth-authorization-server`;

const TOKEN_RESPONSE = { access_token: 'access-1', token_type: 'Bearer', expires_in: 3600, refresh_token: 'refresh-1' };

type Route = { status: number; body: unknown } | ((request: HttpRequest) => { status: number; body: unknown });

interface World {
  /** Keyed by `METHOD url`; unknown URLs answer 404. */
  routes: Record<string, Route>;
  at: number;
  /** What the browser brings back for an opened authorization URL; undefined = the user never returns. */
  callback?: (url: URL) => CallbackParams;
  redirectUri?: string;
}

function coldWorld(extra: Partial<World> = {}): World {
  return {
    routes: {
      [`GET ${PRM_PATH_URL}`]: { status: 200, body: prmDoc() },
      [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: asmDoc() },
      [`POST ${ISSUER}/register`]: { status: 201, body: { client_id: 'client-1', redirect_uris: [REDIRECT], token_endpoint_auth_method: 'none' } },
      [`POST ${ISSUER}/token`]: { status: 200, body: TOKEN_RESPONSE },
    },
    at: 1_000_000,
    callback: (url) => ({ code: 'code-1', state: url.searchParams.get('state') ?? '', iss: ISSUER }),
    ...extra,
  };
}

function unauthorized(extra: Partial<Extract<EngineEvent, { type: 'unauthorized' }>> = {}): EngineEvent {
  return {
    type: 'unauthorized',
    status: 401,
    wwwAuthenticate: `Bearer resource_metadata="${PRM_PATH_URL}", scope="mcp:read"`,
    tokenVersion: null,
    authorizations: 0,
    at: 1_000_000,
    ...extra,
  };
}

// ---------------------------------------------------------------- the pure driver

type Snapshot = SnapshotFrom<typeof oauthMachine>;

function effectsOf(actions: ReadonlyArray<{ type: string; params?: unknown }>): EngineEffect[] {
  return actions.filter((a) => a.type === 'xstate.emit').map((a) => (a.params as { event: EngineEffect }).event);
}

/** Answers one effect with the canned event the world gives, or undefined when nothing answers it. */
function answer(effect: EngineEffect, world: World): EngineEvent | undefined {
  switch (effect.type) {
    case 'http.request': {
      const { request } = effect;
      const route = world.routes[`${request.method} ${request.url}`];
      const reply = typeof route === 'function' ? route(request) : (route ?? { status: 404, body: 'not found' });
      return {
        type: 'http.response',
        id: request.id,
        status: reply.status,
        headers: { 'content-type': typeof reply.body === 'string' ? 'text/plain' : 'application/json' },
        body: typeof reply.body === 'string' ? reply.body : JSON.stringify(reply.body),
        at: world.at,
      };
    }
    case 'redirect.prepare':
      return { type: 'redirect.ready', redirectUri: world.redirectUri ?? effect.preferredRedirectUri ?? REDIRECT };
    case 'random.needed':
      return { type: 'random', ...RANDOM };
    case 'browser.open':
      return world.callback ? { type: 'callback', params: world.callback(new URL(effect.url)), at: world.at } : undefined;
    default:
      return undefined;
  }
}

class Driver {
  snapshot: Snapshot;
  readonly effects: EngineEffect[] = [];
  readonly events: EngineEvent[] = [];
  readonly snapshots: Snapshot[] = [];

  constructor(readonly input: EngineConfig) {
    const [snapshot, actions] = initialTransition(oauthMachine, input);
    this.snapshot = snapshot;
    this.snapshots.push(snapshot);
    this.effects.push(...effectsOf(actions));
  }

  send(event: EngineEvent): EngineEffect[] {
    const [next, actions] = transition(oauthMachine, this.snapshot, event);
    expect(next.status, `snapshot errored on ${event.type}`).not.toBe('error');
    this.snapshot = next;
    const effects = effectsOf(actions);
    this.events.push(event);
    this.snapshots.push(next);
    this.effects.push(...effects);
    return effects;
  }

  /** Sends `event`, then answers every effect from the world until nothing more is answerable. */
  run(event: EngineEvent, world: World, limit = 50): EngineEffect[] {
    const start = this.effects.length;
    const queue = [...this.send(event)];
    for (let steps = 0; queue.length > 0; steps++) {
      if (steps > limit) throw new Error('driver did not settle');
      const effect = queue.shift() as EngineEffect;
      const reply = answer(effect, world);
      if (reply) queue.push(...this.send(reply));
    }
    return this.effects.slice(start);
  }

  matches(state: string): boolean {
    return this.snapshot.matches(state as never);
  }

  requests(): HttpRequest[] {
    return this.effects.flatMap((e) => (e.type === 'http.request' ? [e.request] : []));
  }

  lastRequest(): HttpRequest {
    const request = this.requests().at(-1);
    if (!request) throw new Error('no request');
    return request;
  }

  respond(status: number, body: unknown, id = this.lastRequest().id): EngineEffect[] {
    return this.send({
      type: 'http.response',
      id,
      status,
      headers: { 'content-type': 'application/json' },
      body: typeof body === 'string' ? body : JSON.stringify(body),
      at: 1_000_000,
    });
  }
}

function stateOf(snapshot: Snapshot): string {
  return JSON.stringify(snapshot.value);
}

function types(effects: EngineEffect[]): string[] {
  return effects.map((e) => (e.type === 'http.request' ? `http.request ${e.request.method} ${e.request.url}` : e.type === 'store.save' || e.type === 'store.clear' ? `${e.type} ${e.kind}` : e.type));
}

function failedWith(driver: Driver, code: string): void {
  expect(driver.matches('failed'), `state ${stateOf(driver.snapshot)}`).toBe(true);
  expect(driver.snapshot.context.error?.code).toBe(code);
  const failure = driver.effects.filter((e) => e.type === 'flow.failed').at(-1);
  expect(failure && failure.type === 'flow.failed' && failure.error.code).toBe(code);
}

function form(body: string | undefined): Record<string, string> {
  return Object.fromEntries(new URLSearchParams(body ?? ''));
}

function browserUrl(effects: EngineEffect[]): URL {
  const open = effects.filter((e) => e.type === 'browser.open').at(-1);
  if (!open || open.type !== 'browser.open') throw new Error('no browser.open');
  return new URL(open.url);
}

/** A driver that ran the full cold flow (store empty, 401 with a challenge) to ready.authorized. */
function coldFlow(world = coldWorld(), input = config()): Driver {
  const driver = new Driver(input);
  driver.send({ type: 'store.loaded' });
  driver.run(unauthorized(), world);
  return driver;
}

/** Runs up to the browser redirect, the user not back yet. */
function toAwaitingCallback(world = coldWorld({ callback: undefined }), input = config()): Driver {
  const driver = new Driver(input);
  driver.send({ type: 'store.loaded' });
  driver.run(unauthorized(), world);
  expect(driver.matches('flow.authorize.awaitingCallback'), stateOf(driver.snapshot)).toBe(true);
  return driver;
}

// ---------------------------------------------------------------- the cold flow

describe('cold flow', () => {
  it('emits exactly the expected effects and ends authorized', () => {
    const driver = coldFlow();
    expect(driver.matches('ready.authorized'), stateOf(driver.snapshot)).toBe(true);
    expect(types(driver.effects)).toEqual([
      `http.request GET ${PRM_PATH_URL}`,
      `http.request GET ${asmUrl(ISSUER)}`,
      'redirect.prepare',
      `http.request POST ${ISSUER}/register`,
      'store.save client',
      'random.needed',
      'browser.open',
      `http.request POST ${ISSUER}/token`,
      'store.save tokens',
      'store.save discovery',
      'flow.done',
    ]);

    const [prm, asm, registration, token] = driver.requests() as [HttpRequest, HttpRequest, HttpRequest, HttpRequest];
    expect(prm.headers['mcp-protocol-version']).toBe(PROTOCOL);
    expect(prm.method).toBe('GET');
    expect(asm.headers['mcp-protocol-version']).toBe(PROTOCOL);
    expect(new Set([prm.id, asm.id, registration.id, token.id]).size).toBe(4);

    const registered = JSON.parse(registration.body ?? '');
    expect(registered).toMatchObject({ redirect_uris: [REDIRECT], application_type: 'native', token_endpoint_auth_method: 'none', client_name: 'Test client' });

    const url = browserUrl(driver.effects);
    expect(url.origin + url.pathname).toBe(`${ISSUER}/authorize`);
    expect(Object.fromEntries(url.searchParams)).toEqual({
      response_type: 'code',
      client_id: 'client-1',
      redirect_uri: REDIRECT,
      code_challenge: RANDOM.codeChallenge,
      code_challenge_method: 'S256',
      state: RANDOM.state,
      scope: 'mcp:read offline_access',
      resource: SERVER,
      prompt: 'consent',
    });

    const body = form(token.body);
    expect(body).toEqual({
      grant_type: 'authorization_code',
      code: 'code-1',
      redirect_uri: REDIRECT,
      code_verifier: RANDOM.codeVerifier,
      resource: url.searchParams.get('resource') ?? 'missing',
      client_id: 'client-1',
    });

    const saves = driver.effects.filter((e) => e.type === 'store.save');
    const tokens = saves.find((e) => e.kind === 'tokens');
    expect(tokens?.value).toEqual({
      access_token: 'access-1',
      token_type: 'bearer',
      refresh_token: 'refresh-1',
      expires_at: 1_000_000 + 3_600_000,
      obtained_at: 1_000_000,
      scope: 'mcp:read offline_access',
      issuer: ISSUER,
      resource: SERVER,
    });
    expect(saves.find((e) => e.kind === 'discovery')?.value).toEqual({
      issuer: ISSUER,
      token_endpoint: `${ISSUER}/token`,
      resource: SERVER,
      resource_metadata_url: PRM_PATH_URL,
      legacy: false,
    });
    expect(saves.find((e) => e.kind === 'client')?.value).toMatchObject({ client_id: 'client-1', issuer: ISSUER, source: 'dynamic' });

    // The single-use code and verifier do not outlive the exchange.
    expect(driver.snapshot.context.transaction).toBeUndefined();
    expect(driver.snapshot.context.code).toBeUndefined();
    expect(JSON.stringify(driver.snapshot.context)).not.toContain(RANDOM.codeVerifier);
  });

  it('ignores a response whose id is not the pending one', () => {
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.send(unauthorized());
    const pending = driver.lastRequest();
    const before = JSON.stringify(driver.snapshot.context);
    for (const id of ['req-0', 'req-99', `${pending.id}x`]) {
      expect(driver.respond(200, prmDoc(), id)).toEqual([]);
      expect(driver.matches('flow.resource.discovering')).toBe(true);
      expect(JSON.stringify(driver.snapshot.context)).toBe(before);
    }
    expect(types(driver.respond(200, prmDoc(), pending.id))).toEqual([`http.request GET ${asmUrl(ISSUER)}`]);
  });

  it('falls back from a 404 on the path-aware PRM to the root one', () => {
    const world = coldWorld({
      routes: {
        ...coldWorld().routes,
        [`GET ${PRM_PATH_URL}`]: { status: 404, body: 'nope' },
        [`GET ${PRM_ROOT_URL}`]: { status: 200, body: prmDoc([ISSUER], 'https://mcp.example') },
      },
    });
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized({ wwwAuthenticate: 'Bearer' }), world);
    expect(driver.matches('ready.authorized')).toBe(true);
    expect(driver.requests().slice(0, 3).map((r) => r.url)).toEqual([PRM_PATH_URL, PRM_ROOT_URL, asmUrl(ISSUER)]);
    // The PRM's resource string verbatim, in authorize and token requests alike.
    expect(browserUrl(driver.effects).searchParams.get('resource')).toBe('https://mcp.example');
    expect(form(driver.lastRequest().body).resource).toBe('https://mcp.example');
  });

  it('enters legacy mode when every PRM candidate fails, then uses default endpoints', () => {
    const world: World = {
      routes: {
        [`POST https://mcp.example/register`]: { status: 201, body: { client_id: 'legacy-client' } },
        [`POST https://mcp.example/token`]: { status: 200, body: TOKEN_RESPONSE },
      },
      at: 1_000_000,
      callback: (url) => ({ code: 'code-1', state: url.searchParams.get('state') ?? '' }),
    };
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized({ wwwAuthenticate: 'Bearer' }), world);
    expect(driver.matches('ready.authorized'), stateOf(driver.snapshot)).toBe(true);
    expect(types(driver.effects)).toEqual([
      `http.request GET ${PRM_PATH_URL}`,
      `http.request GET ${PRM_ROOT_URL}`,
      'notice',
      'http.request GET https://mcp.example/.well-known/oauth-authorization-server',
      'http.request GET https://mcp.example/.well-known/openid-configuration',
      'notice',
      'redirect.prepare',
      'http.request POST https://mcp.example/register',
      'store.save client',
      'random.needed',
      'browser.open',
      'http.request POST https://mcp.example/token',
      'store.save tokens',
      'store.save discovery',
      'flow.done',
    ]);
    const notices = driver.effects.flatMap((e) => (e.type === 'notice' ? [e.notice.code] : []));
    expect(notices).toEqual(['legacy.no_prm', 'legacy.default_endpoints']);
    const url = browserUrl(driver.effects);
    expect(url.origin + url.pathname).toBe('https://mcp.example/authorize');
    expect(url.searchParams.get('resource')).toBe(SERVER);
    expect(url.searchParams.get('code_challenge_method')).toBe('S256');
    expect(form(driver.lastRequest().body).resource).toBe(SERVER);
    const discovery = driver.effects.find((e) => e.type === 'store.save' && e.kind === 'discovery');
    expect(discovery?.type === 'store.save' && (discovery.value as DiscoveryRecord).legacy).toBe(true);
  });

  it('fails prm.resource_mismatch without any further request', () => {
    const world = coldWorld({
      routes: { ...coldWorld().routes, [`GET ${PRM_PATH_URL}`]: { status: 200, body: prmDoc(['https://evil-as.example'], 'https://evil.example/mcp') } },
    });
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized(), world);
    failedWith(driver, 'prm.resource_mismatch');
    expect(driver.requests().map((r) => r.url)).toEqual([PRM_PATH_URL]);
    expect(types(driver.effects)).toEqual([`http.request GET ${PRM_PATH_URL}`, 'flow.failed']);
    expect(JSON.stringify(driver.snapshot.context)).not.toContain('"issuer":"https://evil-as.example"');
    expect(driver.snapshot.context.issuer).toBeUndefined();
    expect(driver.snapshot.context.prm).toBeUndefined();
  });

  it('fails asm.issuer_mismatch when the metadata does not echo the issuer', () => {
    const world = coldWorld({ routes: { ...coldWorld().routes, [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: asmDoc(`${ISSUER}/`) } } });
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized(), world);
    failedWith(driver, 'asm.issuer_mismatch');
    expect(driver.requests()).toHaveLength(2);
  });

  it('fails asm.pkce_unadvertised with no registration', () => {
    const doc = asmDoc();
    delete doc.code_challenge_methods_supported;
    const world = coldWorld({ routes: { ...coldWorld().routes, [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: doc } } });
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized(), world);
    failedWith(driver, 'asm.pkce_unadvertised');
    expect(types(driver.effects)).toEqual([`http.request GET ${PRM_PATH_URL}`, `http.request GET ${asmUrl(ISSUER)}`, 'flow.failed']);
  });

  it('proceeds with a notice when unadvertised PKCE is allowed by option', () => {
    const doc = asmDoc();
    delete doc.code_challenge_methods_supported;
    const world = coldWorld({ routes: { ...coldWorld().routes, [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: doc } } });
    const driver = coldFlow(world, config({ policy: { ...POLICY, allowUnadvertisedPkce: true } }));
    expect(driver.matches('ready.authorized')).toBe(true);
    expect(driver.effects.some((e) => e.type === 'notice' && e.notice.code === 'pkce.exception')).toBe(true);
  });
});

// ---------------------------------------------------------------- the callback

describe('callback', () => {
  it('ignores a wrong state (even a forged error redirect) and keeps waiting', () => {
    const driver = toAwaitingCallback();
    const before = driver.requests().length;
    expect(driver.send({ type: 'callback', params: { code: 'evil-code', state: 'forged', iss: ISSUER }, at: 1 })).toEqual([]);
    expect(driver.matches('flow.authorize.awaitingCallback')).toBe(true);
    expect(driver.send({ type: 'callback', params: { error: 'access_denied', error_description: 'call us', state: 'forged', iss: ISSUER }, at: 2 })).toEqual([]);
    expect(driver.send({ type: 'callback', params: { code: 'evil-code', iss: ISSUER }, at: 3 })).toEqual([]);
    expect(driver.matches('flow.authorize.awaitingCallback')).toBe(true);
    expect(driver.snapshot.context.rejectedCallbacks).toBe(3);
    expect(driver.snapshot.context.error).toBeUndefined();
    expect(driver.requests().length).toBe(before);
    // The real redirect still works afterwards.
    const effects = driver.send({ type: 'callback', params: { code: 'code-1', state: RANDOM.state, iss: ISSUER }, at: 4 });
    expect(types(effects)).toEqual([`http.request POST ${ISSUER}/token`]);
    expect(form(driver.lastRequest().body).code).toBe('code-1');
  });

  it('fails on a wrong iss without a token request or the attacker text', () => {
    const driver = toAwaitingCallback();
    const before = driver.requests().length;
    driver.send({
      type: 'callback',
      params: { code: 'code-1', state: RANDOM.state, iss: 'https://evil.example', error: 'access_denied', error_description: 'ATTACKER-TEXT' },
      at: 5,
    });
    failedWith(driver, 'callback.iss_mismatch');
    expect(driver.requests().length).toBe(before);
    expect(JSON.stringify(driver.snapshot.context.error)).not.toContain('ATTACKER-TEXT');
    expect(driver.snapshot.context.transaction).toBeUndefined();
  });

  it('fails on a missing iss when the server advertises it', () => {
    const driver = toAwaitingCallback();
    driver.send({ type: 'callback', params: { code: 'code-1', state: RANDOM.state }, at: 5 });
    failedWith(driver, 'callback.iss_missing');
  });

  it('fails authorize.access_denied on an error redirect with good state and iss', () => {
    const driver = toAwaitingCallback();
    const before = driver.requests().length;
    driver.send({ type: 'callback', params: { error: 'access_denied', error_description: 'user said no', state: RANDOM.state, iss: ISSUER }, at: 5 });
    failedWith(driver, 'authorize.access_denied');
    expect(driver.snapshot.context.error?.oauthError).toBe('access_denied');
    expect(driver.requests().length).toBe(before);
  });

  it('fails callback.timeout on the callback deadline only', () => {
    const driver = toAwaitingCallback();
    expect(driver.send({ type: 'timeout', id: 'req-1' })).toEqual([]);
    expect(driver.matches('flow.authorize.awaitingCallback')).toBe(true);
    driver.send({ type: 'timeout', id: 'callback' });
    failedWith(driver, 'callback.timeout');
  });

  it('cancel while waiting for the user fails flow.cancelled', () => {
    const driver = toAwaitingCallback();
    driver.send({ type: 'cancel' });
    failedWith(driver, 'flow.cancelled');
    expect(driver.snapshot.context.transaction).toBeUndefined();
  });

  it('cancel during discovery fails, and the late response is ignored', () => {
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.send(unauthorized());
    const pending = driver.lastRequest();
    driver.send({ type: 'cancel' });
    failedWith(driver, 'flow.cancelled');
    expect(driver.respond(200, prmDoc(), pending.id)).toEqual([]);
    expect(driver.matches('failed')).toBe(true);
  });
});

// ---------------------------------------------------------------- refresh

const STORED_CLIENT: ClientRecord = {
  client_id: 'client-1',
  token_endpoint_auth_method: 'none',
  redirect_uris: [REDIRECT],
  issuer: ISSUER,
  source: 'dynamic',
};
const STORED_DISCOVERY: DiscoveryRecord = { issuer: ISSUER, token_endpoint: `${ISSUER}/token`, resource: SERVER, legacy: false };
const EXPIRED_TOKENS: TokenRecord = {
  access_token: 'old-access',
  token_type: 'bearer',
  refresh_token: 'old-refresh',
  obtained_at: 0,
  expires_at: 3_600_000,
  scope: 'mcp:read offline_access',
  issuer: ISSUER,
  resource: SERVER,
};

function loaded(tokens: TokenRecord = EXPIRED_TOKENS): Driver {
  const driver = new Driver(config());
  driver.send({
    type: 'store.loaded',
    tokens: { value: tokens, generation: 7 },
    client: { value: STORED_CLIENT, generation: 3 },
    discovery: { value: STORED_DISCOVERY, generation: 2 },
  });
  expect(driver.matches('ready.authorized')).toBe(true);
  return driver;
}

describe('refresh', () => {
  it('does nothing for a fresh token', () => {
    const driver = loaded();
    expect(driver.send({ type: 'token.check', at: 1_000 })).toEqual([]);
    expect(driver.matches('ready.authorized')).toBe(true);
  });

  it('refreshes an expired token and saves the result', () => {
    const driver = loaded();
    const effects = driver.send({ type: 'token.check', at: 4_000_000 });
    expect(driver.matches('refreshing')).toBe(true);
    expect(types(effects)).toEqual([`http.request POST ${ISSUER}/token`]);
    const request = driver.lastRequest();
    expect(request.step).toBe('refresh');
    expect(form(request.body)).toEqual({ grant_type: 'refresh_token', refresh_token: 'old-refresh', resource: SERVER, client_id: 'client-1' });

    const done = driver.respond(200, { access_token: 'new-access', token_type: 'bearer', expires_in: 600 });
    expect(driver.matches('ready.authorized')).toBe(true);
    expect(types(done)).toEqual(['store.save tokens', 'flow.done']);
    const save = done[0];
    expect(save?.type === 'store.save' && save.ifGeneration).toBe(7);
    expect(save?.type === 'store.save' && save.value).toMatchObject({ access_token: 'new-access', refresh_token: 'old-refresh', scope: 'mcp:read offline_access', resource: SERVER, issuer: ISSUER });
    expect(driver.snapshot.context.tokens?.access_token).toBe('new-access');
  });

  it('invalid_grant clears the failed token generation and starts a new flow', () => {
    const driver = loaded();
    driver.send({ type: 'token.check', at: 4_000_000 });
    const effects = driver.respond(400, { error: 'invalid_grant' });
    expect(types(effects)).toEqual(['store.clear tokens', `http.request GET ${PRM_PATH_URL}`]);
    const clear = effects[0];
    expect(clear?.type === 'store.clear' && clear.ifGeneration).toBe(7);
    expect(driver.matches('flow.resource.discovering')).toBe(true);
    expect(driver.snapshot.context.tokens).toBeUndefined();
  });

  it('invalid_client also clears the client and registers again', () => {
    const driver = loaded();
    driver.send({ type: 'token.check', at: 4_000_000 });
    const effects = driver.respond(401, { error: 'invalid_client' });
    expect(types(effects)).toEqual(['store.clear tokens', 'store.clear client', `http.request GET ${PRM_PATH_URL}`]);
    const clearClient = effects[1];
    expect(clearClient?.type === 'store.clear' && clearClient.ifGeneration).toBe(3);
  });

  it('another refresh error fails with the token error', () => {
    const driver = loaded();
    driver.send({ type: 'token.check', at: 4_000_000 });
    driver.respond(500, 'down');
    failedWith(driver, 'token.http_status');
  });

  it('a 401 after a refresh already tried for this operation re-discovers instead of refreshing again', () => {
    const tried = loaded({ ...EXPIRED_TOKENS, expires_at: 9e12 });
    const effects = tried.send(unauthorized({ tokenVersion: tried.snapshot.context.tokenVersion, refreshes: 1 }));
    expect(tried.matches('flow.resource.discovering'), stateOf(tried.snapshot)).toBe(true);
    expect(types(effects)).toEqual([`http.request GET ${PRM_PATH_URL}`]);

    const fresh = loaded({ ...EXPIRED_TOKENS, expires_at: 9e12 });
    const refresh = fresh.send(unauthorized({ tokenVersion: fresh.snapshot.context.tokenVersion, refreshes: 0 }));
    expect(fresh.matches('refreshing')).toBe(true);
    expect(refresh.map((e) => e.type === 'http.request' && e.request.step)).toEqual(['refresh']);
  });

  it('after a failure, a new 401 starts a new flow', () => {
    const driver = toAwaitingCallback();
    driver.send({ type: 'timeout', id: 'callback' });
    failedWith(driver, 'callback.timeout');
    const effects = driver.send(unauthorized({ at: 2_000_000 }));
    expect(driver.matches('flow.resource.discovering'), stateOf(driver.snapshot)).toBe(true);
    expect(types(effects)).toEqual([`http.request GET ${PRM_PATH_URL}`]);
    expect(driver.snapshot.context.error).toBeUndefined();
  });
});

// ---------------------------------------------------------------- step-up and budgets

describe('step-up and budgets', () => {
  it('403 insufficient_scope re-authorizes with the union of scopes', () => {
    const world = coldWorld();
    const driver = coldFlow(world);
    const start = driver.effects.length;
    driver.run(
      unauthorized({
        status: 403,
        wwwAuthenticate: 'Bearer error="insufficient_scope", scope="mcp:write"',
        tokenVersion: driver.snapshot.context.tokenVersion,
      }),
      world,
    );
    const effects = driver.effects.slice(start);
    expect(driver.matches('ready.authorized'), stateOf(driver.snapshot)).toBe(true);
    // Known metadata and a stored client: no discovery, no registration.
    expect(types(effects)).toEqual([
      'redirect.prepare',
      'random.needed',
      'browser.open',
      `http.request POST ${ISSUER}/token`,
      'store.save tokens',
      'store.save discovery',
      'flow.done',
    ]);
    expect(browserUrl(effects).searchParams.get('scope')).toBe('mcp:read offline_access mcp:write');
    expect(driver.snapshot.context.tokens?.scope).toBe('mcp:read offline_access mcp:write');
  });

  it('a step-up whose union adds nothing fails scope.insufficient', () => {
    const driver = coldFlow();
    const start = driver.effects.length;
    driver.send(
      unauthorized({ status: 403, wwwAuthenticate: 'Bearer error="insufficient_scope", scope="mcp:read"', tokenVersion: driver.snapshot.context.tokenVersion }),
    );
    failedWith(driver, 'scope.insufficient');
    expect(types(driver.effects.slice(start))).toEqual(['flow.failed']);
  });

  it('a 401 carrying an older token version is just replayed', () => {
    const driver = coldFlow();
    expect(driver.send(unauthorized({ tokenVersion: driver.snapshot.context.tokenVersion - 1 }))).toEqual([]);
    expect(driver.matches('ready.authorized')).toBe(true);
  });

  it('unauthorized with the authorization budget spent fails flow.authorization_limit', () => {
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    const effects = driver.send(unauthorized({ authorizations: 3 }));
    failedWith(driver, 'flow.authorization_limit');
    expect(types(effects)).toEqual(['flow.failed']);

    const authorized = coldFlow();
    authorized.send(unauthorized({ authorizations: 3, tokenVersion: authorized.snapshot.context.tokenVersion }));
    failedWith(authorized, 'flow.authorization_limit');

    const under = new Driver(config());
    under.send({ type: 'store.loaded' });
    under.send(unauthorized({ authorizations: 2 }));
    expect(under.matches('flow.resource.discovering')).toBe(true);
  });
});

// ---------------------------------------------------------------- regressions

describe('regressions', () => {
  it('step-up with tokens loaded from the store (no metadata in context) discovers PRM first', () => {
    const driver = loaded({ ...EXPIRED_TOKENS, expires_at: 9e12 });
    const effects = driver.send(
      unauthorized({ status: 403, wwwAuthenticate: 'Bearer error="insufficient_scope", scope="mcp:write"', tokenVersion: driver.snapshot.context.tokenVersion }),
    );
    expect(driver.matches('flow.resource.discovering')).toBe(true);
    expect(types(effects)).toEqual([`http.request GET ${PRM_PATH_URL}`]);
  });

  it('an authorization endpoint already carrying scope= fails instead of waiting for a callback that never comes', () => {
    const world = coldWorld({
      callback: undefined,
      routes: { ...coldWorld().routes, [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: asmDoc(ISSUER, { authorization_endpoint: `${ISSUER}/authorize?scope=openid` }) } },
    });
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized(), world);
    failedWith(driver, 'asm.invalid_authorization_endpoint');
  });
});

// ---------------------------------------------------------------- client identity across servers

describe('client identity', () => {
  function worldB(extra: Record<string, Route> = {}): World {
    return {
      routes: {
        [`GET ${PRM_PATH_URL}`]: { status: 200, body: prmDoc([ISSUER_B]) },
        [`GET ${asmUrl(ISSUER_B)}`]: { status: 200, body: asmDoc(ISSUER_B) },
        [`POST ${ISSUER_B}/register`]: { status: 201, body: { client_id: 'client-of-B' } },
        [`POST ${ISSUER_B}/token`]: { status: 200, body: TOKEN_RESPONSE },
        ...extra,
      },
      at: 1_000_000,
      callback: (url) => ({ code: 'code-b', state: url.searchParams.get('state') ?? '', iss: ISSUER_B }),
    };
  }

  it('a client bound to issuer A is never sent to issuer B: B gets a new registration', () => {
    const driver = new Driver(config());
    driver.send({ type: 'store.loaded', client: { value: { ...STORED_CLIENT, client_id: 'client-of-A', client_secret: 'secret-of-A', token_endpoint_auth_method: 'client_secret_basic' }, generation: 4 } });
    expect(driver.matches('ready.unauthenticated')).toBe(true);
    driver.run(unauthorized(), worldB());
    expect(driver.matches('ready.authorized'), stateOf(driver.snapshot)).toBe(true);
    expect(driver.requests().map((r) => `${r.method} ${r.url}`)).toEqual([
      `GET ${PRM_PATH_URL}`,
      `GET ${asmUrl(ISSUER_B)}`,
      `POST ${ISSUER_B}/register`,
      `POST ${ISSUER_B}/token`,
    ]);
    for (const effect of driver.effects) {
      if (effect.type === 'http.request' || effect.type === 'browser.open') {
        const text = JSON.stringify(effect);
        expect(text).not.toContain('client-of-A');
        expect(text).not.toContain('secret-of-A');
        expect(text).not.toContain(btoa('client-of-A:secret-of-A'));
      }
    }
    expect(browserUrl(driver.effects).searchParams.get('client_id')).toBe('client-of-B');
    const save = driver.effects.find((e) => e.type === 'store.save' && e.kind === 'client');
    expect(save?.type === 'store.save' && save.value).toMatchObject({ client_id: 'client-of-B', issuer: ISSUER_B });
    expect(save?.type === 'store.save' && save.ifGeneration).toBe(4);
  });

  it('a pre-registered client bound to A fails client.issuer_mismatch with B', () => {
    const driver = new Driver(
      config({
        preregistered: { client_id: 'pre-client', client_secret: 'pre-secret', token_endpoint_auth_method: 'client_secret_basic', redirect_uris: [REDIRECT], issuer: ISSUER },
      }),
    );
    driver.send({ type: 'store.loaded' });
    driver.run(unauthorized(), worldB());
    failedWith(driver, 'client.issuer_mismatch');
    expect(driver.requests().map((r) => r.url)).toEqual([PRM_PATH_URL, asmUrl(ISSUER_B)]);
    expect(JSON.stringify(driver.effects)).not.toContain('pre-secret');
    expect(driver.effects.some((e) => e.type === 'browser.open')).toBe(false);
  });

  it('a pre-registered client without issuer binds on first use (TOFU) and is refused elsewhere', () => {
    const pre = { client_id: 'pre-client', client_secret: 'pre-secret', token_endpoint_auth_method: 'client_secret_basic' as const, redirect_uris: [REDIRECT] };
    const first = new Driver(config({ preregistered: pre }));
    first.send({ type: 'store.loaded' });
    first.run(unauthorized(), coldWorld());
    expect(first.matches('ready.authorized'), stateOf(first.snapshot)).toBe(true);
    const save = first.effects.find((e) => e.type === 'store.save' && e.kind === 'client');
    expect(save?.type === 'store.save' && save.value).toMatchObject({ client_id: 'pre-client', issuer: ISSUER, source: 'preregistered' });
    expect(first.requests().some((r) => r.step === 'registration')).toBe(false);
    const [, secret] = atob((first.lastRequest().headers.authorization ?? '').slice(6)).split(':');
    expect(secret).toBe('pre-secret');

    const later = new Driver(config({ preregistered: pre }));
    later.send({ type: 'store.loaded', client: { value: (save as Extract<EngineEffect, { type: 'store.save' }>).value as ClientRecord, generation: 1 } });
    later.run(unauthorized(), worldB());
    failedWith(later, 'client.issuer_mismatch');
    expect(JSON.stringify(later.effects)).not.toContain('pre-secret');
  });

  it('uses the Client ID Metadata Document when the server supports it', () => {
    const cimd = 'https://app.example/oauth/client.json';
    const world = coldWorld({
      routes: { ...coldWorld().routes, [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: asmDoc(ISSUER, { client_id_metadata_document_supported: true }) } },
    });
    const driver = coldFlow(world, config({ clientMetadataUrl: cimd }));
    expect(driver.matches('ready.authorized'), stateOf(driver.snapshot)).toBe(true);
    expect(types(driver.effects)).toEqual([
      `http.request GET ${PRM_PATH_URL}`,
      `http.request GET ${asmUrl(ISSUER)}`,
      'redirect.prepare',
      'store.save client',
      'random.needed',
      'browser.open',
      `http.request POST ${ISSUER}/token`,
      'store.save tokens',
      'store.save discovery',
      'flow.done',
    ]);
    const prepare = driver.effects.find((e) => e.type === 'redirect.prepare');
    expect(prepare).toEqual({ type: 'redirect.prepare', preferredRedirectUri: REDIRECT, fixed: true });
    expect(browserUrl(driver.effects).searchParams.get('client_id')).toBe(cimd);
    expect(form(driver.lastRequest().body).client_id).toBe(cimd);
  });

  it('a CIMD client on a port it did not list fails callback.port_unavailable', () => {
    const world = coldWorld({
      redirectUri: 'http://127.0.0.1:40000/callback',
      routes: { ...coldWorld().routes, [`GET ${asmUrl(ISSUER)}`]: { status: 200, body: asmDoc(ISSUER, { client_id_metadata_document_supported: true }) } },
    });
    const driver = coldFlow(world, config({ clientMetadataUrl: 'https://app.example/oauth/client.json' }));
    failedWith(driver, 'callback.port_unavailable');
    expect(driver.effects.some((e) => e.type === 'browser.open')).toBe(false);
  });

  it('without CIMD support on the server, the metadata URL is not used', () => {
    const driver = coldFlow(coldWorld(), config({ clientMetadataUrl: 'https://app.example/oauth/client.json' }));
    expect(driver.requests().some((r) => r.step === 'registration')).toBe(true);
    expect(browserUrl(driver.effects).searchParams.get('client_id')).toBe('client-1');
  });
});

// ---------------------------------------------------------------- persistence and determinism

describe('persistence and determinism', () => {
  function replay(snapshot: Snapshot, events: EngineEvent[]): { effects: EngineEffect[]; final: Snapshot } {
    let current = snapshot;
    const effects: EngineEffect[] = [];
    for (const event of events) {
      const [next, actions] = transition(oauthMachine, current, event);
      current = next;
      effects.push(...effectsOf(actions));
    }
    return { effects, final: current };
  }

  it('every snapshot of the cold flow survives JSON and continues identically', () => {
    const driver = coldFlow();
    const { events, snapshots } = driver;
    expect(snapshots).toHaveLength(events.length + 1);
    const finalJson = JSON.stringify({ value: driver.snapshot.value, context: driver.snapshot.context });

    for (let i = 0; i < snapshots.length; i++) {
      const snapshot = snapshots[i] as Snapshot;
      const rest = events.slice(i);
      const expected = replay(snapshot, rest);
      const persisted = JSON.parse(JSON.stringify(createActor(oauthMachine, { snapshot, input: driver.input }).getPersistedSnapshot()));
      const plain = JSON.parse(JSON.stringify(snapshot));

      const viaResolve = oauthMachine.resolveState({ value: plain.value, context: plain.context });
      const viaActor = createActor(oauthMachine, { snapshot: persisted, input: driver.input }).getSnapshot();
      for (const restored of [viaResolve, viaActor]) {
        expect(restored.value).toEqual(snapshot.value);
        expect(JSON.stringify(restored.context)).toBe(JSON.stringify(snapshot.context));
        const resumed = replay(restored, rest);
        expect(JSON.stringify(resumed.effects), `after step ${i}`).toBe(JSON.stringify(expected.effects));
        // Same content; key order may differ (a JSON round trip drops keys holding undefined).
        expect(JSON.parse(JSON.stringify({ value: resumed.final.value, context: resumed.final.context }))).toEqual(JSON.parse(finalJson));
      }
    }
  });

  it('restoring the waiting snapshot does not re-emit the browser redirect', () => {
    const driver = toAwaitingCallback();
    const persisted = JSON.parse(JSON.stringify(createActor(oauthMachine, { snapshot: driver.snapshot, input: driver.input }).getPersistedSnapshot()));
    const actor = createActor(oauthMachine, { snapshot: persisted, input: driver.input });
    const seen: EngineEffect[] = [];
    actor.on('*', (effect) => seen.push(effect as EngineEffect));
    actor.start();
    expect(seen).toEqual([]);
    actor.send({ type: 'callback', params: { code: 'code-1', state: RANDOM.state, iss: ISSUER }, at: 2 });
    expect(types(seen)).toEqual([`http.request POST ${ISSUER}/token`]);
    actor.stop();
  });

  it('the same event script gives byte-identical effects and snapshots', () => {
    const a = coldFlow();
    const b = new Driver(config());
    for (const event of a.events) b.send(event);
    expect(JSON.stringify(b.effects)).toBe(JSON.stringify(a.effects));
    expect(JSON.stringify(b.snapshots.map((s) => ({ value: s.value, context: s.context })))).toBe(
      JSON.stringify(a.snapshots.map((s) => ({ value: s.value, context: s.context }))),
    );
    const c = coldFlow();
    expect(JSON.stringify(c.effects)).toBe(JSON.stringify(a.effects));
  });
});

// ---------------------------------------------------------------- RFC 8628

describe('device authorization (RFC 8628), the pure machine', () => {
  const DEVICE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';
  const deviceAsm = asmDoc(ISSUER, { device_authorization_endpoint: `${ISSUER}/device_authorization` });
  const deviceAnswer = { device_code: 'device-code-secret-0123', user_code: 'WDJB-MJHT', verification_uri: `${ISSUER}/device`, expires_in: 600, interval: 5 };

  /** Cold start to the first poll's timer, with the device endpoint offered and device interaction configured. */
  function toFirstPoll(extra: Partial<EngineConfig> = {}): Driver {
    const driver = new Driver(config({ interaction: 'device', ...extra }));
    driver.send({ type: 'store.loaded' });
    const world = coldWorld();
    world.routes[`GET ${asmUrl(ISSUER)}`] = { status: 200, body: deviceAsm };
    world.routes[`POST ${ISSUER}/device_authorization`] = { status: 200, body: deviceAnswer };
    driver.run(unauthorized(), world);
    expect(driver.matches({ flow: { authorize: 'awaitingDeviceApproval' } } as never), stateOf(driver.snapshot)).toBe(true);
    return driver;
  }

  const timers = (effects: EngineEffect[]) => effects.flatMap((e) => (e.type === 'timer.start' ? [e.delayMs] : []));

  it('registers the device grant, requests a device code with resource and scope, prompts, then polls at the server interval', () => {
    const driver = toFirstPoll();
    const registration = JSON.parse(driver.requests().find((r) => r.url === `${ISSUER}/register`)!.body!) as { grant_types: string[] };
    expect(registration.grant_types).toEqual(['authorization_code', 'refresh_token', DEVICE_GRANT]);
    const deviceRequest = new URLSearchParams(driver.requests().find((r) => r.url === `${ISSUER}/device_authorization`)!.body);
    expect(deviceRequest.get('client_id')).toBe('client-1');
    expect(deviceRequest.get('resource')).toBe(SERVER);
    expect(deviceRequest.get('scope')).toContain('mcp:read');
    const prompt = driver.effects.find((e) => e.type === 'device.prompt');
    expect(prompt).toEqual({ type: 'device.prompt', userCode: 'WDJB-MJHT', verificationUri: `${ISSUER}/device`, expiresAt: 1_000_000 + 600_000 });
    expect(JSON.stringify(prompt)).not.toContain('device-code-secret');
    expect(timers(driver.effects)).toEqual([5_000]);
    expect(driver.effects.some((e) => e.type === 'browser.open')).toBe(false);
  });

  it('authorization_pending keeps the interval, slow_down adds 5 s for good, tokens end the wait', () => {
    const driver = toFirstPoll();
    driver.send({ type: 'timeout', id: 'device.poll' });
    const poll = new URLSearchParams(driver.lastRequest().body);
    expect(poll.get('grant_type')).toBe(DEVICE_GRANT);
    expect(poll.get('device_code')).toBe('device-code-secret-0123');
    expect(poll.get('resource')).toBe(SERVER);
    expect(timers(driver.respond(400, { error: 'authorization_pending' }))).toEqual([5_000]);
    driver.send({ type: 'timeout', id: 'device.poll' });
    expect(timers(driver.respond(400, { error: 'slow_down' }))).toEqual([10_000]);
    driver.send({ type: 'timeout', id: 'device.poll' });
    expect(timers(driver.respond(400, { error: 'authorization_pending' }))).toEqual([10_000]);
    driver.send({ type: 'timeout', id: 'device.poll' });
    const done = driver.respond(200, TOKEN_RESPONSE);
    expect(driver.matches({ ready: 'authorized' } as never)).toBe(true);
    expect(types(done)).toEqual(['store.save tokens', 'store.save discovery', 'flow.done']);
    expect(driver.snapshot.context.device).toBeUndefined();
    expect(driver.snapshot.context.tokens?.resource).toBe(SERVER);
  });

  it('a poll answered after the device code lapsed ends with device.expired, not another poll', () => {
    const driver = toFirstPoll();
    driver.send({ type: 'timeout', id: 'device.poll' });
    driver.send({ type: 'http.response', id: driver.lastRequest().id, status: 400, headers: {}, body: '{"error":"authorization_pending"}', at: 1_000_000 + 600_000 });
    failedWith(driver, 'device.expired');
  });

  it('the approval deadline passing while a poll is in flight ends the wait; the late answer is ignored', () => {
    const driver = toFirstPoll();
    driver.send({ type: 'timeout', id: 'device.poll' });
    const poll = driver.lastRequest();
    driver.send({ type: 'timeout', id: 'callback' });
    failedWith(driver, 'callback.timeout');
    expect(driver.respond(200, TOKEN_RESPONSE, poll.id)).toEqual([]);
    expect(driver.matches('failed')).toBe(true);
    expect(driver.snapshot.context.tokens).toBeUndefined();
  });

  it('access_denied and expired_token are final, typed; a timeout backs off (doubling), a redirect is final', () => {
    for (const [error, code] of [['access_denied', 'token.access_denied'], ['expired_token', 'token.expired_token']] as const) {
      const driver = toFirstPoll();
      driver.send({ type: 'timeout', id: 'device.poll' });
      driver.respond(400, { error });
      failedWith(driver, code);
    }
    const driver = toFirstPoll();
    driver.send({ type: 'timeout', id: 'device.poll' });
    const backOff = driver.send({ type: 'http.failed', id: driver.lastRequest().id, reason: 'timeout', message: 'no answer', at: 1_000_000 });
    expect(timers(backOff)).toEqual([10_000]);
    driver.send({ type: 'timeout', id: 'device.poll' });
    driver.send({ type: 'http.failed', id: driver.lastRequest().id, reason: 'redirect', message: 'not followed', at: 1_000_000 });
    failedWith(driver, 'network.redirect');
  });

  it('a server interval of 0 is raised to the policy floor; without the device endpoint the browser flow runs', () => {
    const driver = new Driver(config({ interaction: 'device' }));
    driver.send({ type: 'store.loaded' });
    const world = coldWorld();
    world.routes[`GET ${asmUrl(ISSUER)}`] = { status: 200, body: deviceAsm };
    world.routes[`POST ${ISSUER}/device_authorization`] = { status: 200, body: { ...deviceAnswer, interval: 0 } };
    driver.run(unauthorized(), world);
    expect(timers(driver.effects)).toEqual([DEFAULT_POLICY.minDevicePollIntervalMs]);

    const browser = new Driver(config({ interaction: 'device' }));
    browser.send({ type: 'store.loaded' });
    browser.run(unauthorized(), coldWorld());
    expect(browser.matches({ ready: 'authorized' } as never)).toBe(true);
    expect(browser.effects.some((e) => e.type === 'browser.open')).toBe(true);
    const registration = JSON.parse(browser.requests().find((r) => r.url === `${ISSUER}/register`)!.body!) as { grant_types: string[] };
    expect(registration.grant_types).not.toContain(DEVICE_GRANT);
  });

  it('a stored dynamic client registered without the device grant is registered again', () => {
    const stored: ClientRecord = { client_id: 'old-client', token_endpoint_auth_method: 'none', redirect_uris: [REDIRECT], issuer: ISSUER, source: 'dynamic' };
    const driver = new Driver(config({ interaction: 'device' }));
    driver.send({ type: 'store.loaded', client: { value: stored, generation: 1 } });
    const world = coldWorld();
    world.routes[`GET ${asmUrl(ISSUER)}`] = { status: 200, body: deviceAsm };
    world.routes[`POST ${ISSUER}/device_authorization`] = { status: 200, body: deviceAnswer };
    driver.run(unauthorized(), world);
    expect(driver.requests().filter((r) => r.url === `${ISSUER}/register`)).toHaveLength(1);
    expect(new URLSearchParams(driver.requests().find((r) => r.url === `${ISSUER}/device_authorization`)!.body).get('client_id')).toBe('client-1');
  });

  it('a hostile device answer (javascript: verification URI, escape sequences in the user code) fails before any prompt', () => {
    for (const body of [
      { ...deviceAnswer, verification_uri: 'javascript:alert(1)' },
      { ...deviceAnswer, user_code: 'ABCD\u001b[2J' },
      { ...deviceAnswer, verification_uri: `${ISSUER}/device\u0007` },
      { ...deviceAnswer, expires_in: -1 },
    ]) {
      const driver = new Driver(config({ interaction: 'device' }));
      driver.send({ type: 'store.loaded' });
      const world = coldWorld();
      world.routes[`GET ${asmUrl(ISSUER)}`] = { status: 200, body: deviceAsm };
      world.routes[`POST ${ISSUER}/device_authorization`] = { status: 200, body };
      driver.run(unauthorized(), world);
      failedWith(driver, 'device.invalid_response');
      expect(driver.effects.some((e) => e.type === 'device.prompt' || e.type === 'timer.start')).toBe(false);
    }
  });
});

describe('records adopted from the store', () => {
  it('newer tokens without their client or discovery record (evicted) keep the ones held for the same issuer, at generation 0', () => {
    const driver = loaded();
    const newer = { ...EXPIRED_TOKENS, access_token: 'sibling-access', refresh_token: 'sibling-refresh' };
    driver.send({ type: 'store.loaded', tokens: { value: newer, generation: 8 } });
    expect(driver.snapshot.context.tokens?.access_token).toBe('sibling-access');
    expect(driver.snapshot.context.client?.client_id).toBe('client-1');
    expect(driver.snapshot.context.discovery?.token_endpoint).toBe(`${ISSUER}/token`);
    expect(driver.snapshot.context.generations).toEqual({ tokens: 8, client: 0, discovery: 0 });
    // A refresh can still run: it needs the client and the token endpoint.
    driver.send({ type: 'token.check', at: 3_600_000 });
    expect(driver.lastRequest().url).toBe(`${ISSUER}/token`);
  });

  it('tokens from another issuer, or no tokens at all, drop what was held', () => {
    const driver = loaded();
    driver.send({ type: 'store.loaded', tokens: { value: { ...EXPIRED_TOKENS, issuer: ISSUER_B }, generation: 8 } });
    expect(driver.snapshot.context.client).toBeUndefined();
    expect(driver.snapshot.context.discovery).toBeUndefined();
    const signedOut = loaded();
    signedOut.send({ type: 'store.loaded' });
    expect(signedOut.snapshot.context.client).toBeUndefined();
    expect(signedOut.snapshot.context.tokens).toBeUndefined();
  });
});
