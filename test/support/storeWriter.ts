/**
 * A process that rewrites one server's token record as fast as it can (compare-and-swap, the file
 * store's temp + fsync + rename) and reports each completed write on stdout. The CLI tests kill it
 * with SIGKILL mid-loop: almost every instant of its life is inside a write.
 *   node --import tsx test/support/storeWriter.ts <directory> <key>
 */
import { createFileStore } from '../../src/adapters/stores/file.js';

const [directory, key] = process.argv.slice(2);
if (directory === undefined || key === undefined) throw new Error('usage: storeWriter <directory> <key>');
const store = createFileStore({ directory });
for (let n = 1; ; n++) {
  const current = await store.get(key, 'tokens');
  if (current === undefined) throw new Error('no token record to rewrite');
  await store.set(key, 'tokens', { ...current.value, obtained_at: current.value.obtained_at + 1 }, { ifGeneration: current.generation });
  process.stdout.write(`${n}\n`);
}
