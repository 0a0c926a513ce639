/**
 * `npm run test:security`: one line per catalogue case (id, requirement, result) and the closing
 * `N passed, M failed` over the case ids. A case passes only when it has tests and all of them
 * passed; a case with an `it.fails` (a known engine gap) or without tests (pending, or not done)
 * counts as failed. The table is the catalogue's own list (test/security/catalogue.json).
 */
import { readFileSync } from 'node:fs';
import type { Reporter, TestModule } from 'vitest/node';

interface Case {
  id: string;
  title: string;
  enforces: string;
}

export default class CatalogueReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const cases = JSON.parse(readFileSync(new URL('./catalogue.json', import.meta.url), 'utf8')) as Case[];
    const results = new Map<string, { passed: number; failed: number; known: number }>();
    for (const module of testModules) {
      for (const test of module.children.allTests()) {
        const ids = test.name.match(/^(C\d+(?:\/C\d+)*)/)?.[1]?.split('/') ?? [];
        const state = test.result().state;
        for (const id of ids) {
          const r = results.get(id) ?? { passed: 0, failed: 0, known: 0 };
          if (test.options.fails && state === 'passed') r.known += 1;
          else if (state === 'passed') r.passed += 1;
          else if (state === 'failed') r.failed += 1;
          results.set(id, r);
        }
      }
    }
    let passed = 0;
    let failed = 0;
    const lines = ['', 'case  | requirement                      | result', '------|----------------------------------|------------------------------'];
    for (const c of cases) {
      const r = results.get(c.id);
      let result: string;
      if (!r || r.passed + r.failed + r.known === 0) result = 'pending (no test)';
      else if (r.failed > 0) result = `FAILED (${r.failed} of ${r.passed + r.failed + r.known})`;
      else if (r.known > 0) result = `failed: ${r.known} known gap(s) (it.fails), ${r.passed} passed`;
      else result = `passed (${r.passed})`;
      if (result.startsWith('passed')) passed += 1;
      else failed += 1;
      lines.push(`${c.id.padEnd(5)} | ${c.enforces.slice(0, 32).padEnd(32)} | ${result}`);
    }
    lines.push('', `${passed} passed, ${failed} failed`, '');
    process.stdout.write(lines.join('\n'));
    // The gate: a case that is pending, pinned or failing fails the run.
    if (failed > 0) process.exitCode = 1;
  }
}
