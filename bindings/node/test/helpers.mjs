// Shared by the tests: the test model, the repository root (for the hub imitation),
// and a hub started on 127.0.0.1.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, writeFileSync, mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import readline from 'node:readline';

const here = path.dirname(fileURLToPath(import.meta.url));
export const REPO_ROOT = process.env.TABAGENT_REPO_ROOT ?? path.resolve(here, '..', '..', '..');
export const MODEL = process.env.TABAGENT_TEST_MODEL
  ?? path.join(os.homedir(), '.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf');
export const HAVE_MODEL = existsSync(MODEL);
export const THREADS = Number(process.env.TABAGENT_TEST_THREADS ?? 2);
export const PYTHON = [path.join(REPO_ROOT, '.venv/bin/python'), 'python3'].find((p) => p === 'python3' || existsSync(p));

export function tmpDir(prefix = 'tabagent-node-') {
  return mkdtempSync(path.join(os.tmpdir(), prefix));
}

/** Deterministic bytes of length n (as tests/python/test_cache.py makes them). */
export function blob(n, seed) {
  const d = createHash('sha256').update(seed).digest();
  const out = Buffer.alloc(n, 'x');
  for (let i = 0; i + 32 <= n; i += 32) d.copy(out, i);
  return out;
}

/**
 * Start tests/hub/fake_hub.py serving `files` ({path: Buffer}) as repo `repo`.
 * Returns { url, stop() }. `faults`: ['PATH=SPEC', …].
 */
export async function startHub(repo, files, faults = []) {
  const dir = tmpDir('tabagent-hub-');
  for (const [p, data] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(dir, p)), { recursive: true });
    writeFileSync(path.join(dir, p), data);
  }
  const args = [path.join(REPO_ROOT, 'tests/hub/fake_hub.py'), '--port', '0', '--repo', `${repo}=${dir}`];
  for (const f of faults) args.push('--fault', f);
  const child = spawn(PYTHON, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const rl = readline.createInterface({ input: child.stdout });
  const url = await new Promise((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`fake_hub exited with ${code}`)));
    rl.once('line', resolve);
  });
  return {
    url,
    async fault(key, spec) {
      const r = await fetch(`${url}/_fault`, { method: 'POST', body: JSON.stringify({ path: key, fault: spec }) });
      if (!r.ok) throw new Error(`/_fault: ${r.status} ${await r.text()}`);
    },
    stop() {
      child.removeAllListeners('exit');
      child.kill('SIGTERM');
    },
  };
}
