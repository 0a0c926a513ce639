// src/machines must stay pure: no I/O imports, no clock, no randomness (DESIGN "The machine: sans-IO").
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';

const root = new URL('../src/machines/', import.meta.url).pathname;
const forbiddenImport = /from\s+['"](node:[^'"]+|undici|fs|net|http|https|child_process|timers|os|path|crypto|dns|tls)['"]/;
const forbiddenCall = /\b(setTimeout|setInterval|setImmediate|Date\.now|new Date\(\)|Math\.random|crypto\.getRandomValues|performance\.now|process\.)/;
const problems = [];

function walk(dir) {
  for (const name of readdirSync(dir)) {
    const path = join(dir, name);
    if (statSync(path).isDirectory()) walk(path);
    else if (name.endsWith('.ts')) {
      readFileSync(path, 'utf8').split('\n').forEach((line, index) => {
        const code = line.replace(/\/\/.*$/, '');
        if (forbiddenImport.test(code) || forbiddenCall.test(code)) problems.push(`${path}:${index + 1}: ${line.trim()}`);
      });
    }
  }
}

walk(root);
if (problems.length > 0) {
  console.error(`src/machines must not do I/O or read the clock or randomness:\n${problems.join('\n')}`);
  process.exit(1);
}
console.log('check-pure: src/machines imports nothing that does I/O');
