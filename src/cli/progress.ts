/**
 * Live progress for the CLI: one line per state the machine enters, the authorization URL, and a
 * spinner while it waits for the browser (only on a terminal). Everything goes to stderr, so a
 * command's stdout (the token of `mcp-oauth token`) stays clean. Lines come from the session's
 * redacted trace entries, never from raw events: no secret can reach them.
 */
import type { TraceEntry } from '../adapters/trace.js';

export interface Progress {
  observe(entry: TraceEntry): void;
  line(text: string): void;
  stop(): void;
}

const FRAMES = ['⠋', '⠙', '⠹', '⠸', '⠼', '⠴', '⠦', '⠧', '⠇', '⠏'];
const WAITING_STATES = new Set(['flow.authorize.awaitingCallback', 'flow.authorize.awaitingDeviceApproval', 'flow.authorize.pollingDeviceToken']);
/** RFC 8628 polling alternates these every few seconds: each is announced once per flow. */
const ONCE_PER_FLOW = new Set(['flow.authorize.awaitingDeviceApproval', 'flow.authorize.pollingDeviceToken']);

/** What a person reads for each state: the dotted path plus a few words. */
const DESCRIPTIONS: Record<string, string> = {
  restoring: 'loading stored credentials',
  'ready.authorized': 'signed in',
  'ready.unauthenticated': 'not signed in',
  refreshing: 'refreshing the access token',
  revoking: 'revoking the token (RFC 7009)',
  'flow.resource.discovering': 'fetching protected resource metadata',
  'flow.resource.validating': 'checking protected resource metadata',
  'flow.authServer.discovering': 'fetching authorization server metadata',
  'flow.authServer.validating': 'checking authorization server metadata',
  'flow.authServer.legacy': 'no resource metadata: 2025-03-26 discovery',
  'flow.scope': 'choosing the scope',
  'flow.redirect': 'starting the loopback callback server',
  'flow.client.selecting': 'choosing the client identity',
  'flow.client.registering': 'registering the client (RFC 7591)',
  'flow.authorize.choosing': 'choosing browser or device authorization',
  'flow.authorize.redirecting': 'building the authorization request (PKCE S256)',
  'flow.authorize.requestingDeviceCode': 'requesting a device code (RFC 8628)',
  'flow.authorize.awaitingDeviceApproval': 'waiting for the code to be entered and approved',
  'flow.authorize.pollingDeviceToken': 'polling the token endpoint',
  'flow.authorize.awaitingCallback': 'waiting for the browser to come back',
  'flow.authorize.validatingCallback': 'checking the authorization response',
  'flow.token.exchanging': 'exchanging the code for tokens',
  failed: 'failed',
};

export function createProgress(stream: NodeJS.WriteStream = process.stderr, quiet = false): Progress {
  const tty = stream.isTTY === true && !process.env.NO_COLOR;
  let last = '';
  let spinner: NodeJS.Timeout | undefined;
  let frame = 0;
  const announced = new Set<string>();

  const clearSpinner = (): void => {
    if (spinner === undefined) return;
    clearInterval(spinner);
    spinner = undefined;
    stream.write('\r\x1b[K');
  };
  const line = (text: string): void => {
    if (quiet) return;
    clearSpinner();
    stream.write(`${text}\n`);
  };
  const startSpinner = (): void => {
    if (!tty || quiet || spinner !== undefined) return;
    spinner = setInterval(() => {
      frame = (frame + 1) % FRAMES.length;
      stream.write(`\r${FRAMES[frame]} waiting for the authorization response (Ctrl-C to cancel)`);
    }, 100);
    spinner.unref();
  };

  return {
    line,
    stop: clearSpinner,
    observe(entry) {
      if (entry.kind === 'effect') {
        const effect = entry.effect ?? {};
        if (effect.type === 'flow.failed') {
          const error = effect.error as { code?: string } | undefined;
          line(`  ✗ ${entry.state}: ${error?.code ?? 'failed'}`);
        } else if (effect.type === 'notice') {
          const notice = effect.notice as { code?: string; message?: string } | undefined;
          line(`  ! ${notice?.code ?? 'notice'}: ${notice?.message ?? ''}`);
        }
        return;
      }
      // Every state once per entry: a state re-entered after another (a second PRM candidate) prints again.
      if (entry.state === last) return;
      last = entry.state;
      if (entry.state === 'failed') return;
      if (!entry.state.startsWith('flow.')) announced.clear();
      if (ONCE_PER_FLOW.has(entry.state)) {
        if (announced.has(entry.state)) return;
        announced.add(entry.state);
      }
      line(`  • ${entry.state.padEnd(36)} ${DESCRIPTIONS[entry.state] ?? ''}`.trimEnd());
      if (WAITING_STATES.has(entry.state)) startSpinner();
      else clearSpinner();
    },
  };
}
