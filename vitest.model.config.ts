import { defineConfig } from 'vitest/config';
import CoverageReporter from './test/model/coverageReporter.js';

export default defineConfig({
  test: {
    include: ['test/model/**/*.test.ts'],
    testTimeout: 120_000,
    hookTimeout: 60_000,
    pool: 'forks',
    reporters: ['default', new CoverageReporter()],
  },
});
