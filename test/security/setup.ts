/** Per-case kit with the invariants every case asserts: INV-A (no leak), REL-10 (sentinel scan), INV-D (no open handles). */
import { afterEach, beforeEach } from 'vitest';
import { assertNoOpenHandles, handleCounts, Kit, type KitOptions } from './kit.js';

export function useKit(options: KitOptions = {}): () => Kit {
  let kit: Kit | undefined;
  let baseline: Record<string, number> = {};
  beforeEach(async () => {
    baseline = handleCounts();
    kit = await new Kit({ ...options }).start();
  });
  afterEach(async () => {
    const k = kit!;
    kit = undefined;
    try {
      k.assertNoLeak();
      k.assertNoSecretsOutside();
      k.assertOnlyKitDialled();
    } finally {
      await k.close();
    }
    await assertNoOpenHandles(baseline);
  });
  return () => kit!;
}
