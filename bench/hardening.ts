/**
 * Hardening benchmarks, in one run against deno-wsgi serving the sample app
 * (and `bench/download_app.ts`'s `/download` for large streamed bodies):
 *
 * 1. slowloris: a normal client's throughput (wrk, 10 connections) alone,
 *    then while 1,000 connections hold half-sent request heads open;
 * 2. slow readers: a normal client's p99 latency (wrk, 10 connections, on
 *    `/`) alone, then while 200 clients with 4 KiB receive buffers download
 *    64 MiB each and read it slowly (the server fills every one's socket
 *    buffer as fast as it can, and must not make the others wait for it);
 * 3. soak: wrk at 50 connections until at least 1,000,000 requests were
 *    served, sampling the server's RSS every second (flat means no leak);
 * 4. tiny chunks: a chunked upload of 1,000,000 one-byte chunks, read with
 *    one `wsgi.input.read()`, beside the same body in 64 KiB chunks and the
 *    same wire bytes in 64 KiB chunks (time from the first byte sent to
 *    the end of the response, median of 7).
 *
 * Usage: deno run -A bench/hardening.ts
 *   [--scenario all|slowloris|slow-readers|soak|tiny-chunks]
 *   [--loris 1000] [--readers 200] [--soak-requests 1000000] [--tiny-chunks 1000000]
 * Needs wrk, and python3 for the slow readers (Deno cannot set SO_RCVBUF);
 * servers on core 0, wrk and the slow readers on core 1 when taskset is
 * present.
 */

import { readFlags } from "./_args.ts";
import { hasCommand, onCore, rssKiB, startChildServer, wsgiServerArgs } from "./_servers.ts";
import { chunkedUpload } from "./_uploads.ts";

const flags = readFlags("bench/hardening.ts", {
  scenario: {
    help: "which scenario to run",
    default: "all",
    takes: ["all", "slowloris", "slow-readers", "soak", "tiny-chunks"],
  },
  loris: { help: "slowloris connections holding half-sent heads", default: "1000" },
  readers: { help: "slow readers of a large streamed body", default: "200" },
  "soak-requests": { help: "requests the soak runs for, at least", default: "1000000" },
  "tiny-chunks": { help: "one-byte chunks in the tiny-chunk upload", default: "1000000" },
});
const scenario = flags.text("scenario")!;
const lorisCount = flags.count("loris");
const readerCount = flags.count("readers");
const soakRequests = flags.count("soak-requests");
const tinyChunkCount = flags.count("tiny-chunks");
/** The uploads close their connection: each is timed to the end of its response. */
const CLOSE = "Connection: close\r\n";
const runs = (name: string) => scenario === "all" || scenario === name;

for (const command of ["wrk", ...(runs("slow-readers") ? ["python3"] : [])]) {
  if (!await hasCommand(command)) {
    console.error(`${command} is missing: apt-get install ${command}`);
    Deno.exit(2);
  }
}

const serverArgs = wsgiServerArgs(
  new URL("download_app.ts", import.meta.url).pathname,
  "--max-connections",
  String(Math.max(lorisCount, readerCount) + 200),
  "--header-timeout",
  "600000",
);
const server = await startChildServer(serverArgs);
const port = server.port;

async function rssMiB(): Promise<number> {
  return await rssKiB(server.child.pid) / 1024;
}

/** Milliseconds from a wrk duration (`812.00us`, `1.23ms`, `2.01s`), NaN if it is none. */
function milliseconds(duration: string | undefined): number {
  const match = /^([\d.]+)(us|ms|s)$/.exec(duration ?? "");
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
}

interface WrkResult {
  rps: number;
  requests: number;
  p50: number;
  p99: number;
  max: number;
}

async function wrk(connections: number, seconds: number): Promise<WrkResult> {
  const args = [
    `-t1`,
    `-c${connections}`,
    `-d${seconds}s`,
    "--latency",
    `http://127.0.0.1:${port}/`,
  ];
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
    p50: milliseconds(/^\s*50%\s+(\S+)/m.exec(text)?.[1]),
    p99: milliseconds(/^\s*99%\s+(\S+)/m.exec(text)?.[1]),
    // "Latency  avg  stdev  max  +/- stdev"
    max: milliseconds(/^\s*Latency\s+\S+\s+\S+\s+(\S+)/m.exec(text)?.[1]),
  };
}

async function slowloris(): Promise<void> {
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
  } finally {
    for (const conn of loris) conn.close();
  }
}

/** Megabytes each slow reader asks for: more than any socket buffer holds. */
const SLOW_READER_MB = 64;

/**
 * The slow readers, as a Python program (Deno cannot set SO_RCVBUF): it
 * opens the connections with 4 KiB receive buffers, sends each a request
 * for a large body, prints `ready`, then reads 1 KiB from each every 100 ms
 * until its standard input closes.
 */
const SLOW_READERS_PY = `
import select, socket, sys
port, count, mb = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
request = b"GET /download?mb=%d HTTP/1.1\\r\\nHost: slow\\r\\n\\r\\n" % mb
readers = []
for _ in range(count):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    s.sendall(request)
    s.setblocking(False)
    readers.append(s)
print("ready", flush=True)
while not select.select([sys.stdin], [], [], 0.1)[0]:
    for s in readers:
        try:
            s.recv(1024)
        except BlockingIOError:
            pass
`;

/** The kernel's bound on a socket's unsent bytes, which decides how much the slow readers soak up. */
async function notSentLowat(): Promise<string> {
  try {
    const value = (await Deno.readTextFile("/proc/sys/net/ipv4/tcp_notsent_lowat")).trim();
    return value === "4294967295" ? "unset" : value;
  } catch {
    return "unknown";
  }
}

async function slowReaders(): Promise<void> {
  await wrk(10, 2); // warm up
  const alone = await wrk(10, 5);
  // wrk first, then the readers: the measurement covers the time the
  // server spends filling their socket buffers, when the others wait if
  // writes are not fair.
  const underAttack = wrk(10, 6);
  const [command, args] = onCore(1, "python3", [
    "-c",
    SLOW_READERS_PY,
    String(port),
    String(readerCount),
    String(SLOW_READER_MB),
  ]);
  const readers = new Deno.Command(command, { args, stdin: "piped", stdout: "piped" }).spawn();
  const output = readers.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    const { value } = await output.read();
    if (!value?.startsWith("ready")) throw new Error("The slow readers did not start");
    const attacked = await underAttack;
    console.log(
      `\n## slow readers (${readerCount} clients with 4 KiB receive buffers, ` +
        `${SLOW_READER_MB} MiB each, read at 10 KiB/s; net.ipv4.tcp_notsent_lowat ${await notSentLowat()})\n`,
    );
    console.log("| normal client (wrk, 10 connections, `/`) | req/s | p50 ms | p99 ms | max ms |");
    console.log("| --- | ---: | ---: | ---: | ---: |");
    for (const [name, r] of [["alone", alone], [`with ${readerCount} slow readers`, attacked]]) {
      const result = r as WrkResult;
      console.log(
        `| ${name} | ${result.rps.toFixed(0)} | ${result.p50.toFixed(2)} | ${
          result.p99.toFixed(2)
        } | ${result.max.toFixed(1)} |`,
      );
    }
    console.log(`\np99 under attack / p99 alone: ${(attacked.p99 / alone.p99).toFixed(1)}x`);
  } finally {
    // Their standard input closing tells the readers to stop.
    await readers.stdin.close();
    await output.cancel();
    await readers.status;
  }
}

async function soak(): Promise<void> {
  // Run wrk in 5-second slices until enough requests, sampling RSS.
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
}

/** Milliseconds from the first byte of `upload` sent to the end of the response. */
async function timeUpload(upload: Uint8Array, bodyBytes: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const began = performance.now();
    const sending = (async () => {
      for (let at = 0; at < upload.length;) at += await conn.write(upload.subarray(at));
    })();
    const answer: Uint8Array<ArrayBuffer>[] = [];
    const buffer = new Uint8Array(4096);
    for (let n; (n = await conn.read(buffer)) !== null;) answer.push(buffer.slice(0, n));
    const took = performance.now() - began;
    await sending;
    const text = new TextDecoder().decode(await new Blob(answer).arrayBuffer());
    if (!text.startsWith("HTTP/1.1 200") || !text.endsWith(`\r\n\r\n${bodyBytes}\n`)) {
      throw new Error(`unexpected answer to the upload: ${JSON.stringify(text.slice(0, 200))}`);
    }
    return took;
  } finally {
    conn.close();
  }
}

async function tinyChunks(): Promise<void> {
  const n = tinyChunkCount;
  const tiny = chunkedUpload(n, 1, CLOSE);
  const wireMiB = (tiny.length / 1048576).toFixed(1);
  const sameWire = Math.ceil(tiny.length / 65536);
  const cases: [string, Uint8Array, number][] = [
    [`${n} one-byte chunks (${wireMiB} MiB on the wire)`, tiny, n],
    [
      `the same ${n} bytes in 64 KiB chunks`,
      chunkedUpload(Math.ceil(n / 65536), 65536, CLOSE),
      Math.ceil(n / 65536) * 65536,
    ],
    [
      `the same ${wireMiB} MiB of wire bytes in 64 KiB chunks`,
      chunkedUpload(sameWire, 65536, CLOSE),
      sameWire * 65536,
    ],
  ];
  console.log(`\n## tiny chunks (one wsgi.input.read(), median of 7)\n`);
  console.log("| upload | ms |\n| --- | --- |");
  for (const [name, upload, body] of cases) {
    const times: number[] = [];
    for (let i = 0; i < 7; i++) times.push(await timeUpload(upload, body));
    times.sort((a, b) => a - b);
    console.log(`| ${name} | ${times[3]!.toFixed(1)} |`);
  }
}

try {
  if (runs("slowloris")) await slowloris();
  if (runs("slow-readers")) await slowReaders();
  if (runs("soak")) await soak();
  if (runs("tiny-chunks")) await tinyChunks();
} finally {
  await server.stop();
}
