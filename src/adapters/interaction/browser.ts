/**
 * Opens the authorization URL in the system browser. The URL comes from an untrusted server's
 * metadata, so it is checked again here however it was validated upstream, and it is never seen
 * by a shell: CVE-2025-6514 was PowerShell evaluating `$(…)` inside such a URL (R25, C33, C34).
 */
import { spawn as nodeSpawn, type ChildProcess } from 'node:child_process';
import { OAuthFlowError, quoteUntrusted } from '../../machines/errors.js';

export interface OpenBrowserOptions {
  platform?: NodeJS.Platform;
  /** Injectable for tests. */
  spawn?: typeof import('node:child_process').spawn;
  /** Where `BROWSER` is read; default `process.env`. */
  env?: NodeJS.ProcessEnv;
}

/** An opener that neither starts nor fails in this time is treated as missing. */
const SPAWN_DEADLINE_MS = 5_000;

/**
 * RFC 3986 characters only, minus `$`: a URL built by URLSearchParams never has a raw `$`, and it
 * starts every shell expansion. Whitespace, quotes, backticks, `|`, `<`, `>`, `^`, `\`, braces,
 * control, bidi and other non-ASCII characters fall outside the set.
 */
const URL_CHARACTERS = /^[A-Za-z0-9\-._~:/?#[\]@!&'()*+,;=%]+$/;
/** `%` must start an escape; `%USERPROFILE%` is what cmd.exe would expand. */
const BARE_PERCENT = /%(?![0-9A-Fa-f]{2})/;

export async function openSystemBrowser(url: string, options: OpenBrowserOptions = {}): Promise<void> {
  const href = safeHref(url);
  const platform = options.platform ?? process.platform;
  const spawn = options.spawn ?? nodeSpawn;
  const [command, args] = browserCommand(options.env ?? process.env, platform, href) ?? commandFor(platform, href);

  const unavailable = (cause?: unknown): OAuthFlowError =>
    new OAuthFlowError(
      { code: 'browser.unavailable', message: `Could not start ${command} to open the browser; open the URL manually` },
      cause === undefined ? undefined : { cause },
    );

  let child: ChildProcess;
  try {
    child = spawn(command, args, { shell: false, detached: true, stdio: 'ignore', windowsHide: true });
  } catch (error) {
    throw unavailable(error);
  }
  // A late error from a detached opener must not become an uncaught exception.
  child.on('error', () => undefined);

  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => {
      cleanup();
      reject(unavailable());
    }, SPAWN_DEADLINE_MS);
    const onSpawn = (): void => {
      cleanup();
      resolve();
    };
    const onError = (error: Error): void => {
      cleanup();
      reject(unavailable(error));
    };
    const cleanup = (): void => {
      clearTimeout(timer);
      child.off('spawn', onSpawn);
      child.off('error', onError);
    };
    child.once('spawn', onSpawn);
    child.once('error', onError);
  });
  // The opener hands off to the browser and exits; its status says nothing the caller can act on.
  child.unref();
}

/** The same checks as `openSystemBrowser`, for a caller that only shows the URL (`--no-browser`): the serialised URL, or `browser.unsafe_url`. */
export function assertOpenableUrl(url: string): string {
  return safeHref(url);
}

function safeHref(url: string): string {
  const refuse = (reason: string): never => {
    throw new OAuthFlowError({ code: 'browser.unsafe_url', message: `Refusing to open the authorization URL: ${reason}` });
  };
  if (typeof url !== 'string' || url === '') return refuse('it is empty');
  // Checked on the raw text: the URL parser would silently strip tabs, newlines and edge spaces.
  if (!URL_CHARACTERS.test(url)) return refuse('it contains whitespace, control or shell-special characters');
  if (BARE_PERCENT.test(url)) return refuse('it contains a "%" that is not a percent-escape');
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return refuse('it is not a URL');
  }
  if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') {
    return refuse(`scheme ${quoteUntrusted(parsed.protocol)} is not http or https`);
  }
  if (parsed.username !== '' || parsed.password !== '') return refuse('it carries credentials');
  if (parsed.hostname === '') return refuse('it has no host');
  // The serialised form is what was validated; the raw text could differ in ways an opener reads.
  return parsed.href;
}

/**
 * `$BROWSER`: one command (a path or a name on `PATH`) that receives the URL as its only argument.
 * It is spawned without a shell and never split or expanded: a value with `%s`, quotes or spaces
 * meant as arguments is taken as a file name, so it fails to start instead of being interpreted.
 * The colon-separated list form takes its first entry.
 */
function browserCommand(env: NodeJS.ProcessEnv, platform: NodeJS.Platform, href: string): [string, string[]] | undefined {
  const raw = env.BROWSER;
  if (raw === undefined || raw.trim() === '') return undefined;
  const command = platform === 'win32' ? raw : raw.split(':').find((entry) => entry.trim() !== '');
  return command === undefined ? undefined : [command, [href]];
}

function commandFor(platform: NodeJS.Platform, href: string): [string, string[]] {
  switch (platform) {
    case 'darwin':
      return ['open', [href]];
    case 'win32':
      // rundll32 takes the URL as its own argument; `cmd /c start` and PowerShell would parse it.
      return ['rundll32', ['url.dll,FileProtocolHandler', href]];
    default:
      return ['xdg-open', [href]];
  }
}
