/**
 * `npm run build:browser`: bundles the browser engine and the example page with esbuild for the
 * browser platform. esbuild refuses a node:* import on that platform, and the build checks the
 * metafile again so that a Node built-in can never slip in through a dependency or a shim.
 *
 * Output (examples/web/dist/, ignored by git like every dist/ folder; rebuilt on demand by serve.ts):
 *   mcp-oauth.browser.js  the engine alone (src/browser + src/machines + xstate + zod), ESM
 *   app.js                the example page: the engine plus the MCP SDK client and its browser transport
 *   meta.json             esbuild's metafile: which modules went into which bundle
 */
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';
import { build, type Metafile } from 'esbuild';

const here = path.dirname(fileURLToPath(import.meta.url));
export const projectRoot = path.resolve(here, '../..');
export const defaultDistDir = path.join(here, 'dist');

export interface BundleSize {
  file: string;
  minifiedBytes: number;
  gzippedBytes: number;
}

export interface WebBuild {
  outdir: string;
  metafile: Metafile;
  sizes: BundleSize[];
}

/** Inputs that would need Node at run time: a node: import or anything left external. */
export function nodeDependencies(metafile: Metafile): string[] {
  const found = new Set<string>();
  for (const [input, info] of Object.entries(metafile.inputs)) {
    if (input.startsWith('node:')) found.add(input);
    for (const imported of info.imports) if (imported.path.startsWith('node:') || imported.external) found.add(imported.path);
  }
  for (const output of Object.values(metafile.outputs)) for (const imported of output.imports) found.add(imported.path);
  return [...found];
}

export async function buildWebExample(options: { outdir?: string } = {}): Promise<WebBuild> {
  const outdir = options.outdir ?? defaultDistDir;
  const result = await build({
    absWorkingDir: projectRoot,
    entryPoints: {
      'mcp-oauth.browser': 'src/browser/index.ts',
      app: 'examples/web/app.ts',
    },
    outdir,
    bundle: true,
    format: 'esm',
    platform: 'browser',
    target: ['es2022', 'chrome120', 'firefox121', 'safari17'],
    minify: true,
    legalComments: 'none',
    metafile: true,
    write: true,
    logLevel: 'warning',
  });
  const leaks = nodeDependencies(result.metafile);
  if (leaks.length > 0) throw new Error(`the browser bundles need Node or external modules: ${leaks.join(', ')}`);
  await writeFile(path.join(outdir, 'meta.json'), JSON.stringify(result.metafile));

  const sizes: BundleSize[] = [];
  for (const output of Object.keys(result.metafile.outputs)) {
    if (!output.endsWith('.js')) continue;
    const bytes = await readFile(path.join(projectRoot, output));
    sizes.push({ file: path.basename(output), minifiedBytes: bytes.length, gzippedBytes: gzipSync(bytes, { level: 9 }).length });
  }
  return { outdir, metafile: result.metafile, sizes };
}

const kib = (bytes: number): string => `${(bytes / 1024).toFixed(1)} KiB`;

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const { outdir, sizes } = await buildWebExample();
  process.stdout.write(`built ${path.relative(process.cwd(), outdir)}/\n`);
  for (const size of sizes) {
    process.stdout.write(`  ${size.file.padEnd(22)} ${kib(size.minifiedBytes).padStart(10)} minified  ${kib(size.gzippedBytes).padStart(10)} gzipped\n`);
  }
}
