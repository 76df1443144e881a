// ort_bench.js - ONNX Runtime's side of `make bench-ort` (tests/bench/bench_ort.py): one timing
// round of an exported model on the preprocessed samples tests/bench/bench_ort.c wrote
// (little-endian float32, N x the model's input shape), with 2 intra-op threads and all graph
// optimisations. Prints one line, as bench_ort does:
//   result samples_per_s=S single_us=U
// samples_per_s: the median of batch-B runs over the first B samples within the budget (at
// least 3, after one warm-up); single_us: the p50 of single-sample runs.
//   node ort_bench.js MODEL.onnx INPUT.f32 --batch B [--budget S] [--threads T] [--logits OUT]
// The onnxruntime-node module is loaded from $KD_ORT_MODULE (a folder path) or by name.
'use strict';
const fs = require('fs');

function fail(msg) {
  process.stderr.write('ort_bench: ' + msg + '\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const opt = {batch: 1000, budget: 1.0, threads: 2, logits: null};
const pos = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--batch') opt.batch = parseInt(args[++i], 10);
  else if (a === '--budget') opt.budget = parseFloat(args[++i]);
  else if (a === '--threads') opt.threads = parseInt(args[++i], 10);
  else if (a === '--logits') opt.logits = args[++i];
  else pos.push(a);
}
if (pos.length !== 2 || !(opt.batch > 0)) fail('usage: MODEL INPUT.f32 --batch B [--budget S]');

const now = () => Number(process.hrtime.bigint()) / 1e9;

(async () => {
  const ort = require(process.env.KD_ORT_MODULE || 'onnxruntime-node');
  const session = await ort.InferenceSession.create(pos[0], {
    graphOptimizationLevel: 'all', intraOpNumThreads: opt.threads, interOpNumThreads: 1,
    executionMode: 'sequential'});
  const shape = session.inputMetadata[0].shape.slice(1);
  const per = shape.reduce((a, b) => a * b, 1);
  const buf = fs.readFileSync(pos[1]);
  const all = new Float32Array(buf.buffer, buf.byteOffset, Math.floor(buf.length / 4));
  const B = opt.batch;
  if (all.length < B * per) fail(pos[1] + ': fewer values than ' + B + ' x ' + per);
  const x = Float32Array.from(all.subarray(0, B * per));
  const feed = (start, count) => ({input: new ort.Tensor(
      'float32', x.subarray(start * per, (start + count) * per), [count, ...shape])});
  const batch = feed(0, B);
  let out = await session.run(batch);
  const times = [];
  const start = now();
  while (times.length < 64 && (times.length < 3 || now() - start < opt.budget)) {
    const t0 = now();
    out = await session.run(batch);
    times.push(now() - t0);
  }
  if (opt.logits) {
    const z = out.logits.data;
    fs.writeFileSync(opt.logits, Buffer.from(z.buffer, z.byteOffset, z.byteLength));
  }
  const ns = Math.min(B, 64), single = [];
  for (let i = 0; i < 10; i++) await session.run(feed(i % ns, 1));
  const s0 = now();
  while (single.length < 2000 && (single.length < 20 || now() - s0 < opt.budget / 2)) {
    const f = feed(single.length % ns, 1);
    const t0 = now();
    await session.run(f);
    single.push(now() - t0);
  }
  const med = (a) => a.sort((p, q) => p - q)[(a.length - 1) >> 1];
  console.log('result samples_per_s=' + (B / med(times)).toFixed(1) + ' single_us=' +
              (med(single) * 1e6).toFixed(2));
})().catch((e) => fail(String(e && e.message || e)));
