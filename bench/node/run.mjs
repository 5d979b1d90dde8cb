// Chat tokens/s: the `tabagent` Node package vs the C API vs node-llama-cpp 3.21.1,
// on one model, same threads, same prompt, greedy, same token count. Each engine
// runs in its own process, one at a time, in an order that rotates every round;
// the ratios are per round, then the median.
//   node bench/node/run.mjs [--model M] [--threads 2] [--tokens 128] [--rounds 5] [--no-nlc]
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = path.resolve(here, '..', '..');
const arg = (name, dflt) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : dflt;
};
const MODEL = arg('model', process.env.TABAGENT_TEST_MODEL ?? path.join(os.homedir(), '.cache/tabagent/models/SmolLM2-135M-Instruct.Q4_1.gguf'));
const THREADS = arg('threads', '2');
const TOKENS = arg('tokens', '128');
const ROUNDS = Number(arg('rounds', '5'));
const MESSAGE = arg('message', 'Write a long story about a dragon who learns to fly. Make it at least 500 words.');
const NLC_DIR = process.env.NLC_DIR ?? path.join(root, 'build', 'bench-node-llama-cpp');
const withNlc = !process.argv.includes('--no-nlc') && existsSync(path.join(NLC_DIR, 'node_modules/node-llama-cpp'));

const pkg = await import(path.join(root, 'bindings/node/src/index.js'));
const libDir = path.dirname(pkg.libraryPath);
const inc = [path.join(root, 'build/dist/include'), path.join(root, 'include')].find((d) => existsSync(path.join(d, 'tabagent.h')));
mkdirSync(path.join(root, 'build/bench'), { recursive: true });
const exe = path.join(root, 'build/bench/chat_c');
const cc = spawnSync(process.env.CC ?? 'cc', ['-std=c11', '-O2', '-Wall', '-Wextra', '-Werror', `-I${inc}`,
  path.join(here, 'chat_c.c'), '-o', exe, pkg.libraryPath, `-Wl,-rpath,${libDir}`], { stdio: 'inherit' });
if (cc.status !== 0) process.exit(1);

// The chat prompt as tabagent formats it: node-llama-cpp evaluates the same text.
const vocab = await pkg.Model.load(MODEL, { vocabOnly: true });
const PROMPT_TEXT = vocab.applyChatTemplate([{ role: 'user', content: MESSAGE }]);
vocab.close();

const engines = {
  c: () => [exe, [MODEL, THREADS, TOKENS, MESSAGE]],
  node: () => [process.execPath, [path.join(here, 'engine_tabagent.mjs'), MODEL, THREADS, TOKENS, MESSAGE]],
  ...(withNlc ? { nlc: () => [process.execPath, [path.join(here, 'engine_node_llama_cpp.mjs'), MODEL, THREADS, TOKENS]] } : {}),
};
const names = Object.keys(engines);

function runEngine(name) {
  const [cmd, args] = engines[name]();
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { ...process.env, PROMPT_TEXT, NLC_DIR }, maxBuffer: 1 << 24 });
  if (r.status !== 0) throw new Error(`${name} failed (${r.status}): ${r.stderr}`);
  const j = JSON.parse(r.stdout.trim().split('\n').pop());
  j.decode_tok_s = ((j.tokens - 1) * 1000) / j.decode_ms;
  j.total_tok_s = (j.tokens * 1000) / j.total_ms;
  return j;
}

const median = (v) => {
  const s = [...v].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
};
const rows = Object.fromEntries(names.map((n) => [n, []]));
for (let round = 0; round < ROUNDS; round++) {
  const order = names.map((_, i) => names[(i + round) % names.length]);
  for (const n of order) rows[n].push(runEngine(n));
  const line = order.map((n) => `${n}=${rows[n].at(-1).decode_tok_s.toFixed(1)}`).join(' ');
  console.error(`round ${round + 1}/${ROUNDS}: decode tok/s ${line} (tokens ${order.map((n) => rows[n].at(-1).tokens).join('/')})`);
}

console.log(`model=${path.basename(MODEL)}`);
console.log(`threads=${THREADS}`);
console.log(`max_tokens=${TOKENS}`);
console.log(`rounds=${ROUNDS}`);
for (const n of names) {
  console.log(`${n}_tokens=${rows[n].map((r) => r.tokens).join(',')}`);
  console.log(`${n}_decode_tok_s=${median(rows[n].map((r) => r.decode_tok_s)).toFixed(1)}`);
  console.log(`${n}_total_tok_s=${median(rows[n].map((r) => r.total_tok_s)).toFixed(1)}`);
}
const ratio = (a, b, k) => median(rows[a].map((r, i) => r[k] / rows[b][i][k])).toFixed(3);
console.log(`node_over_c_decode=${ratio('node', 'c', 'decode_tok_s')}`);
console.log(`node_over_c_total=${ratio('node', 'c', 'total_tok_s')}`);
if (withNlc) {
  console.log(`node_over_node_llama_cpp_decode=${ratio('node', 'nlc', 'decode_tok_s')}`);
  console.log(`node_over_node_llama_cpp_total=${ratio('node', 'nlc', 'total_tok_s')}`);
} else {
  console.log('node_llama_cpp=skipped (bench/node/run.sh installs it)');
}
console.log(`c_cb_us=${median(rows.c.map((r) => r.cb_us)).toFixed(4)}`);
