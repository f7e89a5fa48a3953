// Bundles every entry point: the relay and the command-line client (Node programs), the demo,
// and later the VS Code extension. Type-checking is separate (`npm run typecheck`).
const esbuild = require('esbuild');

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

const entryPoints = {
  relay: 'server/main.ts',
  cli: 'extension/cli/main.ts',
  demo: 'scripts/demo.ts',
  bench: 'scripts/bench/run.ts',
  'bench-tcp-relay': 'scripts/bench/tcp-relay.ts',
};

async function main() {
  const ctx = await esbuild.context({
    entryPoints,
    bundle: true,
    format: 'cjs',
    platform: 'node',
    target: 'node20',
    outdir: 'dist',
    external: ['vscode', 'bufferutil', 'utf-8-validate'],
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
