/**
 * The access log: its formats (one escaped line per response, whatever the
 * client sent), its buffer (large writes of whole lines, bounded memory
 * with a slow destination), and the server as users start it: the CLI with
 * its default log on standard output, `--access-log PATH`,
 * `--access-log-format`, `--workers 2`.
 */

import { deepEqual, equal, match, ok } from "node:assert/strict";
import {
  AccessLogBuffer,
  type AccessLogEntry,
  formatEntry,
  type LogWrite,
} from "../_gateway/access_log.ts";
import { serve } from "../server.ts";
import { app } from "../app.ts";
import { Child, freePort, residentBytes, run, tempDir } from "./_child.ts";
import { deadline, latin1Bytes, latin1String, TEST_DEADLINE_MS } from "./_helpers.ts";

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;

/** A Common Log Format line of this server: the whole line, nothing else on it. */
const CLF =
  /^(\S+) - - \[\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "([^"\\]|\\.)*" \d{3} (\d+|-)$/;

const ENTRY: AccessLogEntry = {
  time: Date.UTC(2026, 10, 30, 21, 16, 46, 7),
  remoteAddr: "192.0.2.1",
  method: "GET",
  target: "/",
  protocol: "HTTP/1.1",
  status: 200,
  bytes: 42,
  durationMs: 1.5,
  referer: null,
  userAgent: null,
};

// ---------------------------------------------------------------------------
// Formats
// ---------------------------------------------------------------------------

Deno.test("formatEntry() writes the three formats", () => {
  const entry = { ...ENTRY, referer: "http://a/", userAgent: "curl/8.1" };
  equal(
    formatEntry("common", entry),
    '192.0.2.1 - - [30/Nov/2026:21:16:46 +0000] "GET / HTTP/1.1" 200 42',
  );
  equal(
    formatEntry("combined", entry),
    '192.0.2.1 - - [30/Nov/2026:21:16:46 +0000] "GET / HTTP/1.1" 200 42 "http://a/" "curl/8.1" 1.500',
  );
  deepEqual(JSON.parse(formatEntry("json", entry)), {
    time: "2026-11-30T21:16:46.007Z",
    remote_addr: "192.0.2.1",
    method: "GET",
    target: "/",
    protocol: "HTTP/1.1",
    status: 200,
    bytes: 42,
    duration_ms: 1.5,
    referer: "http://a/",
    user_agent: "curl/8.1",
  });
  equal(
    formatEntry("common", { ...entry, method: null, target: null, protocol: null, bytes: 0 }),
    '192.0.2.1 - - [30/Nov/2026:21:16:46 +0000] "-" 200 -',
  );
});

Deno.test("formatEntry() writes numbers and durations exactly", () => {
  for (
    const [bytes, durationMs, shown] of [
      [0, 0, "0.000"],
      [9, 0.0004, "0.000"],
      [10, 12.3456, "12.346"],
      [1_234_567_890, 999.9996, "1000.000"],
      [2 ** 53 + 2, 65_432.1, "65432.100"],
    ] as const
  ) {
    const entry = { ...ENTRY, status: 404, bytes, durationMs };
    const json = JSON.parse(formatEntry("json", entry));
    equal(json.bytes, bytes);
    equal(json.duration_ms, Number(shown));
    ok(
      formatEntry("combined", entry).endsWith(` 404 ${bytes === 0 ? "-" : bytes} "-" "-" ${shown}`),
    );
  }
});

Deno.test("formatEntry() keeps anything a client sends to one escaped line in every format", () => {
  const hostile = [
    "/a\r\nb",
    "/\0\x01\x7f",
    '/"quoted"',
    "/back\\slash",
    "/caf\xc3\xa9\xff\x80",
    `/${"x".repeat(8192)}`,
    '"\r\n127.0.0.1 - - [forged] "GET / HTTP/1.1" 200 1',
  ];
  for (const text of hostile) {
    const entry = { ...ENTRY, target: text, referer: text, userAgent: text };
    for (const format of ["common", "combined", "json"] as const) {
      const line = formatEntry(format, entry);
      ok(
        !/[\r\n\0]/.test(line),
        `${format}: ${JSON.stringify(text.slice(0, 30))} made a line break`,
      );
      ok(/^[\x20-\x7e]*$/.test(line), `${format}: only printable ASCII`);
      if (format === "json") {
        const parsed = JSON.parse(line);
        equal(parsed.target, text);
        equal(parsed.user_agent, text);
      } else {
        match(
          line,
          format === "common"
            ? CLF
            : /^\S+ - - \[.*\] "([^"\\]|\\.)*" 200 42 "([^"\\]|\\.)*" "([^"\\]|\\.)*" \d+\.\d{3}$/,
        );
      }
    }
  }
});

// ---------------------------------------------------------------------------
// The buffer
// ---------------------------------------------------------------------------

/** A destination that records writes and completes each one only when told to. */
function slowDestination(): {
  write: LogWrite;
  writes: string[];
  release(): void;
  waiting(): number;
} {
  const writes: string[] = [];
  const held: (() => void)[] = [];
  return {
    writes,
    write(bytes) {
      writes.push(latin1String(bytes));
      return new Promise<number>((resolve) => held.push(() => resolve(bytes.length)));
    },
    release() {
      for (const resolve of held.splice(0)) resolve();
    },
    waiting: () => held.length,
  };
}

/** Completes the destination's writes, one turn at a time, until `drained` settles (at most 1000 turns). */
async function releaseUntil(dest: { release(): void }, drained: Promise<void>): Promise<void> {
  let done = false;
  drained.then(() => done = true);
  for (let turns = 0; !done; turns++) {
    ok(turns < 1000, "the buffer never drained");
    dest.release();
    await new Promise((resolve) => setTimeout(resolve, 0));
  }
}

Deno.test("AccessLogBuffer writes nothing until flushed or full, then whole lines in order", async () => {
  const dest = slowDestination();
  const buffer = new AccessLogBuffer(dest.write, { flushBytes: 100, maxWriteBytes: 100 });
  buffer.add("first line");
  buffer.add("second line");
  equal(dest.writes.length, 0, "small lines wait for a flush");
  buffer.flush();
  deepEqual(dest.writes, ["first line\nsecond line\n"]);
  for (let i = 0; i < 30; i++) buffer.add(`line ${String(i).padStart(2, "0")}`);
  await releaseUntil(dest, buffer.drain());
  const all = dest.writes.join("");
  equal(all.split("\n").length - 1, 32);
  for (const write of dest.writes) {
    ok(write.length <= 100, `a write of ${write.length} bytes`);
    ok(write.endsWith("\n"), "every write ends with a whole line");
  }
  ok(all.includes("line 00\nline 01\n") && all.endsWith("line 29\n"), "in order");
});

Deno.test("AccessLogBuffer bounds what waits for a slow destination, counts drops, and says so once it drains", async () => {
  const dest = slowDestination();
  const buffer = new AccessLogBuffer(dest.write, {
    flushBytes: 1000,
    maxWriteBytes: 1000,
    maxPendingBytes: 10_000,
  });
  const line = "x".repeat(99); // 100 bytes with its line break
  for (let i = 0; i < 500; i++) buffer.add(line);
  ok(buffer.pendingBytes <= 10_000, `pending ${buffer.pendingBytes}`);
  equal(buffer.dropped, 400);
  await releaseUntil(dest, buffer.drain());
  const written = dest.writes.join("").split("\n").filter((l) => l !== "");
  equal(written.filter((l) => l === line).length, 100);
  equal(
    written.at(-1),
    "access log: 400 lines were dropped because the log destination did not keep up",
  );
  equal(buffer.pendingBytes, 0);
});

Deno.test("AccessLogBuffer cuts a line longer than a write to fit, still one line", () => {
  const writes: string[] = [];
  const buffer = new AccessLogBuffer((bytes) => {
    writes.push(latin1String(bytes));
    return Promise.resolve(bytes.length);
  }, { maxWriteBytes: 4096 });
  buffer.add("y".repeat(10_000));
  buffer.flush();
  equal(writes.length, 1);
  equal(writes[0]!.length, 4096);
  ok(writes[0]!.endsWith("...\n"));
});

// ---------------------------------------------------------------------------
// serve() in code
// ---------------------------------------------------------------------------

Deno.test("serve() gives an accessLog function one entry per response, after its last byte went out", async () => {
  const entries: AccessLogEntry[] = [];
  const server = serve(app, {
    port: 0,
    onListen() {},
    accessLog: (entry) => entries.push(entry),
  });
  const { port } = server.addr as Deno.NetAddr;
  const before = Date.now();
  const response = await fetch(`http://127.0.0.1:${port}/stream?n=3`, {
    headers: { "User-Agent": "test-agent", Referer: "http://example/" },
  });
  equal(await response.text(), "chunk 1 of 3\nchunk 2 of 3\nchunk 3 of 3\n");
  await server.shutdown();
  equal(entries.length, 1);
  const [entry] = entries as [AccessLogEntry];
  equal(entry.method, "GET");
  equal(entry.target, "/stream?n=3");
  equal(entry.protocol, "HTTP/1.1");
  equal(entry.status, 200);
  equal(entry.bytes, 39);
  equal(entry.remoteAddr, "127.0.0.1");
  equal(entry.userAgent, "test-agent");
  equal(entry.referer, "http://example/");
  ok(entry.durationMs >= 0 && entry.durationMs < 10_000, `${entry.durationMs} ms`);
  ok(entry.time >= before - 1000 && entry.time <= Date.now(), "time");
});

Deno.test("serve() writes json lines to a file and has written them all when shutdown() resolves", async () => {
  await using temp = await tempDir("wsgi_log_");
  const path = `${temp.path}/access.log`;
  const server = serve(app, { port: 0, onListen() {}, accessLog: { format: "json", path } });
  const { port } = server.addr as Deno.NetAddr;
  for (const target of ["/", "/hello", "/nowhere"]) {
    await (await fetch(`http://127.0.0.1:${port}${target}`)).body?.cancel();
  }
  await server.shutdown();
  const lines = (await Deno.readTextFile(path)).split("\n").filter((l) => l !== "");
  deepEqual(lines.map((l) => [JSON.parse(l).target, JSON.parse(l).status]), [
    ["/", 200],
    ["/hello", 200],
    ["/nowhere", 404],
  ]);
});

// ---------------------------------------------------------------------------
// The CLI, as users start it
// ---------------------------------------------------------------------------

/** Starts `server.ts` with `args` (and `deno run` flags) and waits for the port it prints. */
async function startCli(args: string[], flags = ["--allow-net", "--allow-read", "--allow-write"]) {
  const child = new Child(Deno.execPath(), ["run", ...flags, SERVER_TS, "--port", "0", ...args], {
    cwd: PROJECT_DIR,
    watchdogMs: 90_000,
  });
  const line = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:\d+\/$/);
  if (line === null) {
    await child[Symbol.asyncDispose]();
    throw new Error(`The CLI exited without saying where it listens.\n${child.output()}`);
  }
  return { child, port: Number(/:(\d+)\/$/.exec(line)![1]) };
}

/**
 * Sends `perConnection` requests on each of `connections` connections,
 * pipelined in batches, `GET /hello?c=C&i=I`, and counts the 200s.
 */
async function blast(port: number, connections: number, perConnection: number): Promise<number> {
  const ok200 = latin1Bytes("HTTP/1.1 200 OK\r\n");
  const counts = await Promise.all(Array.from({ length: connections }, async (_, c) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    try {
      let answered = 0;
      const buf = new Uint8Array(256 * 1024);
      for (let sent = 0; sent < perConnection;) {
        const batch = Math.min(100, perConnection - sent);
        let requests = "";
        for (let i = 0; i < batch; i++) {
          requests += `GET /hello?c=${c}&i=${sent + i} HTTP/1.1\r\nHost: x\r\n\r\n`;
        }
        const bytes = latin1Bytes(requests);
        for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
        sent += batch;
        let carry = "";
        while (answered < sent) {
          const n = await deadline(
            TEST_DEADLINE_MS,
            conn.read(buf),
            "A response",
            () => conn.close(),
          );
          if (n === null) throw new Error(`EOF after ${answered} responses`);
          const text = carry + latin1String(buf.subarray(0, n));
          const parts = text.split(latin1String(ok200));
          answered += parts.length - 1;
          carry = parts.at(-1)!.slice(-ok200.length);
        }
      }
      return answered;
    } finally {
      conn.close();
    }
  }));
  return counts.reduce((a, b) => a + b, 0);
}

/** The access-log lines of `lines` (the CLI's standard output without its startup line). */
function accessLines(lines: string[]): string[] {
  return lines.filter((l) => !l.startsWith("Listening on"));
}

/** Checks that every line is a whole CLF line and that each connection's requests come in order. */
function checkLines(lines: string[], connections: number, perConnection: number): void {
  equal(lines.length, connections * perConnection, "one line per request");
  const next = new Array<number>(connections).fill(0);
  for (const line of lines) {
    match(line, CLF);
    const m = /"GET \/hello\?c=(\d+)&i=(\d+) HTTP\/1\.1" 200 22$/.exec(line);
    ok(m !== null, line);
    const c = Number(m[1]);
    equal(Number(m[2]), next[c], `connection ${c} out of order`);
    next[c]!++;
  }
}

/** Sends requests to the CLI started with `args`, stops it, and checks one whole line per request. */
async function logsEveryRequest(
  args: string[],
  flags: string[] | undefined,
  connections: number,
  perConnection: number,
): Promise<void> {
  const cli = await startCli(args, flags);
  await using child = cli.child;
  if (args.includes("--workers")) {
    ok(await child.stderr.waitForCount(/^Worker \d \(pid \d+\) listening on /, 2), child.output());
  }
  equal(await blast(cli.port, connections, perConnection), connections * perConnection);
  child.kill("SIGTERM");
  const status = await child.status();
  equal(status.code, 0, child.output().slice(0, 2000));
  checkLines(accessLines(child.stdout.lines), connections, perConnection);
}

Deno.test("the CLI logs exactly one whole line per request, in order, and all of them by the exit after SIGTERM", async () => {
  await logsEveryRequest([], undefined, 4, 2500);
});

Deno.test("the CLI with --workers 2 logs whole lines from both workers, none split", async () => {
  await logsEveryRequest(
    ["--workers", "2"],
    ["--allow-net", "--allow-read", "--allow-run"],
    8,
    1250,
  );
});

Deno.test("the CLI logs a single request on an idle server within 2 s", async () => {
  const cli = await startCli([]);
  await using child = cli.child;
  await (await fetch(`http://127.0.0.1:${cli.port}/hello`)).text();
  const line = await deadline(
    2000,
    child.stdout.waitFor(/"GET \/hello HTTP\/1\.1"/),
    "The log line",
  );
  ok(line !== null);
  match(line, CLF);
  child.kill("SIGTERM");
  equal((await child.status()).code, 0);
});

Deno.test("the CLI keeps hostile requests to one escaped line in every format", async () => {
  for (const format of ["common", "combined", "json"]) {
    await using temp = await tempDir("wsgi_log_");
    const path = `${temp.path}/access.log`;
    const cli = await startCli(["--access-log", path, "--access-log-format", format]);
    await using child = cli.child;
    const requests = [
      `GET /${"a".repeat(8000)} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`,
      'GET /q?x="y"\\z HTTP/1.1\r\nHost: x\r\nUser-Agent: evil" "\\\xff\x80\r\nReferer: "\r\nConnection: close\r\n\r\n',
      "GET / HTTP/1.1\r\nHost: x\r\nX: a\0b\r\n\r\n",
      "GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n",
      "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ];
    for (const request of requests) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port: cli.port });
      const bytes = latin1Bytes(request);
      for (let at = 0; at < bytes.length;) at += await conn.write(bytes.subarray(at));
      const buf = new Uint8Array(64 * 1024);
      while (
        await deadline(TEST_DEADLINE_MS, conn.read(buf), "The answer", () => conn.close()) !== null
      );
      conn.close();
    }
    child.kill("SIGTERM");
    equal((await child.status()).code, 0);
    const text = await Deno.readTextFile(path);
    const lines = text.split("\n");
    equal(lines.pop(), "", "the file ends with a line break");
    equal(lines.length, requests.length, `${format}: one line per request\n${text.slice(0, 2000)}`);
    for (const line of lines) {
      ok(/^[\x20-\x7e]+$/.test(line), `${format}: ${line.slice(0, 200)}`);
      if (format === "json") JSON.parse(line);
      else if (format === "common") match(line, CLF);
    }
  }
});

/**
 * `server.ts` with `args`, its standard output piped for the test to read
 * (or not), its standard error collected; killed after `killAfterMs` should
 * the test hang (clear `watchdog` when done).
 */
function spawnCli(args: string[], killAfterMs: number) {
  const process = new Deno.Command(Deno.execPath(), {
    args: ["run", "--allow-net", SERVER_TS, ...args],
    cwd: PROJECT_DIR,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const watchdog = setTimeout(() => process.kill("SIGKILL"), killAfterMs);
  return { process, watchdog, stderr: process.stderr.text() };
}

Deno.test("the CLI answers 100,000 requests while nobody reads its standard output, and reports the dropped lines once it is read", async () => {
  const port = freePort();
  const { process, watchdog, stderr } = spawnCli(["--port", String(port)], 120_000);
  const reader = process.stdout.pipeThrough(new TextDecoderStream()).getReader();
  try {
    // Read only the startup line, then leave the pipe unread.
    let text = "";
    while (!text.includes("\n")) {
      const { value, done } = await reader.read();
      if (done) throw new Error(`exited: ${await stderr}`);
      text += value;
    }
    match(text, /^Listening on /);
    const rssBefore = await residentBytes(process.pid);
    equal(await blast(port, 10, 10_000), 100_000);
    const grown = await residentBytes(process.pid) - rssBefore;
    ok(grown < 64 * 1024 * 1024, `RSS grew by ${(grown / 2 ** 20).toFixed(1)} MiB`);
    // Now read: the buffered lines come, then the notice.
    let tail = "";
    const notice =
      /access log: (\d+) lines were dropped because the log destination did not keep up/;
    await deadline(
      30_000,
      (async () => {
        while (!notice.test(tail)) {
          const { value, done } = await reader.read();
          if (done) break;
          tail = (tail + value).slice(-4096);
        }
      })(),
      "The dropped-lines notice",
    );
    ok(Number(notice.exec(tail)![1]) > 0);
    process.kill("SIGTERM");
    // Read to the end so that the process can exit.
    while (!(await reader.read()).done);
    equal((await process.status).code, 0, await stderr);
  } finally {
    clearTimeout(watchdog);
    reader.releaseLock();
    try {
      process.kill("SIGKILL");
    } catch {
      // Exited.
    }
    await process.status;
    await stderr;
  }
});

Deno.test("the CLI refuses an --access-log it cannot open with one line and exit code 2", async () => {
  await using temp = await tempDir("wsgi_log_");
  for (const path of [temp.path, `${temp.path}/missing/dir/access.log`]) {
    const result = await run(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      SERVER_TS,
      "--access-log",
      path,
    ], { cwd: PROJECT_DIR });
    equal(result.code, 2, result.stderr);
    const lines = result.stderr.trimEnd().split("\n");
    equal(lines.length, 2, result.stderr);
    match(lines[0]!, new RegExp(`^server\\.ts: Cannot open --access-log ${path}: `));
    equal(decoder.decode(result.stdout), "", "nothing listened");
  }
});

const decoder = new TextDecoder();

Deno.test("serve() logs the request line of a head it refuses: an announced body over the limit is a 413 for that request", async () => {
  const entries: AccessLogEntry[] = [];
  const server = serve(app, {
    port: 0,
    onListen() {},
    maxBodyBytes: 10,
    accessLog: (entry) => entries.push(entry),
  });
  const { port } = server.addr as Deno.NetAddr;
  for (
    const request of [
      "POST /echo?big HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\n",
      "BAD LINE\r\n\r\n",
    ]
  ) {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port });
    await conn.write(latin1Bytes(request));
    const buf = new Uint8Array(4096);
    while (
      await deadline(TEST_DEADLINE_MS, conn.read(buf), "The answer", () => conn.close()) !== null
    );
    conn.close();
  }
  await server.shutdown();
  deepEqual(entries.map((e) => [e.method, e.target, e.protocol, e.status]), [
    ["POST", "/echo?big", "HTTP/1.1", 413],
    [null, null, null, 400],
  ]);
});

Deno.test("the CLI exits soon after SIGTERM even when nobody ever reads its standard output, saying what was not written", async () => {
  const port = freePort();
  const { process, watchdog, stderr } = spawnCli(
    ["--port", String(port), "--shutdown-timeout", "1000"],
    60_000,
  );
  const reader = process.stdout.getReader();
  try {
    await reader.read(); // the startup line; nothing more is ever read
    equal(await blast(port, 4, 10_000), 40_000);
    const stopped = performance.now();
    process.kill("SIGTERM");
    const status = await process.status;
    const took = performance.now() - stopped;
    equal(status.code, 0);
    ok(took < 1000 + 5000 + 3000, `exited ${Math.round(took)} ms after SIGTERM`);
    match(await stderr, /access log: \d+ bytes could not be written/);
  } finally {
    clearTimeout(watchdog);
    reader.releaseLock();
    await process.stdout.cancel().catch(() => {});
    await stderr;
  }
});
