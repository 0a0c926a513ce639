/**
 * The MCP authorization statechart. Every OAuth step is a state; the machine performs no I/O: it
 * emits effects (`http.request`, `browser.open`, `store.save` …) and waits for the events that
 * answer them. Guards and actions are named here and implemented in `oauth.logic.ts` and `steps/`.
 */
import { and, assign, emit, enqueueActions, not, raise, setup } from 'xstate';
import { flowError, type FlowErrorData } from './errors.js';
import { scrubSecrets, secretValues } from './redact.js';
import * as logic from './oauth.logic.js';
import type { EngineContext, EngineEffect, EngineEvent, EngineInput } from './oauth.types.js';
import { buildRegistrationRequest } from './steps/registration.js';
import { buildCodeExchangeRequest, buildRefreshRequest } from './steps/token.js';
import { buildRevocationRequest } from './steps/revocation.js';
import { devicePollStatus, nextDeviceInterval } from './steps/device.js';
import type { DiscoveryRecord } from './store.js';

function initialContext(input: EngineInput): EngineContext {
  return {
    config: input,
    seq: 0,
    now: 0,
    tokenVersion: 0,
    generations: { tokens: 0, client: 0, discovery: 0 },
    prmCandidates: [],
    prmIndex: 0,
    legacy: false,
    asmCandidates: [],
    asmIndex: 0,
    rejectedCallbacks: 0,
    authorizationCount: 0,
    refreshCount: 0,
    operationAuthorizations: 0,
    notices: [],
  };
}

/** A metadata document's answer, or the failure to get one, is judged in `validating` (candidates may follow). */
const metadataAnswer = {
  'http.response': { guard: 'isPending', target: 'validating', actions: 'recordResponse' },
  'http.failed': { guard: 'isPending', target: 'validating', actions: 'recordResponse' },
} as const;

/** The user agent, the entropy source or the prompt failed: the error the adapter sent is the flow's. */
const FAIL_WITH_INTERACTION_ERROR = {
  type: 'fail',
  params: ({ event }: { event: EngineEvent }) => ({ error: event.type === 'interaction.failed' ? event.error : unknownError() }),
} as const;

/** The session's approval deadline (`callbackMs`) passed before the device authorization was approved. */
const DEVICE_APPROVAL_TIMEOUT = flowError('flow', 'callback.timeout', 'the device authorization was not approved before the deadline');

function problemOf(outcome: { ok: boolean; error?: { fatal: boolean; error: FlowErrorData } }): FlowErrorData | undefined {
  return outcome.ok ? undefined : outcome.error?.error;
}

export const oauthMachine = setup({
  types: {
    context: {} as EngineContext,
    events: {} as EngineEvent,
    emitted: {} as EngineEffect,
    input: {} as EngineInput,
  },
  guards: {
    isPending: ({ context, event }) => logic.isPending(context, event),
    loadedTokens: ({ event }) => event.type === 'store.loaded' && event.tokens !== undefined,
    hasTokens: ({ context }) => context.tokens !== undefined,
    tokenFresh: ({ context, event }) => logic.tokenFresh(context, event),
    canRefresh: ({ context }) => logic.canRefresh(context),
    refreshAlreadyTried: ({ event }) => logic.refreshAlreadyTried(event),
    isInsufficientScope: ({ event }) => logic.isInsufficientScope(event),
    requestUsedStaleToken: ({ context, event }) => logic.requestUsedStaleToken(context, event),
    authorizationBudgetSpent: ({ context, event }) => logic.authorizationBudgetSpent(context, event),
    stepUpAddsNothing: ({ context, event }) => logic.stepUpAddsNothing(context, event),
    metadataKnown: ({ context }) => context.asm !== undefined && context.issuer !== undefined,

    prmUsable: ({ context }) => logic.prmOutcome(context).ok,
    prmFatal: ({ context }) => {
      const outcome = logic.prmOutcome(context);
      return !outcome.ok && outcome.error.fatal;
    },
    morePrmCandidates: ({ context }) => logic.morePrmCandidates(context),
    legacyFallbackAllowed: ({ context }) => context.config.policy.legacyFallback,

    asmUsable: ({ context }) => logic.asmOutcome(context).ok,
    asmFatal: ({ context }) => {
      const outcome = logic.asmOutcome(context);
      return !outcome.ok && outcome.error.fatal;
    },
    moreAsmCandidates: ({ context }) => logic.moreAsmCandidates(context),
    inLegacyMode: ({ context }) => context.legacy,

    fixedRedirectUnavailable: ({ context }) => logic.fixedRedirectMismatch(context),
    storedClientUsable: ({ context }) => logic.clientPlan(context) === 'stored',
    preregisteredBoundElsewhere: ({ context }) => logic.clientPlan(context) === 'preregisteredElsewhere',
    preregisteredClient: ({ context }) => logic.clientPlan(context) === 'preregistered',
    clientIdMetadataDocument: ({ context }) => logic.clientPlan(context) === 'cimd',
    dynamicRegistration: ({ context }) => logic.clientPlan(context) === 'dynamic',
    registrationAccepted: ({ context, event }) => logic.registrationOutcome(context, event).ok,

    deviceAuthorizationOffered: ({ context }) => logic.deviceAuthorizationOffered(context),
    deviceAuthorizationIssued: ({ context, event }) => logic.deviceAuthorizationOutcome(context, event).ok,
    devicePollAgain: ({ context, event }) => logic.devicePollAgain(context, event),
    devicePollRetryable: ({ context, event }) => logic.devicePollRetryable(context, event),
    isDevicePollDue: ({ event }) => event.type === 'timeout' && event.id === 'device.poll',

    authorizationUrlValid: ({ context, event }) => logic.authorizationUrlFor(context, event) !== undefined,
    callbackIgnored: ({ context }) => logic.callbackVerdict(context).kind === 'ignore',
    callbackFailed: ({ context }) => logic.callbackVerdict(context).kind === 'fail',
    isCallbackTimeout: ({ event }) => event.type === 'timeout' && event.id === 'callback',

    tokensIssued: ({ context, event }) => logic.tokenOutcome(context, event).ok,
    refreshSucceeded: ({ context, event }) => logic.tokenOutcome(context, event, context.tokens).ok,
    refreshRejectedGrant: ({ context, event }) => logic.refreshRejectedGrant(context, event),
    refreshRejectedClient: ({ context, event }) => logic.refreshRejectedClient(context, event),

    // Machine-to-machine grants (issue 4): chosen by configuration, never by a server's answer.
    clientCredentialsGrant: ({ context }) => logic.grantIs(context, 'client_credentials'),
    jwtBearerGrant: ({ context }) => logic.grantIs(context, 'jwt_bearer'),
    enterpriseGrant: ({ context }) => logic.grantIs(context, 'enterprise'),
    idJagIssued: ({ event }) => logic.tokenExchangeOutcome(event).ok,
    canRevoke: ({ context }) => logic.canRevoke(context),
    revocationAccepted: ({ context, event }) => logic.revocationAccepted(context, event),
  },
  actions: {
    loadRecords: assign(({ context, event }) => {
      if (event.type !== 'store.loaded') return {};
      // Tokens without the client or discovery record they came with: a store that evicts keys
      // (Redis under maxmemory) lost those; the ones held for the same issuer still describe them.
      const issuer = event.tokens?.value.issuer;
      const keptClient = event.client === undefined && issuer !== undefined && context.client?.issuer === issuer ? context.client : undefined;
      const keptDiscovery = event.discovery === undefined && issuer !== undefined && context.discovery?.issuer === issuer ? context.discovery : undefined;
      return {
        tokens: event.tokens?.value,
        client: event.client?.value ?? keptClient,
        discovery: event.discovery?.value ?? keptDiscovery,
        tokenVersion: context.tokenVersion + 1,
        generations: {
          tokens: event.tokens?.generation ?? 0,
          client: event.client?.generation ?? 0,
          discovery: event.discovery?.generation ?? 0,
        },
      };
    }),
    recordNetworkClass: assign(({ event }) => (event.type === 'network.classified' ? { networkClass: event.networkClass } : {})),
    recordGeneration: assign(({ context, event }) =>
      event.type === 'store.saved' ? { generations: { ...context.generations, [event.kind]: event.generation } } : {},
    ),

    beginFlow: assign(({ context, event }) => {
      const challenge = logic.challengeFrom(event) ?? context.challenge;
      return {
        challenge,
        now: 'at' in event ? event.at : context.now,
        operationAuthorizations: event.type === 'unauthorized' ? event.authorizations : 0,
        prmCandidates: logic.prmCandidatesFor(context, challenge),
        prmIndex: 0,
        prm: undefined,
        resourceMetadataUrl: undefined,
        issuer: undefined,
        legacy: false,
        asm: undefined,
        asmCandidates: [],
        asmIndex: 0,
        transaction: undefined,
        code: undefined,
        lastCallback: undefined,
        error: undefined,
      };
    }),
    beginStepUp: assign(({ context, event }) => ({
      scopeFloor: logic.stepUpScope(context, event),
      challenge: logic.challengeFrom(event),
      now: 'at' in event ? event.at : context.now,
      operationAuthorizations: event.type === 'unauthorized' ? event.authorizations : 0,
      error: undefined,
    })),
    replayEvent: raise(({ event }) => event),
    clearError: assign({ error: undefined }),

    requestResourceMetadata: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const request = logic.prmRequest(context, id);
      enqueue.assign({ seq, pendingId: id, lastResponse: undefined });
      if (request) enqueue.emit({ type: 'http.request', request });
    }),
    recordResponse: assign(({ event }) => ({ lastResponse: logic.lastResponseFrom(event), pendingId: undefined })),
    advanceResourceCandidate: assign(({ context }) => ({ prmIndex: context.prmIndex + 1 })),
    acceptResourceMetadata: assign(({ context }) => {
      const outcome = logic.prmOutcome(context);
      if (!outcome.ok) return {};
      const candidate = context.prmCandidates[context.prmIndex];
      const issuer = logic.chooseIssuer(context, outcome.value);
      return {
        prm: outcome.value,
        resourceMetadataUrl: candidate?.url,
        issuer,
        asmCandidates: logic.asmCandidatesFor(issuer),
        asmIndex: 0,
        lastResponse: undefined,
      };
    }),
    enterLegacyMode: enqueueActions(({ context, enqueue }) => {
      const legacy = logic.legacyCandidates(context);
      const notice = { code: 'legacy.no_prm', message: 'no protected resource metadata: 2025-03-26 discovery at the server origin' };
      enqueue.assign({
        legacy: true,
        issuer: legacy.issuer,
        asmCandidates: legacy.candidates,
        asmIndex: 0,
        lastResponse: undefined,
        notices: [...context.notices, notice],
      });
      enqueue.emit({ type: 'notice', notice });
    }),

    requestAuthorizationServerMetadata: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const request = logic.asmRequest(context, id);
      enqueue.assign({ seq, pendingId: id, lastResponse: undefined });
      if (request) enqueue.emit({ type: 'http.request', request });
    }),
    advanceAuthServerCandidate: assign(({ context }) => ({ asmIndex: context.asmIndex + 1 })),
    acceptAuthServerMetadata: enqueueActions(({ context, enqueue }) => {
      const outcome = logic.asmOutcome(context);
      if (!outcome.ok) return;
      const next = { ...context, asm: outcome.value, issuer: outcome.value.issuer };
      const pkce = logic.pkceNotice(next);
      const notices = pkce === undefined ? context.notices : [...context.notices, { code: 'pkce.exception', message: pkce }];
      enqueue.assign({ asm: outcome.value, issuer: outcome.value.issuer, lastResponse: undefined, notices });
      if (pkce !== undefined) enqueue.emit({ type: 'notice', notice: { code: 'pkce.exception', message: pkce } });
    }),
    adoptLegacyDefaults: enqueueActions(({ context, enqueue }) => {
      const notice = { code: 'legacy.default_endpoints', message: 'no authorization server metadata: default /authorize /token /register, PKCE S256' };
      enqueue.assign({ asm: logic.legacyDefaultMetadata(context), lastResponse: undefined, notices: [...context.notices, notice] });
      enqueue.emit({ type: 'notice', notice });
    }),

    selectScope: assign(({ context }) => ({ requestedScope: logic.scopeForFlow(context) })),

    prepareRedirect: emit(({ context }) => ({ type: 'redirect.prepare' as const, ...logic.preferredRedirect(context) })),
    assignRedirectUri: assign(({ event }) => (event.type === 'redirect.ready' ? { redirectUri: event.redirectUri } : {})),

    adoptPreregisteredClient: enqueueActions(({ context, enqueue }) => {
      const record = logic.preregisteredRecord(context);
      if (!record) return;
      enqueue.assign({ client: record });
      // Trust on first use: the binding to this issuer is what later keeps the secret from another one.
      enqueue.emit({ type: 'store.save', kind: 'client', value: record, ifGeneration: context.generations.client });
    }),
    adoptClientIdMetadataDocument: enqueueActions(({ context, enqueue }) => {
      const record = logic.cimdRecord(context);
      if (!record) return;
      enqueue.assign({ client: record });
      enqueue.emit({ type: 'store.save', kind: 'client', value: record, ifGeneration: context.generations.client });
    }),
    requestRegistration: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const endpoint = context.asm?.registration_endpoint;
      enqueue.assign({ seq, pendingId: id });
      if (endpoint === undefined || context.redirectUri === undefined) return;
      const { redirect_uris: _ignored, ...metadata } = context.config.clientMetadata;
      const scope = logic.registrationScope(context);
      enqueue.emit({
        type: 'http.request',
        request: buildRegistrationRequest(id, {
          endpoint,
          metadata,
          redirectUri: context.redirectUri,
          ...(scope === undefined ? {} : { scope }),
          authMethod: logic.registrationAuthMethod(context),
          grantTypes: logic.registrationGrantTypes(context),
        }),
      });
    }),
    adoptRegisteredClient: enqueueActions(({ context, event, enqueue }) => {
      const outcome = logic.registrationOutcome(context, event);
      if (!outcome.ok) return;
      enqueue.assign({ client: outcome.value, pendingId: undefined });
      enqueue.emit({ type: 'store.save', kind: 'client', value: outcome.value, ifGeneration: context.generations.client });
    }),

    requestEntropy: emit({ type: 'random.needed' as const }),
    openAuthorizationUrl: enqueueActions(({ context, event, enqueue }) => {
      if (event.type !== 'random' || !context.asm || !context.client || context.redirectUri === undefined || context.issuer === undefined) return;
      const resource = logic.resourceFor(context);
      const url = logic.authorizationUrlFor(context, event);
      if (url === undefined) return;
      // MCP 2026-07-28: the validated issuer is recorded with the verifier and state before redirecting.
      enqueue.assign({
        transaction: {
          state: event.state,
          codeVerifier: event.codeVerifier,
          issuer: context.issuer,
          issAdvertised: context.asm.authorization_response_iss_parameter_supported === true,
          redirectUri: context.redirectUri,
          resource,
          ...(context.requestedScope === undefined ? {} : { scope: context.requestedScope }),
          clientId: context.client.client_id,
          authorizationUrl: url,
        },
        authorizationCount: context.authorizationCount + 1,
        rejectedCallbacks: 0,
      });
      enqueue.emit({ type: 'browser.open', url, redirectUri: context.redirectUri });
    }),
    recordCallback: assign(({ event }) => (event.type === 'callback' ? { lastCallback: event.params, now: event.at } : {})),
    countRejectedCallback: assign(({ context }) => {
      const verdict = logic.callbackVerdict(context);
      return {
        rejectedCallbacks: context.rejectedCallbacks + 1,
        lastCallback: undefined,
        ...(verdict.kind === 'ignore' ? { lastRejection: verdict.reason } : {}),
      };
    }),
    requestDeviceAuthorization: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const request = logic.deviceAuthorizationRequest(context, id);
      enqueue.assign({ seq, pendingId: id, authorizationCount: context.authorizationCount + 1 });
      if (request) enqueue.emit({ type: 'http.request', request });
    }),
    acceptDeviceAuthorization: enqueueActions(({ context, event, enqueue }) => {
      const outcome = logic.deviceAuthorizationOutcome(context, event);
      if (!outcome.ok || !context.client || context.issuer === undefined) return;
      const { deviceCode, intervalMs, ...prompt } = outcome.value;
      enqueue.assign({
        pendingId: undefined,
        device: {
          ...outcome.value,
          issuer: context.issuer,
          resource: logic.resourceFor(context),
          ...(context.requestedScope === undefined ? {} : { scope: context.requestedScope }),
          clientId: context.client.client_id,
        },
      });
      enqueue.emit({ type: 'device.prompt', ...prompt });
    }),
    scheduleDevicePoll: enqueueActions(({ context, enqueue }) => {
      if (context.device) enqueue.emit({ type: 'timer.start', id: 'device.poll', delayMs: context.device.intervalMs });
    }),
    requestDeviceToken: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const request = logic.deviceTokenRequest(context, id);
      enqueue.assign({ seq, pendingId: id });
      if (request) enqueue.emit({ type: 'http.request', request });
    }),
    slowDevicePolling: assign(({ context, event }) => {
      if (!context.device) return {};
      const answer = event.type === 'http.failed' ? 'network' : event.type === 'http.response' && devicePollStatus(event) === 'slow_down' ? 'slow_down' : 'authorization_pending';
      return { pendingId: undefined, device: { ...context.device, intervalMs: nextDeviceInterval(context.device.intervalMs, answer) } };
    }),

    acceptAuthorizationCode: assign(({ context }) => {
      const verdict = logic.callbackVerdict(context);
      return verdict.kind === 'code' ? { code: verdict.code, lastCallback: undefined } : {};
    }),

    requestCodeExchange: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      enqueue.assign({ seq, pendingId: id });
      const { asm, client, transaction, code } = context;
      if (!asm || !client || !transaction || code === undefined) return;
      enqueue.emit({
        type: 'http.request',
        request: logic.withDpop(
          context,
          buildCodeExchangeRequest(id, {
            tokenEndpoint: asm.token_endpoint,
            client,
            code,
            codeVerifier: transaction.codeVerifier,
            redirectUri: transaction.redirectUri,
            resource: transaction.resource,
          }),
        ),
      });
    }),
    storeIssuedTokens: enqueueActions(({ context, event, enqueue }) => {
      const outcome = logic.tokenOutcome(context, event);
      const authorization = context.transaction ?? context.device;
      if (!outcome.ok || !context.asm || !authorization) return;
      const discovery: DiscoveryRecord = {
        issuer: authorization.issuer,
        token_endpoint: context.asm.token_endpoint,
        ...(context.asm.revocation_endpoint === undefined ? {} : { revocation_endpoint: context.asm.revocation_endpoint }),
        resource: authorization.resource,
        ...(context.resourceMetadataUrl === undefined ? {} : { resource_metadata_url: context.resourceMetadataUrl }),
        legacy: context.legacy,
      };
      enqueue.assign({
        tokens: outcome.value,
        tokenVersion: context.tokenVersion + 1,
        discovery,
        pendingId: undefined,
        // The code and verifier are single-use: nothing of the transaction outlives the exchange.
        transaction: undefined,
        code: undefined,
        device: undefined,
        scopeFloor: undefined,
        challenge: undefined,
      });
      enqueue.emit({ type: 'store.save', kind: 'tokens', value: outcome.value, ifGeneration: context.generations.tokens });
      enqueue.emit({ type: 'store.save', kind: 'discovery', value: discovery, ifGeneration: context.generations.discovery });
    }),

    requestRefresh: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      enqueue.assign({ seq, pendingId: id });
      const { tokens, discovery, client } = context;
      if (!tokens?.refresh_token || !discovery || !client) return;
      enqueue.emit({
        type: 'http.request',
        request: logic.withDpop(
          context,
          buildRefreshRequest(id, {
            tokenEndpoint: discovery.token_endpoint,
            client,
            refreshToken: tokens.refresh_token,
            resource: tokens.resource,
          }),
          tokens,
        ),
      });
    }),
    storeRefreshedTokens: enqueueActions(({ context, event, enqueue }) => {
      const outcome = logic.tokenOutcome(context, event, context.tokens);
      if (!outcome.ok) return;
      enqueue.assign({ tokens: outcome.value, tokenVersion: context.tokenVersion + 1, refreshCount: context.refreshCount + 1, pendingId: undefined });
      enqueue.emit({ type: 'store.save', kind: 'tokens', value: outcome.value, ifGeneration: context.generations.tokens });
    }),
    // Compare-and-delete of the generation that failed: a newer one written by a sibling survives.
    invalidateTokens: enqueueActions(({ context, enqueue }) => {
      enqueue.assign({ tokens: undefined, tokenVersion: context.tokenVersion + 1, pendingId: undefined });
      if (context.generations.tokens > 0) enqueue.emit({ type: 'store.clear', kind: 'tokens', ifGeneration: context.generations.tokens });
    }),
    invalidateClient: enqueueActions(({ context, enqueue }) => {
      enqueue.assign({ client: undefined });
      if (context.generations.client > 0) enqueue.emit({ type: 'store.clear', kind: 'client', ifGeneration: context.generations.client });
    }),

    // RFC 7009: the endpoint and identity come from the records the tokens were stored with.
    requestRevocation: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      enqueue.assign({ seq, pendingId: id });
      const { tokens, discovery, client } = context;
      if (!tokens || discovery?.revocation_endpoint === undefined || !client) return;
      enqueue.emit({ type: 'http.request', request: buildRevocationRequest(id, { revocationEndpoint: discovery.revocation_endpoint, client, tokens }) });
    }),
    /** Signed out whatever the server said: a refusal is a notice, the local tokens go anyway (compare-and-delete). */
    noteRevocationProblem: enqueueActions(({ context, event, enqueue }) => {
      const problem = logic.revocationProblem(event);
      const notice = { code: problem.code, message: problem.message };
      enqueue.assign({ notices: [...context.notices, notice] });
      enqueue.emit({ type: 'notice', notice });
    }),
    forgetTokens: enqueueActions(({ context, enqueue }) => {
      enqueue.assign({ tokens: undefined, tokenVersion: context.tokens ? context.tokenVersion + 1 : context.tokenVersion, pendingId: undefined });
      if (context.generations.tokens > 0) enqueue.emit({ type: 'store.clear', kind: 'tokens', ifGeneration: context.generations.tokens });
    }),
    requestGrantToken: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const grantRequest = logic.grantRequest(context, id);
      const request = grantRequest && logic.withDpop(context, grantRequest);
      // A grant run is this flow's authorization: a 401 to the token it yields is final for the request.
      enqueue.assign({ seq, pendingId: id, authorizationCount: context.authorizationCount + 1 });
      if (request) enqueue.emit({ type: 'http.request', request });
    }),
    requestTokenExchange: enqueueActions(({ context, enqueue }) => {
      const { seq, id } = logic.nextRequestId(context);
      const request = logic.tokenExchangeRequest(context, id);
      enqueue.assign({ seq, pendingId: id, idJag: undefined });
      if (request) enqueue.emit({ type: 'http.request', request });
    }),
    acceptIdJag: assign(({ event }) => {
      const outcome = logic.tokenExchangeOutcome(event);
      return outcome.ok ? { idJag: outcome.value, pendingId: undefined } : {};
    }),
    storeGrantTokens: enqueueActions(({ context, event, enqueue }) => {
      const outcome = logic.tokenOutcome(context, event);
      if (!outcome.ok || !context.asm || context.issuer === undefined) return;
      const discovery: DiscoveryRecord = {
        issuer: context.issuer,
        token_endpoint: context.asm.token_endpoint,
        ...(context.asm.revocation_endpoint === undefined ? {} : { revocation_endpoint: context.asm.revocation_endpoint }),
        resource: outcome.value.resource,
        ...(context.resourceMetadataUrl === undefined ? {} : { resource_metadata_url: context.resourceMetadataUrl }),
        legacy: context.legacy,
      };
      enqueue.assign({
        tokens: outcome.value,
        tokenVersion: context.tokenVersion + 1,
        discovery,
        pendingId: undefined,
        idJag: undefined,
        scopeFloor: undefined,
        challenge: undefined,
      });
      enqueue.emit({ type: 'store.save', kind: 'tokens', value: outcome.value, ifGeneration: context.generations.tokens });
      enqueue.emit({ type: 'store.save', kind: 'discovery', value: discovery, ifGeneration: context.generations.discovery });
    }),

    announceDone: emit({ type: 'flow.done' as const }),
    fail: enqueueActions(({ context, enqueue }, params: { error: FlowErrorData }) => {
      // A server may echo a secret it received (C100): the message must not carry it further.
      const error = { ...params.error, message: scrubSecrets(params.error.message, secretValues(context)) };
      enqueue.assign({ error, pendingId: undefined, transaction: undefined, code: undefined, device: undefined, idJag: undefined, lastResponse: undefined });
      enqueue.emit({ type: 'flow.failed', error });
    }),
  },
}).createMachine({
  id: 'oauth',
  initial: 'restoring',
  context: ({ input }) => initialContext(input),
  on: {
    'store.saved': { actions: 'recordGeneration' },
    'network.classified': { actions: 'recordNetworkClass' },
  },
  states: {
    restoring: {
      on: {
        'store.loaded': [
          { guard: 'loadedTokens', target: 'ready.authorized', actions: 'loadRecords' },
          { target: 'ready.unauthenticated', actions: 'loadRecords' },
        ],
      },
    },

    ready: {
      tags: ['settled'],
      initial: 'unauthenticated',
      on: {
        // Another process refreshed or signed in while we waited for the lease: adopt its records.
        'store.loaded': [
          { guard: 'loadedTokens', target: '.authorized', actions: 'loadRecords' },
          { target: '.unauthenticated', actions: 'loadRecords' },
        ],
        logout: [
          { guard: 'canRevoke', target: '#oauth.revoking' },
          { target: '.unauthenticated', actions: ['forgetTokens', 'announceDone'] },
        ],
      },
      states: {
        authorized: {
          on: {
            'token.check': [
              { guard: 'tokenFresh' },
              { guard: 'canRefresh', target: '#oauth.refreshing' },
              { target: '#oauth.flow', actions: 'beginFlow' },
            ],
            unauthorized: [
              { guard: 'requestUsedStaleToken' },
              { guard: 'authorizationBudgetSpent', target: '#oauth.failed', actions: { type: 'fail', params: { error: flowError('flow', 'flow.authorization_limit', 'authorization attempts for this request are spent') } } },
              { guard: and(['isInsufficientScope', 'stepUpAddsNothing']), target: '#oauth.failed', actions: { type: 'fail', params: { error: flowError('flow', 'scope.insufficient', 'the server demands scope already granted; re-authorizing would not help') } } },
              { guard: 'isInsufficientScope', target: '#oauth.stepUp', actions: 'beginStepUp' },
              { guard: and(['canRefresh', not('refreshAlreadyTried')]), target: '#oauth.refreshing' },
              { target: '#oauth.flow', actions: 'beginFlow' },
            ],
          },
        },
        unauthenticated: {
          on: {
            unauthorized: [
              { guard: 'authorizationBudgetSpent', target: '#oauth.failed', actions: { type: 'fail', params: { error: flowError('flow', 'flow.authorization_limit', 'authorization attempts for this request are spent') } } },
              { target: '#oauth.flow', actions: 'beginFlow' },
            ],
          },
        },
      },
    },

    refreshing: {
      tags: ['busy'],
      entry: 'requestRefresh',
      on: {
        'http.response': [
          { guard: and(['isPending', 'refreshSucceeded']), target: 'ready.authorized', actions: ['storeRefreshedTokens', 'announceDone'] },
          { guard: and(['isPending', 'refreshRejectedGrant']), target: 'flow', actions: ['invalidateTokens', 'beginFlow'] },
          { guard: and(['isPending', 'refreshRejectedClient']), target: 'flow', actions: ['invalidateTokens', 'invalidateClient', 'beginFlow'] },
          {
            guard: 'isPending',
            target: 'failed',
            actions: { type: 'fail', params: ({ context, event }) => ({ error: failure(logic.tokenOutcome(context, event, context.tokens)) }) },
          },
        ],
        'http.failed': {
          guard: 'isPending',
          target: 'failed',
          actions: { type: 'fail', params: ({ event }) => ({ error: logic.networkError('refresh', event) }) },
        },
        cancel: { target: 'failed', actions: { type: 'fail', params: { error: flowError('flow', 'flow.cancelled', 'cancelled') } } },
      },
    },

    // RFC 7009 sign-out: one revocation request, then the tokens are forgotten whatever it answered.
    revoking: {
      tags: ['busy'],
      entry: 'requestRevocation',
      on: {
        'http.response': [
          { guard: 'revocationAccepted', target: 'ready.unauthenticated', actions: ['forgetTokens', 'announceDone'] },
          { guard: 'isPending', target: 'ready.unauthenticated', actions: ['noteRevocationProblem', 'forgetTokens', 'announceDone'] },
        ],
        'http.failed': { guard: 'isPending', target: 'ready.unauthenticated', actions: ['noteRevocationProblem', 'forgetTokens', 'announceDone'] },
        cancel: { target: 'failed', actions: { type: 'fail', params: { error: flowError('flow', 'flow.cancelled', 'cancelled') } } },
      },
    },

    stepUp: {
      tags: ['busy'],
      // Known metadata goes straight to a wider authorization; after a restart, discovery first.
      always: [{ guard: 'metadataKnown', target: 'flow.scope' }, { target: 'flow', actions: 'beginFlow' }],
    },

    flow: {
      tags: ['busy'],
      initial: 'resource',
      on: {
        cancel: { target: 'failed', actions: { type: 'fail', params: { error: flowError('flow', 'flow.cancelled', 'cancelled') } } },
      },
      states: {
        resource: {
          initial: 'discovering',
          states: {
            discovering: {
              entry: 'requestResourceMetadata',
              on: metadataAnswer,
            },
            validating: {
              always: [
                { guard: 'prmUsable', target: '#oauth.flow.authServer', actions: 'acceptResourceMetadata' },
                {
                  guard: 'prmFatal',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ context }) => ({ error: problemOf(logic.prmOutcome(context)) ?? unknownError() }) },
                },
                { guard: 'morePrmCandidates', target: 'discovering', actions: 'advanceResourceCandidate' },
                { guard: 'legacyFallbackAllowed', target: '#oauth.flow.authServer.legacy' },
                {
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ context }) => ({ error: logic.discoveryExhausted(context, 'prm') }) },
                },
              ],
            },
          },
        },

        authServer: {
          initial: 'discovering',
          states: {
            legacy: {
              entry: 'enterLegacyMode',
              always: { target: 'discovering' },
            },
            discovering: {
              entry: 'requestAuthorizationServerMetadata',
              on: metadataAnswer,
            },
            validating: {
              always: [
                { guard: 'asmUsable', target: '#oauth.flow.scope', actions: 'acceptAuthServerMetadata' },
                {
                  guard: 'asmFatal',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ context }) => ({ error: problemOf(logic.asmOutcome(context)) ?? unknownError() }) },
                },
                { guard: 'moreAsmCandidates', target: 'discovering', actions: 'advanceAuthServerCandidate' },
                { guard: 'inLegacyMode', target: 'legacyDefaults' },
                {
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ context }) => ({ error: logic.discoveryExhausted(context, 'asm') }) },
                },
              ],
            },
            legacyDefaults: {
              always: { target: '#oauth.flow.scope', actions: 'adoptLegacyDefaults' },
            },
          },
        },

        scope: {
          always: [
            { guard: 'clientCredentialsGrant', target: 'token.clientCredentials', actions: 'selectScope' },
            { guard: 'jwtBearerGrant', target: 'token.jwtBearer', actions: 'selectScope' },
            { guard: 'enterpriseGrant', target: 'token.tokenExchange', actions: 'selectScope' },
            { target: 'redirect', actions: 'selectScope' },
          ],
        },

        // RFC 8252 loopback redirect: the adapter binds the listener (the remembered port first).
        redirect: {
          entry: 'prepareRedirect',
          on: {
            'redirect.ready': { target: 'client', actions: 'assignRedirectUri' },
            'redirect.failed': {
              target: '#oauth.failed',
              actions: { type: 'fail', params: ({ event }) => ({ error: event.type === 'redirect.failed' ? event.error : unknownError() }) },
            },
          },
        },

        client: {
          initial: 'selecting',
          states: {
            selecting: {
              always: [
                { guard: 'storedClientUsable', target: '#oauth.flow.authorize' },
                {
                  guard: 'preregisteredBoundElsewhere',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: { error: flowError('flow', 'client.issuer_mismatch', 'the pre-registered client is bound to another authorization server') } },
                },
                {
                  guard: 'fixedRedirectUnavailable',
                  target: '#oauth.failed',
                  actions: {
                    type: 'fail',
                    params: ({ context }) => ({ error: flowError('flow', 'callback.port_unavailable', `redirect URI ${context.redirectUri ?? '(none)'} is not one this client registered`) }),
                  },
                },
                { guard: 'preregisteredClient', target: 'preregistered' },
                { guard: 'clientIdMetadataDocument', target: 'cimd' },
                { guard: 'dynamicRegistration', target: 'registering' },
                {
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: { error: flowError('registration', 'client.no_registration', 'no stored, pre-registered, metadata-document or dynamic registration is possible with this server') } },
                },
              ],
            },
            preregistered: {
              always: { target: '#oauth.flow.authorize', actions: 'adoptPreregisteredClient' },
            },
            cimd: {
              always: { target: '#oauth.flow.authorize', actions: 'adoptClientIdMetadataDocument' },
            },
            registering: {
              entry: 'requestRegistration',
              on: {
                'http.response': [
                  { guard: and(['isPending', 'registrationAccepted']), target: '#oauth.flow.authorize', actions: 'adoptRegisteredClient' },
                  {
                    guard: 'isPending',
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: ({ context, event }) => ({ error: failure(logic.registrationOutcome(context, event)) }) },
                  },
                ],
                'http.failed': {
                  guard: 'isPending',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ event }) => ({ error: logic.networkError('registration', event) }) },
                },
              },
            },
          },
        },

        authorize: {
          initial: 'choosing',
          states: {
            choosing: {
              always: [{ guard: 'deviceAuthorizationOffered', target: 'requestingDeviceCode' }, { target: 'redirecting' }],
            },
            redirecting: {
              entry: 'requestEntropy',
              on: {
                // No entropy (WebCrypto unavailable) is a failure to say, not a wait without end.
                'interaction.failed': {
                  target: '#oauth.failed',
                  actions: FAIL_WITH_INTERACTION_ERROR,
                },
                random: [
                  { guard: 'authorizationUrlValid', target: 'awaitingCallback', actions: 'openAuthorizationUrl' },
                  {
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: { error: flowError('flow', 'asm.invalid_authorization_endpoint', 'the authorization endpoint has a fragment or already carries OAuth parameters') } },
                  },
                ],
              },
            },
            awaitingCallback: {
              tags: ['waiting'],
              on: {
                callback: { target: 'validatingCallback', actions: 'recordCallback' },
                'interaction.failed': {
                  target: '#oauth.failed',
                  actions: FAIL_WITH_INTERACTION_ERROR,
                },
                timeout: {
                  guard: 'isCallbackTimeout',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: { error: flowError('flow', 'callback.timeout', 'no authorization response arrived before the deadline') } },
                },
              },
            },
            validatingCallback: {
              always: [
                { guard: 'callbackIgnored', target: 'awaitingCallback', actions: 'countRejectedCallback' },
                {
                  guard: 'callbackFailed',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ context }) => ({ error: callbackFailure(context) }) },
                },
                { target: '#oauth.flow.token', actions: 'acceptAuthorizationCode' },
              ],
            },

            // RFC 8628: the person approves on another device; the client polls at the server's pace.
            requestingDeviceCode: {
              entry: 'requestDeviceAuthorization',
              on: {
                'http.response': [
                  { guard: and(['isPending', 'deviceAuthorizationIssued']), target: 'awaitingDeviceApproval', actions: 'acceptDeviceAuthorization' },
                  {
                    guard: 'isPending',
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: ({ context, event }) => ({ error: failure(logic.deviceAuthorizationOutcome(context, event)) }) },
                  },
                ],
                'http.failed': {
                  guard: 'isPending',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ event }) => ({ error: logic.networkError('device_authorization', event) }) },
                },
              },
            },
            awaitingDeviceApproval: {
              tags: ['awaitingDevice'],
              entry: 'scheduleDevicePoll',
              on: {
                'interaction.failed': {
                  target: '#oauth.failed',
                  actions: FAIL_WITH_INTERACTION_ERROR,
                },
                timeout: [
                  { guard: 'isDevicePollDue', target: 'pollingDeviceToken' },
                  {
                    guard: 'isCallbackTimeout',
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: { error: DEVICE_APPROVAL_TIMEOUT } },
                  },
                ],
              },
            },
            pollingDeviceToken: {
              tags: ['awaitingDevice'],
              entry: 'requestDeviceToken',
              on: {
                // The approval deadline may pass while a poll is in flight: its late answer is then ignored.
                timeout: {
                  guard: 'isCallbackTimeout',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: { error: DEVICE_APPROVAL_TIMEOUT } },
                },
                'http.response': [
                  { guard: and(['isPending', 'tokensIssued']), target: '#oauth.ready.authorized', actions: ['storeIssuedTokens', 'announceDone'] },
                  { guard: and(['isPending', 'devicePollAgain']), target: 'awaitingDeviceApproval', actions: 'slowDevicePolling' },
                  {
                    guard: 'isPending',
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: ({ context, event }) => ({ error: logic.devicePollFailure(context, event) }) },
                  },
                ],
                'http.failed': [
                  { guard: and(['isPending', 'devicePollRetryable']), target: 'awaitingDeviceApproval', actions: 'slowDevicePolling' },
                  {
                    guard: 'isPending',
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: ({ context, event }) => ({ error: logic.devicePollFailure(context, event) }) },
                  },
                ],
              },
            },
          },
        },

        token: {
          initial: 'exchanging',
          states: {
            exchanging: {
              entry: 'requestCodeExchange',
              on: tokenEndpointAnswer('storeIssuedTokens'),
            },
            // RFC 6749 §4.4: client credentials (secret, Basic or post, or private_key_jwt signed by the adapter).
            clientCredentials: {
              entry: 'requestGrantToken',
              on: tokenEndpointAnswer('storeGrantTokens'),
            },
            // RFC 7523 §2.1: the assertion is the ID-JAG, or the application's (workload identity); an error is final.
            jwtBearer: {
              entry: 'requestGrantToken',
              on: tokenEndpointAnswer('storeGrantTokens'),
            },
            // SEP-990 / RFC 8693 at the enterprise IdP: ID token → ID-JAG for this authorization server and resource.
            tokenExchange: {
              entry: 'requestTokenExchange',
              on: {
                'http.response': [
                  { guard: and(['isPending', 'idJagIssued']), target: 'jwtBearer', actions: 'acceptIdJag' },
                  {
                    guard: 'isPending',
                    target: '#oauth.failed',
                    actions: { type: 'fail', params: ({ event }) => ({ error: failure(logic.tokenExchangeOutcome(event)) }) },
                  },
                ],
                'http.failed': {
                  guard: 'isPending',
                  target: '#oauth.failed',
                  actions: { type: 'fail', params: ({ event }) => ({ error: logic.networkError('token', event) }) },
                },
              },
            },
          },
        },
      },
    },

    failed: {
      tags: ['settled'],
      on: {
        // A new operation after a failure starts from what is held, as a fresh request would.
        unauthorized: [
          { guard: 'hasTokens', target: 'ready.authorized', actions: ['clearError', 'replayEvent'] },
          { target: 'ready.unauthenticated', actions: ['clearError', 'replayEvent'] },
        ],
        'token.check': [
          { guard: 'hasTokens', target: 'ready.authorized', actions: ['clearError', 'replayEvent'] },
        ],
        logout: [
          { guard: 'hasTokens', target: 'ready.authorized', actions: ['clearError', 'replayEvent'] },
          { target: 'ready.unauthenticated', actions: ['clearError', 'replayEvent'] },
        ],
        'store.loaded': [
          { guard: 'loadedTokens', target: 'ready.authorized', actions: ['clearError', 'loadRecords'] },
          { target: 'ready.unauthenticated', actions: ['clearError', 'loadRecords'] },
        ],
      },
    },
  },
});

/** A token endpoint's answer to a grant request: the tokens stored and the flow done, or the typed failure. */
function tokenEndpointAnswer(store: 'storeIssuedTokens' | 'storeGrantTokens') {
  return {
    'http.response': [
      { guard: and(['isPending', 'tokensIssued']), target: '#oauth.ready.authorized', actions: [store, 'announceDone'] },
      {
        guard: 'isPending',
        target: '#oauth.failed',
        actions: { type: 'fail', params: ({ context, event }: { context: EngineContext; event: EngineEvent }) => ({ error: failure(logic.tokenOutcome(context, event)) }) },
      },
    ],
    'http.failed': {
      guard: 'isPending',
      target: '#oauth.failed',
      actions: { type: 'fail', params: ({ event }: { event: EngineEvent }) => ({ error: logic.networkError('token', event) }) },
    },
  } as const;
}

function unknownError(): FlowErrorData {
  return flowError('flow', 'flow.internal', 'an internal invariant failed');
}

/** The error of a step that failed (its result judged once, by the guard that chose this transition). */
function failure(outcome: { ok: true } | { ok: false; error: FlowErrorData }): FlowErrorData {
  return outcome.ok ? unknownError() : outcome.error;
}

function callbackFailure(context: EngineContext): FlowErrorData {
  const verdict = logic.callbackVerdict(context);
  return verdict.kind === 'fail' ? verdict.error : unknownError();
}

export type OAuthMachine = typeof oauthMachine;
