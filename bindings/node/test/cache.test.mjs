// The model cache against the hub imitation (tests/hub/fake_hub.py) on 127.0.0.1.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import { Cache, Pull, AbortError, NotFoundError, CancelledError } from 'tabagent';
import { startHub, blob, tmpDir, PYTHON, REPO_ROOT } from './helpers.mjs';

const REPO = 'tabagent-test/tiny-GGUF';
const FILES = {
  'README.md': Buffer.from('# tiny\n'),
  'tiny-Q4_K_M.gguf': blob(300_000, 'q4km'),
  'tiny-Q8_0.gguf': blob(500_000, 'q8'),
  'tiny-F16-00001-of-00002.gguf': blob(200_000, 'f16a'),
  'tiny-F16-00002-of-00002.gguf': blob(150_000, 'f16b'),
};
const skip = existsSync(path.join(REPO_ROOT, 'tests/hub/fake_hub.py')) && PYTHON ? false : 'no hub imitation';
let hub;

before(async () => {
  if (!skip) hub = await startHub(REPO, FILES);
});
after(() => hub?.stop());

function open(extra = {}) {
  return new Cache({ root: path.join(tmpDir(), 'hub-cache'), endpoint: hub.url, retries: 2, ...extra });
}

test('scan, pull a variant with progress events, list, delete', { skip }, async () => {
  const cache = open();
  try {
    const man = await cache.scan(REPO);
    assert.equal(typeof man, 'object');
    assert.ok(JSON.stringify(man).includes('Q4_K_M'));
    const pull = cache.pull(REPO, { quant: 'F16' });
    assert.ok(pull instanceof Pull);
    const events = [];
    pull.on('progress', (e) => events.push(e));
    const p = await pull; // thenable: the first shard's path
    assert.ok(p.endsWith('tiny-F16-00001-of-00002.gguf'), p);
    assert.deepEqual(readFileSync(p), FILES['tiny-F16-00001-of-00002.gguf']);
    const files = new Set(events.map((e) => e.file));
    assert.ok(files.has('tiny-F16-00001-of-00002.gguf') && files.has('tiny-F16-00002-of-00002.gguf'), [...files].join());
    for (const f of files) {
      const last = events.filter((e) => e.file === f).at(-1);
      assert.equal(last.done, last.total);
      assert.equal(last.total, FILES[f].length);
    }
    assert.ok(events.every((e) => e.done <= e.total));
    assert.equal(cache.hasFile(REPO, 'tiny-F16-00002-of-00002.gguf'), true);
    assert.equal(cache.hasFile(REPO, 'tiny-Q8_0.gguf'), false);

    // One file, progress through the async iterator, then the result.
    const one = cache.pull(REPO, { file: 'tiny-Q8_0.gguf' });
    const seen = [];
    for await (const e of one) seen.push(e);
    assert.ok(seen.length >= 1 && seen.at(-1).done === FILES['tiny-Q8_0.gguf'].length);
    assert.equal(await one.result, cache.snapshotPath(REPO, 'tiny-Q8_0.gguf'));

    const repos = cache.list();
    const r = repos.find((x) => x.repo_id === REPO);
    assert.ok(r, JSON.stringify(repos));
    assert.equal(cache.stats().repos, 1);
    assert.deepEqual(await cache.verify(REPO), []);
    await cache.delete(REPO);
    assert.equal(cache.list().length, 0);
  } finally {
    cache.close();
  }
});

test('pull errors: unknown file, AbortSignal', { skip }, async () => {
  const cache = open();
  try {
    await assert.rejects(cache.pull(REPO, { file: 'nope.gguf' }).result, (e) => {
      assert.ok(e instanceof NotFoundError, `${e.name}: ${e.message}`);
      assert.match(e.message, /nope\.gguf/);
      return true;
    });
    await hub.fault('tiny-Q4_K_M.gguf', 'slow:100000'); // about 3 s for the file
    const ac = new AbortController();
    const pull = cache.pull(REPO, { quant: 'Q4_K_M', signal: ac.signal });
    pull.once('progress', () => ac.abort());
    await assert.rejects(pull.result, (e) => e instanceof AbortError && e instanceof CancelledError);
    assert.equal(cache.hasFile(REPO, 'tiny-Q4_K_M.gguf'), false);
    // Resumes and completes afterwards.
    const p = await cache.pull(REPO, 'Q4_K_M');
    assert.deepEqual(readFileSync(p), FILES['tiny-Q4_K_M.gguf']);
  } finally {
    cache.close();
  }
});
