/**
 * The accept loop under hostile or exhausted conditions, black box:
 *
 * - connections that the peer resets while they wait in the listen queue
 *   (each one makes `accept()` fail) are skipped at once: a burst of them
 *   does not delay the next client;
 * - a server that runs out of file descriptors (a child under `ulimit -n`)
 *   neither exits nor stops: once the descriptors are free it answers again;
 * - an uncaught resource error is logged as the server logs one: on one
 *   line, without the stack that could fail to format.
 *
 * Needs python3 (for resets: Deno cannot set `SO_LINGER`) and bash (for
 * `ulimit`); a test whose tool is missing is skipped, loudly.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import { app as sampleApp } from "../app.ts";
import { deadline, exchange, parseResponses, startServer, TEST_DEADLINE_MS } from "./_helpers.ts";
import { Client } from "./_client.ts";
import { Child, findExecutable, run, tempDir } from "./_child.ts";
import { catchUncaughtErrors } from "../signals.ts";

const PYTHON = findExecutable("python3");
if (PYTHON === null) {
  console.warn("!!! exhaustion_test.ts: python3 NOT FOUND on PATH: SKIPPING the reset test !!!");
}

/** How many reset connections the burst holds: more than enough backoff steps to add up to seconds. */
const RESETS = 40;

/**
 * Opens `count` connections to `port` and resets each one (`SO_LINGER` 0,
 * then close: the kernel sends RST instead of FIN). `connect()` returns
 * once the kernel has completed the handshake, so every connection is in
 * the server's listen queue, not yet accepted, when it is reset.
 */
async function resetBurst(port: number, count: number): Promise<void> {
  const script = `
import socket, struct
sockets = [socket.create_connection(("127.0.0.1", ${port}), timeout=5) for _ in range(${count})]
for s in sockets:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    s.close()
`;
  const result = await run(PYTHON!, ["-c", script]);
  equal(result.code, 0, `python3 exited ${result.code}:\n${result.stderr}`);
}

Deno.test({
  name: "serve() skips connections reset before accept() at once, with no backoff and no log",
  ignore: PYTHON === null,
  async fn() {
    await using t = startServer(sampleApp, { maxConnections: 1, shutdownTimeoutMs: 3000 });
    // The one connection slot is taken, so the accept loop waits and the
    // burst queues up behind it.
    const holder = await Client.open(t.port);
    try {
      await holder.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
      equal((await holder.readResponse()).status, 200);
      await resetBurst(t.port, RESETS);
    } finally {
      holder.close();
    }
    // The slot is free: the loop meets the reset connections first, then this one.
    const started = performance.now();
    const text = await deadline(
      1000,
      exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
      `A request queued behind ${RESETS} reset connections`,
    );
    const elapsed = performance.now() - started;
    equal(parseResponses(text)[0]!.status, 200);
    ok(elapsed < 1000, `answered after ${elapsed.toFixed(0)} ms`);
    deepEqual(t.errors, [], "a connection reset by its peer is not an error of the server");
  },
});

const BASH = findExecutable("bash");
if (BASH === null) {
  console.warn("!!! exhaustion_test.ts: bash NOT FOUND on PATH: SKIPPING the descriptor tests !!!");
}
const STATIC_SERVER = new URL("./fixtures/static_server.ts", import.meta.url).pathname;

/** The child's descriptor limit: Deno itself holds about 20 at startup. */
const DESCRIPTOR_LIMIT = 128;
/** Connections that each ask for a large file and never read it: well past the limit. */
const FLOOD = 200;

for (
  const [permissions, clamped] of [
    // Deno lets only --allow-all read /proc/self/limits: then the server
    // knows its descriptor limit and caps maxConnections below it.
    [["--allow-all"], true],
    [["--allow-net=127.0.0.1", "--allow-read"], false],
  ] as const
) {
  Deno.test({
    name: `serve() under ulimit -n ${DESCRIPTOR_LIMIT}, flooded past its descriptors, answers ` +
      `again once they are free (${permissions.join(" ")}: ${clamped ? "" : "not "}clamped)`,
    ignore: BASH === null,
    async fn() {
      await using temp = await tempDir("wsgi_descriptors_");
      // A file too large for the socket buffers: each response holds its
      // file open while its client does not read.
      using big = await Deno.open(`${temp.path}/big.bin`, { write: true, create: true });
      await big.truncate(16 * 1024 * 1024);
      await using child = new Child(BASH!, [
        "-c",
        `ulimit -n ${DESCRIPTOR_LIMIT} && exec "$0" run --quiet ${permissions.join(" ")} "$1" "$2"`,
        Deno.execPath(),
        STATIC_SERVER,
        temp.path,
      ]);
      const listening = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:\d+\/$/);
      ok(listening !== null, child.output());
      const port = Number(/:(\d+)\/$/.exec(listening)![1]);

      const flood: Deno.Conn[] = [];
      try {
        const request = new TextEncoder().encode(
          "GET /static/big.bin HTTP/1.1\r\nHost: x\r\n\r\n",
        );
        for (let i = 0; i < FLOOD; i++) {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          flood.push(conn);
          await conn.write(request);
        }
        const exhausted = await deadline(
          TEST_DEADLINE_MS,
          child.stderr.waitFor(/Too many open files/),
          "Running out of descriptors",
        );
        ok(exhausted !== null, `the flood exhausts the descriptors:\n${child.output()}`);
      } finally {
        for (const conn of flood) conn.close();
      }

      // Backoff after a failed accept is at most 1 s.
      const text = await deadline(
        TEST_DEADLINE_MS,
        exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
        "A request after the flood",
      );
      const [response] = parseResponses(text);
      equal(response?.body, "alive\n", `the server answers:\n${child.output()}`);
      equal(
        child.stderr.count(/maxConnections/) > 0,
        clamped,
        `a notice says when maxConnections is capped:\n${child.output()}`,
      );
      child.kill("SIGTERM");
      const status = await child.status();
      equal(status.code, 0, `a graceful exit, not a crash:\n${child.output()}`);
      ok(!/panicked/.test(child.output()), child.output());
    },
  });
}

Deno.test("catchUncaughtErrors() writes a resource error (EMFILE) on one line, without its stack", () => {
  const lines: unknown[][] = [];
  const original = console.error;
  console.error = (...data: unknown[]) => lines.push(data);
  try {
    using _ = catchUncaughtErrors();
    const error = Object.assign(new Error("Too many open files (os error 24)"), { code: "EMFILE" });
    globalThis.dispatchEvent(new ErrorEvent("error", { error, cancelable: true }));
  } finally {
    console.error = original;
  }
  deepEqual(lines, [[
    "Uncaught exception in application code: Error: Too many open files (os error 24)",
  ]]);
});
