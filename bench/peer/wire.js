'use strict';
// The PouchDB peer's first push and first pull of one commune's households, for the benchmark
// in this crate: bytes on the wire (the push and the pull each go through their own counting
// proxy) and the time of a first pull into a fresh device database.
// Usage: node wire.js --docs households.jsonl --n N --push URL --pull URL --direct URL
//                     --dir DIR [--pulls 3] [--batch-size 100] [--batches-limit 10]
// Runs with NODE_PATH naming the peer's node_modules. Prints one JSON line.
const path = require('path');
const fs = require('fs');
const { performance } = require('perf_hooks');
const PouchDB = require('pouchdb');

function arg(name, dflt) {
  const i = process.argv.indexOf('--' + name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}
const N = Number(arg('n', 5000));
const PUSH = arg('push');
const PULL = arg('pull');
const DIRECT = arg('direct');
const DIR = path.resolve(arg('dir', './data-wire'));
const PULLS = Number(arg('pulls', 3));
const opts = { batch_size: Number(arg('batch-size', 100)), batches_limit: Number(arg('batches-limit', 10)) };
for (const url of [PUSH, PULL, DIRECT]) {
  if (!/^http:\/\/127\.0\.0\.1:\d+$/.test(url || '')) throw new Error('servers must be http://127.0.0.1:PORT');
}
fs.mkdirSync(DIR, { recursive: true });
const t = () => performance.now();

(async () => {
  const docs = fs.readFileSync(arg('docs'), 'utf8').split('\n').filter((l) => l.trim()).slice(0, N).map((l) => {
    const d = JSON.parse(l);
    d._id = String(d._id !== undefined ? d._id : d.id);
    return d;
  });
  if (docs.length < N) throw new Error(`--docs has ${docs.length} documents, --n asks for ${N}`);
  const out = { n: N };
  const name = `commune_${process.pid}`;

  const local = new PouchDB(path.join(DIR, `device_${process.pid}`));
  for (let off = 0; off < N; off += 1000) await local.bulkDocs(docs.slice(off, off + 1000));

  // First push, through the push proxy (creating the database is part of it).
  let t0 = t();
  const remote = new PouchDB(`${PUSH}/${name}`);
  await remote.info();
  const pushed = await local.replicate.to(remote, opts);
  out.push_ms = t() - t0;
  out.push_docs_written = pushed.docs_written;

  // First pull into a fresh device, through the pull proxy.
  const viaProxy = new PouchDB(path.join(DIR, `fresh_proxy_${process.pid}`));
  t0 = t();
  const pulled = await viaProxy.replicate.from(`${PULL}/${name}`, opts);
  out.pull_via_proxy_ms = t() - t0;
  out.pull_docs_written = pulled.docs_written;
  await viaProxy.destroy();

  // First pulls into fresh devices, straight to the server: the timed figure.
  out.pull_ms = [];
  for (let i = 0; i < PULLS; i++) {
    const fresh = new PouchDB(path.join(DIR, `fresh_${i}_${process.pid}`));
    t0 = t();
    const res = await fresh.replicate.from(`${DIRECT}/${name}`, opts);
    out.pull_ms.push(t() - t0);
    if (res.docs_written !== N) throw new Error(`pulled ${res.docs_written} of ${N}`);
    await fresh.destroy();
  }
  await local.destroy();
  await remote.destroy();
  console.log(JSON.stringify(out));
})().catch((e) => { console.error('FAILED', e); process.exit(1); });
