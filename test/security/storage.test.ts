/** Catalogue G (C69), I (C78), J (C87), K: token storage, with the file store under real files. */
import { createHash } from 'node:crypto';
import { chmod, lstat, mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createFileStore } from '../../src/adapters/stores/file.js';
import type { TokenRecord } from '../../src/machines/store.js';
import { json, type Recorded } from './kit.js';
import { useKit } from './setup.js';

const kit = useKit();
const dirs: string[] = [];
afterEach(async () => {
  for (const d of dirs.splice(0)) await rm(d, { recursive: true, force: true });
});
async function tempDir(): Promise<string> {
  const d = await mkdtemp(join(tmpdir(), 'mcp-oauth-sec-'));
  dirs.push(d);
  return d;
}
const hashKey = (key: string) => createHash('sha256').update(key, 'utf8').digest('hex').slice(0, 32);
const isRefresh = (r: Recorded) => new URLSearchParams(r.body).get('grant_type') === 'refresh_token';
const record = (at = 'A'.repeat(12)): TokenRecord => ({ access_token: at, token_type: 'bearer', obtained_at: 0, issuer: 'https://as.example', resource: 'https://mcp.example/mcp' });

describe('storage', () => {
  it('C69 refresh succeeded, saving failed: tokens stay usable in memory, the failure is a notice without secrets, the stored record intact', async () => {
    const k = kit();
    let now = Date.now();
    const s = k.session({ clock: () => now });
    expect((await k.call(s)).status).toBe(200);
    const stored = await k.store.get(k.mcpUrl, 'tokens');
    const set = k.store.set.bind(k.store);
    k.store.set = async (key, kind, value, condition) => {
      if (kind === 'tokens') throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      return set(key, kind, value, condition);
    };
    now += 2 * 3600_000;
    expect((await k.call(s)).status).toBe(200);
    expect((await k.call(s)).status).toBe(200);
    expect(k.to('as.example', '/token').filter(isRefresh)).toHaveLength(1);
    expect((await k.store.get(k.mcpUrl, 'tokens'))?.generation).toBe(stored?.generation);
    expect(JSON.stringify(k.trace)).toContain('store.write_failed');
  });

  it('C78 client_secret_basic: id and secret form-urlencoded before Base64', async () => {
    const k = kit();
    const clientId = 'a:b';
    const secret = `p%4:+\u00e9${k.issue('client_secret')}`;
    k.secrets.set(secret, 'client_secret');
    k.clients.set(clientId, { secret, redirectUris: ['http://127.0.0.1:9/callback'] });
    k.route('as.example', '/token', (req) => {
      const header = String(req.headers.authorization ?? '');
      const [id, pw] = Buffer.from(header.slice(6), 'base64').toString('utf8').split(':').map((p) => decodeURIComponent(p.replace(/\+/g, ' ')));
      if (id !== clientId || pw !== secret) return json({ error: 'invalid_client' }, 401);
      const form = new URLSearchParams(req.body);
      form.set('client_id', id);
      form.set('client_secret', pw);
      return k.token({ ...req, body: form.toString() });
    });
    const s = k.session({ client: { preregistered: { client_id: clientId, client_secret: secret, token_endpoint_auth_method: 'client_secret_basic', issuer: k.issuer } } });
    expect((await k.call(s)).status).toBe(200);
    const token = k.to('as.example', '/token')[0]!;
    expect(String(token.headers.authorization)).toBe(`Basic ${Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(secret)}`).toString('base64')}`);
    expect(new URLSearchParams(token.body).has('client_secret')).toBe(false);
  });

  it('C87 DNS rebinding between check and connect: a later lookup to a private address is refused at connect time', async () => {
    const k = kit();
    let lookups = 0;
    const honest = k.resolver;
    const s = k.session({
      resolver: async (name) => (name === 'as.example' && ++lookups > 1 ? [{ address: '10.0.0.5', family: 4 }] : honest(name)),
    });
    // Each AS answer closes its connection, so every request needs a fresh lookup.
    k.route('as.example', '/.well-known/oauth-authorization-server', { status: 200, headers: { 'content-type': 'application/json', connection: 'close' }, body: JSON.stringify(k.asMetadata()) });
    const outcome = await k.call(s);
    expect(lookups).toBeGreaterThanOrEqual(2);
    expect(outcome.error).toBeDefined();
    k.assertTypedError(outcome.error, /^network\./);
    k.assertOnlyKitDialled();
    expect(k.to('as.example', '/register')).toHaveLength(0);
  });

  for (const [name, content] of [
    ['truncated JSON', '{"key":"k","kind":"tokens","gen'],
    ['random bytes', Buffer.from([0xff, 0x00, 0x13, 0x37, 0xfe])],
    ['wrong schema', '{"hello":"world"}'],
    ['unknown version', '{"version":99,"key":"K","kind":"tokens","generation":1,"value":{}}'],
  ] as const) {
    it(`C90 corrupt store (${name}): treated as absent, quarantined, next save valid`, async () => {
      kit();
      const directory = await tempDir();
      const store = createFileStore({ directory });
      const key = 'https://mcp.example/mcp';
      await store.set(key, 'tokens', record(), { ifGeneration: 0 });
      const file = join(directory, `${hashKey(key)}.tokens.json`);
      await writeFile(file, typeof content === 'string' ? content.replace('"K"', JSON.stringify(key)) : content);
      const got = await store.get(key, 'tokens');
      if (name === 'unknown version' && got !== undefined) {
        // A reader that ignores unknown members may still accept it only if the value is valid.
        expect(got.value).toBeDefined();
        return;
      }
      expect(got).toBeUndefined();
      const result = await store.set(key, 'tokens', record('B'.repeat(12)), { ifGeneration: 0 });
      expect(result.ok).toBe(true);
      expect((await store.get(key, 'tokens'))?.value.access_token).toBe('B'.repeat(12));
      expect((await readdir(directory)).some((f) => f.includes('.corrupt-'))).toBe(true);
    });
  }

  it('C92 store permissions: an existing 0755 directory and 0644 file end up 0700 and 0600 after a save', async () => {
    kit();
    const directory = join(await tempDir(), 'store');
    await mkdir(directory, { mode: 0o755 });
    await chmod(directory, 0o755);
    const key = 'https://mcp.example/mcp';
    const store = createFileStore({ directory });
    await store.set(key, 'tokens', record(), { ifGeneration: 0 });
    const file = join(directory, `${hashKey(key)}.tokens.json`);
    await chmod(file, 0o644);
    const current = await store.get(key, 'tokens');
    await store.set(key, 'tokens', record('C'.repeat(12)), { ifGeneration: current!.generation });
    expect((await stat(directory)).mode & 0o777).toBe(0o700);
    for (const f of await readdir(directory)) expect((await stat(join(directory, f))).mode & 0o077).toBe(0);
  });

  it('C93 symlink trap: a record path that is a symlink never writes through to its target', async () => {
    kit();
    const root = await tempDir();
    const directory = join(root, 'store');
    const target = join(root, 'bashrc');
    await writeFile(target, 'ORIGINAL');
    const key = 'https://mcp.example/mcp';
    const store = createFileStore({ directory });
    await store.set(key, 'client', { client_id: 'c', token_endpoint_auth_method: 'none', redirect_uris: ['http://127.0.0.1/cb'], issuer: 'https://as.example', source: 'dynamic' }, { ifGeneration: 0 });
    await symlink(target, join(directory, `${hashKey(key)}.tokens.json`));
    const outcome = await store.set(key, 'tokens', record(), { ifGeneration: 0 }).then((r) => r, (e: unknown) => e);
    expect(await readFile(target, 'utf8')).toBe('ORIGINAL');
    if (!(outcome instanceof Error)) {
      const link = await lstat(join(directory, `${hashKey(key)}.tokens.json`)).catch(() => undefined);
      expect(link?.isSymbolicLink() ?? false).toBe(false);
    }
  });

  it('C95 hostile storage keys: file names are hashes, nothing outside the directory, no ENAMETOOLONG', async () => {
    kit();
    const root = await tempDir();
    const directory = join(root, 'store');
    const store = createFileStore({ directory });
    const keys = ['https://h.example/../../etc/x', 'https://h.example/%2e%2e/%2e%2e/x', 'https://h.example/\u0000x', `https://h.example/${'a'.repeat(5_000)}`, 'https://h.example/\u202egnp.exe', 'CON', 'NUL.txt'];
    for (const [i, key] of keys.entries()) {
      await store.set(key, 'tokens', record(`K${i}`.padEnd(12, 'x')), { ifGeneration: 0 });
      expect((await store.get(key, 'tokens'))?.value.access_token).toBe(`K${i}`.padEnd(12, 'x'));
    }
    expect(await readdir(root)).toEqual(['store']);
    for (const f of await readdir(directory)) expect(f).toMatch(/^[0-9a-f]{32}\.[a-z]+(\.json|\.lock|\.lease)?$/);
  });

  it('C96 isolation: sessions for /a/mcp and /b/mcp on one host keep separate records; B never sends A\'s token', async () => {
    const k = kit();
    const bUrl = `${k.origin('mcp.example')}/b/mcp`;
    k.route('mcp.example', '/.well-known/oauth-protected-resource/b/mcp', json({ resource: bUrl, authorization_servers: [k.issuer] }));
    k.route('mcp.example', '/b/mcp', (req) => {
      const auth = String(req.headers.authorization ?? '');
      return k.validAccessTokens.has(auth.slice(7)) ? json({ ok: true }) : { status: 401, headers: { 'www-authenticate': `Bearer resource_metadata="${k.origin('mcp.example')}/.well-known/oauth-protected-resource/b/mcp"` } };
    });
    const a = k.session();
    expect((await k.call(a)).status).toBe(200);
    const aToken = [...k.validAccessTokens][0]!;
    const b = k.session({ serverUrl: bUrl });
    expect((await k.call(b, bUrl)).status).toBe(200);
    for (const r of k.to('mcp.example', '/b/mcp')) expect(String(r.headers.authorization ?? '')).not.toContain(aToken);
    expect(Object.keys((k.store.snapshot() as { records: Record<string, unknown> }).records).sort()).toEqual([bUrl, k.mcpUrl].sort());
    // DESIGN ("the token only ever goes to the MCP server's origin") scopes a session's token to its origin;
    // within one session, other paths on that origin are the same server.
  });

  it('C97 store unavailable on every write: the session still works in memory, failures are notices, no busy retry', async () => {
    const k = kit();
    let writes = 0;
    k.store.set = async () => {
      writes++;
      throw Object.assign(new Error('EROFS: read-only file system'), { code: 'EROFS' });
    };
    const s = k.session();
    expect((await k.call(s)).status).toBe(200);
    expect((await k.call(s)).status).toBe(200);
    expect(writes).toBeLessThanOrEqual(6);
    expect(JSON.stringify(k.trace)).toContain('store.write_failed');
  });

  it('C98 hostile callback state (../../x, 1 MB): only compared, never a file name; nothing written', async () => {
    const k = kit();
    const directory = await tempDir();
    let session: ReturnType<typeof k.session> | undefined;
    const verdicts: string[] = [];
    session = k.session({
      store: createFileStore({ directory }),
      openAuthorizationUrl: (url) => {
        k.opened.push(url);
        const genuine = k.approve(url)!;
        for (const state of ['../../x', 'x'.repeat(1024 * 1024)]) verdicts.push(session!.handleCallback({ code: genuine.get('code')!, state, iss: k.issuer }));
        setImmediate(() => verdicts.push(session!.handleCallback(genuine)));
      },
    });
    expect((await k.call(session)).status).toBe(200);
    expect(verdicts).toEqual(['rejected', 'rejected', 'accepted']);
    for (const f of await readdir(directory)) expect(f).toMatch(/^[0-9a-f]{32}\./);
    expect(await readdir(join(directory, '..'))).not.toContain('x');
  });
});

describe('storage across processes', () => {
  it('C94 two processes saving 1,000 records each (200 outside CI) for different servers at the same time: no lost update, both intact', async () => {
    kit();
    const count = process.env.CI === 'true' ? 1000 : 200;
    const { spawn } = await import('node:child_process');
    const directory = await tempDir();
    const worker = new URL('./fileWriterWorker.ts', import.meta.url).pathname;
    const run = (key: string) =>
      new Promise<string>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', worker, directory, key, String(count)], { stdio: ['ignore', 'pipe', 'pipe'] });
        let out = '';
        child.stdout.on('data', (d: Buffer) => (out += d.toString()));
        child.stderr.on('data', (d: Buffer) => (out += d.toString()));
        child.on('close', (code) => resolve(`${code}:${out.trim()}`));
      });
    const results = await Promise.all([run('https://mcp-a.example/mcp'), run('https://mcp-b.example/mcp')]);
    expect(results).toEqual(['0:done', '0:done']);
    const store = createFileStore({ directory });
    for (const key of ['https://mcp-a.example/mcp', 'https://mcp-b.example/mcp']) {
      const got = await store.get(key, 'tokens');
      expect(got?.value.access_token).toBe(`${key}#${count - 1}`);
      expect(got?.generation).toBe(count);
    }
  }, 120_000);

  it('C91 SIGKILL in the middle of writes (three kill points, by write count): the store holds a complete old or new record and keeps working', async () => {
    kit();
    const { spawn } = await import('node:child_process');
    const worker = new URL('./fileWriterWorker.ts', import.meta.url).pathname;
    const key = 'https://mcp-a.example/mcp';
    for (const killAfter of [3, 17, 41]) {
      const directory = await tempDir();
      const written = await new Promise<number>((resolve) => {
        const child = spawn(process.execPath, ['--import', 'tsx', worker, directory, key, '100000'], { stdio: ['ignore', 'pipe', 'ignore'], env: { ...process.env, PROGRESS: '1' } });
        let last = -1;
        let buffer = '';
        child.stdout.on('data', (d: Buffer) => {
          buffer += d.toString();
          const lines = buffer.split('\n');
          buffer = lines.pop() ?? '';
          for (const line of lines) last = Number(line);
          if (last + 1 >= killAfter) child.kill('SIGKILL');
        });
        child.on('close', () => resolve(last));
      });
      const store = createFileStore({ directory });
      const got = await store.get(key, 'tokens');
      expect(got).toBeDefined();
      const index = Number(got!.value.access_token.split('#')[1]);
      // The last acknowledged write or a later complete one (the kill lands a few writes late), never a partial record.
      expect(index).toBeGreaterThanOrEqual(written);
      expect(got!.generation).toBe(index + 1);
      const next = await store.set(key, 'tokens', { ...got!.value, access_token: `${key}#after` }, { ifGeneration: got!.generation });
      expect(next.ok).toBe(true);
      expect((await store.get(key, 'tokens'))?.value.access_token).toBe(`${key}#after`);
    }
  }, 120_000);
});
