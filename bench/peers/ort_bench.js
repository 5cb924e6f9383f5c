// ONNX Runtime (CPU, onnxruntime-node) side of the peer benchmark.
//
//   node ort_bench.js --dir DIR --model NAME --threads T --batches 1,8 --seconds S
//        [--methods dense,dynamicvit,evit,tome]
//   node ort_bench.js --dir DIR --model NAME --check   (exit 1 beyond 1e-4, 77 = skip)
//
// Reads DIR/NAME.json and DIR/NAME-<method>.onnx written by export.py. Bench mode: one
// session per method (intra-op threads T, one inter-op thread, sequential execution, all
// graph optimisations), per batch size two warm-up runs then runs for S seconds of wall
// time (at least 1), one JSON line per (method, batch) on stdout. Check mode: runs
// NAME-check.json's input, compares with the logits PeerViT produced in PyTorch and
// writes ORT's logits to DIR/NAME-ort.json.
'use strict';

function parseArgs(argv) {
  const args = {};
  for (let i = 2; i < argv.length; ++i) {
    const a = argv[i];
    if (!a.startsWith('--')) continue;
    const key = a.slice(2);
    const next = argv[i + 1];
    if (next === undefined || next.startsWith('--')) args[key] = true;
    else args[key] = argv[++i];
  }
  return args;
}

let ort;
try {
  ort = require('onnxruntime-node');
} catch (e) {
  console.error('onnxruntime-node not installed: cd bench/peers && npm install --ignore-scripts');
  process.exit(77);
}
const fs = require('fs');
const path = require('path');

async function session(dir, file, threads) {
  return ort.InferenceSession.create(path.join(dir, file), {
    intraOpNumThreads: threads,
    interOpNumThreads: 1,
    executionMode: 'sequential',
    graphOptimizationLevel: 'all',
  });
}

function randomImages(n) {
  const data = new Float32Array(n);
  let s = 12345;
  for (let i = 0; i < n; ++i) {
    s = (s * 1103515245 + 12345) % 2147483648;
    data[i] = s / 2147483648 * 2 - 1;
  }
  return data;
}

async function bench(args, meta) {
  const threads = Number(args.threads || 1);
  const seconds = Number(args.seconds || 1);
  const batches = String(args.batches || '1,8').split(',').map(Number);
  const methods = String(args.methods || Object.keys(meta.methods).join(',')).split(',');
  const per = meta.image.reduce((a, b) => a * b, 1);
  for (const method of methods) {
    const m = meta.methods[method];
    const sess = await session(args.dir, m.file, threads);
    for (const b of batches) {
      const feeds = {images: new ort.Tensor('float32', randomImages(b * per), [b, ...meta.image])};
      for (let w = 0; w < 2; ++w) await sess.run(feeds);
      const start = process.hrtime.bigint();
      let iters = 0;
      let elapsed = 0;
      while (iters < 1 || elapsed < seconds) {
        await sess.run(feeds);
        ++iters;
        elapsed = Number(process.hrtime.bigint() - start) / 1e9;
      }
      console.log(JSON.stringify({
        impl: 'ort', model: meta.model, method, keep_rate: m.keep, tome_r: m.tome_r, batch: b,
        threads, images_per_s: b * iters / elapsed, iters, seconds: elapsed,
      }));
    }
  }
}

async function check(args, meta) {
  const ref = JSON.parse(fs.readFileSync(path.join(args.dir, `${meta.model}-check.json`)));
  const input = Float32Array.from(ref.input);
  const batch = input.length / meta.image.reduce((a, b) => a * b, 1);
  let worst = 0;
  const ortLogits = {};
  for (const [method, logits] of Object.entries(ref.logits)) {
    const sess = await session(args.dir, meta.methods[method].file, 1);
    const out = await sess.run({images: new ort.Tensor('float32', input, [batch, ...meta.image])});
    const got = out.logits.data;
    ortLogits[method] = Array.from(got);
    let err = 0;
    for (let i = 0; i < logits.length; ++i) err = Math.max(err, Math.abs(got[i] - logits[i]));
    console.error(`${meta.model} ${method}: ORT vs PyTorch max |diff| ${err.toExponential(2)}`);
    worst = Math.max(worst, err);
  }
  fs.writeFileSync(path.join(args.dir, `${meta.model}-ort.json`), JSON.stringify(ortLogits));
  return worst <= 1e-4 ? 0 : 1;
}

async function main() {
  const args = parseArgs(process.argv);
  const meta = JSON.parse(fs.readFileSync(path.join(args.dir, `${args.model}.json`)));
  if (args.check) return check(args, meta);
  await bench(args, meta);
  return 0;
}

main().then((rc) => process.exit(rc), (e) => {
  console.error(e);
  process.exit(1);
});
