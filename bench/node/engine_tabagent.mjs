// The Node side of bench/node: one chat turn through the `tabagent` package (this
// checkout's bindings/node, or TABAGENT_NODE_PKG), timed per piece. Prints one JSON line.
//   node engine_tabagent.mjs MODEL THREADS MAX_TOKENS MESSAGE
const pkg = process.env.TABAGENT_NODE_PKG ?? new URL('../../bindings/node/src/index.js', import.meta.url).href;
const { Model } = await import(pkg);
const [modelPath, threads, maxTokens, message] = process.argv.slice(2);
const model = await Model.load(modelPath);
const ctx = await model.createContext({ nCtx: 2048, threads: Number(threads), threadsBatch: Number(threads) });
const msgs = [{ role: 'user', content: message }];
await ctx.chat(msgs, { temperature: 0, maxTokens: 2 }).result; // warm-up
ctx.reset();
let first = 0, last = 0, pieces = 0;
const t0 = performance.now();
const gen = ctx.chat(msgs, { temperature: 0, maxTokens: Number(maxTokens) });
for await (const _ of gen) {
  const t = performance.now();
  if (!pieces++) first = t;
  last = t;
}
const r = await gen.result;
const t1 = performance.now();
console.log(JSON.stringify({ engine: 'tabagent-node', tokens: r.generatedTokens, prompt_tokens: r.promptTokens,
  pieces, decode_ms: last - first, total_ms: t1 - t0, text: r.text.slice(0, 60) }));
ctx.close();
model.close();
