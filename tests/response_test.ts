/**
 * The gateway without sockets: runApplication() writes into a recording
 * channel, so every PEP 3333 rule is checked on bytes alone.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import type { Application, Body, Environ, StartResponse } from "../mod.ts";
import { OutputBuffer, writeHead } from "../_h1/writer.ts";
import { RemoteProtocolError } from "../_h1/errors.ts";
import { ClientDisconnectedError, type ResponseOutcome } from "../_gateway/response.ts";
import { type ResponseChannel, runApplication } from "../_gateway/h1_response.ts";
import { bytes, concat, latin1String, parseResponses } from "./_helpers.ts";

/** A channel that records what would reach the socket. */
class RecordingChannel implements ResponseChannel {
  readonly out = new OutputBuffer();
  readonly written: Uint8Array[] = [];
  readonly errors: string[] = [];
  readonly serverHeader = "test-server";
  flushes = 0;
  keepAlive = true;
  failWrites = false;

  flush(): Promise<void> {
    this.flushes++;
    const pieces = this.out.take();
    if (this.failWrites) {
      return Promise.reject(new ClientDisconnectedError("The client went away"));
    }
    for (const piece of pieces) this.written.push(piece.slice());
    return Promise.resolve();
  }
  commitHead(): boolean {
    return this.keepAlive;
  }
  date(): string {
    return "Thu, 26 Nov 2026 00:00:00 GMT";
  }
  logError(message: string, error?: unknown): void {
    this.errors.push(error === undefined ? message : `${message}: ${error}`);
  }
  /** Everything written so far plus what is still queued, as latin-1 text. */
  text(): string {
    for (const piece of this.out.take()) this.written.push(piece.slice());
    return latin1String(concat(this.written));
  }
}

const ENVIRON = { REQUEST_METHOD: "GET", PATH_INFO: "/" } as unknown as Environ;

async function run(
  app: Application,
  options: { method?: string; version?: "HTTP/1.1" | "HTTP/1.0"; channel?: RecordingChannel } = {},
): Promise<{ outcome: ResponseOutcome; channel: RecordingChannel; text: string }> {
  const channel = options.channel ?? new RecordingChannel();
  const outcome = await runApplication(app, ENVIRON, {
    method: options.method ?? "GET",
    version: options.version ?? "HTTP/1.1",
  }, channel);
  return { outcome, channel, text: channel.text() };
}

/** A body that records how often close() was called. */
function closable(
  chunks: Iterable<Uint8Array>,
): Iterable<Uint8Array> & { closed: number; close(): void } {
  const body = {
    closed: 0,
    [Symbol.iterator]: () => chunks[Symbol.iterator](),
    close() {
      body.closed++;
    },
  };
  return body;
}

Deno.test("runApplication() sends a list body with a computed Content-Length in one piece", async () => {
  const { outcome, channel, text } = await run((_e, sr) => {
    sr("200 OK", [["Content-Type", "text/plain"]]);
    return [bytes("hello "), bytes("world")];
  });
  const [response] = parseResponses(text);
  equal(response!.status, 200);
  equal(response!.headers.get("content-length"), "11");
  equal(response!.headers.get("server"), "test-server");
  equal(response!.headers.get("date"), "Thu, 26 Nov 2026 00:00:00 GMT");
  equal(response!.body, "hello world");
  equal(channel.flushes, 0, "a small response stays queued for one write");
  deepEqual(outcome, { status: 200, bodyBytes: 11, keepAlive: true, aborted: false });
});

Deno.test("runApplication() sends a generator body chunked on HTTP/1.1", async () => {
  const { text } = await run((_e, sr) => {
    sr("200 OK", []);
    return (function* () {
      yield bytes("a");
      yield new Uint8Array(0);
      yield bytes("bc");
    })();
  });
  ok(text.includes("Transfer-Encoding: chunked\r\n"));
  ok(text.endsWith("\r\n\r\n1\r\na\r\n2\r\nbc\r\n0\r\n\r\n"));
});

Deno.test("runApplication() delimits an unknown-length body by close on HTTP/1.0", async () => {
  const { outcome, text } = await run((_e, sr) => {
    sr("200 OK", []);
    return (async function* () {
      yield bytes("x");
    })();
  }, { version: "HTTP/1.0" });
  ok(!text.includes("Transfer-Encoding"));
  ok(text.includes("Connection: close\r\n"));
  ok(text.endsWith("\r\n\r\nx"));
  equal(outcome.keepAlive, false);
});

Deno.test("runApplication() says Connection: keep-alive to an HTTP/1.0 client it keeps", async () => {
  const { outcome, text } = await run((_e, sr) => {
    sr("200 OK", []);
    return [bytes("x")];
  }, { version: "HTTP/1.0" });
  ok(text.includes("Connection: keep-alive\r\n"));
  equal(outcome.keepAlive, true);
});

Deno.test("runApplication() holds the head back until the first non-empty chunk", async () => {
  const { text } = await run((_e, sr) => {
    sr("200 OK", [["X-First", "1"]]);
    return (function* () {
      yield new Uint8Array(0);
      try {
        throw new Error("boom");
      } catch (error) {
        sr("500 Oops", [["X-Second", "2"]], error);
      }
      yield bytes("replaced");
    })();
  });
  const [response] = parseResponses(text);
  equal(response!.status, 500);
  equal(response!.reason, "Oops");
  ok(!response!.headers.has("x-first"));
  equal(response!.body, "replaced");
});

Deno.test("start_response called twice without excInfo gives a 500", async () => {
  const { text, channel } = await run((_e, sr) => {
    sr("200 OK", []);
    sr("201 Created", []);
    return [];
  });
  const [response] = parseResponses(text);
  equal(response!.status, 500);
  equal(response!.headers.get("connection"), "close");
  ok(!response!.body.includes("second time"), "details stay in the log");
  ok(channel.errors.some((e) => e.includes("second time without excInfo")));
});

Deno.test("start_response with excInfo after the head was sent rethrows it and aborts", async () => {
  const failure = new Error("late failure");
  let rethrown: unknown;
  const { outcome, text } = await run((_e, sr) => {
    sr("200 OK", []);
    return (function* () {
      yield bytes("partial");
      try {
        sr("500 Error", [], failure);
      } catch (error) {
        rethrown = error;
        throw error;
      }
    })();
  });
  equal(rethrown, failure);
  equal(outcome.aborted, true);
  ok(text.startsWith("HTTP/1.1 200 OK"));
  ok(!text.includes("500"));
});

Deno.test("an application error before the head gives a plain 500 and close() still runs", async () => {
  const body = {
    closed: 0,
    [Symbol.iterator](): Iterator<Uint8Array> {
      throw new Error("secret detail");
    },
    close() {
      body.closed++;
    },
  };
  const { outcome, channel, text } = await run((_e, sr) => {
    sr("200 OK", []);
    return body;
  });
  const [response] = parseResponses(text);
  equal(response!.status, 500);
  equal(response!.body, "Internal Server Error\n");
  ok(!text.includes("secret detail"));
  ok(channel.errors.some((e) => e.includes("secret detail")));
  equal(body.closed, 1);
  equal(outcome.keepAlive, false);
});

Deno.test("an application that throws synchronously gets a 500", async () => {
  const { text } = await run(() => {
    throw new TypeError("bad");
  });
  equal(parseResponses(text)[0]!.status, 500);
});

Deno.test("a request-body error escaping the app answers with its own status", async () => {
  const { text } = await run(() => {
    throw new RemoteProtocolError("Request body is larger than the limit", 413);
  });
  const [response] = parseResponses(text);
  equal(response!.status, 413);
  equal(response!.headers.get("connection"), "close");
});

Deno.test("a string chunk is an application error (500), close() is called once", async () => {
  const body = closable(["text" as unknown as Uint8Array]);
  const { text } = await run((_e, sr) => {
    sr("200 OK", []);
    return body;
  });
  equal(parseResponses(text)[0]!.status, 500);
  equal(body.closed, 1);
});

Deno.test("a string or non-iterable result is an application error (500)", async () => {
  for (const result of ["hello", 42, null, { notIterable: true }]) {
    const { text } = await run((_e, sr) => {
      sr("200 OK", []);
      return result as unknown as Body;
    });
    equal(parseResponses(text)[0]!.status, 500, `result ${JSON.stringify(result)}`);
  }
});

Deno.test("start_response never called gives a 500", async () => {
  const { text, channel } = await run(() => [bytes("x")]);
  equal(parseResponses(text)[0]!.status, 500);
  ok(channel.errors.some((e) => e.includes("start_response was not called")));
});

Deno.test("invalid status and headers are refused before anything is sent", async (t) => {
  const cases: [string, string, [string, string][]][] = [
    ["no reason separator", "200", []],
    ["two-digit status", "20 OK", []],
    ["1xx status", "101 Switching Protocols", []],
    ["CR LF in the status", "200 OK\r\nX-Evil: 1", []],
    ["CR LF in a value", "200 OK", [["X-A", "1\r\nX-Injected: 1"]]],
    ["NUL in a value", "200 OK", [["X-A", "a\0b"]]],
    ["non-latin-1 value", "200 OK", [["X-A", "snow \u2603"]]],
    ["space in a name", "200 OK", [["X A", "1"]]],
    ["empty name", "200 OK", [["", "1"]]],
    ["Connection header", "200 OK", [["Connection", "keep-alive"]]],
    ["Transfer-Encoding header", "200 OK", [["Transfer-Encoding", "chunked"]]],
    ["Keep-Alive header", "200 OK", [["Keep-Alive", "timeout=5"]]],
    ["Upgrade header", "200 OK", [["Upgrade", "websocket"]]],
    ["Proxy-* header", "200 OK", [["Proxy-Authenticate", "Basic"]]],
    ["invalid Content-Length", "200 OK", [["Content-Length", "-1"]]],
    ["duplicate Content-Length", "200 OK", [["Content-Length", "1"], ["content-length", "1"]]],
  ];
  for (const [name, status, headers] of cases) {
    await t.step(name, async () => {
      let thrown: unknown;
      const { text } = await run((_e, sr) => {
        try {
          sr(status, headers);
        } catch (error) {
          thrown = error;
          throw error;
        }
        return [bytes("body")];
      });
      ok(thrown instanceof TypeError, "start_response throws a TypeError");
      const [response] = parseResponses(text);
      equal(response!.status, 500);
      ok(!text.includes("Injected") && !text.includes("Evil") && !text.includes("\u2603"));
    });
  }
});

Deno.test("an app Content-Length is honored: fewer bytes close the connection", async () => {
  const { outcome, text, channel } = await run((_e, sr) => {
    sr("200 OK", [["Content-Length", "10"]]);
    return (function* () {
      yield bytes("12345");
    })();
  });
  ok(text.endsWith("\r\n\r\n12345"));
  equal(outcome.keepAlive, false);
  ok(channel.errors.some((e) => e.includes("shorter than its Content-Length")));
});

Deno.test("an app Content-Length is honored: extra bytes are never sent", async () => {
  const { outcome, text } = await run((_e, sr) => {
    sr("200 OK", [["Content-Length", "3"]]);
    return [bytes("1234567890")];
  });
  ok(text.endsWith("\r\n\r\n123"));
  equal((text.match(/Content-Length/gi) ?? []).length, 1);
  equal(outcome.keepAlive, false);
});

Deno.test("HEAD gets the GET headers and no body", async () => {
  const get = await run((_e, sr) => {
    sr("200 OK", []);
    return [bytes("hello")];
  });
  const head = await run((_e, sr) => {
    sr("200 OK", []);
    return [bytes("hello")];
  }, { method: "HEAD" });
  ok(get.text.includes("Content-Length: 5\r\n"));
  ok(head.text.includes("Content-Length: 5\r\n"));
  ok(head.text.endsWith("\r\n\r\n"));
  equal(head.outcome.keepAlive, true);
});

Deno.test("a response without a body stops iterating a streamed body after the head, and closes it", async (t) => {
  // HEAD expects no body; a 204 or 304 body is the application's mistake, logged once.
  const cases = [
    { method: "HEAD", status: "200 OK", logged: 0 },
    { method: "GET", status: "204 No Content", logged: 1 },
    { method: "GET", status: "304 Not Modified", logged: 1 },
  ];
  for (const { method, status, logged } of cases) {
    await t.step(`${method}, ${status}`, async () => {
      let produced = 0;
      let closed = 0;
      const { text, channel } = await run((_e, sr) => {
        sr(status, []);
        return (function* () {
          try {
            for (;;) {
              produced++;
              yield bytes("more");
            }
          } finally {
            closed++;
          }
        })();
      }, { method });
      ok(text.endsWith("\r\n\r\n"));
      equal(produced, 1);
      equal(closed, 1);
      equal(channel.errors.length, logged);
    });
  }
});

Deno.test("204 and 304 responses carry no body and 204 no Content-Length", async () => {
  for (const status of ["204 No Content", "304 Not Modified"]) {
    const { text, channel } = await run((_e, sr) => {
      sr(status, status.startsWith("204") ? [["Content-Length", "4"]] : []);
      return [bytes("oops")];
    });
    ok(text.endsWith("\r\n\r\n"), status);
    ok(!text.includes("oops"));
    ok(!text.includes("Transfer-Encoding"));
    if (status.startsWith("204")) ok(!/content-length/i.test(text));
    ok(channel.errors.some((e) => e.includes("Discarded the body")));
  }
});

Deno.test("a 205 carries no body, announced as Content-Length: 0 in place of the application's, and keeps the connection", async () => {
  for (const headers of [[["Content-Length", "4"]], []] as [string, string][][]) {
    const { text, channel, outcome } = await run((_e, sr) => {
      sr("205 Reset Content", headers);
      return [bytes("oops")];
    });
    ok(text.startsWith("HTTP/1.1 205 Reset Content\r\n"), text);
    ok(text.endsWith("\r\n\r\n"), text);
    ok(!text.includes("oops"), text);
    equal((text.match(/content-length/gi) ?? []).length, 1, text);
    ok(text.includes("Content-Length: 0\r\n"), text);
    ok(channel.errors.some((e) => e.includes("Discarded the body of a 205 response")));
    equal(outcome.keepAlive, true);
  }
});

Deno.test("the plain 500 for a failed HEAD request announces its body and sends none", async () => {
  const boom: Application = () => {
    throw new Error("boom");
  };
  const get = await run(boom);
  const head = await run(boom, { method: "HEAD" });
  ok(get.text.startsWith("HTTP/1.1 500 Internal Server Error\r\n"));
  const length = /Content-Length: (\d+)\r\n/.exec(get.text)?.[1];
  ok(length !== undefined && Number(length) > 0, get.text);
  ok(get.text.endsWith("\r\n\r\nInternal Server Error\n"), get.text);
  ok(head.text.startsWith("HTTP/1.1 500 Internal Server Error\r\n"));
  ok(head.text.includes(`Content-Length: ${length}\r\n`), head.text);
  ok(head.text.endsWith("\r\n\r\n"), head.text);
  equal(head.outcome.bodyBytes, 0);
});

Deno.test("an empty body gets Content-Length: 0", async () => {
  const { text } = await run((_e, sr) => {
    sr("200 OK", []);
    return [];
  });
  ok(text.includes("Content-Length: 0\r\n"));
});

Deno.test("write() sends the head and the bytes at once, before the body", async () => {
  let flushedAfterWrite = -1;
  const channel = new RecordingChannel();
  const { text } = await run(async (_e, sr: StartResponse) => {
    const write = sr("200 OK", []);
    await write(bytes("first,"));
    flushedAfterWrite = channel.written.length;
    return [bytes("second")];
  }, { channel });
  ok(flushedAfterWrite > 0, "write() flushed the head and its bytes");
  const [response] = parseResponses(text);
  ok(text.includes("Transfer-Encoding: chunked"));
  equal(response!.body, "first,second");
});

Deno.test("write() refuses a string", async () => {
  const { text } = await run(async (_e, sr) => {
    const write = sr("200 OK", []);
    await write("text" as unknown as Uint8Array);
    return [];
  });
  equal(parseResponses(text)[0]!.status, 500);
});

Deno.test("a client that went away aborts the response and close() runs once", async () => {
  const channel = new RecordingChannel();
  channel.failWrites = true;
  let closed = 0;
  const { outcome } = await run((_e, sr) => {
    sr("200 OK", []);
    return (function* () {
      try {
        for (let i = 0; i < 100; i++) yield new Uint8Array(32 * 1024);
      } finally {
        closed++;
      }
    })();
  }, { channel });
  equal(outcome.aborted, true);
  equal(closed, 1);
  deepEqual(channel.errors, [], "a disconnect is not an application error");
});

Deno.test("a close() that throws is logged and does not change the response", async () => {
  const { text, channel } = await run((_e, sr) => {
    sr("200 OK", []);
    return Object.assign([bytes("ok")], {
      close() {
        throw new Error("close failed");
      },
    });
  });
  equal(parseResponses(text)[0]!.body, "ok");
  ok(channel.errors.some((e) => e.includes("close failed")));
});

Deno.test("the app's Server header replaces the server's", async () => {
  const { text } = await run((_e, sr) => {
    sr("200 OK", [["Server", "custom/1"]]);
    return [];
  });
  ok(text.includes("Server: custom/1\r\n"));
  ok(!text.includes("test-server"));
});

Deno.test("a channel that cannot keep alive makes the head say Connection: close", async () => {
  const channel = new RecordingChannel();
  channel.keepAlive = false;
  const { outcome, text } = await run((_e, sr) => {
    sr("200 OK", []);
    return [bytes("x")];
  }, { channel });
  ok(text.includes("Connection: close\r\n"));
  equal(outcome.keepAlive, false);
});

Deno.test("large bodies are flushed as they go (backpressure)", async () => {
  const channel = new RecordingChannel();
  let flushesSeenByGenerator = 0;
  await run((_e, sr) => {
    sr("200 OK", []);
    return (function* () {
      for (let i = 0; i < 8; i++) {
        yield new Uint8Array(32 * 1024);
        flushesSeenByGenerator = channel.flushes;
      }
    })();
  }, { channel });
  ok(flushesSeenByGenerator >= 3, `flushed ${flushesSeenByGenerator} times while streaming`);
});

Deno.test("a synchronous app's small array body is answered without a promise", () => {
  const channel = new RecordingChannel();
  const outcome = runApplication(
    (_e, sr) => {
      sr("200 OK", []);
      return [bytes("ab"), bytes("c")];
    },
    ENVIRON,
    { method: "GET", version: "HTTP/1.1" },
    channel,
  );
  ok(!(outcome instanceof Promise), "expected a settled outcome");
  deepEqual(outcome, { status: 200, bodyBytes: 3, keepAlive: true, aborted: false });
  ok(
    channel.text().endsWith(
      "Content-Length: 3\r\nDate: Thu, 26 Nov 2026 00:00:00 GMT\r\nServer: test-server\r\n\r\nabc",
    ),
  );
  equal(channel.flushes, 0);
});

Deno.test("an array body above the high-water mark waits for the socket between chunks", async () => {
  const channel = new RecordingChannel();
  const chunks = Array.from({ length: 6 }, (_, i) => new Uint8Array(40 * 1024).fill(i));
  const outcome = runApplication(
    (_e, sr) => {
      sr("200 OK", []);
      return chunks;
    },
    ENVIRON,
    { method: "GET", version: "HTTP/1.1" },
    channel,
  );
  ok(outcome instanceof Promise, "expected the outcome to wait for flushes");
  deepEqual(await outcome, {
    status: 200,
    bodyBytes: 6 * 40 * 1024,
    keepAlive: true,
    aborted: false,
  });
  ok(channel.flushes >= 2, `flushed ${channel.flushes} times`);
  const [response] = parseResponses(channel.text());
  equal(response!.body.length, 6 * 40 * 1024);
  for (let i = 0; i < 6; i++) equal(response!.body.charCodeAt(i * 40 * 1024 + 1), i);
});

Deno.test("OutputBuffer keeps handed-out bytes intact while more are queued", () => {
  const out = new OutputBuffer();
  out.latin1("first");
  const [taken] = out.take();
  out.latin1("SECOND");
  equal(latin1String(taken!), "first");
  equal(latin1String(out.take()[0]!), "SECOND");
});

Deno.test("OutputBuffer.takeBlock() takes one contiguous block, and leaves anything else to take()", () => {
  const out = new OutputBuffer();
  equal(out.takeBlock(), null, "nothing queued");
  out.latin1("head");
  out.bytes(new Uint8Array([0x21]));
  equal(latin1String(out.takeBlock()!), "head!");
  equal(out.length, 0);
  // A large chunk is queued by reference, beside the block: two pieces.
  out.latin1("head");
  out.bytes(new Uint8Array(64 * 1024));
  equal(out.takeBlock(), null);
  equal(out.length, 4 + 64 * 1024, "a refused takeBlock() takes nothing");
  equal(out.take().map((piece) => piece.length).join(), `4,${64 * 1024}`);
});

Deno.test("writeHead() reuses a remembered head only when every string matches", () => {
  const framing = (addContentLength: number | null, dropContentLength = false) => ({
    framing: "length" as const,
    length: addContentLength ?? 3,
    keepAlive: true,
    addContentLength,
    dropContentLength,
  });
  const head = (
    status: string,
    headers: [string, string][],
    decision = framing(3),
    date = "Thu, 26 Nov 2026 00:00:00 GMT",
    server: string | null = "s",
  ) => {
    const out = new OutputBuffer();
    writeHead(out, "HTTP/1.1", status, headers, decision, { date, server });
    return latin1String(concat(out.take()));
  };
  const date = "Date: Thu, 26 Nov 2026 00:00:00 GMT\r\nServer: s\r\n\r\n";
  const a: [string, string] = ["A", "1"];
  equal(head("200 OK", [a]), `HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 3\r\n${date}`);
  equal(head("200 OK", [a]), `HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 3\r\n${date}`);
  // Same status, another value, another count, another order of fields.
  equal(head("200 OK", [["A", "2"]]), `HTTP/1.1 200 OK\r\nA: 2\r\nContent-Length: 3\r\n${date}`);
  equal(head("200 OK", [a, a]), `HTTP/1.1 200 OK\r\nA: 1\r\nA: 1\r\nContent-Length: 3\r\n${date}`);
  equal(head("200 OK", []), `HTTP/1.1 200 OK\r\nContent-Length: 3\r\n${date}`);
  // Same fields, but the framing drops the application's Content-Length.
  const withLength: [string, string][] = [["Content-Length", "9"], a];
  equal(
    head("200 OK", withLength, framing(null)),
    `HTTP/1.1 200 OK\r\nContent-Length: 9\r\nA: 1\r\n${date}`,
  );
  equal(head("200 OK", withLength, framing(null, true)), `HTTP/1.1 200 OK\r\nA: 1\r\n${date}`);
  // Another status with the same fields; another date; no Server.
  equal(head("201 Created", [a]), `HTTP/1.1 201 Created\r\nA: 1\r\nContent-Length: 3\r\n${date}`);
  equal(
    head("200 OK", [a], framing(3), "Fri, 27 Nov 2026 00:00:00 GMT", null),
    "HTTP/1.1 200 OK\r\nA: 1\r\nContent-Length: 3\r\nDate: Fri, 27 Nov 2026 00:00:00 GMT\r\n\r\n",
  );
});
