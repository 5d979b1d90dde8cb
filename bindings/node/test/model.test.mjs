// Model, context, generation, sequences, cancellation, errors — against the test
// model (TABAGENT_TEST_MODEL). Token counts stay small: the machine may be shared.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync, existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import {
  Model, Context, Sequence, Generation, TabagentError, NotFoundError, BadModelError, BusyError,
  InvalidArgumentError, CancelledError, AbortError, NullArgError, STATUS, libraryPath,
} from 'tabagent';
import { MODEL, HAVE_MODEL, THREADS, REPO_ROOT, tmpDir } from './helpers.mjs';

const here = path.dirname(fileURLToPath(import.meta.url));

const skip = HAVE_MODEL ? false : `no test model at ${MODEL}`;
const PROMPT = 'The capital of France is';
const GREEDY = { temperature: 0, maxTokens: 12 };
let model, ctx;

before(async () => {
  if (skip) return;
  model = await Model.load(MODEL);
  ctx = await model.createContext({ nCtx: 512, threads: THREADS });
});

after(() => {
  ctx?.close();
  model?.close();
});

async function collect(gen) {
  const pieces = [];
  for await (const p of gen) pieces.push(p);
  return { pieces, result: await gen.result };
}

test('model info, metadata and chat template', { skip }, () => {
  const i = model.info;
  assert.equal(i.architecture, 'llama');
  assert.ok(i.nParams > 100e6 && i.nParams < 200e6, `nParams ${i.nParams}`);
  assert.ok(i.nCtxTrain >= 2048);
  assert.equal(typeof i.chatTemplate, 'string');
  assert.equal(model.meta('general.architecture'), 'llama');
  assert.equal(model.meta('no.such.key'), null);
  const md = model.metadata();
  assert.equal(typeof md, 'object');
  const prompt = model.applyChatTemplate([{ role: 'user', content: 'Hello there' }]);
  assert.match(prompt, /<\|im_start\|>user\nHello there<\|im_end\|>\n<\|im_start\|>assistant\n$/);
  const toks = model.tokenize('Hello world', { addSpecial: false });
  assert.ok(toks instanceof Int32Array && toks.length >= 2);
  assert.equal(model.detokenize(toks), 'Hello world');
});

test('greedy streamed reply: pieces make the text, a second run gives the same', { skip }, async () => {
  const a = await collect(ctx.generate(PROMPT, GREEDY));
  assert.ok(a.pieces.length >= 2, `pieces: ${a.pieces.length}`);
  assert.equal(a.pieces.join(''), a.result.text);
  assert.ok(a.result.text.length > 0);
  assert.equal(a.result.stopReason, 'max_tokens');
  assert.equal(a.result.generatedTokens, GREEDY.maxTokens);
  assert.ok(a.result.promptTokens >= 5);
  ctx.reset();
  const b = await collect(ctx.generate(PROMPT, GREEDY));
  assert.equal(b.result.text, a.result.text);
  assert.deepEqual(b.pieces, a.pieces);
  // The same prompt again: the KV cache holds it, only the tail is evaluated.
  const c = await ctx.generate(PROMPT, GREEDY).result;
  assert.ok(c.reusedTokens > 0, `reused ${c.reusedTokens}`);
});

test('the same greedy text as the C API gives', { skip }, async (t) => {
  const ours = await ctx.generate(PROMPT, GREEDY).result;
  const dir = tmpDir();
  const exe = path.join(dir, 'greedy');
  const inc = [path.join(REPO_ROOT, 'build/dist/include'), path.join(REPO_ROOT, 'include')]
    .find((d) => existsSync(path.join(d, 'tabagent.h')));
  const cc = spawnSync(process.env.CC ?? 'cc', ['-std=c11', '-O1', `-I${inc}`, path.join(here, 'greedy.c'), '-o', exe,
    libraryPath, `-Wl,-rpath,${path.dirname(libraryPath)}`], { encoding: 'utf8' });
  if (cc.error || !inc) return t.skip('no C compiler or header');
  assert.equal(cc.status, 0, cc.stderr);
  const r = spawnSync(exe, [MODEL, PROMPT, String(GREEDY.maxTokens), String(THREADS)], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stdout, ours.text);
});

test('chat with messages', { skip }, async () => {
  const msgs = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Name a colour.' },
  ];
  const { pieces, result } = await collect(ctx.chat(msgs, GREEDY));
  assert.equal(pieces.join(''), result.text);
  assert.ok(result.text.trim().length > 0);
  assert.ok(!result.text.includes('<|im_start|>'));
  const again = await ctx.chat(msgs, GREEDY).result;
  assert.equal(again.text, result.text);
  assert.ok(again.reusedTokens > 0);
  // A built-in template by name works too.
  const r = await ctx.chat(msgs, { ...GREEDY, maxTokens: 4, chatTemplate: 'chatml' }).result;
  assert.ok(r.generatedTokens > 0);
});

test('two sequences stream concurrently', { skip }, async () => {
  const c2 = await model.createContext({ nCtx: 1024, nSeqMax: 2, threads: THREADS });
  try {
    const s1 = c2.sequence(), s2 = c2.sequence();
    assert.ok(s1 instanceof Sequence);
    assert.notEqual(s1.id, s2.id);
    assert.throws(() => c2.sequence(), BusyError); // both taken
    const events = [];
    const run = async (seq, name, prompt) => {
      const gen = seq.generate(prompt, { temperature: 0, maxTokens: 10 });
      for await (const p of gen) events.push([name, performance.now(), p]);
      return gen.result;
    };
    const [r1, r2] = await Promise.all([run(s1, 'a', 'Once upon a time'), run(s2, 'b', 'The best fruit is')]);
    assert.equal(r1.generatedTokens, 10);
    assert.equal(r2.generatedTokens, 10);
    const a = events.filter((e) => e[0] === 'a'), b = events.filter((e) => e[0] === 'b');
    assert.equal(a.map((e) => e[2]).join(''), r1.text);
    assert.equal(b.map((e) => e[2]).join(''), r2.text);
    // Interleaved: each stream's first piece arrives before the other's last.
    assert.ok(a[0][1] < b.at(-1)[1] && b[0][1] < a.at(-1)[1], 'the two streams did not overlap');
    assert.ok(s1.nCached > 0);
    s1.close();
    s2.close();
    const s3 = c2.sequence(); // a freed sequence can be claimed again
    s3.close();
  } finally {
    c2.close();
  }
});

test('AbortSignal cancels mid-stream; the context is usable afterwards', { skip }, async () => {
  const ac = new AbortController();
  const gen = ctx.generate('Once upon a time, in a land far away,', { temperature: 0, maxTokens: 200, signal: ac.signal });
  const pieces = [];
  await assert.rejects(async () => {
    for await (const p of gen) {
      pieces.push(p);
      if (pieces.length === 3) ac.abort(new Error('user stop'));
    }
  }, (e) => {
    assert.ok(e instanceof AbortError && e instanceof CancelledError && e instanceof TabagentError);
    assert.equal(e.name, 'AbortError');
    assert.equal(e.code, 'ABORT_ERR');
    assert.equal(e.status, STATUS.CANCELLED);
    assert.equal(e.statusName, 'CANCELLED');
    assert.equal(e.cause?.message, 'user stop');
    assert.equal(e.result.stopReason, 'cancelled');
    assert.ok(e.result.generatedTokens < 200);
    assert.ok(e.result.text.startsWith(pieces.join('')));
    return true;
  });
  await assert.rejects(gen.result, AbortError);
  const r = await ctx.generate(PROMPT, { temperature: 0, maxTokens: 4 }).result;
  assert.equal(r.generatedTokens, 4);
  // An already aborted signal: nothing starts.
  const pre = ctx.generate(PROMPT, { signal: AbortSignal.abort() });
  await assert.rejects(pre.result, AbortError);
});

test('leaving the loop early or cancel() ends the stream without an error', { skip }, async () => {
  const gen = ctx.generate('Count: 1, 2, 3,', { temperature: 0, maxTokens: 100 });
  let n = 0;
  for await (const _ of gen) if (++n === 2) break;
  const r = await gen.result;
  assert.equal(r.stopReason, 'cancelled');
  assert.ok(r.generatedTokens < 100);
  const g2 = ctx.generate('Count: 1, 2, 3,', { temperature: 0, maxTokens: 100 });
  setTimeout(() => g2.cancel(), 50);
  const r2 = await g2.result;
  assert.equal(r2.stopReason, 'cancelled');
  assert.equal((await ctx.generate(PROMPT, { temperature: 0, maxTokens: 2 }).result).generatedTokens, 2);
});

test('the event loop keeps running during generation', { skip }, async () => {
  let ticks = 0, last = performance.now(), maxGap = 0;
  const timer = setInterval(() => {
    const now = performance.now();
    maxGap = Math.max(maxGap, now - last);
    last = now;
    ticks++;
  }, 5);
  const t0 = performance.now();
  try {
    ctx.reset(); // evaluate the prompt too
    await ctx.generate('Tell me about the sea.', { temperature: 0, maxTokens: 16 }).result;
  } finally {
    clearInterval(timer);
  }
  const ms = performance.now() - t0;
  assert.ok(ticks >= Math.min(10, ms / 50), `${ticks} ticks in ${ms.toFixed(0)} ms`);
  assert.ok(maxGap < 250, `the event loop stalled for ${maxGap.toFixed(0)} ms`);
});

test('errors: bad path, bad file, invalid arguments, busy, closed handles', { skip }, async () => {
  const missing = path.join(tmpDir(), 'missing.gguf');
  await assert.rejects(Model.load(missing), (e) => {
    assert.ok(e instanceof NotFoundError && e instanceof TabagentError);
    assert.equal(e.status, STATUS.NOT_FOUND);
    assert.equal(e.statusName, 'NOT_FOUND');
    assert.match(e.message, /ta_model_load/);
    assert.ok(e.message.includes(missing), e.message);
    return true;
  });
  const junk = path.join(tmpDir(), 'junk.gguf');
  writeFileSync(junk, Buffer.from('GGUF\x03\x00\x00\x00 not really a model at all', 'latin1'));
  await assert.rejects(Model.load(junk), (e) => e instanceof BadModelError && e.message.includes(junk));

  await assert.rejects(ctx.generate(PROMPT, { temperature: -1 }).result, (e) => {
    assert.ok(e instanceof InvalidArgumentError);
    assert.match(e.message, /temperature/);
    return true;
  });
  await assert.rejects(ctx.generate(PROMPT, { stop: [''] }).result, InvalidArgumentError);
  assert.throws(() => ctx.chat([{ role: 'user' }]), InvalidArgumentError);

  // One sequence driven twice at once: the second call is refused, the first goes on.
  const c2 = await model.createContext({ nCtx: 512, nSeqMax: 2, threads: THREADS });
  const seq = c2.sequence();
  try {
    const g1 = seq.generate('Once upon a time', { temperature: 0, maxTokens: 24 });
    await g1.next(); // g1 is running
    const g2 = seq.generate('Another prompt', { temperature: 0, maxTokens: 4 });
    await assert.rejects(g2.result, (e) => {
      assert.ok(e instanceof BusyError);
      assert.equal(e.statusName, 'BUSY');
      assert.ok(e.message.length > 0);
      return true;
    });
    await assert.rejects(async () => { for await (const _ of g2); }, BusyError);
    assert.equal((await g1.result).generatedTokens, 24);
  } finally {
    seq.close();
    c2.close();
  }
  // The context's own calls too.
  const a = ctx.generate(PROMPT, { temperature: 0, maxTokens: 16 });
  await a.next();
  const b = ctx.generate(PROMPT, { temperature: 0, maxTokens: 16 });
  await assert.rejects(b.result, BusyError);
  await a.result;

  const closed = await model.createContext({ nCtx: 256, threads: THREADS });
  closed.close();
  closed.close(); // idempotent
  await assert.rejects(closed.generate(PROMPT).result, NullArgError);
  assert.throws(() => closed.nCtx, (e) => e instanceof NullArgError && /closed/.test(e.message));
});

test('free order: model closed under a running context, context closed mid-generation', { skip }, async () => {
  const m = await Model.load(MODEL);
  const c = await m.createContext({ nCtx: 256, threads: THREADS });
  m.close(); // the context keeps the model alive
  assert.equal((await c.generate(PROMPT, { temperature: 0, maxTokens: 3 }).result).generatedTokens, 3);
  const gen = c.generate('Once upon a time, in a land far away,', { temperature: 0, maxTokens: 200 });
  for await (const _ of gen) {
    c.close(); // cancels; the free waits for the call to return
  }
  const r = await gen.result;
  assert.equal(r.stopReason, 'cancelled');
  assert.ok(c.closed);
});

test('Generation is an async iterator with a result promise', { skip }, async () => {
  const gen = ctx.generate(PROMPT, { temperature: 0, maxTokens: 2 });
  assert.ok(gen instanceof Generation);
  assert.equal(typeof gen[Symbol.asyncIterator], 'function');
  assert.equal(typeof (await gen.text()), 'string');
  assert.ok(ctx instanceof Context && ctx.nCtx >= 512 && ctx.nSeqMax === 1);
});
