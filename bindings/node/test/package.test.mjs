// The installed package: resolved from node_modules, the library loaded from inside it.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { statSync, existsSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as ta from 'tabagent';

const installed = process.env.TABAGENT_EXPECT_INSTALLED;

test('resolves from node_modules and loads the library it carries', { skip: !installed && 'not the installed package' }, async () => {
  const entry = fileURLToPath(import.meta.resolve('tabagent'));
  const pkg = realpathSync(installed);
  assert.ok(entry.startsWith(pkg + path.sep), `${entry} is not inside ${pkg}`);
  assert.ok(entry.includes(`${path.sep}node_modules${path.sep}tabagent${path.sep}`));
  const pre = path.join(pkg, 'prebuilds', `${process.platform}-${process.arch}`);
  assert.equal(ta.libraryPath, path.join(pre, 'libtabagent.so'));
  assert.equal(ta.nativeCompanionPath, path.join(pre, 'libtabagent_node.so'));
  const probe = path.join(pre, 'tabagent-probe');
  assert.ok(statSync(probe).mode & 0o111, 'tabagent-probe lost its executable bit');
  for (const f of ['libllama.so.0', 'libggml.so.0', 'libggml-base.so.0']) assert.ok(existsSync(path.join(pre, f)), f);
  assert.ok(existsSync(path.join(pkg, 'node_modules', 'koffi')) || existsSync(path.join(pkg, '..', 'koffi')));
  // The CPU variant was chosen among the package's own copies.
  const hw = await ta.hardware();
  assert.equal(hw.build.backend_dir, realpathSync(pre));
  assert.ok(hw.build.cpu_variant, hw.build.cpu_variant_reason);
});

test('versions and status table', () => {
  assert.match(ta.version(), /^\d+\.\d+\.\d+$/);
  assert.equal(ta.abiVersion(), 5);
  assert.equal(typeof ta.llamaVersion(), 'string');
  assert.match(ta.systemInfo(), /CPU/);
  assert.equal(ta.STATUS.BUSY, 10);
  const e = new ta.BusyError(10, 'x');
  assert.ok(e instanceof ta.TabagentError && e instanceof Error);
  assert.equal(e.name, 'BusyError');
  assert.equal(e.statusName, 'BUSY');
});
