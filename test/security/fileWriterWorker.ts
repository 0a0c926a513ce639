/** C94 worker: saves `count` successive records for one key into a shared file-store directory. */
import { createFileStore } from '../../src/adapters/stores/file.js';

const [directory, key, countText] = process.argv.slice(2);
const store = createFileStore({ directory: directory! });
const count = Number(countText);
for (let i = 0; i < count; i++) {
  const current = await store.get(key!, 'tokens');
  const result = await store.set(
    key!,
    'tokens',
    { access_token: `${key}#${i}`, token_type: 'bearer', obtained_at: i, issuer: 'https://as.example', resource: key! },
    { ifGeneration: current?.generation ?? 0 },
  );
  if (!result.ok) throw new Error(`lost write ${i}`);
  if (process.env.PROGRESS === '1') process.stdout.write(`${i}\n`);
}
process.stdout.write('done\n');
