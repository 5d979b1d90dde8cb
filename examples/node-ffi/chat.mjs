#!/usr/bin/env node
// Streaming chat through the `tabagent` npm package.
//
//   node examples/node-ffi/chat.mjs MODEL.gguf "Why is the sky blue?" [MAX_TOKENS]
//
// Uses the installed package (`npm install build/npm/tabagent-*.tgz`, made by
// bindings/node/pack.sh) and otherwise the one in this checkout (bindings/node,
// after `npm install` and `scripts/build-native.sh` there). Ctrl-C stops the reply
// through an AbortSignal.
let ta;
try {
  ta = await import('tabagent');
} catch {
  ta = await import(new URL('../../bindings/node/src/index.js', import.meta.url));
}
const { Model, AbortError } = ta;

const [modelPath, prompt = 'Explain in two sentences what a GGUF file is.', maxTokens = '200'] = process.argv.slice(2);
if (!modelPath) {
  console.error('usage: chat.mjs MODEL.gguf [PROMPT] [MAX_TOKENS]');
  process.exit(2);
}

const model = await Model.load(modelPath);
const ctx = await model.createContext({ nCtx: 2048 });
const stop = new AbortController();
process.once('SIGINT', () => stop.abort());

const messages = [{ role: 'user', content: prompt }];
const reply = ctx.chat(messages, { temperature: 0.7, seed: 42, maxTokens: Number(maxTokens), signal: stop.signal });
try {
  for await (const piece of reply) process.stdout.write(piece);
  const r = await reply.result;
  process.stdout.write('\n');
  console.error(`[${r.generatedTokens} tokens, ${(r.generatedTokens / (r.genMs / 1000)).toFixed(1)} tok/s, stop: ${r.stopReason}]`);
} catch (e) {
  if (!(e instanceof AbortError)) throw e;
  console.error(`\n[stopped after ${e.result.generatedTokens} tokens]`);
} finally {
  ctx.close();
  model.close();
}
