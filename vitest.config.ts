import { defineConfig } from 'vitest/config';
import CatalogueReporter from './test/security/catalogueReporter.js';
import SummaryReporter from './test/support/summaryReporter.js';

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/model/**', 'node_modules/**'],
    testTimeout: 30_000,
    hookTimeout: 30_000,
    pool: 'forks',
    // `npm test` runs every file, so it also prints and gates the security catalogue's table.
    reporters: ['default', new SummaryReporter(), ...(process.env.MCP_OAUTH_CATALOGUE === '1' ? [new CatalogueReporter()] : [])],
  },
});
