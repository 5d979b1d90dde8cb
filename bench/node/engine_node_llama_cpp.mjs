// node-llama-cpp 3.21.1 (installed by bench/node/run.sh into build/bench-node-llama-cpp)
// on the same model: the same chat prompt (formatted by the model's own template,
// as tabagent formats it, passed in PROMPT_TEXT), greedy, the same token count,
// timed per token. Prints one JSON line.
//   node engine_node_llama_cpp.mjs MODEL THREADS MAX_TOKENS   (env PROMPT_TEXT, NLC_DIR)
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { readFileSync } from 'node:fs';

const dir = process.env.NLC_DIR;
const pj = JSON.parse(readFileSync(path.join(dir, 'node_modules/node-llama-cpp/package.json'), 'utf8'));
const entry = pj.exports?.['.']?.import ?? pj.exports?.['.']?.default ?? pj.main ?? 'dist/index.js';
const { getLlama } = await import(pathToFileURL(path.join(dir, 'node_modules/node-llama-cpp', typeof entry === 'string' ? entry : entry.default)).href);
const [modelPath, threads, maxTokens] = process.argv.slice(2);
const N = Number(maxTokens);
const llama = await getLlama({ gpu: false, build: 'never', logLevel: 'error' });
const model = await llama.loadModel({ modelPath, gpuLayers: 0 });
const context = await model.createContext({ contextSize: 2048, threads: Number(threads), batchSize: 512 });
const seq = context.getSequence();
const tokens = model.tokenize(process.env.PROMPT_TEXT, true);

async function run(n) {
  let first = 0, last = 0, count = 0;
  const t0 = performance.now();
  for await (const token of seq.evaluate(tokens, { temperature: 0 })) {
    if (model.isSpecialToken?.(token) && token === model.tokens.eos) break;
    model.detokenize([token]); // the text of the piece, as a streaming caller would
    const t = performance.now();
    if (!count++) first = t;
    last = t;
    if (count >= n) break;
  }
  const t1 = performance.now();
  await seq.clearHistory();
  return { count, decode_ms: last - first, total_ms: t1 - t0 };
}
await run(2); // warm-up
const r = await run(N);
console.log(JSON.stringify({ engine: 'node-llama-cpp', tokens: r.count, prompt_tokens: tokens.length, pieces: r.count,
  decode_ms: r.decode_ms, total_ms: r.total_ms }));
await context.dispose();
await model.dispose();
await llama.dispose();
