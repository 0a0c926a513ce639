/** The flow as a person (or the visualizer) sees it: redacted events, effects and the states they led to. */
import type { EngineContext, EngineEffect, EngineEvent } from '../machines/oauth.types.js';
import { redactContext, redactEffect, redactEvent, scrubSecrets } from '../machines/redact.js';

export interface TraceEntry {
  seq: number;
  at: number;
  kind: 'event' | 'effect';
  /** Dotted state path after the event (or when the effect was emitted), e.g. `flow.authServer.discovering`. */
  state: string;
  event?: Record<string, unknown>;
  effect?: Record<string, unknown>;
}

export interface Trace {
  format: 'mcp-oauth-trace/1';
  serverUrl: string;
  entries: TraceEntry[];
  final?: Record<string, unknown>;
}

export function statePath(value: unknown): string {
  if (typeof value === 'string') return value;
  if (value && typeof value === 'object') {
    const [key, child] = Object.entries(value as Record<string, unknown>)[0] ?? [];
    return key === undefined ? '' : `${key}${child === undefined || (typeof child === 'object' && child !== null && Object.keys(child).length === 0) ? '' : `.${statePath(child)}`}`;
  }
  return '';
}

/** Bounded: a long-lived session keeps the most recent entries only. */
export class TraceRecorder {
  private readonly entries: TraceEntry[] = [];
  private seq = 0;

  constructor(
    private readonly limit: number,
    private readonly observe?: (entry: TraceEntry) => void,
    /** Secret values currently held: scrubbed from entries wherever free text repeats them. */
    private readonly secrets: () => readonly string[] = () => [],
  ) {}

  event(at: number, state: string, event: EngineEvent): void {
    this.push({ seq: ++this.seq, at, kind: 'event', state, event: redactEvent(event) });
  }

  effect(at: number, state: string, effect: EngineEffect): void {
    this.push({ seq: ++this.seq, at, kind: 'effect', state, effect: redactEffect(effect) });
  }

  private push(raw: TraceEntry): void {
    const secrets = this.secrets();
    const text = JSON.stringify(raw);
    const entry = secrets.some((secret) => text.includes(secret)) ? (JSON.parse(scrubSecrets(text, secrets)) as TraceEntry) : raw;
    this.entries.push(entry);
    if (this.entries.length > this.limit) this.entries.shift();
    try {
      this.observe?.(entry);
    } catch {
      // An observer's bug must not break the flow it watches.
    }
  }

  toJSON(serverUrl: string, context?: EngineContext): Trace {
    return {
      format: 'mcp-oauth-trace/1',
      serverUrl,
      entries: [...this.entries],
      ...(context === undefined ? {} : { final: redactContext(context) }),
    };
  }
}
