import { defineConfig } from 'vitest/config';
import CatalogueReporter from './test/security/catalogueReporter.js';

export default defineConfig({
  test: {
    include: ['test/security/**/*.test.ts'],
    testTimeout: 60_000,
    hookTimeout: 30_000,
    pool: 'forks',
    reporters: ['default', new CatalogueReporter()],
  },
});
