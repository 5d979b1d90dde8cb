// The hardware report (ta_hardware_json) and the fit estimate.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import os from 'node:os';
import { hardware, fit, Model, NotFoundError } from 'tabagent';
import { MODEL, HAVE_MODEL } from './helpers.mjs';

test('hardware report', async () => {
  const hw = await hardware();
  assert.ok(hw.cpu.logical_cores > 0);
  assert.ok(hw.cpu.logical_cores <= os.cpus().length * 2);
  assert.equal(typeof hw.cpu.vendor, 'string');
  assert.ok(hw.memory.total_bytes > 0);
  assert.ok(Array.isArray(hw.gpus));
  assert.equal(typeof hw.build, 'object');
});

test('fit: a file and a loaded model', { skip: !HAVE_MODEL && 'no test model' }, async () => {
  const f = await fit(MODEL, 2048);
  assert.ok(f.weightsBytes > 50e6 && f.totalBytes >= f.weightsBytes);
  assert.equal(f.fitsRam, true);
  assert.ok(f.recommendedThreads > 0);
  const m = await Model.load(MODEL);
  try {
    const g = await fit(m, 2048);
    assert.equal(g.weightsBytes, f.weightsBytes);
  } finally {
    m.close();
  }
  await assert.rejects(fit('/no/such/model.gguf'), NotFoundError);
});
