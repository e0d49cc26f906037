/**
 * Throughput benchmark: request-body upload and streamed download, deno-wsgi
 * against a raw `Deno.listen` socket server doing the same work with no HTTP
 * validation (bench/raw_stream_server.ts), in one run.
 *
 * - upload: `POST /echo` with 1 MiB bodies on one keep-alive connection; the
 *   echo comes back as it is read (MiB/s counts the upload; the same amount
 *   comes back);
 * - download: `GET /download?mb=100` (`--downloads` times on one keep-alive
 *   connection, 3 by default), a 100 MiB body streamed by a generator.
 *
 * Servers run on core 0, this client on core 1 (taskset, when present).
 * Usage: deno run -A bench/throughput.ts [--uploads 100] [--downloads 3] [--reps 3]
 *        [--baseline PATH]
 * (`--baseline`: as in bench/load.ts, another checkout's server joins the run.)
 */

import { BASELINE_FLAG, readFlags, REPS_FLAG } from "./_args.ts";
import {
  CAN_PIN,
  type ChildServer,
  inBaseline,
  startChildServer,
  wsgiServerArgs,
} from "./_servers.ts";

const flags = readFlags("bench/throughput.ts", {
  uploads: { help: "1 MiB uploads per repetition", default: "100" },
  downloads: { help: "100 MiB downloads per repetition", default: "3" },
  reps: REPS_FLAG,
  baseline: BASELINE_FLAG,
});
const uploads = flags.count("uploads");
const downloads = flags.count("downloads");
const reps = flags.count("reps");
const baseline = flags.text("baseline");
const here = new URL(".", import.meta.url);

if (CAN_PIN) {
  await new Deno.Command("taskset", { args: ["-p", "-c", "1", String(Deno.pid)], stdout: "null" })
    .output();
}

const targets: Record<string, string[]> = {
  "deno-wsgi": wsgiServerArgs(new URL("download_app.ts", here).pathname),
  "raw socket": ["run", "--allow-net", new URL("raw_stream_server.ts", here).pathname, "0"],
};

if (baseline !== undefined) {
  targets.baseline = inBaseline(targets["deno-wsgi"]!, baseline);
}

const MiB = 1024 * 1024;
const readBuf = new Uint8Array(256 * 1024);

/** Reads one response with a Content-Length body; returns the body size. */
async function readResponse(conn: Deno.Conn, leftover: Uint8Array[]): Promise<number> {
  let head = "";
  let extra: Uint8Array = new Uint8Array(0);
  const pending = leftover.splice(0);
  for (;;) {
    const piece = pending.shift() ?? await (async () => {
      const n = await conn.read(readBuf);
      if (n === null) throw new Error("Connection closed");
      return readBuf.subarray(0, n);
    })();
    head += String.fromCharCode(...piece.subarray(0, Math.min(piece.length, 4096)));
    const end = head.indexOf("\r\n\r\n");
    if (end >= 0) {
      const headBytes = end + 4;
      const consumedBefore = head.length - Math.min(piece.length, 4096);
      extra = piece.subarray(headBytes - consumedBefore);
      head = head.slice(0, end);
      break;
    }
  }
  const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1]);
  let got = extra.length;
  while (got < length) {
    const n = await conn.read(readBuf);
    if (n === null) throw new Error("Connection closed mid-body");
    got += n;
  }
  if (got > length) throw new Error("Read past the body");
  return length;
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.length) at += await conn.write(data.subarray(at));
}

async function upload(port: number): Promise<number> {
  const body = new Uint8Array(MiB);
  crypto.getRandomValues(body.subarray(0, 65536));
  const head = new TextEncoder().encode(
    `POST /echo HTTP/1.1\r\nHost: bench\r\nContent-Type: application/octet-stream\r\nContent-Length: ${MiB}\r\n\r\n`,
  );
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const started = performance.now();
    for (let i = 0; i < uploads; i++) {
      const sending = (async () => {
        await writeAll(conn, head);
        await writeAll(conn, body);
      })();
      const received = await readResponse(conn, []);
      await sending;
      if (received !== MiB) throw new Error(`Echoed ${received} bytes`);
    }
    return (uploads * MiB) / MiB / ((performance.now() - started) / 1000);
  } finally {
    conn.close();
  }
}

async function download(port: number): Promise<number> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const request = new TextEncoder().encode(
      "GET /download?mb=100 HTTP/1.1\r\nHost: bench\r\n\r\n",
    );
    const started = performance.now();
    let size = 0;
    for (let i = 0; i < downloads; i++) {
      await writeAll(conn, request);
      size += await readResponse(conn, []);
    }
    return size / MiB / ((performance.now() - started) / 1000);
  } finally {
    conn.close();
  }
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

const running: Record<string, ChildServer> = {};
try {
  for (const [name, args] of Object.entries(targets)) running[name] = await startChildServer(args);
  const results: Record<string, { up: number[]; down: number[] }> = {};
  for (let rep = 0; rep < reps; rep++) {
    for (const [name, { port }] of Object.entries(running)) {
      const r = results[name] ??= { up: [], down: [] };
      r.up.push(await upload(port));
      r.down.push(await download(port));
    }
  }
  console.log(
    `\nmedian of ${reps} interleaved runs; upload = ${uploads} x 1 MiB POST /echo on one connection` +
      ` (echoed back), download = ${downloads} x 100 MiB GET on one connection${
        CAN_PIN ? "; servers on core 0, client on core 1" : ""
      }.\n`,
  );
  console.log("| server | upload MiB/s | download MiB/s | upload vs raw | download vs raw |");
  console.log("| --- | ---: | ---: | ---: | ---: |");
  const raw = results["raw socket"]!;
  for (const [name, r] of Object.entries(results)) {
    console.log(
      `| ${name} | ${median(r.up).toFixed(0)} | ${median(r.down).toFixed(0)} | ${
        (median(r.up) / median(raw.up)).toFixed(2)
      } | ${(median(r.down) / median(raw.down)).toFixed(2)} |`,
    );
  }
} finally {
  for (const server of Object.values(running)) await server.stop();
}
