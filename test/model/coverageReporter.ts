/** Ends `npm run test:model` with the coverage line, and fails the run below 100% of either count. */
import { readFileSync, rmSync } from 'node:fs';
import type { Reporter } from 'vitest/node';

export const COVERAGE_FILE = '.cache/model-coverage.json';

export default class CoverageReporter implements Reporter {
  onTestRunEnd(): void {
    let report: { states: [number, number]; transitions: [number, number] };
    try {
      report = JSON.parse(readFileSync(COVERAGE_FILE, 'utf8')) as typeof report;
      rmSync(COVERAGE_FILE, { force: true });
    } catch {
      process.stdout.write('\nstates covered 0/?, transitions covered 0/? (no coverage was recorded)\n');
      process.exitCode = 1;
      return;
    }
    const [s, sAll] = report.states;
    const [t, tAll] = report.transitions;
    process.stdout.write(`\nstates covered ${s}/${sAll}, transitions covered ${t}/${tAll}\n`);
    if (s < sAll || t < tAll) process.exitCode = 1;
  }
}
