/**
 * A recorded trace as replay frames: one per entry, each naming the state active after it, the
 * event that led there and the HTTP exchange the step belongs to. The trace is shown as recorded
 * (it is already a redacted projection); `assertRedacted` refuses one that is not.
 */
import type { Trace, TraceEntry } from '../src/adapters/trace.js';
import { REDACTED } from '../src/machines/redact.js';
import { activeClassLines, type Statechart } from './statechart.js';

export interface HttpSummary {
  /** The engine's name for the step (`prm`, `asm`, `registration`, `token`, `refresh`), or what the exchange was. */
  step: string;
  method?: string;
  url?: string;
  requestId?: string;
  status?: number;
  /** `http.failed` reason, or what the status meant to the engine (a 401 challenge). */
  note?: string;
}

export interface Frame {
  index: number;
  seq: number;
  at: number;
  /** Milliseconds since the first entry. */
  offsetMs: number;
  kind: TraceEntry['kind'];
  /** Dotted state path after this entry, as recorded. */
  state: string;
  /** State before this entry (the previous frame's, or the machine's initial state). */
  previousState: string;
  /** False when the trace names a state the machine does not have (a trace from another version). */
  stateKnown: boolean;
  /** Mermaid `class` lines marking the state and its ancestors. */
  classLines: string[];
  title: string;
  /** The event entry that led to this state: this entry's own, or the last one before an effect. */
  event: { seq: number; value: Record<string, unknown> } | null;
  effect: Record<string, unknown> | null;
  http: HttpSummary | null;
}

const SECRET_KEYS = new Set([
  'access_token',
  'refresh_token',
  'id_token',
  'client_secret',
  'client_assertion',
  'assertion',
  'subject_token',
  'registration_access_token',
  'code_verifier',
  'codeVerifier',
  'password',
  'authorization',
  'dpop',
  'cookie',
  'set-cookie',
]);

/**
 * Keys that are secrets only in some places: `state` is also a trace entry's state path, and `code`
 * also an error's or a notice's code.
 */
const CONTEXTUAL_SECRET_KEYS: Record<string, Set<string>> = {
  params: new Set(['state', 'code']),
  random: new Set(['state', 'codeVerifier']),
  query: new Set(['state', 'code']),
  json: new Set(['code']),
};

export class UnredactedTraceError extends Error {
  constructor(readonly where: string) {
    super(`the trace is not redacted: a secret value at ${where}; record traces with session.trace() (src/adapters/trace.ts)`);
    this.name = 'UnredactedTraceError';
  }
}

/** Only strings can carry a secret; `dpop: true` is a request marker, not a proof. */
function isSecretValue(value: unknown): boolean {
  return typeof value === 'string' && value !== REDACTED && value !== '';
}

function checkQuery(search: string, where: string): void {
  const form = new URLSearchParams(search);
  for (const [name, value] of form) {
    if ((SECRET_KEYS.has(name) || CONTEXTUAL_SECRET_KEYS.query?.has(name)) && isSecretValue(value)) throw new UnredactedTraceError(`${where}?${name}`);
  }
}

function checkString(value: string, where: string, key: string): void {
  const trimmed = value.trim();
  if (trimmed.startsWith('{')) {
    try {
      checkValue(JSON.parse(trimmed), where, 'json');
      return;
    } catch (error) {
      if (error instanceof UnredactedTraceError) throw error;
    }
  }
  if (key === 'url' || key === 'redirectUri' || key === 'authorizationUrl') {
    const query = value.indexOf('?');
    if (query >= 0) checkQuery(value.slice(query + 1).split('#')[0] ?? '', where);
  } else if (key === 'body' && /^[\w.-]+=/.test(trimmed)) {
    checkQuery(trimmed, where);
  }
}

function checkValue(value: unknown, where: string, container: string): void {
  if (typeof value === 'string') return checkString(value, where, container);
  if (Array.isArray(value)) {
    value.forEach((item, index) => checkValue(item, `${where}[${index}]`, container));
    return;
  }
  if (value === null || typeof value !== 'object') return;
  const record = value as Record<string, unknown>;
  const contextual = CONTEXTUAL_SECRET_KEYS[record.type === 'random' ? 'random' : container];
  for (const [key, inner] of Object.entries(record)) {
    const path = `${where}.${key}`;
    if ((SECRET_KEYS.has(key.toLowerCase()) || contextual?.has(key)) && isSecretValue(inner)) throw new UnredactedTraceError(path);
    checkValue(inner, path, key);
  }
}

/** Refuses a trace that carries a secret where the redactor would have left `[redacted]`. */
export function assertRedacted(trace: Trace): void {
  trace.entries.forEach((entry, index) => {
    if (entry.event) checkValue(entry.event, `entries[${index}].event`, '');
    if (entry.effect) checkValue(entry.effect, `entries[${index}].effect`, '');
  });
  if (trace.final) checkValue(trace.final, 'final', '');
}

export function parseTrace(text: string, source: string): Trace {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (error) {
    throw new Error(`${source}: not JSON (${error instanceof Error ? error.message : String(error)})`);
  }
  const trace = value as Partial<Trace>;
  if (trace.format !== 'mcp-oauth-trace/1') throw new Error(`${source}: not an mcp-oauth-trace/1 trace (format ${JSON.stringify(trace.format)})`);
  if (!Array.isArray(trace.entries)) throw new Error(`${source}: no entries array`);
  trace.entries.forEach((entry, index) => {
    if (typeof entry?.state !== 'string' || (entry.kind !== 'event' && entry.kind !== 'effect')) throw new Error(`${source}: entries[${index}] has no state or kind`);
  });
  return trace as Trace;
}

interface RequestRecord {
  id: string;
  step: string;
  method: string;
  url: string;
}

function requestOf(effect: Record<string, unknown> | undefined): RequestRecord | undefined {
  if (effect?.type !== 'http.request') return undefined;
  const request = effect.request as Partial<RequestRecord> | undefined;
  if (typeof request?.id !== 'string') return undefined;
  return { id: request.id, step: String(request.step ?? 'request'), method: String(request.method ?? ''), url: String(request.url ?? '') };
}

function str(value: unknown): string {
  return typeof value === 'string' ? value : value === undefined ? '' : JSON.stringify(value);
}

function titleFor(entry: TraceEntry, http: HttpSummary | null): string {
  if (entry.kind === 'event') {
    const event = entry.event ?? {};
    switch (event.type) {
      case 'http.response':
        return `http.response ${str(event.status)}${http?.step ? ` (${http.step})` : ''}`;
      case 'http.failed':
        return `http.failed ${str(event.reason)}${http?.step ? ` (${http.step})` : ''}`;
      case 'unauthorized':
        return `unauthorized ${str(event.status)}`;
      case 'store.saved':
        return `store.saved ${str(event.kind)}`;
      case 'callback':
        return `callback (${Object.keys((event.params as object | undefined) ?? {}).join(', ')})`;
      default:
        return str(event.type);
    }
  }
  const effect = entry.effect ?? {};
  switch (effect.type) {
    case 'http.request':
      return `http.request ${http?.method ?? ''} ${http?.step ?? ''}`.trim();
    case 'store.save':
    case 'store.clear':
      return `${str(effect.type)} ${str(effect.kind)}`;
    case 'flow.failed':
      return `flow.failed ${str((effect.error as { code?: unknown } | undefined)?.code)}`;
    case 'notice':
      return `notice ${str((effect.notice as { code?: unknown } | undefined)?.code)}`;
    default:
      return str(effect.type);
  }
}

export function buildFrames(trace: Trace, chart: Statechart, initialState: string): Frame[] {
  const entries = trace.entries;
  const requests = new Map<string, RequestRecord>();
  const statusById = new Map<string, { status?: number; note?: string }>();
  // Ids come from a counter in the machine's context; a later flow could reuse one after a restore,
  // so each response pairs with the latest request before it and each request with the next answer.
  const answers: Array<{ status?: number; note?: string } | undefined> = entries.map(() => undefined);
  for (let i = entries.length - 1; i >= 0; i--) {
    const entry = entries[i];
    if (!entry) continue;
    const event = entry.event;
    if (entry.kind === 'event' && (event?.type === 'http.response' || event?.type === 'http.failed') && typeof event.id === 'string') {
      statusById.set(event.id, event.type === 'http.response' ? { status: Number(event.status) } : { note: `failed: ${str(event.reason)}` });
    }
    const request = requestOf(entry.effect);
    if (request) {
      answers[i] = statusById.get(request.id);
      statusById.delete(request.id);
    }
  }

  const frames: Frame[] = [];
  let lastEvent: Frame['event'] = null;
  let lastRedirectUri: string | undefined;
  let previousState = initialState;
  const first = entries[0]?.at ?? 0;
  entries.forEach((entry, index) => {
    let http: HttpSummary | null = null;
    const request = requestOf(entry.effect);
    if (request) {
      requests.set(request.id, request);
      const answer = answers[index];
      http = { step: request.step, method: request.method, url: request.url, requestId: request.id, ...answer };
    }
    const event = entry.kind === 'event' ? entry.event ?? {} : undefined;
    if (event) {
      lastEvent = { seq: entry.seq, value: event };
      if ((event.type === 'http.response' || event.type === 'http.failed') && typeof event.id === 'string') {
        const matched = requests.get(event.id);
        http = {
          step: matched?.step ?? 'response',
          ...(matched ? { method: matched.method, url: matched.url } : {}),
          requestId: event.id,
          ...(event.type === 'http.response' ? { status: Number(event.status) } : { note: `failed: ${str(event.reason)}` }),
        };
      } else if (event.type === 'unauthorized') {
        http = { step: 'MCP request', url: trace.serverUrl, status: Number(event.status), note: str(event.wwwAuthenticate) || 'no WWW-Authenticate challenge' };
      } else if (event.type === 'redirect.ready') {
        lastRedirectUri = str(event.redirectUri);
      } else if (event.type === 'callback') {
        http = { step: 'authorization callback', method: 'GET', ...(lastRedirectUri ? { url: lastRedirectUri } : {}), note: 'the browser delivered the redirect to the loopback listener' };
      }
    }
    const effect = entry.kind === 'effect' ? entry.effect ?? {} : null;
    if (effect?.type === 'browser.open') http = { step: 'authorization (browser)', method: 'GET', url: str(effect.url) };
    const stateKnown = chart.states[entry.state] !== undefined;
    frames.push({
      index,
      seq: entry.seq,
      at: entry.at,
      offsetMs: entry.at - first,
      kind: entry.kind,
      state: entry.state,
      previousState,
      stateKnown,
      classLines: activeClassLines(chart, entry.state),
      title: titleFor(entry, http),
      event: lastEvent,
      effect,
      http,
    });
    previousState = entry.state;
  });
  return frames;
}
