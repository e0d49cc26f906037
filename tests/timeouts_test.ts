/**
 * The server's deadlines over real sockets: the header timeout (slowloris),
 * the keep-alive idle timeout, the request-body timeout and the send
 * timeout (a client that stops reading).
 *
 * No sleeps: each test waits for the event the server's own short deadline
 * causes (a 408, an EOF, a rejected `wsgi.input` read).
 */

import { equal, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import { app as sampleApp } from "../app.ts";
import type { ServerOptions } from "../server.ts";
import {
  deferred,
  exchange,
  latin1String,
  parseResponses,
  startServer,
  type TestServer,
  textApp,
  uploadReadingApp,
} from "./_helpers.ts";
import { Client } from "./_client.ts";

/** A test server with a short shutdown timeout, so a failing test ends quickly. */
function start(app: Application, options: ServerOptions = {}): TestServer {
  return startServer(app, { shutdownTimeoutMs: 3000, ...options });
}

/** Reads `c` to its end and checks that it got exactly one response: 408 with `Connection: close`. */
async function expectOne408(c: Client): Promise<void> {
  const text = latin1String(await c.readToEnd());
  const responses = parseResponses(text);
  equal(responses.length, 1, `one 408, then EOF; got ${JSON.stringify(text)}`);
  equal(responses[0]!.status, 408);
  equal(responses[0]!.headers.get("connection"), "close");
}

Deno.test("serve() answers 408 to a request head not complete within headerTimeoutMs", async () => {
  await using t = start(sampleApp, { headerTimeoutMs: 200 });
  using c = await Client.open(t.port);
  // Whole header lines, but never the empty line that ends the head.
  await c.send("GET / HTTP/1.1\r\nHost: x\r\n");
  await expectOne408(c);
});

Deno.test("serve() answers 408 to a request line not complete within headerTimeoutMs", async () => {
  await using t = start(sampleApp, { headerTimeoutMs: 200 });
  using c = await Client.open(t.port);
  await c.send("GET / HT");
  await expectOne408(c);
});

Deno.test("serve() closes a connection that sends nothing within headerTimeoutMs", async () => {
  await using t = start(sampleApp, { headerTimeoutMs: 200 });
  using c = await Client.open(t.port);
  equal(latin1String(await c.readToEnd()), "", "closed without a response");
  // The server goes on.
  const [r] = parseResponses(
    await exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  equal(r!.status, 200);
});

Deno.test("serve() closes an idle keep-alive connection after keepAliveTimeoutMs", async () => {
  await using t = start(sampleApp, { keepAliveTimeoutMs: 200 });
  using c = await Client.open(t.port);
  await c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.headers.get("connection"), undefined, "the connection is kept alive");
  equal(latin1String(await c.readToEnd()), "", "then closed quietly once idle too long");
});

Deno.test("serve() applies the header timeout to a partly received second request", async () => {
  // The keep-alive timeout is longer: the partial head must get its 408 at
  // the header deadline, not a quiet close at the idle deadline.
  await using t = start(sampleApp, { headerTimeoutMs: 200, keepAliveTimeoutMs: 1500 });
  using c = await Client.open(t.port);
  await c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
  equal((await c.readResponse()).status, 200);
  await c.send("GET / HTTP/1.1\r\nHost: x\r\n");
  await expectOne408(c);
});

// A small body goes through the parser; a large one is read straight from the socket.
for (const length of [10, 200_000]) {
  Deno.test(`serve() rejects wsgi.input reads and closes the body when the upload stalls past bodyTimeoutMs (${length} bytes)`, async () => {
    const upload = uploadReadingApp();
    await using t = start(upload.app, { bodyTimeoutMs: 200 });
    {
      using c = await Client.open(t.port);
      await c.send(`POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: ${length}\r\n\r\nabc`);
      const text = latin1String(await c.readToEnd());
      ok(!text.startsWith("HTTP/1.1 200"), `no success response: ${JSON.stringify(text)}`);
    }
    ok(await upload.readFailed instanceof Error, "the read rejects with an Error");
    await upload.closed;
    equal(upload.closes(), 1);
    const [r] = parseResponses(
      await exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    equal(r!.body, "still here\n");
    equal(upload.closes(), 1);
  });
}

Deno.test("serve() closes a connection whose client stops reading the response, after sendTimeoutMs", async () => {
  const closed = deferred();
  let chunks = 0;
  const endless: Application = (environ, startResponse) => {
    if (environ.PATH_INFO !== "/endless") return textApp("still here\n")(environ, startResponse);
    startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    const chunk = new Uint8Array(64 * 1024);
    return {
      *[Symbol.iterator]() {
        for (;;) {
          chunks++;
          yield chunk;
        }
      },
      close: () => closed.resolve(),
    };
  };
  await using t = start(endless, { sendTimeoutMs: 200 });
  using c = await Client.open(t.port);
  await c.send("GET /endless HTTP/1.1\r\nHost: x\r\n\r\n");
  // The client never reads: the socket buffers fill, the server's write
  // waits, and its deadline ends the response (the body's close() runs).
  await closed.promise;
  ok(chunks > 1, `the response was under way (${chunks} chunks) before it stalled`);
  const [r] = parseResponses(
    await exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  equal(r!.body, "still here\n", "the server goes on");
  // The client, reading at last, gets what had been sent, then EOF.
  const text = latin1String(await c.readToEnd());
  ok(text.startsWith("HTTP/1.1 200 OK\r\n"), text.slice(0, 40));
});

Deno.test("serve() never ends a wait before its timeout: header, keep-alive idle and request body", async () => {
  // One timeout for every wait; the server's sweeper ticks at a fraction of it.
  const timeoutMs = 400;
  const upload = uploadReadingApp();
  await using t = start(upload.app, {
    headerTimeoutMs: timeoutMs,
    keepAliveTimeoutMs: timeoutMs,
    bodyTimeoutMs: timeoutMs,
  });
  // Each wait starts on the server after `started` was read here (before
  // the connect, or before the client's last write), so the time from
  // `started` to the server closing the connection is at least the wait.
  const early: string[] = [];
  const measure = async (what: string, wait: (c: Client) => Promise<number | null>) => {
    const connecting = performance.now();
    using c = await Client.open(t.port);
    const started = await wait(c) ?? connecting;
    await c.readToEnd();
    const elapsed = performance.now() - started;
    if (elapsed < timeoutMs) early.push(`${what}: closed after ${elapsed.toFixed(1)} ms`);
  };
  const kinds: [string, (c: Client) => Promise<number | null>][] = [
    ["a head that never comes", () => Promise.resolve(null)],
    ["an idle keep-alive connection", async (c) => {
      const started = performance.now();
      await c.send("GET /hello HTTP/1.1\r\nHost: x\r\n\r\n");
      equal((await c.readResponse()).status, 200);
      return started;
    }],
    ["a request body that stops", async (c) => {
      await c.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n");
      const started = performance.now();
      await c.send("abc");
      return started;
    }],
  ];
  // A wait that starts just before a tick of the sweeper is the one a
  // coarse clock would end early, so the waits start spread over more than
  // a tick. The delays only place the starts: the assertion is a lower
  // bound, true however late each one starts.
  const offsets = Array.from({ length: 8 }, (_, i) => i * timeoutMs / 25);
  await Promise.all(
    offsets.flatMap((offset) =>
      kinds.map(async ([what, wait]) => {
        await new Promise((resolve) => setTimeout(resolve, offset));
        await measure(`${what}, started at +${offset} ms`, wait);
      })
    ),
  );
  equal(early.length, 0, `closed before the ${timeoutMs} ms timeout:\n${early.join("\n")}`);
  ok(await upload.readFailed instanceof Error);
});
