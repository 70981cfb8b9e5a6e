// The BullMQ side of bench/run.sh: the same job lifecycle that
// `inferq bench lifecycle` drives (a producer adds a job, a worker takes
// it and completes it), in one Node process against one Redis server.
// Producers stop adding while more than --backlog jobs wait, as inferq
// bench's submitters do. Prints one JSON object with the jobs completed
// in the measured seconds. Talks only to the Redis address it is given.
//
// SPDX-License-Identifier: MIT
'use strict';

const { Queue, Worker } = require('bullmq');

function parseArgs(argv) {
  const opts = { host: '127.0.0.1', port: 6379, seconds: 5, producers: 50, workers: 50,
    backlog: 1000, queue: 'bench' };
  for (let i = 2; i < argv.length; i += 2) {
    const name = argv[i].replace(/^--/, '');
    if (!(name in opts) || argv[i + 1] === undefined) {
      throw new Error(`unknown option or missing value: ${argv[i]}`);
    }
    opts[name] = name === 'host' || name === 'queue' ? argv[i + 1] : Number(argv[i + 1]);
  }
  if (opts.host !== '127.0.0.1' && opts.host !== 'localhost') {
    throw new Error(`--host ${opts.host}: only a local Redis is measured`);
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv);
  const connection = { host: opts.host, port: opts.port, maxRetriesPerRequest: null };
  const queue = new Queue(opts.queue, { connection });
  await queue.obliterate({ force: true });

  let added = 0;
  let completed = 0;
  let stopping = false;
  const latencies = [];
  const worker = new Worker(opts.queue, async () => ({ ok: true }), {
    connection, concurrency: opts.workers, autorun: false,
  });
  worker.on('completed', (job) => {
    completed++;
    if (!stopping && latencies.length < 1000000) latencies.push(Date.now() - job.timestamp);
  });
  worker.on('error', (err) => { console.error(`bullmq worker: ${err.message}`); });
  await worker.waitUntilReady();

  const start = process.hrtime.bigint();
  worker.run();
  let wake = null;
  worker.on('completed', () => { if (wake) { const w = wake; wake = null; w(); } });
  const producer = async () => {
    while (!stopping) {
      if (added - completed >= opts.backlog) {
        await new Promise((resolve) => { wake = resolve; setTimeout(resolve, 50); });
        continue;
      }
      added++;
      await queue.add('job', { input: 'bench' });
    }
  };
  const producers = [];
  for (let i = 0; i < opts.producers; i++) producers.push(producer());
  await new Promise((resolve) => setTimeout(resolve, opts.seconds * 1000));
  stopping = true;
  const done = completed;
  const seconds = Number(process.hrtime.bigint() - start) / 1e9;
  await Promise.all(producers);
  await worker.close();
  await queue.close();
  latencies.sort((a, b) => a - b);
  const q = (p) => (latencies.length ? latencies[Math.min(latencies.length - 1,
    Math.floor(p * latencies.length))] : 0);
  process.stdout.write(JSON.stringify({
    peer: 'bullmq', jobs: done, seconds, rate: done / seconds, added,
    producers: opts.producers, workers: opts.workers,
    job_latency_ms: { p50: q(0.5), p99: q(0.99) },
  }) + '\n');
}

main().catch((err) => { console.error(`bullmq_bench: ${err.stack || err}`); process.exit(1); });
