// Embeddings on all-MiniLM-L6-v2 (TABAGENT_TEST_EMBED_MODEL; `make embed-model`).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Model, InvalidArgumentError } from 'tabagent';
import { MODEL, HAVE_MODEL, THREADS } from './helpers.mjs';

const EMBED = process.env.TABAGENT_TEST_EMBED_MODEL
  ?? path.join(os.homedir(), '.cache/tabagent/models/all-MiniLM-L6-v2/all-MiniLM-L6-v2.F32.gguf');

const dot = (a, b) => a.reduce((s, x, i) => s + x * b[i], 0);

test('embed texts: unit vectors, similar texts closer', { skip: !existsSync(EMBED) && `no ${EMBED}` }, async () => {
  const m = await Model.load(EMBED);
  const ctx = await m.createContext({ embeddings: true, threads: THREADS, nCtx: 512 });
  try {
    assert.equal(ctx.embedDim, 384);
    assert.equal(ctx.pooling, 'mean');
    const [a, b, c] = await ctx.embed(['A cat sits on the mat.', 'A kitten is sitting on a rug.', 'Stock prices fell sharply.']);
    assert.ok(a instanceof Float32Array && a.length === 384);
    assert.ok(Math.abs(dot(a, a) - 1) < 1e-3);
    assert.ok(dot(a, b) > dot(a, c), `${dot(a, b)} vs ${dot(a, c)}`);
    const one = await ctx.embed('A cat sits on the mat.');
    assert.ok(dot(one, a) > 0.999);
    await assert.rejects(ctx.generate('x').result, InvalidArgumentError);
  } finally {
    ctx.close();
    m.close();
  }
});

test('embed on a generation context is refused', { skip: !HAVE_MODEL && 'no test model' }, async () => {
  const m = await Model.load(MODEL);
  const ctx = await m.createContext({ nCtx: 256, threads: THREADS });
  try {
    await assert.rejects(ctx.embed(['x']), (e) => e instanceof InvalidArgumentError && /embedding/.test(e.message));
  } finally {
    ctx.close();
    m.close();
  }
});
