/**
 * Integration tests of the HTTP/1.1 server over real sockets: keep-alive,
 * pipelining, request bodies, `Expect: 100-continue`, aborts, graceful
 * shutdown, PEP 3333 rules at the wire, bad input, `wsgi.input` and
 * `environ`. Timeouts live in `timeouts_test.ts`.
 *
 * No sleeps: every wait ends on bytes, EOF, or a deferred promise that the
 * application resolves. Where a broken server could make a test wait
 * forever, the wait is bounded by one of the server's own short deadlines.
 */

import { deepEqual, equal, match, notEqual, ok, rejects, throws } from "node:assert/strict";
import type { Application, Body, Environ, InputStream } from "../mod.ts";
import { app as sampleApp } from "../app.ts";
import { serve, type ServerOptions } from "../server.ts";
import {
  bytes,
  concat,
  deadline,
  decoder,
  deferred,
  exchange,
  latin1Bytes,
  latin1String,
  parseResponses,
  startServer,
  TEST_DEADLINE_MS,
  type TestServer,
  textApp,
  uploadReadingApp,
} from "./_helpers.ts";
import { Client, CRLF, indexOfBytes } from "./_client.ts";

// ---------------------------------------------------------------------------
// Local helpers
// ---------------------------------------------------------------------------

/**
 * Starts a server with a short shutdown timeout, so that a test failing
 * with a request still in flight ends quickly instead of after 30 s.
 */
function start(
  app: Application,
  options: ServerOptions & { validate?: boolean } = {},
): TestServer {
  return startServer(app, { shutdownTimeoutMs: 3000, ...options });
}

/** An application that answers 200 with its PATH_INFO and QUERY_STRING. */
const pathApp: Application = (environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  const query = environ.QUERY_STRING === "" ? "" : `?${environ.QUERY_STRING}`;
  return [latin1Bytes(`${environ.PATH_INFO}${query}`)];
};

/** A JSON response of `value` (UTF-8). */
function json(startResponse: Parameters<Application>[1], value: unknown): Body {
  startResponse("200 OK", [["Content-Type", "application/json"]]);
  return [bytes(JSON.stringify(value))];
}

function randomBytes(n: number): Uint8Array {
  const out = new Uint8Array(n);
  for (let i = 0; i < n; i += 65536) crypto.getRandomValues(out.subarray(i, i + 65536));
  return out;
}

function get(path: string, extra = ""): string {
  return `GET ${path} HTTP/1.1\r\nHost: x\r\n${extra}\r\n`;
}

// ---------------------------------------------------------------------------
// 1. Keep-alive
// ---------------------------------------------------------------------------

Deno.test("serve() keeps a HTTP/1.1 connection alive across requests", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  const expected = [
    ["/", "Hello from My Simple WSGI App! (Homepage)\n"],
    ["/hello", "Hello, specific page!\n"],
    ["/", "Hello from My Simple WSGI App! (Homepage)\n"],
  ];
  for (const [path, text] of expected) {
    await c.send(get(path!));
    const r = await c.readResponse();
    equal(r.status, 200);
    equal(r.text, text);
    equal(r.headers.get("connection"), undefined);
  }
  equal(c.buffered.length, 0);
});

Deno.test("serve() closes a HTTP/1.0 connection after the response by default", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  await c.send("GET / HTTP/1.0\r\n\r\n");
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.text, "Hello from My Simple WSGI App! (Homepage)\n");
  equal(r.headers.get("connection"), "close");
  ok(await c.endsWithoutData(), "the server closes after a HTTP/1.0 response");
});

Deno.test("serve() keeps a HTTP/1.0 connection alive on Connection: keep-alive", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  for (const path of ["/", "/hello"]) {
    await c.send(`GET ${path} HTTP/1.0\r\nConnection: keep-alive\r\n\r\n`);
    const r = await c.readResponse();
    equal(r.status, 200);
    equal(r.headers.get("connection"), "keep-alive");
    ok(r.headers.has("content-length"));
  }
  // A third request without keep-alive ends the connection.
  await c.send("GET /hello HTTP/1.0\r\n\r\n");
  const last = await c.readResponse();
  equal(last.text, "Hello, specific page!\n");
  equal(last.headers.get("connection"), "close");
  ok(await c.endsWithoutData());
});

Deno.test("serve() delimits a streamed HTTP/1.0 response by closing the connection", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  await c.send("GET /stream?n=3 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n");
  const text = latin1String(await c.readToEnd());
  const [r] = parseResponses(text);
  equal(r!.status, 200);
  equal(r!.headers.get("transfer-encoding"), undefined);
  equal(r!.headers.get("content-length"), undefined);
  equal(r!.headers.get("connection"), "close");
  equal(r!.body, "chunk 1 of 3\nchunk 2 of 3\nchunk 3 of 3\n");
});

Deno.test("serve() sends the write() callable's bytes and a chunked generator body", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  await c.send(get("/write") + get("/stream?n=2"));
  const written = await c.readResponse();
  equal(written.status, 200);
  equal(written.text, "written with write(), one call at a time\n");
  const streamed = await c.readResponse();
  equal(streamed.headers.get("transfer-encoding"), "chunked");
  equal(streamed.text, "chunk 1 of 2\nchunk 2 of 2\n");
});

Deno.test("serve() adds Date, and Server unless the application sets it", async () => {
  const app: Application = (environ, startResponse) => {
    const headers: [string, string][] = [["Content-Type", "text/plain"]];
    if (environ.PATH_INFO === "/own") headers.push(["Server", "my-server"]);
    startResponse("200 OK", headers);
    return [bytes("x")];
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  await c.send(get("/") + get("/own"));
  const plain = await c.readResponse();
  match(plain.headers.get("date") ?? "", /^\w{3}, \d{2} \w{3} \d{4} \d{2}:\d{2}:\d{2} GMT$/);
  equal(plain.headers.get("server"), "deno-wsgi");
  const own = await c.readResponse();
  equal(own.headers.get("server"), "my-server", "exactly one Server header, the application's");
  ok(own.headers.has("date"));
});

// ---------------------------------------------------------------------------
// 2. Pipelining
// ---------------------------------------------------------------------------

Deno.test("serve() answers a 16-deep pipeline sent in one write, in order", async () => {
  await using t = start(pathApp);
  using c = await Client.open(t.port);
  let batch = "";
  for (let i = 0; i < 16; i++) batch += get(`/p${i}?n=${i}`);
  await c.send(batch);
  for (let i = 0; i < 16; i++) {
    const r = await c.readResponse();
    equal(r.status, 200);
    equal(r.text, `/p${i}?n=${i}`);
    equal(r.headers.get("connection"), undefined);
  }
  equal(c.buffered.length, 0, "no bytes beyond the 16 responses");
  await c.send(get("/after"));
  equal((await c.readResponse()).text, "/after");
});

// ---------------------------------------------------------------------------
// 3. Chunked upload
// ---------------------------------------------------------------------------

Deno.test("serve() decodes a chunked upload with a trailer for POST /echo", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  const pieces = [bytes("hello "), bytes("chunked\r\n"), randomBytes(300), bytes("world \u00e9")];
  await c.send(
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-test\r\n" +
      "Transfer-Encoding: chunked\r\n\r\n",
  );
  for (const piece of pieces) {
    await c.send(concat([latin1Bytes(`${piece.length.toString(16)}\r\n`), piece, CRLF]));
  }
  await c.send("0\r\nX-Checksum: abc\r\n\r\n");
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.headers.get("content-type"), "application/x-test");
  deepEqual(r.body, concat(pieces));
  // The trailer was consumed: the connection goes on.
  await c.send(get("/hello"));
  equal((await c.readResponse()).text, "Hello, specific page!\n");
});

Deno.test("serve() gives wsgi.input a body of one-byte chunks exactly, then the framing error behind them", async () => {
  const count = 20_000;
  const payload = randomBytes(count);
  const readFailed = deferred<unknown>();
  const app: Application = async (environ, startResponse) => {
    const input = environ["wsgi.input"];
    const body = await input.read(count);
    try {
      await input.read();
    } catch (error) {
      readFailed.resolve(error);
    }
    startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    return [body];
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  const chunks = Array.from(payload, (b) => concat([latin1Bytes("1\r\n"), Uint8Array.of(b), CRLF]));
  // The bytes arrive in large reads, so that the server decodes thousands
  // of chunks from each; then a chunk size that is not hex.
  await c.send(concat([
    latin1Bytes("POST /tiny HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"),
    ...chunks,
    latin1Bytes("zz\r\n"),
  ]));
  const r = await c.readResponse();
  equal(r.status, 200);
  deepEqual(r.body, payload, "every byte before the error, in order");
  ok(await readFailed.promise instanceof Error, "the read after them rejects");
  ok(await c.endsWithoutData(), "the broken body ends the connection");
});

// ---------------------------------------------------------------------------
// 4. Expect: 100-continue
// ---------------------------------------------------------------------------

Deno.test("serve() sends 100 Continue when the application reads the body", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  await c.send(
    "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
  );
  equal(latin1String(await c.readExact(25)), "HTTP/1.1 100 Continue\r\n\r\n");
  await c.send("hello world");
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.text, "hello world");
  equal(r.headers.get("connection"), undefined);
  await c.send(get("/hello"));
  equal((await c.readResponse()).status, 200);
});

Deno.test("serve() sends no 100 Continue to an application that does not read the body", async () => {
  await using t = start(textApp("no body needed\n"));
  using c = await Client.open(t.port);
  await c.send(
    "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n",
  );
  const r = await c.readResponse();
  equal(r.status, 200, "the first response is the final one, not 100");
  equal(r.text, "no body needed\n");
  equal(r.headers.get("connection"), "close");
  ok(await c.endsWithoutData(), "nothing follows, and the connection closes");
});

// ---------------------------------------------------------------------------
// 5. Large echo
// ---------------------------------------------------------------------------

Deno.test("serve() echoes a 1 MiB random body byte-exact", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  const size = 1024 * 1024;
  const payload = randomBytes(size);
  const writing = (async () => {
    await c.send(
      `POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n` +
        "Content-Type: application/octet-stream\r\n\r\n",
    );
    for (let i = 0; i < size; i += 65536) await c.send(payload.subarray(i, i + 65536));
  })();
  const [, r] = await Promise.all([writing, c.readResponse()]);
  equal(r.status, 200);
  equal(r.headers.get("content-length"), String(size));
  equal(r.body.length, size);
  ok(indexOfBytes(r.body, payload.subarray(0, 64)) === 0);
  deepEqual(r.body, payload);
  await c.send(get("/hello"));
  equal((await c.readResponse()).status, 200);
});

Deno.test("serve() reads a large body whole with read(), then the request pipelined behind it", async () => {
  const size = 300_000;
  const payload = randomBytes(size);
  const app: Application = async (environ, startResponse) => {
    if (environ.PATH_INFO !== "/whole") return textApp("next\n")(environ, startResponse);
    const body = await environ["wsgi.input"].read();
    startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    return [body];
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  // The body comes in pieces, and the next request right behind its last byte.
  await c.send(`POST /whole HTTP/1.1\r\nHost: x\r\nContent-Length: ${size}\r\n\r\n`);
  for (let i = 0; i < size - 1000; i += 50_000) {
    await c.send(payload.subarray(i, Math.min(i + 50_000, size - 1000)));
  }
  await c.send(concat([payload.subarray(size - 1000), bytes(get("/next"))]));
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.body.length, size);
  deepEqual(r.body, payload);
  const next = await c.readResponse();
  equal(next.status, 200);
  equal(latin1String(next.body), "next\n");
});

Deno.test("serve() rejects a large read when the client disconnects mid-body", async () => {
  const failed = deferred<unknown>();
  const app: Application = async (environ, startResponse) => {
    if (environ.PATH_INFO !== "/big") return textApp("still here\n")(environ, startResponse);
    try {
      for (;;) {
        if ((await environ["wsgi.input"].read(64 * 1024)).length === 0) break;
      }
    } catch (error) {
      failed.resolve(error);
      throw error;
    }
    startResponse("204 No Content", []);
    return [];
  };
  await using t = start(app);
  {
    using c = await Client.open(t.port);
    await c.send(`POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${1024 * 1024}\r\n\r\n`);
    await c.send(randomBytes(200_000));
  }
  ok(await failed.promise instanceof Error, "the read rejects");
  const [r] = parseResponses(await exchange(t.port, get("/", "Connection: close\r\n")));
  equal(r!.body, "still here\n");
});

// ---------------------------------------------------------------------------
// 6, 7. Client aborts
// ---------------------------------------------------------------------------

Deno.test("serve() calls close() once when the client aborts mid-upload", async () => {
  const upload = uploadReadingApp();
  await using t = start(upload.app);
  {
    using c = await Client.open(t.port);
    await c.send("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n");
    await c.send(new Uint8Array(50).fill(0x61));
  }
  ok(await upload.readFailed instanceof Error, "wsgi.input.read() rejects");
  await upload.closed;
  equal(upload.closes(), 1);
  const text = await exchange(t.port, get("/", "Connection: close\r\n"));
  equal(parseResponses(text)[0]!.body, "still here\n");
  equal(upload.closes(), 1, "close() was not called again");
});

Deno.test("serve() runs the body's finally and close() once when the client aborts mid-download", async () => {
  let closes = 0;
  let finallies = 0;
  let yielded = 0;
  const closed = deferred();
  const finished = deferred();
  const chunk = new Uint8Array(64 * 1024).fill(0x78);
  const app: Application = (environ, startResponse) => {
    if (environ.PATH_INFO !== "/big") return textApp("still here\n")(environ, startResponse);
    startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    const body = (async function* () {
      try {
        for (let i = 0; i < 10_000; i++) {
          yielded++;
          yield chunk;
        }
      } finally {
        finallies++;
        finished.resolve();
      }
    })();
    return Object.assign(body, {
      close() {
        closes++;
        closed.resolve();
      },
    });
  };
  await using t = start(app);
  {
    using c = await Client.open(t.port);
    await c.send(get("/big"));
    while (c.buffered.length < 256 * 1024) ok(await c.fill(), "the download goes on");
    match(latin1String(c.buffered.subarray(0, 40)), /^HTTP\/1\.1 200 OK\r\n/);
  }
  await Promise.all([finished.promise, closed.promise]);
  ok(yielded < 10_000, `the server stopped iterating (${yielded} chunks)`);
  const text = await exchange(t.port, get("/", "Connection: close\r\n"));
  equal(parseResponses(text)[0]!.body, "still here\n");
  equal(finallies, 1);
  equal(closes, 1);
});

// ---------------------------------------------------------------------------
// 8. Graceful shutdown
// ---------------------------------------------------------------------------

Deno.test("serve() finishes an in-flight request on shutdown with Connection: close", async () => {
  const entered = deferred();
  const release = deferred();
  const app: Application = async (_environ, startResponse) => {
    entered.resolve();
    await release.promise;
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return [bytes("finished after shutdown\n")];
  };
  await using t = start(app);
  let shutdown: Promise<void>;
  {
    using c = await Client.open(t.port);
    await c.send(get("/slow"));
    await entered.promise;
    shutdown = t.server.shutdown();
    release.resolve();
    const r = await c.readResponse();
    equal(r.status, 200);
    equal(r.text, "finished after shutdown\n");
    equal(r.headers.get("connection"), "close");
    ok(await c.endsWithoutData(), "the connection closes after the response");
  }
  await shutdown;
  await t.server.finished;
  await rejects(
    Deno.connect({ hostname: "127.0.0.1", port: t.port }),
    Deno.errors.ConnectionRefused,
  );
});

Deno.test("serve() closes idle keep-alive connections on shutdown", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  await c.send(get("/hello"));
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.headers.get("connection"), undefined);
  const shutdown = t.server.shutdown();
  ok(await c.endsWithoutData(), "the idle connection is closed");
  c.close();
  await shutdown;
});

Deno.test("serve() with shutdown({ idleGraceMs }) answers an idle connection's next request with Connection: close, and closes the silent ones when the grace ends", async () => {
  await using t = start(sampleApp);
  using busy = await Client.open(t.port);
  using silent = await Client.open(t.port);
  for (const c of [busy, silent]) {
    await c.send(get("/hello"));
    equal((await c.readResponse()).headers.get("connection"), undefined);
  }
  const began = performance.now();
  const shutdown = t.server.shutdown({ idleGraceMs: 300 });
  await busy.send(get("/hello"));
  const r = await busy.readResponse();
  equal(r.status, 200);
  equal(r.headers.get("connection"), "close");
  ok(await busy.endsWithoutData(), "the connection closes after its response");
  // By the time a response says Connection: close, the listener is closed.
  await rejects(
    Deno.connect({ hostname: "127.0.0.1", port: t.port }),
    Deno.errors.ConnectionRefused,
  );
  ok(await silent.endsWithoutData(), "the silent connection is closed");
  const waited = performance.now() - began;
  ok(waited >= 300, `closed after ${waited.toFixed(0)} ms, before the grace ended`);
  await deadline(TEST_DEADLINE_MS, shutdown);
});

Deno.test("serve()'s shutdown() refuses a negative idleGraceMs and stays up", async () => {
  await using t = start(sampleApp);
  throws(() => t.server.shutdown({ idleGraceMs: -1 }), RangeError);
  const r = await exchange(t.port, get("/hello", "Connection: close\r\n"));
  match(r, /^HTTP\/1\.1 200 OK\r\n/);
});

// ---------------------------------------------------------------------------
// 9, 10. Application errors and start_response rules
// ---------------------------------------------------------------------------

Deno.test("serve() answers 500 when the application throws before start_response", async () => {
  const app: Application = (environ, startResponse) => {
    if (environ.PATH_INFO === "/boom") throw new Error("secret detail 4711");
    return textApp("ok\n")(environ, startResponse);
  };
  await using t = start(app);
  const text = await exchange(t.port, get("/boom"));
  const responses = parseResponses(text);
  equal(responses.length, 1);
  const r = responses[0]!;
  equal(r.status, 500);
  equal(r.headers.get("connection"), "close");
  match(r.headers.get("content-type") ?? "", /^text\/plain/);
  ok(!text.includes("secret"), "the error message never reaches the client");
  ok(t.errors.some((e) => e.includes("secret detail 4711")), "the error is logged");
  equal(parseResponses(await exchange(t.port, get("/", "Connection: close\r\n")))[0]!.body, "ok\n");
});

Deno.test("serve() aborts the connection when the body throws after its first chunk", async () => {
  const app: Application = (environ, startResponse) => {
    if (environ.PATH_INFO !== "/late") return textApp("ok\n")(environ, startResponse);
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return (async function* () {
      yield bytes("first chunk\n");
      throw new Error("late failure 4712");
    })();
  };
  await using t = start(app);
  const text = await exchange(t.port, get("/late"));
  ok(!text.includes("late failure"), "the error message never reaches the client");
  ok(t.errors.some((e) => e.includes("late failure 4712")), "the error is logged");
  equal(parseResponses(await exchange(t.port, get("/", "Connection: close\r\n")))[0]!.body, "ok\n");
  // The head went out with the first chunk; the response is then cut off:
  // a 200 whose chunked body never ends, never a 500 or an empty reply.
  match(text, /^HTTP\/1\.1 200 OK\r\n/, `a truncated 200, got ${JSON.stringify(text)}`);
  match(text, /\r\n\r\nc\r\nfirst chunk\n\r\n$/, "head and first chunk, then EOF");
});

Deno.test("serve() sends a truncated response when the application throws after write()", async () => {
  const app: Application = async (environ, startResponse) => {
    if (environ.PATH_INFO !== "/late") return textApp("ok\n")(environ, startResponse);
    const write = startResponse("200 OK", [["Content-Type", "text/plain"]]);
    await write(bytes("partial\n"));
    throw new Error("late failure 4713");
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  await c.send(get("/late"));
  const text = latin1String(await c.readToEnd());
  match(text, /^HTTP\/1\.1 200 OK\r\n/);
  match(text, /\r\n\r\n8\r\npartial\n\r\n$/, "head and first chunk, then EOF");
  ok(t.errors.some((e) => e.includes("late failure 4713")));
  equal(parseResponses(await exchange(t.port, get("/", "Connection: close\r\n")))[0]!.body, "ok\n");
});

Deno.test("serve() lets start_response with excInfo replace held-back headers", async () => {
  const app: Application = (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Type", "text/plain"], ["X-First", "1"]]);
    return (function* () {
      yield new Uint8Array(0);
      try {
        throw new Error("failed while producing the body");
      } catch (error) {
        startResponse("500 Oops", [["Content-Type", "text/plain"]], error);
        yield bytes("oops\n");
      }
    })();
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  await c.send(get("/"));
  const r = await c.readResponse();
  equal(r.status, 500);
  equal(r.reason, "Oops");
  equal(r.text, "oops\n");
  equal(r.headers.get("x-first"), undefined, "the first headers were replaced");
});

Deno.test("serve() rethrows excInfo after the head was sent and aborts the connection", async () => {
  const app: Application = async (_environ, startResponse) => {
    const write = startResponse("200 OK", [["Content-Type", "text/plain"]]);
    await write(bytes("sent\n"));
    try {
      throw new Error("too late 4714");
    } catch (error) {
      startResponse("500 Oops", [["Content-Type", "text/plain"]], error);
    }
    return [bytes("never sent\n")];
  };
  await using t = start(app);
  const text = await exchange(t.port, get("/"));
  match(text, /^HTTP\/1\.1 200 OK\r\n/);
  ok(!text.includes("Oops") && !text.includes("never sent"));
  ok(!text.endsWith("0\r\n\r\n"), "the response is cut off");
  ok(t.errors.some((e) => e.includes("too late 4714")));
});

Deno.test("serve() answers 500 when start_response is called twice without excInfo", async () => {
  const app: Application = (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    startResponse("201 Created", [["Content-Type", "text/plain"]]);
    return [bytes("created\n")];
  };
  await using t = start(app);
  const [r] = parseResponses(await exchange(t.port, get("/")));
  equal(r!.status, 500);
  equal(r!.headers.get("connection"), "close");
  ok(!r!.body.includes("created"));
  equal(t.errors.length, 1);
});

// ---------------------------------------------------------------------------
// 11. Application Content-Length
// ---------------------------------------------------------------------------

Deno.test("serve() closes the connection when the body is shorter than its Content-Length", async () => {
  const app: Application = (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Type", "text/plain"], ["Content-Length", "10"]]);
    return (function* () {
      yield bytes("12345");
    })();
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  await c.send(get("/"));
  const text = latin1String(await c.readToEnd());
  const headEnd = text.indexOf("\r\n\r\n");
  ok(headEnd > 0);
  match(text.slice(0, headEnd), /\r\nContent-Length: 10(\r\n|$)/);
  equal(text.slice(headEnd + 4), "12345", "five bytes, then the connection closed");
});

Deno.test("serve() sends no more bytes than the application's Content-Length", async () => {
  const app: Application = (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Type", "text/plain"], ["Content-Length", "3"]]);
    return (function* () {
      yield bytes("0123456789");
    })();
  };
  await using t = start(app, { validate: false }); // the app breaks the contract on purpose;
  using c = await Client.open(t.port);
  await c.send(get("/"));
  await c.send(get("/second"));
  const text = latin1String(await c.readToEnd());
  const headEnd = text.indexOf("\r\n\r\n");
  match(text.slice(0, headEnd), /\r\nContent-Length: 3(\r\n|$)/);
  equal(text.slice(headEnd + 4), "012", "exactly three body bytes, then the connection closed");
  ok(t.errors.some((e) => e.includes("longer than its Content-Length")));
});

// ---------------------------------------------------------------------------
// 12. Responses without a body
// ---------------------------------------------------------------------------

Deno.test("serve() answers HEAD with GET's Content-Length and no body", async () => {
  await using t = start(sampleApp);
  using c = await Client.open(t.port);
  await c.send(get("/"));
  const getResponse = await c.readResponse();
  // HEAD, then GET in the same write: a HEAD body would corrupt the next response.
  await c.send(`HEAD / HTTP/1.1\r\nHost: x\r\n\r\n${get("/hello")}`);
  const headResponse = await c.readResponse({ head: true });
  equal(headResponse.status, 200);
  ok(getResponse.headers.has("content-length"));
  equal(headResponse.headers.get("content-length"), getResponse.headers.get("content-length"));
  equal(headResponse.headers.get("content-length"), String(getResponse.body.length));
  const next = await c.readResponse();
  equal(next.status, 200);
  equal(next.text, "Hello, specific page!\n");
  equal(c.buffered.length, 0);
});

Deno.test("serve() sends no body with 204 and 304 even if the application yields bytes", async () => {
  const app: Application = (environ, startResponse) => {
    const status = environ.PATH_INFO === "/204" ? "204 No Content" : "304 Not Modified";
    startResponse(status, [["ETag", '"v1"']]);
    return (function* () {
      yield bytes("these bytes must not be sent");
    })();
  };
  await using t = start(app, { validate: false }); // the app breaks the contract on purpose;
  using c = await Client.open(t.port);
  await c.send(get("/204") + get("/304") + get("/204", "Connection: close\r\n"));
  const rest = latin1String(await c.readToEnd());
  ok(!rest.includes("these bytes"), JSON.stringify(rest));
  const responses = parseResponses(rest);
  deepEqual(responses.map((r) => r.status), [204, 304, 204]);
  for (const r of responses) {
    equal(r.body, "");
    equal(r.headers.get("transfer-encoding"), undefined);
    equal(r.headers.get("etag"), '"v1"');
  }
  equal(responses[0]!.headers.get("content-length"), undefined);
});

// ---------------------------------------------------------------------------
// 13. Header and body validation at the wire
// ---------------------------------------------------------------------------

Deno.test("serve() answers 500 to invalid headers or string chunks from the application", async () => {
  const cases: Record<string, Application> = {
    "/crlf": (_e, sr) => {
      sr("200 OK", [["X-Test", "a\r\nX-Injected: 1"]]);
      return [bytes("x")];
    },
    "/lf": (_e, sr) => {
      sr("200 OK", [["X-Test", "a\nX-Injected: 1"]]);
      return [bytes("x")];
    },
    "/status-crlf": (_e, sr) => {
      sr("200 OK\r\nX-Injected: 1", []);
      return [bytes("x")];
    },
    "/connection": (_e, sr) => {
      sr("200 OK", [["Connection", "close"]]);
      return [bytes("x")];
    },
    "/transfer-encoding": (_e, sr) => {
      sr("200 OK", [["Transfer-Encoding", "chunked"]]);
      return [bytes("x")];
    },
    "/non-latin1": (_e, sr) => {
      sr("200 OK", [["X-Test", "caf\u00e9 \u2615"]]);
      return [bytes("x")];
    },
    "/string-chunk": (_e, sr) => {
      sr("200 OK", [["Content-Type", "text/plain"]]);
      return ["a string chunk"] as unknown as Body;
    },
    "/string-generator": (_e, sr) => {
      sr("200 OK", [["Content-Type", "text/plain"]]);
      return (function* () {
        yield "a string chunk" as unknown as Uint8Array;
      })();
    },
  };
  await using t = start((environ, startResponse) => {
    const handler = cases[environ.PATH_INFO];
    return handler !== undefined ? handler(environ, startResponse) : [];
  });
  for (const path of Object.keys(cases)) {
    const text = await exchange(t.port, get(path));
    const responses = parseResponses(text);
    equal(responses.length, 1, path);
    equal(responses[0]!.status, 500, path);
    equal(responses[0]!.headers.get("connection"), "close", path);
    ok(!text.includes("X-Injected"), `${path}: no injected header`);
    ok(!text.includes("a string chunk"), path);
    ok(!/X-Test/i.test(text), path);
  }
  equal(t.errors.length, Object.keys(cases).length);
});

// ---------------------------------------------------------------------------
// 14. Bad input over the wire
// ---------------------------------------------------------------------------

Deno.test("serve() answers bad requests with their status, Connection: close, then EOF", async () => {
  // The application reads the whole body first, so body errors reach it.
  const app: Application = async (environ, startResponse) => {
    await environ["wsgi.input"].read();
    return pathApp(environ, startResponse);
  };
  await using t = start(app, { maxRequestLineBytes: 64, maxHeaders: 5, maxBodyBytes: 100 });
  const rows: [name: string, request: string, status: number][] = [
    ["no version", "GET /index.html\r\nHost: x\r\n\r\n", 400],
    ["method not a token", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400],
    ["bad version syntax", "GET / HTTP/1.x\r\nHost: x\r\n\r\n", 400],
    ["HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505],
    ["long target", `GET /${"a".repeat(100)} HTTP/1.1\r\nHost: x\r\n\r\n`, 414],
    [
      "too many headers",
      `GET / HTTP/1.1\r\nHost: x\r\n${
        Array.from({ length: 6 }, (_, i) => `X-H${i}: ${i}\r\n`).join("")
      }\r\n`,
      431,
    ],
    [
      "Content-Length with Transfer-Encoding",
      "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "0\r\n\r\n",
      400,
    ],
    [
      "gzip, chunked",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
      501,
    ],
    ["missing Host", "GET / HTTP/1.1\r\n\r\n", 400],
    ["duplicate Host", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400],
    ["space before colon", "GET / HTTP/1.1\r\nHost : x\r\n\r\n", 400],
    ["obs-fold", "GET / HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", 400],
    [
      "body over the limit",
      `POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n${"b".repeat(1000)}`,
      413,
    ],
    [
      "chunked body over the limit",
      `POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n` +
      `50\r\n${"c".repeat(80)}\r\n50\r\n${"c".repeat(80)}\r\n0\r\n\r\n`,
      413,
    ],
    [
      "bad chunk size",
      "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n\r\n",
      400,
    ],
  ];
  for (const [name, request, status] of rows) {
    const text = await exchange(t.port, request);
    let responses;
    try {
      responses = parseResponses(text);
    } catch (error) {
      throw new Error(`${name}: ${(error as Error).message}: ${JSON.stringify(text)}`);
    }
    equal(responses.length, 1, `${name}: one response, then EOF`);
    equal(responses[0]!.status, status, `${name}: ${JSON.stringify(text)}`);
    equal(responses[0]!.headers.get("connection"), "close", name);
  }
  equal(t.errors.length, 0, "bad input is not an application error");
});

Deno.test("serve() never answers a request pipelined after Connection: close", async () => {
  await using t = start(pathApp);
  const text = await exchange(
    t.port,
    get("/first", "Connection: close\r\n") + get("/second") + get("/third"),
  );
  const responses = parseResponses(text);
  equal(responses.length, 1);
  equal(responses[0]!.body, "/first");
  equal(responses[0]!.headers.get("connection"), "close");
});

Deno.test("serve() drains an unread request body before the next pipelined request", async () => {
  await using t = start(pathApp);
  using c = await Client.open(t.port);
  // The body looks like a request: it must never be served as one.
  const body = get("/smuggled");
  await c.send(
    `POST /first HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n${body}` +
      get("/second"),
  );
  equal((await c.readResponse()).text, "/first");
  equal((await c.readResponse()).text, "/second");
  await c.send(get("/third", "Connection: close\r\n"));
  equal((await c.readResponse()).text, "/third");
  ok(await c.endsWithoutData());
});

Deno.test("serve() closes instead of draining a large unread request body", async () => {
  await using t = start(pathApp);
  using c = await Client.open(t.port);
  // Only the head: a 1 MiB body is announced and never sent.
  await c.send(`POST /big HTTP/1.1\r\nHost: x\r\nContent-Length: ${1024 * 1024}\r\n\r\n`);
  const r = await c.readResponse();
  equal(r.text, "/big");
  equal(r.headers.get("connection"), "close");
  ok(await c.endsWithoutData());
});

// ---------------------------------------------------------------------------
// Streaming
// ---------------------------------------------------------------------------

Deno.test("serve() sends a streamed chunk while the body waits for its next one", async () => {
  // An async body yields one chunk, then waits (for a database, a queue, an
  // event source) until the client has seen that chunk. The wait is bounded
  // by the server's own clock: a second connection that sends half a head
  // gets its 408 after headerTimeoutMs, which releases the body and fails
  // the test instead of hanging it.
  const release = deferred();
  const app: Application = (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return (async function* () {
      yield bytes("first\n");
      await release.promise;
      yield bytes("second\n");
    })();
  };
  await using t = start(app, { headerTimeoutMs: 1500 });
  using c = await Client.open(t.port);
  using clock = await Client.open(t.port);
  await clock.send("GET /clock HTTP/1.1\r\n");
  await c.send(get("/stream"));
  const sawFirst = c.readUntil("first\n");
  const clockEnded = clock.readToEnd();
  const winner = await Promise.race([
    sawFirst.then(() => "chunk"),
    clockEnded.then(() => "deadline"),
  ]);
  release.resolve();
  await sawFirst;
  if (winner === "chunk") {
    // Let the clock connection end now rather than at its deadline.
    await clock.send("Host: x\r\nConnection: close\r\n\r\n");
  }
  await clockEnded;
  const r = await c.readResponse();
  equal(r.status, 200);
  equal(r.text, "first\nsecond\n");
  equal(
    winner,
    "chunk",
    "expected the first chunk while the body waits; the server held it back until the " +
      "body yielded again (here: until headerTimeoutMs ended the clock connection)",
  );
});

// ---------------------------------------------------------------------------
// 16. wsgi.input
// ---------------------------------------------------------------------------

Deno.test("serve() gives wsgi.input readline, read, readlines and async iteration", async () => {
  const seen = async (input: InputStream) => {
    const text = (b: Uint8Array) => latin1String(b);
    const a = text(await input.readline());
    const b = text(await input.read(3));
    const c = text(await input.readline());
    const d = text(await input.readline(2));
    let e = "";
    for await (const line of input) {
      e = text(line);
      break;
    }
    const f = (await input.readlines()).map(text);
    const g = text(await input.read());
    const h = text(await input.readline());
    return { a, b, c, d, e, f, g, h };
  };
  const app: Application = async (environ, startResponse) =>
    json(startResponse, await seen(environ["wsgi.input"]));
  await using t = start(app);
  using c = await Client.open(t.port);
  const body = "line1\nline2\nline3\nline4\n\nline6\nlast-no-newline";
  const expected = {
    a: "line1\n",
    b: "lin",
    c: "e2\n",
    d: "li",
    e: "ne3\n",
    f: ["line4\n", "\n", "line6\n", "last-no-newline"],
    g: "",
    h: "",
  };
  // Content-Length, in odd pieces.
  await c.send(`POST / HTTP/1.1\r\nHost: x\r\nContent-Length: ${body.length}\r\n\r\n`);
  for (let i = 0; i < body.length; i += 7) await c.send(body.slice(i, i + 7));
  deepEqual(JSON.parse((await c.readResponse()).text), expected);
  // Chunked, with chunks that split lines.
  let chunked = "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n";
  for (let i = 0; i < body.length; i += 5) {
    const piece = body.slice(i, i + 5);
    chunked += `${piece.length.toString(16)}\r\n${piece}\r\n`;
  }
  await c.send(`${chunked}0\r\n\r\n`);
  deepEqual(JSON.parse((await c.readResponse()).text), expected);
});

// ---------------------------------------------------------------------------
// 17. environ
// ---------------------------------------------------------------------------

const ENVIRON_KEYS = [
  "REQUEST_METHOD",
  "SCRIPT_NAME",
  "PATH_INFO",
  "QUERY_STRING",
  "CONTENT_TYPE",
  "CONTENT_LENGTH",
  "SERVER_NAME",
  "SERVER_PORT",
  "SERVER_PROTOCOL",
  "REMOTE_ADDR",
  "REMOTE_PORT",
  "HTTP_X_CUSTOM",
  "HTTP_COOKIE",
  "HTTP_HOST",
  "HTTP_CONTENT_TYPE",
  "HTTP_CONTENT_LENGTH",
  "HTTP_X_MULTI",
  "wsgi.url_scheme",
  "wsgi.version",
];

/** Answers with JSON of the selected environ keys (absent ones omitted) and every key's name. */
const environApp: Application = (environ, startResponse) => {
  const picked: Record<string, unknown> = {};
  for (const key of ENVIRON_KEYS) {
    if (environ[key] !== undefined) picked[key] = environ[key];
  }
  picked.keys = Object.keys(environ);
  return json(startResponse, picked);
};

async function environOf(port: number, request: string): Promise<Record<string, unknown>> {
  const [r] = parseResponses(await exchange(port, request));
  equal(r!.status, 200, r!.body);
  return JSON.parse(decoder.decode(latin1Bytes(r!.body)));
}

Deno.test("serve() builds environ from the request as native strings", async () => {
  await using t = start(environApp);
  const env = await environOf(
    t.port,
    "POST /caf%C3%A9/x%2Fy?a=1&b=%20c%2F HTTP/1.1\r\n" +
      "Host: example.com:8080\r\n" +
      "X-Custom: hello\r\n" +
      "Content-Type: text/plain\r\n" +
      "Content-Length: 0\r\n" +
      "Cookie: a=1\r\n" +
      "X-Multi: one\r\n" +
      "Cookie: b=2\r\n" +
      "X-Multi: two\r\n" +
      "Connection: close\r\n\r\n",
  );
  equal(env.REQUEST_METHOD, "POST");
  equal(env.SCRIPT_NAME, "");
  equal(env.PATH_INFO, "/caf\u00c3\u00a9/x/y");
  equal(env.QUERY_STRING, "a=1&b=%20c%2F");
  equal(env.HTTP_X_CUSTOM, "hello");
  equal(env.CONTENT_TYPE, "text/plain");
  equal(env.CONTENT_LENGTH, "0");
  equal(env.HTTP_CONTENT_TYPE, undefined);
  equal(env.HTTP_CONTENT_LENGTH, undefined);
  equal(env.SERVER_NAME, "example.com");
  equal(env.SERVER_PORT, "8080");
  equal(env.HTTP_HOST, "example.com:8080");
  equal(env.SERVER_PROTOCOL, "HTTP/1.1");
  equal(env.REMOTE_ADDR, "127.0.0.1");
  match(String(env.REMOTE_PORT), /^\d+$/);
  notEqual(env.REMOTE_PORT, String(t.port));
  equal(env.HTTP_COOKIE, "a=1; b=2");
  equal(env.HTTP_X_MULTI, "one, two");
  equal(env["wsgi.url_scheme"], "http");
  deepEqual(env["wsgi.version"], [1, 0]);
});

Deno.test("serve() accepts absolute-form and OPTIONS * targets", async () => {
  await using t = start(environApp);
  const absolute = await environOf(
    t.port,
    "GET http://example.org:81/p%20q?x=1 HTTP/1.1\r\nHost: example.org:81\r\nConnection: close\r\n\r\n",
  );
  equal(absolute.PATH_INFO, "/p q");
  equal(absolute.QUERY_STRING, "x=1");
  equal(absolute.SERVER_NAME, "example.org");
  equal(absolute.SERVER_PORT, "81");
  const star = await environOf(
    t.port,
    "OPTIONS * HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
  );
  equal(star.REQUEST_METHOD, "OPTIONS");
  equal(star.PATH_INFO, "*");
});

Deno.test("serve() drops header names with an underscore from environ", async () => {
  await using t = start(environApp);
  const alone = await environOf(t.port, get("/", "X_Custom: evil\r\nConnection: close\r\n"));
  equal(alone.HTTP_X_CUSTOM, undefined);
  ok(!(alone.keys as string[]).some((k) => k.includes("CUSTOM")));
  const both = await environOf(
    t.port,
    get("/", "X_Custom: evil\r\nX-Custom: good\r\nConnection: close\r\n"),
  );
  equal(both.HTTP_X_CUSTOM, "good");
});

Deno.test("serve() omits CONTENT_LENGTH and CONTENT_TYPE when the request has none", async () => {
  await using t = start(environApp);
  const env = await environOf(t.port, get("/", "Connection: close\r\n"));
  ok(!(env.keys as string[]).includes("CONTENT_LENGTH"));
  ok(!(env.keys as string[]).includes("CONTENT_TYPE"));
  equal(env.SERVER_PORT, "80", "Host without a port means port 80");
  equal(env.SERVER_NAME, "x");
});

Deno.test("serve() splits SCRIPT_NAME and PATH_INFO at the scriptName option", async () => {
  await using t = start(environApp, { scriptName: "/app" });
  const cases: [target: string, scriptName: string, pathInfo: string][] = [
    ["/app/foo/bar", "/app", "/foo/bar"],
    ["/app", "/app", ""],
    ["/app/", "/app", "/"],
    ["/application", "", "/application"],
    ["/other", "", "/other"],
  ];
  for (const [target, scriptName, pathInfo] of cases) {
    const env = await environOf(t.port, get(target, "Connection: close\r\n"));
    equal(env.SCRIPT_NAME, scriptName, target);
    equal(env.PATH_INFO, pathInfo, target);
  }
});

Deno.test("serve() gives every request a fresh environ and calls the application once", async () => {
  const environs: Environ[] = [];
  let calls = 0;
  const app: Application = (environ, startResponse) => {
    calls++;
    environs.push(environ);
    (environ as Record<string, unknown>)["test.mark"] = calls;
    return textApp("ok")(environ, startResponse);
  };
  await using t = start(app);
  using c = await Client.open(t.port);
  await c.send(get("/a") + get("/b"));
  await c.readResponse();
  await c.readResponse();
  equal(calls, 2);
  notEqual(environs[0], environs[1]);
  equal(environs[1]!["test.mark"], 2);
  equal(environs[0]!.PATH_INFO, "/a");
  equal(environs[1]!.PATH_INFO, "/b");
});

Deno.test("serve() names the request in an application error, and logs a client's fault as one line without the error", async () => {
  const errors: [string, unknown][] = [];
  const app: Application = async (environ, startResponse) => {
    if (environ.PATH_INFO === "/boom") throw new Error("boom");
    // Streams the upload back, so the head is out when the body turns out too large.
    startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    const input = environ["wsgi.input"];
    const first = await input.read(4);
    return (async function* () {
      yield first;
      for (;;) {
        const chunk = await input.read(1024);
        if (chunk.length === 0) return;
        yield chunk;
      }
    })();
  };
  const server = serve(app, {
    port: 0,
    onListen() {},
    maxBodyBytes: 100,
    onError: (message, error) => errors.push([message, error]),
  });
  try {
    const { port } = server.addr as Deno.NetAddr;
    const [boom] = parseResponses(
      await exchange(port, "GET /boom?x=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
    );
    equal(boom!.status, 500);
    const chunk = "50\r\n" + "x".repeat(0x50) + "\r\n";
    await exchange(
      port,
      "POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk.repeat(3) +
        "0\r\n\r\n",
    );
  } finally {
    await server.shutdown();
  }
  equal(errors.length, 2, JSON.stringify(errors.map(([m]) => m)));
  const [[appMessage, appError], [clientMessage, clientError]] = errors as [
    [string, unknown],
    [string, unknown],
  ];
  equal(appMessage, "GET /boom?x=1: Application error");
  equal((appError as Error).message, "boom");
  match(
    clientMessage,
    /^POST \/up: Request refused after the response head was sent: .*; the response is cut off$/,
  );
  equal(clientError, undefined, "no error object: no stack for a client's fault");
});
