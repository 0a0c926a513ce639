/** Runs the `mcp-oauth` CLI as a subprocess (through tsx), with a deadline, and a stand-in browser for `$BROWSER`. */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { onCleanup } from './harness.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'src/cli/main.ts');
const DEADLINE_MS = 30_000;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliEnv {
  storeDir: string;
  browserLog: string;
  env: NodeJS.ProcessEnv;
  /** The URLs `$BROWSER` was invoked with, in order. */
  browserVisits(): Promise<string[]>;
}

/**
 * A store directory and a `$BROWSER` program of its own: a node script that logs the URL it was
 * given, then GETs it and follows the redirects (to the CLI's loopback callback).
 */
export async function cliEnv(): Promise<CliEnv> {
  const dir = await mkdtemp(path.join(tmpdir(), 'mcp-oauth-cli-'));
  onCleanup(() => rm(dir, { recursive: true, force: true }));
  const browser = path.join(dir, 'browser.mjs');
  const browserLog = path.join(dir, 'browser.log');
  await writeFile(
    browser,
    `#!${process.execPath}
import { appendFileSync } from 'node:fs';
let url = process.argv[2];
appendFileSync(${JSON.stringify(browserLog)}, JSON.stringify(process.argv.slice(2)) + '\\n');
for (let hop = 0; hop < 10 && url; hop++) {
  const res = await fetch(url, { redirect: 'manual', signal: AbortSignal.timeout(10000) });
  const location = res.headers.get('location');
  await res.arrayBuffer();
  url = location ? new URL(location, url).href : undefined;
}
`,
  );
  await chmod(browser, 0o755);
  const storeDir = path.join(dir, 'store');
  const env: NodeJS.ProcessEnv = { ...process.env, MCP_OAUTH_STORE_DIR: storeDir, BROWSER: browser, NO_COLOR: '1' };
  return {
    storeDir,
    browserLog,
    env,
    async browserVisits() {
      const text = await readFile(browserLog, 'utf8').catch(() => '');
      return text
        .split('\n')
        .filter((line) => line !== '')
        .map((line) => (JSON.parse(line) as string[])[0] ?? '');
    },
  };
}

export function startCli(args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; done: Promise<CliResult> } {
  return startScript(CLI, args, env);
}

/** Any TypeScript file of the project as a subprocess, killed at the deadline. */
export function startScript(file: string, args: string[], env: NodeJS.ProcessEnv): { child: ChildProcess; done: Promise<CliResult> } {
  const child = spawn(process.execPath, ['--import', 'tsx', file, ...args], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout?.setEncoding('utf8').on('data', (chunk: string) => (stdout += chunk));
  child.stderr?.setEncoding('utf8').on('data', (chunk: string) => (stderr += chunk));
  const done = new Promise<CliResult>((resolve) => {
    const timer = setTimeout(() => child.kill('SIGKILL'), DEADLINE_MS);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
  onCleanup(() => {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  });
  return { child, done };
}

export function cli(args: string[], env: NodeJS.ProcessEnv): Promise<CliResult> {
  return startCli(args, env).done;
}

/** Resolves with the stderr text once it matches, or rejects at the deadline. */
export function waitForOutput(child: ChildProcess, pattern: RegExp, stream: 'stdout' | 'stderr' = 'stderr', ms = DEADLINE_MS): Promise<RegExpExecArray> {
  return new Promise((resolve, reject) => {
    let text = '';
    const source = stream === 'stdout' ? child.stdout : child.stderr;
    const timer = setTimeout(() => {
      source?.off('data', onData);
      reject(new Error(`no ${pattern} on ${stream} within ${ms} ms; got: ${text.slice(-500)}`));
    }, ms);
    const onData = (chunk: Buffer | string): void => {
      text += chunk.toString();
      const match = pattern.exec(text);
      if (match) {
        clearTimeout(timer);
        source?.off('data', onData);
        resolve(match);
      }
    };
    source?.on('data', onData);
  });
}
