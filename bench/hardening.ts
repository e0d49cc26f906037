/**
 * Hardening benchmarks, in one run against deno-wsgi serving the sample app:
 *
 * 1. slowloris: a normal client's throughput (wrk, 10 connections) alone,
 *    then while 1,000 connections hold half-sent request heads open;
 * 2. soak: wrk at 50 connections until at least 1,000,000 requests were
 *    served, sampling the server's RSS every second (flat means no leak).
 *
 * Usage: deno run -A bench/hardening.ts [--loris 1000] [--soak-requests 1000000]
 * Needs wrk; servers on core 0, wrk on core 1 when taskset is present.
 */

import { readFlags } from "./_args.ts";
import { hasCommand, onCore, rssKiB, startChildServer, wsgiServerArgs } from "./_servers.ts";

const flags = readFlags("bench/hardening.ts", {
  loris: { help: "slowloris connections holding half-sent heads", default: "1000" },
  "soak-requests": { help: "requests the soak runs for, at least", default: "1000000" },
});
const lorisCount = flags.count("loris");
const soakRequests = flags.count("soak-requests");

if (!await hasCommand("wrk")) {
  console.error("wrk is missing: apt-get install wrk");
  Deno.exit(2);
}

const serverArgs = wsgiServerArgs(
  "--max-connections",
  String(lorisCount + 200),
  "--header-timeout",
  "600000",
);
const server = await startChildServer(serverArgs);
const port = server.port;

async function rssMiB(): Promise<number> {
  return await rssKiB(server.child.pid) / 1024;
}

async function wrk(
  connections: number,
  seconds: number,
): Promise<{ rps: number; requests: number }> {
  const args = [`-t1`, `-c${connections}`, `-d${seconds}s`, `http://127.0.0.1:${port}/`];
  const [command, pinnedArgs] = onCore(1, "wrk", args);
  const { stdout } = await new Deno.Command(command, {
    args: pinnedArgs,
    stdout: "piped",
  }).output();
  const text = new TextDecoder().decode(stdout);
  if (/Non-2xx|Socket errors/.test(text)) console.error(text);
  return {
    rps: Number(/Requests\/sec:\s+([\d.]+)/.exec(text)![1]),
    requests: Number(/(\d+) requests in/.exec(text)![1]),
  };
}

const loris: Deno.Conn[] = [];
try {
  await wrk(10, 2); // warm up
  const alone = await wrk(10, 5);
  const partial = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: loris\r\nX-Slow: ");
  for (let i = 0; i < lorisCount; i++) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(partial);
    loris.push(conn);
  }
  const rssWithLoris = await rssMiB();
  const underAttack = await wrk(10, 5);
  for (const conn of loris.splice(0)) conn.close();

  console.log(`\n## slowloris (${lorisCount} half-sent heads held open)\n`);
  console.log("| normal client (wrk, 10 connections) | req/s |");
  console.log("| --- | ---: |");
  console.log(`| alone | ${alone.rps.toFixed(0)} |`);
  console.log(
    `| with ${lorisCount} slowloris connections | ${underAttack.rps.toFixed(0)} (${
      (underAttack.rps / alone.rps).toFixed(2)
    }x) |`,
  );
  console.log(`\nserver RSS while holding them: ${rssWithLoris.toFixed(1)} MiB`);

  // Soak: run wrk in 5-second slices until enough requests, sampling RSS.
  const samples: number[] = [await rssMiB()];
  let served = 0;
  let slices = 0;
  while (served < soakRequests) {
    const sampler = setInterval(async () => samples.push(await rssMiB()), 1000);
    try {
      served += (await wrk(50, 5)).requests;
    } finally {
      clearInterval(sampler);
    }
    slices++;
  }
  samples.push(await rssMiB());
  const first = samples.slice(0, Math.max(2, Math.floor(samples.length / 4)));
  const last = samples.slice(-Math.max(2, Math.floor(samples.length / 4)));
  const avg = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
  console.log(`\n## soak (${served} requests in ${slices} x 5 s, wrk 50 connections)\n`);
  console.log(
    `RSS MiB: start ${samples[0]!.toFixed(1)}, min ${Math.min(...samples).toFixed(1)}, max ${
      Math.max(...samples).toFixed(1)
    }, end ${samples.at(-1)!.toFixed(1)}; mean of first quarter ${
      avg(first).toFixed(1)
    }, of last quarter ${avg(last).toFixed(1)}`,
  );
  console.log(`samples: ${samples.map((s) => s.toFixed(0)).join(" ")}`);
} finally {
  for (const conn of loris) conn.close();
  await server.stop();
}
