// Bundles every entry point: the relay and the command-line client (Node programs), the demo and
// benchmark, the VS Code extension and its extension-host test suite. Type-checking is separate
// (`npm run typecheck`).
const fs = require('node:fs');
const esbuild = require('esbuild');

const production = process.argv.includes('--production');
const watch = process.argv.includes('--watch');

const common = {
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  outdir: 'dist',
  minify: production,
  sourcemap: !production,
  sourcesContent: false,
  logLevel: 'warning',
  // `sft --version`, `sft-relay --version` (extension/core/version.ts).
  define: { SFT_VERSION: JSON.stringify(require('./package.json').version) },
};
const external = ['vscode', 'bufferutil', 'utf-8-validate', 'mocha'];
// The Redis client and adapter (1.5 MB of the 3.9 MB relay bundle) are loaded only for a cluster
// (`--redis`): left out of every bundle, they are required from node_modules when needed, so a
// single relay neither parses nor holds them (idle RSS and start-up CPU).
const cluster = ['redis', '@socket.io/redis-adapter'];

const builds = [
  {
    ...common,
    external: [...external, ...cluster],
    entryPoints: {
      relay: 'server/main.ts',
      cli: 'extension/cli/main.ts',
      demo: 'scripts/demo.ts',
      bench: 'scripts/bench/run.ts',
      'bench-tcp-relay': 'scripts/bench/tcp-relay.ts',
      // The extension-host test suites (run inside a real VS Code, see test/vscode); a build
      // without test/ (deploy/Containerfile copies only what the relay needs) leaves them out.
      ...(fs.existsSync('test/vscode/suite/index.ts') ? { 'test/vscode-suite': 'test/vscode/suite/index.ts' } : {}),
    },
  },
  {
    ...common,
    // The relay Start Relay embeds is a single node: the cluster modules stay out of the .vsix.
    external: [...external, ...cluster],
    entryPoints: { extension: 'extension/vscode/extension.ts' },
  },
];

async function main() {
  const contexts = await Promise.all(builds.map((options) => esbuild.context(options)));
  if (watch) {
    await Promise.all(contexts.map((ctx) => ctx.watch()));
    return;
  }
  await Promise.all(contexts.map((ctx) => ctx.rebuild()));
  await Promise.all(contexts.map((ctx) => ctx.dispose()));
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
