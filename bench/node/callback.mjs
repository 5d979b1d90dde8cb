// Per-token callback cost in Node, without a model: the library's streaming text
// path (ta_debug_stream, one piece per "token") into JS
//   queued — the package's path: pieces queued natively, the JS thread woken by the
//            notifier, iterated with for-await (what a generation does);
//   direct — for comparison, a koffi JS callback called from the worker thread for
//            each piece (the generating thread waits for the JS thread every time);
//   c      — the same text path into a C callback (bench/node/chat_c reports it).
// Prints name=value lines; target: queued_us_per_token < 20.
//   node bench/node/callback.mjs [PIECES]
const pkgDir = new URL('../../bindings/node/src/', import.meta.url);
const { _debugStream } = await import(new URL('index.js', pkgDir).href);
const { koffi, LIB_PATH } = await import(new URL('native.js', pkgDir).href);

const N = Number(process.argv[2] ?? 100000);
const text = 'abc '.repeat(N);

async function queued() {
  const t0 = performance.now();
  let n = 0;
  const gen = _debugStream(text, 4);
  for await (const _ of gen) n++;
  const r = await gen.result;
  const dt = performance.now() - t0;
  if (n !== N || r.generatedTokens !== N) throw new Error(`queued: ${n} pieces, ${r.generatedTokens} calls, expected ${N}`);
  return (dt * 1000) / N;
}

async function direct(n) {
  const lib = koffi.load(LIB_PATH);
  const Cb = koffi.proto('bool bench_text_cb(void *ud, const void *text, size_t len)');
  const fn = lib.func('int32_t ta_debug_stream(const char *text, size_t len, size_t piece_len, const char **stop, size_t n_stop, bench_text_cb *cb, void *ud, _Out_ size_t *calls)');
  let got = 0;
  const cb = koffi.register((_ud, p, len) => {
    koffi.decode(p, 'char', Number(len));
    got++;
    return true;
  }, koffi.pointer(Cb));
  const t = 'abc '.repeat(n);
  const calls = [0];
  const t0 = performance.now();
  await new Promise((res, rej) => fn.async(t, t.length, 4, null, 0, cb, null, calls, (e, r) => (e ? rej(e) : res(r))));
  const dt = performance.now() - t0;
  koffi.unregister(cb);
  if (got !== n) throw new Error(`direct: ${got} of ${n}`);
  return (dt * 1000) / n;
}

await queued(); // warm-up
const q = [];
for (let i = 0; i < 3; i++) q.push(await queued());
q.sort((a, b) => a - b);
const d = await direct(Math.min(N, 20000));
console.log(`pieces=${N}`);
console.log(`queued_us_per_token=${q[1].toFixed(3)}`);
console.log(`direct_koffi_callback_us_per_token=${d.toFixed(3)}`);
console.log(`queued_target_met=${q[1] < 20}`);
