/** `npm run demo` is the README's first line: it must keep exiting 0 and printing every state. */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect, it } from 'vitest';

it('the demo signs in, calls tools, refreshes, writes a redacted trace and exits 0', async () => {
  const directory = await mkdtemp(join(tmpdir(), 'mcp-oauth-demo-'));
  try {
    const trace = join(directory, 'trace.json');
    const { code, output } = await new Promise<{ code: number | null; output: string }>((resolve, reject) => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'examples/demo/main.ts', '--trace', trace], { stdio: ['ignore', 'pipe', 'pipe'] });
      let output = '';
      child.stdout.on('data', (chunk: Buffer) => (output += chunk.toString()));
      child.stderr.on('data', (chunk: Buffer) => (output += chunk.toString()));
      const timer = setTimeout(() => child.kill('SIGKILL'), 60_000);
      child.on('error', reject);
      child.on('close', (exit) => {
        clearTimeout(timer);
        resolve({ code: exit, output });
      });
    });
    expect(code, output).toBe(0);
    for (const state of ['flow.resource.discovering', 'flow.authServer.discovering', 'flow.client.registering', 'flow.authorize.awaitingCallback', 'flow.token.exchanging', 'refreshing', 'ready.authorized']) {
      expect(output).toContain(state);
    }
    const written = JSON.parse(await readFile(trace, 'utf8')) as { format: string; entries: unknown[] };
    expect(written.format).toBe('mcp-oauth-trace/1');
    expect(written.entries.length).toBeGreaterThan(10);
  } finally {
    await rm(directory, { recursive: true, force: true });
  }
}, 90_000);
