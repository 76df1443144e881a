// ort_run.js - runs an exported ONNX model with ONNX Runtime (npm onnxruntime-node) on the first
// N samples of an IDX file (raw u8 values as floats 0-255, or float32 IDX rows; .gz read too),
// for the tests, the demo and the README's measurements. Prints "accuracy A" when labels are
// given and, with --bench, the batch and single-sample timings; writes the logits (N x classes
// float32, little endian) when --logits is given, and the graph as ONNX Runtime optimized it
// (fused integer kernels and all) when --optimized is given.
//
//   node ort_run.js MODEL.onnx IMAGES [--n 1000] [--shape 1,28,28] [--labels LABELS]
//                   [--logits OUT.f32] [--optimized OUT.onnx] [--bench]
// --shape (the per-sample input shape) defaults to the model's own input shape.
// The onnxruntime-node module is loaded from $KD_ORT_MODULE (a folder path) or by name.
'use strict';
const fs = require('fs');
const zlib = require('zlib');

function fail(msg) {
  process.stderr.write('ort_run: ' + msg + '\n');
  process.exit(2);
}

const args = process.argv.slice(2);
const opt = {n: 1000, shape: null, labels: null, logits: null, optimized: null, bench: false};
const pos = [];
for (let i = 0; i < args.length; i++) {
  const a = args[i];
  if (a === '--n') opt.n = parseInt(args[++i], 10);
  else if (a === '--shape') opt.shape = args[++i].split(',').map(Number);
  else if (a === '--labels') opt.labels = args[++i];
  else if (a === '--logits') opt.logits = args[++i];
  else if (a === '--optimized') opt.optimized = args[++i];
  else if (a === '--bench') opt.bench = true;
  else pos.push(a);
}
if (pos.length !== 2 || !(opt.n > 0)) fail('usage: MODEL IMAGES [--n N] [--shape D[,H,W]] ...');

// IDX: magic 0x00000800 | type << 8 | rank, big-endian dimensions, then the values.
function readIdx(path) {
  let b = fs.readFileSync(path);
  if (b[0] === 0x1f && b[1] === 0x8b) b = zlib.gunzipSync(b);
  if (b.length < 4 || b[0] !== 0 || b[1] !== 0 || (b[2] !== 0x08 && b[2] !== 0x0d))
    fail(path + ': not a u8 or float32 IDX file');
  const rank = b[3], dims = [];
  for (let k = 0; k < rank; k++) dims.push(b.readUInt32BE(4 + 4 * k));
  if (b[2] === 0x08) return {dims, data: b.subarray(4 + 4 * rank)};
  const n = (b.length - 4 - 4 * rank) / 4, data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = b.readFloatBE(4 + 4 * rank + 4 * i);
  return {dims, data};
}

(async () => {
  const ort = require(process.env.KD_ORT_MODULE || 'onnxruntime-node');
  const img = readIdx(pos[1]);
  // session.x64quantprecision: on x86 CPUs without VNNI, ONNX Runtime's default int8 products
  // (u8 x s8 pairs summed in 16 bits) saturate; this option makes it run them exactly (u8 x u8)
  // and changes nothing on other CPUs. The tests check the QDQ file's arithmetic, not that
  // kernel's overflow, so they always set it (docs/integer.md says users should too).
  const session = await ort.InferenceSession.create(pos[0], {
    graphOptimizationLevel: 'all', intraOpNumThreads: 0, interOpNumThreads: 1,
    extra: {session: {x64quantprecision: '1'}},
    ...(opt.optimized ? {optimizedModelFilePath: opt.optimized} : {})});
  if (!opt.shape) opt.shape = session.inputMetadata[0].shape.slice(1);
  const per = opt.shape.reduce((a, b) => a * b, 1);
  const n = Math.min(opt.n, img.dims[0]);
  if (img.data.length < n * per) fail(pos[1] + ': fewer values than ' + n + ' x ' + per);
  const x = new Float32Array(n * per);
  for (let i = 0; i < n * per; i++) x[i] = img.data[i];
  const feed = (start, count) => ({input: new ort.Tensor(
      'float32', x.subarray(start * per, (start + count) * per), [count, ...opt.shape])});
  const out = await session.run(feed(0, n));
  const logits = out.logits.data, classes = out.logits.dims[1];
  if (opt.logits) fs.writeFileSync(opt.logits, Buffer.from(logits.buffer, logits.byteOffset, logits.byteLength));
  if (opt.labels) {
    const lab = readIdx(opt.labels).data;
    let hits = 0;
    for (let i = 0; i < n; i++) {
      let best = 0;
      for (let c = 1; c < classes; c++) if (logits[i * classes + c] > logits[i * classes + best]) best = c;
      if (best === lab[i]) hits++;
    }
    console.log('accuracy ' + (100 * hits / n).toFixed(2) + ' % of ' + n);
  }
  if (opt.bench) {
    // One run each, as the README reports: the best of 5 batches of (up to) 1000 samples, then
    // 2000 single samples.
    const nb = Math.min(n, 1000);
    let best = Infinity;
    for (let r = 0; r < 5; r++) {
      const t = process.hrtime.bigint();
      await session.run(feed(0, nb));
      best = Math.min(best, Number(process.hrtime.bigint() - t) / 1e6);
    }
    const times = [];
    for (let r = 0; r < 2000; r++) {
      const t = process.hrtime.bigint();
      await session.run(feed(r % n, 1));
      times.push(Number(process.hrtime.bigint() - t) / 1e3);
    }
    times.sort((a, b) => a - b);
    console.log('batch ' + nb + ' ' + best.toFixed(3) + ' ms (' + Math.round(nb / best * 1e3) + ' samples/s)');
    console.log('single p50 ' + times[1000].toFixed(1) + ' us, p99 ' + times[1980].toFixed(1) + ' us');
  }
})().catch((e) => fail(String(e && e.message || e)));
