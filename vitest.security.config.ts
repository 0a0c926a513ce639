import { defineConfig } from 'vitest/config';
import CatalogueReporter from './test/security/catalogueReporter.js';

export default defineConfig({
  test: {
    // C80 and C113 need the grants' and DPoP's own servers: their cases live with those tests.
    include: ['test/security/**/*.test.ts', 'test/integration/grants.test.ts', 'test/integration/dpop.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: ['default', new CatalogueReporter()],
  },
});
