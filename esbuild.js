// Bundles every entry point: the relay and the command-line client (Node programs), the demo and
// benchmark, the VS Code extension and its extension-host test suite. Type-checking is separate
// (`npm run typecheck`).
const esbuild = require('esbuild');

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

const entryPoints = {
  relay: 'server/main.ts',
  cli: 'extension/cli/main.ts',
  demo: 'scripts/demo.ts',
  bench: 'scripts/bench/run.ts',
  'bench-tcp-relay': 'scripts/bench/tcp-relay.ts',
  extension: 'extension/vscode/extension.ts',
  // The extension-host test suites (run inside a real VS Code, see test/vscode).
  'test/vscode-suite': 'test/vscode/suite/index.ts',
};

async function main() {
  const ctx = await esbuild.context({
    entryPoints,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    outdir: 'dist',
    external: ['vscode', 'bufferutil', 'utf-8-validate', 'mocha'],
    minify: production,
    sourcemap: !production,
    sourcesContent: false,
    logLevel: 'warning',
  });
  if (watch) {
    await ctx.watch();
    return;
  }
  await ctx.rebuild();
  await ctx.dispose();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
