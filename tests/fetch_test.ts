/**
 * toFetchHandler() and fromFetchHandler(): a WSGI application answering
 * `Request`s (socket-free and under Deno.serve), and a fetch handler served
 * by this package's server.
 */

import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import type { Application, Body } from "../mod.ts";
import { toFetchHandler } from "../tooling/fetch.ts";
import { fromFetchHandler } from "../tooling/from_fetch.ts";
import { app } from "../app.ts";
import { ClientDisconnectedError } from "../_gateway/response.ts";
import { Client } from "./_client.ts";
import {
  bytes,
  decoder,
  deferred,
  exchange,
  makeEnviron,
  parseResponses,
  startServer,
} from "./_helpers.ts";

/** An application that answers with its environ's string and boolean values as JSON. */
const environApp: Application = (environ, startResponse) => {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(environ)) {
    if (typeof value === "string" || typeof value === "boolean") out[key] = value;
  }
  startResponse("200 OK", [["Content-Type", "application/json"]]);
  return [bytes(JSON.stringify(out))];
};

/** A handler whose error log is captured. */
function handlerFor(application: Application, options: { scriptName?: string } = {}) {
  const errors: string[] = [];
  const handler = toFetchHandler(application, {
    ...options,
    onError: (message, error) =>
      errors.push(error === undefined ? message : `${message}: ${error}`),
  });
  return { handler, errors };
}

/** A generator body that counts what was produced and whether it was finished and closed. */
function countingBody(chunks: string[]) {
  const state = { produced: 0, finallyRan: false, closes: 0 };
  const generator = (function* () {
    try {
      for (const chunk of chunks) {
        state.produced++;
        yield bytes(chunk);
      }
    } finally {
      state.finallyRan = true;
    }
  })();
  const body: Body = Object.assign(generator, { close: () => void state.closes++ });
  return { body, state };
}

// ---------------------------------------------------------------------------
// toFetchHandler(), socket-free

Deno.test("toFetchHandler() answers the sample app's routes without a socket", async () => {
  const { handler, errors } = handlerFor(app);
  const home = await handler(new Request("http://localhost/"));
  equal(home.status, 200);
  equal(home.statusText, "OK");
  equal(home.headers.get("content-type"), "text/plain; charset=utf-8");
  equal(home.headers.get("x-powered-by"), "MySimpleWSGIApp");
  equal(home.headers.get("content-length"), "42");
  equal(await home.text(), "Hello from My Simple WSGI App! (Homepage)\n");

  const missing = await handler(new Request("http://localhost/nonexistent_page"));
  equal(missing.status, 404);
  equal(missing.statusText, "Not Found");
  equal(missing.headers.get("x-powered-by"), null);
  equal(await missing.text(), "404 Not Found: This page does not exist.\n");

  const stream = await handler(new Request("http://localhost/stream?n=2"));
  equal(stream.headers.get("content-length"), null);
  equal(await stream.text(), "chunk 1 of 2\nchunk 2 of 2\n");

  const write = await handler(new Request("http://localhost/write"));
  equal(await write.text(), "written with write(), one call at a time\n");

  const echo = await handler(
    new Request("http://localhost/echo", {
      method: "POST",
      body: "echo this",
      headers: { "content-type": "text/x-test", "content-length": "9" },
    }),
  );
  equal(echo.headers.get("content-type"), "text/x-test");
  equal(echo.headers.get("content-length"), "9");
  equal(await echo.text(), "echo this");
  deepEqual(errors, []);
});

Deno.test("toFetchHandler() builds the environ as the server does", async () => {
  const { handler } = handlerFor(environApp);
  const response = await handler(
    new Request("http://example.com:8080/caf%C3%A9/a%20b%2F?q=1&r=%20", {
      method: "POST",
      body: "x",
      headers: {
        "Content-Type": "text/plain",
        "X-Native": "caf\u00c3\u00a9",
        "X_Spoof": "dropped",
        "Cookie": "a=1",
      },
    }),
    { remoteAddr: { hostname: "10.1.2.3", port: 4567 } },
  );
  const environ = await response.json();
  equal(environ.REQUEST_METHOD, "POST");
  equal(environ.SCRIPT_NAME, "");
  equal(environ.PATH_INFO, "/caf\u00c3\u00a9/a b/");
  equal(environ.QUERY_STRING, "q=1&r=%20");
  equal(environ.REQUEST_URI, "/caf%C3%A9/a%20b%2F?q=1&r=%20");
  equal(environ.SERVER_NAME, "example.com");
  equal(environ.SERVER_PORT, "8080");
  equal(environ.SERVER_PROTOCOL, "HTTP/1.1");
  equal(environ.HTTP_HOST, "example.com:8080", "taken from the URL, as a client sends it");
  equal(environ.REMOTE_ADDR, "10.1.2.3");
  equal(environ.REMOTE_PORT, "4567");
  equal(environ.CONTENT_TYPE, "text/plain");
  equal(environ.HTTP_CONTENT_TYPE, undefined);
  equal(environ.HTTP_X_NATIVE, "caf\u00c3\u00a9", "header values are native strings");
  equal(environ.HTTP_X_SPOOF, undefined, "names with _ are dropped");
  equal(environ.HTTP_COOKIE, "a=1");
  equal(environ["wsgi.url_scheme"], "http");
  equal(environ["wsgi.multithread"], true);
  equal(environ["wsgi.multiprocess"], false);
  equal(environ["wsgi.run_once"], false);
  equal(environ["wsgi.input_terminated"], true);
});

Deno.test("toFetchHandler() takes SERVER_NAME from Host and the scheme from the URL", async () => {
  const { handler } = handlerFor(environApp);
  const withHost = await (await handler(
    new Request("https://ignored.example/", { headers: { Host: "h.example:9443" } }),
  )).json();
  equal(withHost.SERVER_NAME, "h.example");
  equal(withHost.SERVER_PORT, "9443");
  equal(withHost.HTTP_HOST, "h.example:9443");
  equal(withHost["wsgi.url_scheme"], "https");
  const defaultPort = await (await handler(new Request("https://secure.example/"))).json();
  equal(defaultPort.SERVER_PORT, "443");
  equal(defaultPort.REMOTE_ADDR, undefined, "no info: no peer address");
  const ipv6 = await (await handler(new Request("http://[::1]:8000/"))).json();
  equal(ipv6.SERVER_NAME, "[::1]");
  equal(ipv6.SERVER_PORT, "8000");
});

Deno.test("toFetchHandler() mounts the application at options.scriptName", async () => {
  const { handler } = handlerFor(environApp, { scriptName: "/app" });
  const inside = await (await handler(new Request("http://localhost/app/hello"))).json();
  equal(inside.SCRIPT_NAME, "/app");
  equal(inside.PATH_INFO, "/hello");
  const outside = await (await handler(new Request("http://localhost/application"))).json();
  equal(outside.SCRIPT_NAME, "");
  equal(outside.PATH_INFO, "/application");
  const multi = toFetchHandler(environApp, { multiprocess: true });
  equal((await (await multi(new Request("http://localhost/"))).json())["wsgi.multiprocess"], true);
  throws(() => toFetchHandler(app, { scriptName: "/app/" }), RangeError);
  throws(() => toFetchHandler("app" as unknown as Application), TypeError);
});

Deno.test("toFetchHandler() streams wsgi.input from the request body as the app reads", async () => {
  let pulls = 0;
  let cancelled = false;
  const pieces = ["first line\nsec", "ond line\n", "third line\n", "never read\n"];
  const body = new ReadableStream<Uint8Array>({
    pull(controller) {
      pulls++;
      const piece = pieces.shift();
      if (piece === undefined) controller.close();
      else controller.enqueue(bytes(piece));
    },
    cancel() {
      cancelled = true;
    },
  }, { highWaterMark: 0 });
  const lines: string[] = [];
  const { handler } = handlerFor(async (environ, startResponse) => {
    const input = environ["wsgi.input"];
    lines.push(decoder.decode(await input.readline()));
    lines.push(decoder.decode(await input.readline()));
    startResponse("200 OK", []);
    return [];
  });
  const response = await handler(
    new Request("http://localhost/", { method: "POST", body, duplex: "half" } as RequestInit),
  );
  equal(response.status, 200);
  await response.body?.cancel();
  deepEqual(lines, ["first line\n", "second line\n"]);
  equal(pulls, 2, "only what the application asked for was pulled");
  equal(cancelled, true, "the unread rest is cancelled once the response is done");
});

Deno.test("toFetchHandler() sends wsgi.errors lines to onError", async () => {
  const { handler, errors } = handlerFor((environ, startResponse) => {
    environ["wsgi.errors"].write("first\nsecond ");
    environ["wsgi.errors"].write("half");
    startResponse("200 OK", []);
    return [];
  });
  const response = await handler(new Request("http://localhost/"));
  await response.text();
  deepEqual(errors, ["first", "second half"]);
});

// ---------------------------------------------------------------------------
// The response: laziness, close(), errors

Deno.test("toFetchHandler() pulls a streamed body lazily and closes it at the end", async () => {
  const { body, state } = countingBody(["a", "b", "c"]);
  const { handler } = handlerFor((_environ, startResponse) => {
    startResponse("200 OK", []);
    return body;
  });
  const response = await handler(new Request("http://localhost/"));
  equal(state.produced, 1, "only the first chunk, to send the head");
  const reader = response.body!.getReader();
  equal(decoder.decode((await reader.read()).value), "a");
  equal(state.produced, 1);
  equal(decoder.decode((await reader.read()).value), "b");
  equal(state.produced, 2);
  equal(decoder.decode((await reader.read()).value), "c");
  equal(state.closes, 0);
  equal((await reader.read()).done, true);
  equal(state.finallyRan, true);
  equal(state.closes, 1);
});

Deno.test("toFetchHandler() closes the body once when the stream is cancelled", async () => {
  const { body, state } = countingBody(["a", "b", "c"]);
  const { handler, errors } = handlerFor((_environ, startResponse) => {
    startResponse("200 OK", []);
    return body;
  });
  const response = await handler(new Request("http://localhost/"));
  const reader = response.body!.getReader();
  await reader.read();
  await reader.cancel();
  equal(state.finallyRan, true, "the generator was stopped");
  equal(state.closes, 1);
  equal(state.produced, 1);
  deepEqual(errors, []);
});

Deno.test("toFetchHandler() answers 500 for an error before the first chunk", async () => {
  let closes = 0;
  const failing = Object.assign(
    (function* (fail: boolean): Generator<Uint8Array> {
      if (fail) throw new Error("no data today");
      yield bytes("never");
    })(true),
    { close: () => void closes++ },
  );
  const { handler, errors } = handlerFor((_environ, startResponse) => {
    startResponse("200 OK", [["X-Lost", "1"]]);
    return failing;
  });
  const response = await handler(new Request("http://localhost/"));
  equal(response.status, 500);
  equal(response.headers.get("x-lost"), null);
  equal(response.headers.get("content-type"), "text/plain; charset=utf-8");
  equal(await response.text(), "Internal Server Error\n");
  equal(closes, 1);
  equal(errors.length, 1);
  ok(errors[0]!.startsWith("Application error: Error: no data today"), errors[0]);
});

Deno.test("toFetchHandler() errors the stream for an error after the first chunk", async () => {
  let closes = 0;
  const { handler, errors } = handlerFor((_environ, startResponse) => {
    startResponse("200 OK", []);
    return Object.assign(
      (function* () {
        yield bytes("partial");
        throw new Error("midway");
      })(),
      { close: () => void closes++ },
    );
  });
  const response = await handler(new Request("http://localhost/"));
  equal(response.status, 200);
  await rejects(response.text(), /midway/);
  equal(closes, 1);
  deepEqual(errors, ["Application error after the response head was sent: Error: midway"]);
});

Deno.test("toFetchHandler() enforces the start_response rules as the server does", async (t) => {
  const cases: [string, Application, string][] = [
    ["a second call without excInfo", (_e, sr) => {
      sr("200 OK", []);
      sr("404 Not Found", []);
      return [];
    }, "a second time without excInfo"],
    ["an invalid status", (_e, sr) => {
      sr("20 OK", []);
      return [];
    }, `Invalid status "20 OK"`],
    ["a hop-by-hop header", (_e, sr) => {
      sr("200 OK", [["Connection", "close"]]);
      return [];
    }, "hop-by-hop"],
    ["a header value with CR LF", (_e, sr) => {
      sr("200 OK", [["X-A", "a\r\nX-Injected: 1"]]);
      return [];
    }, "without CR, LF or NUL"],
    ["a string chunk", (_e, sr) => {
      sr("200 OK", []);
      return ["text"] as unknown as Body;
    }, "(encode strings to bytes)"],
    ["a string body", () => "text" as unknown as Body, "return [bytes] instead"],
    ["no start_response", () => [], "start_response was not called"],
    ["a status a Response cannot carry", (_e, sr) => {
      sr("600 Custom", []);
      return [bytes("x")];
    }, "a fetch Response takes a status from 200 to 599"],
  ];
  for (const [name, application, text] of cases) {
    await t.step(name, async () => {
      const { handler, errors } = handlerFor(application);
      const response = await handler(new Request("http://localhost/"));
      equal(response.status, 500);
      await response.body?.cancel();
      equal(errors.length, 1);
      ok(errors[0]!.includes(text), errors[0]);
    });
  }
  await t.step("excInfo before the head replaces the status", async () => {
    const { handler } = handlerFor((_e, sr) => {
      sr("200 OK", [["X-First", "1"]]);
      return (function* () {
        yield new Uint8Array(0);
        sr("503 Busy", [["X-Second", "2"]], new Error("caught"));
        yield bytes("busy");
      })();
    });
    const response = await handler(new Request("http://localhost/"));
    equal(response.status, 503);
    equal(response.statusText, "Busy");
    equal(response.headers.get("x-first"), null);
    equal(response.headers.get("x-second"), "2");
    equal(await response.text(), "busy");
  });
  await t.step("excInfo after the head rethrows and errors the stream", async () => {
    const caught = new Error("late");
    let rethrown: unknown;
    const { handler } = handlerFor((_e, sr) => {
      sr("200 OK", []);
      return (function* () {
        yield bytes("sent");
        try {
          sr("500 Oops", [], caught);
        } catch (error) {
          rethrown = error;
          throw error;
        }
      })();
    });
    const response = await handler(new Request("http://localhost/"));
    await rejects(response.text(), /late/);
    equal(rethrown, caught);
  });
});

Deno.test("toFetchHandler() resolves write() only once the reader has the bytes", async () => {
  const events: string[] = [];
  const { handler } = handlerFor(async (_environ, startResponse) => {
    const write = startResponse("200 OK", []);
    const buffer = bytes("one");
    await write(buffer);
    events.push("one written");
    buffer.set(bytes("XXX"));
    await write(bytes("two"));
    events.push("two written");
    return [bytes("three")];
  });
  const response = await handler(new Request("http://localhost/"));
  deepEqual(events, [], "the first write waits for a read");
  const reader = response.body!.getReader();
  equal(
    decoder.decode((await reader.read()).value),
    "one",
    "write() copies: reusing the buffer is safe",
  );
  equal(decoder.decode((await reader.read()).value), "two");
  equal(decoder.decode((await reader.read()).value), "three");
  equal((await reader.read()).done, true);
  deepEqual(events, ["one written", "two written"]);
});

Deno.test("toFetchHandler() rejects write() once the reader cancelled", async () => {
  const rejected = deferred<unknown>();
  const { handler, errors } = handlerFor(async (_environ, startResponse) => {
    const write = startResponse("200 OK", []);
    try {
      for (let i = 0; i < 100; i++) await write(bytes("x"));
    } catch (error) {
      rejected.resolve(error);
      throw error;
    }
    return [];
  });
  const response = await handler(new Request("http://localhost/"));
  const reader = response.body!.getReader();
  await reader.read();
  await reader.cancel();
  const error = await rejected.promise;
  ok(error instanceof ClientDisconnectedError, String(error));
  deepEqual(errors, [], "a client that went away is not an application error");
});

Deno.test("toFetchHandler() honors an application Content-Length", async (t) => {
  await t.step("extra bytes are dropped", async () => {
    const { handler, errors } = handlerFor((_e, sr) => {
      sr("200 OK", [["Content-Length", "3"]]);
      return (function* () {
        yield bytes("ab");
        yield bytes("cd");
        yield bytes("ef");
      })();
    });
    const response = await handler(new Request("http://localhost/"));
    equal(response.headers.get("content-length"), "3");
    equal(await response.text(), "abc");
    equal(errors.length, 1);
    ok(errors[0]!.includes("longer than its Content-Length (3 bytes)"), errors[0]);
  });
  await t.step("too few bytes error the stream", async () => {
    const { handler, errors } = handlerFor((_e, sr) => {
      sr("200 OK", [["Content-Length", "10"]]);
      return (function* () {
        yield bytes("short");
      })();
    });
    const response = await handler(new Request("http://localhost/"));
    await rejects(response.text(), /shorter than its Content-Length \(5 of 10 bytes\)/);
    equal(errors.length, 1);
  });
});

Deno.test("toFetchHandler() gives HEAD, 204, 205 and 304 a null body", async (t) => {
  await t.step("HEAD keeps the GET headers and stops the body", async () => {
    const { body, state } = countingBody(["a", "b"]);
    const { handler } = handlerFor((_e, sr) => {
      sr("200 OK", [["X-A", "1"]]);
      return body;
    });
    const response = await handler(new Request("http://localhost/", { method: "HEAD" }));
    equal(response.body, null);
    equal(response.headers.get("x-a"), "1");
    equal(state.produced, 1);
    equal(state.finallyRan, true);
    equal(state.closes, 1);
    const list = await toFetchHandler(app)(new Request("http://localhost/", { method: "HEAD" }));
    equal(list.body, null);
    equal(list.headers.get("content-length"), "42");
  });
  await t.step("204 drops Content-Length, 304 keeps it", async () => {
    const { handler, errors } = handlerFor((environ, sr) => {
      const status = environ.PATH_INFO === "/204" ? "204 No Content" : "304 Not Modified";
      sr(status, [["Content-Length", "5"], ["ETag", '"x"']]);
      return [];
    });
    const noContent = await handler(new Request("http://localhost/204"));
    equal(noContent.status, 204);
    equal(noContent.body, null);
    equal(noContent.headers.get("content-length"), null);
    const notModified = await handler(new Request("http://localhost/304"));
    equal(notModified.status, 304);
    equal(notModified.body, null);
    equal(notModified.headers.get("content-length"), "5");
    equal(notModified.headers.get("etag"), '"x"');
    deepEqual(errors, []);
  });
  await t.step("a body for 204 is discarded and logged", async () => {
    const { handler, errors } = handlerFor((_e, sr) => {
      sr("204 No Content", []);
      return [bytes("not sent")];
    });
    const response = await handler(new Request("http://localhost/"));
    equal(response.body, null);
    deepEqual(errors, ["Discarded the body of a 204 response: that status has no body"]);
  });
  await t.step("a 205 has a null body and Content-Length 0", async () => {
    const { handler, errors } = handlerFor((_e, sr) => {
      sr("205 Reset Content", [["Content-Length", "8"]]);
      return [bytes("not sent")];
    });
    const response = await handler(new Request("http://localhost/", { method: "POST" }));
    equal(response.status, 205);
    equal(response.body, null);
    equal(response.headers.get("content-length"), "0");
    deepEqual(errors, ["Discarded the body of a 205 response: that status has no body"]);
  });
  await t.step("the plain 500 for a failed HEAD has a null body", async () => {
    const { handler } = handlerFor(() => {
      throw new Error("boom");
    });
    const response = await handler(new Request("http://localhost/", { method: "HEAD" }));
    equal(response.status, 500);
    equal(response.body, null);
    equal(response.headers.get("content-length"), "22");
  });
  await t.step("an error after write() committed the head hands that head out", async () => {
    // As the server sends a committed head before it cuts the connection.
    const { handler, errors } = handlerFor(async (_e, sr) => {
      const write = sr("200 OK", [["X-A", "1"]]);
      await write(bytes("not sent"));
      throw new Error("late");
    });
    const response = await handler(new Request("http://localhost/", { method: "HEAD" }));
    equal(response.status, 200);
    equal(response.body, null);
    equal(response.headers.get("x-a"), "1");
    deepEqual(errors, ["Application error after the response head was sent: Error: late"]);
  });
});

Deno.test("toFetchHandler() rejects the response when the client went away before a head", async () => {
  const gone = new ClientDisconnectedError("The client went away");
  const { handler, errors } = handlerFor(() => {
    throw gone;
  });
  await rejects(handler(new Request("http://localhost/")), (error) => error === gone);
  deepEqual(errors, [], "a client that went away is not an application error");
});

// ---------------------------------------------------------------------------
// toFetchHandler() under Deno.serve

Deno.test("toFetchHandler() serves the sample app with Deno.serve", async () => {
  const errors: string[] = [];
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    toFetchHandler(app, { onError: (message) => errors.push(message) }),
  );
  const base = `http://127.0.0.1:${server.addr.port}`;
  try {
    const hello = await fetch(`${base}/hello`);
    equal(hello.status, 200);
    equal(hello.headers.get("x-powered-by"), "MySimpleWSGIApp");
    equal(await hello.text(), "Hello, specific page!\n");

    const stream = await fetch(`${base}/stream?n=3`);
    equal(await stream.text(), "chunk 1 of 3\nchunk 2 of 3\nchunk 3 of 3\n");

    const big = "x".repeat(200_000);
    const echo = await fetch(`${base}/echo`, { method: "POST", body: big });
    equal(echo.headers.get("content-length"), "200000");
    equal(await echo.text(), big);

    const info = await (await fetch(`${base}/info?a=1`)).text();
    ok(info.includes("\nREMOTE_ADDR: 127.0.0.1\n"), info);
    ok(info.includes("\nQUERY_STRING: a=1\n"), info);
    ok(info.includes(`\nHTTP_HOST: 127.0.0.1:${server.addr.port}\n`), info);
  } finally {
    await server.shutdown();
  }
  deepEqual(errors, []);
});

Deno.test("toFetchHandler() under Deno.serve closes the body when the client goes away", async () => {
  const closed = deferred();
  const started = deferred();
  const server = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    toFetchHandler((_environ, startResponse) => {
      startResponse("200 OK", []);
      return Object.assign(
        (async function* () {
          started.resolve();
          for (let i = 0; i < 10_000; i++) yield bytes("x".repeat(1024));
        })(),
        { close: () => closed.resolve() },
      );
    }, { onError() {} }),
  );
  try {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: server.addr.port });
    await conn.write(bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    await started.promise;
    await conn.read(new Uint8Array(1024));
    conn.close();
    await closed.promise;
  } finally {
    await server.shutdown();
  }
});

// ---------------------------------------------------------------------------
// fromFetchHandler()

Deno.test("fromFetchHandler() serves a fetch handler with serve()", async () => {
  const seen: { url: string; method: string; headers: [string, string][] }[] = [];
  const handler = async (request: Request): Promise<Response> => {
    seen.push({ url: request.url, method: request.method, headers: [...request.headers] });
    const body = await request.text();
    const headers = new Headers([
      ["X-Echo-Length", String(body.length)],
      ["Set-Cookie", "a=1"],
      ["Set-Cookie", "b=2"],
      ["Connection", "upgrade"],
      ["Keep-Alive", "timeout=5"],
    ]);
    return new Response(`you sent: ${body}`, { status: 201, statusText: "Made It", headers });
  };
  await using server = startServer(fromFetchHandler(handler));
  const response = await fetch(`${server.url}/some%20path/caf%C3%A9?q=1&r=%20`, {
    method: "POST",
    body: "payload",
    headers: { "Content-Type": "text/plain", "X-In": "yes" },
  });
  equal(response.status, 201);
  equal(response.headers.get("x-echo-length"), "7");
  deepEqual(response.headers.getSetCookie(), ["a=1", "b=2"]);
  equal(response.headers.get("keep-alive"), null, "hop-by-hop headers are not passed on");
  ok(response.headers.get("connection") !== "upgrade");
  equal(await response.text(), "you sent: payload");
  equal(seen.length, 1);
  equal(seen[0]!.method, "POST");
  equal(seen[0]!.url, `http://127.0.0.1:${server.port}/some%20path/caf%C3%A9?q=1&r=%20`);
  const headers = new Map(seen[0]!.headers);
  equal(headers.get("x-in"), "yes");
  equal(headers.get("content-type"), "text/plain");
  equal(headers.get("content-length"), "7");
  equal(headers.get("host"), `127.0.0.1:${server.port}`);
  const [raw] = parseResponses(
    await exchange(server.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  equal(raw!.status, 201);
  equal(raw!.reason, "Made It", "the handler's statusText is the reason phrase");
  deepEqual(server.errors, []);
});

Deno.test("fromFetchHandler() sends a body given whole with a Content-Length, as Deno.serve does", async () => {
  // Hono's c.text() and c.json() answer with such Responses.
  const responses: Record<string, () => Response> = {
    "/text": () => new Response("fixed body"),
    "/bytes": () => new Response(new TextEncoder().encode("some bytes!")),
    "/json": () => Response.json({ a: 1 }),
    "/empty": () => new Response(""),
  };
  const handler = (request: Request) => responses[new URL(request.url).pathname]!();
  await using ours = startServer(fromFetchHandler(handler));
  const denoServe = Deno.serve({ port: 0, hostname: "127.0.0.1", onListen() {} }, handler);
  try {
    for (
      const [path, expected] of [["/text", "10"], ["/bytes", "11"], ["/json", "7"], ["/empty", "0"]]
    ) {
      for (const method of ["GET", "HEAD"]) {
        const request = `${method} ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`;
        const head = method === "HEAD" ? [0] : [];
        const [answer] = parseResponses(await exchange(ours.port, request), head);
        const [reference] = parseResponses(await exchange(denoServe.addr.port, request), head);
        const what = `${method} ${path}`;
        equal(answer!.headers.get("content-length"), expected, what);
        equal(answer!.headers.get("transfer-encoding"), undefined, what);
        equal(answer!.body, method === "HEAD" ? "" : reference!.body, what);
        if (method === "GET") equal(reference!.headers.get("content-length"), expected, what);
      }
    }
  } finally {
    await denoServe.shutdown();
  }
  deepEqual(ours.errors, []);
});

Deno.test("fromFetchHandler() streams a body still being produced, chunked, without holding it back", async () => {
  const release = deferred();
  await using server = startServer(fromFetchHandler(() =>
    new Response(
      new ReadableStream<Uint8Array>({
        async start(controller) {
          controller.enqueue(bytes("first\n"));
          await release.promise;
          controller.enqueue(bytes("last\n"));
          controller.close();
        },
      }),
    )
  ));
  using c = await Client.open(server.port);
  await c.send("GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  ok(await c.readUntil("first\n"), "the first chunk arrives before the body ends");
  release.resolve();
  const response = await c.readResponse();
  equal(response.headers.get("transfer-encoding"), "chunked");
  equal(response.headers.get("content-length"), undefined);
  equal(response.text, "first\nlast\n");
  deepEqual(server.errors, []);
});

Deno.test("fromFetchHandler() streams large request and response bodies", async () => {
  const handler = (request: Request) => new Response(request.body, { headers: request.headers });
  await using server = startServer(fromFetchHandler(handler));
  const big = new Uint8Array(3 * 1024 * 1024).map((_, i) => i % 251);
  const response = await fetch(`${server.url}/`, {
    method: "PUT",
    body: big,
    headers: { "Content-Type": "application/octet-stream" },
  });
  equal(response.status, 200);
  const echoed = new Uint8Array(await response.arrayBuffer());
  equal(echoed.length, big.length);
  ok(echoed.every((b, i) => b === big[i]));
  deepEqual(server.errors, []);
});

Deno.test("fromFetchHandler() answers 501 for a method fetch refuses", async () => {
  await using server = startServer(fromFetchHandler(() => new Response("never")));
  const [response] = parseResponses(
    await exchange(server.port, "TRACE / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  equal(response!.status, 501);
  equal(response!.body, "Not Implemented\n");
});

Deno.test("fromFetchHandler() close() cancels the response stream and aborts the request", async () => {
  let cancelled = false;
  let signal: AbortSignal | undefined;
  const application = fromFetchHandler((request) => {
    signal = request.signal;
    return new Response(
      new ReadableStream<Uint8Array>({
        pull(controller) {
          controller.enqueue(bytes("tick"));
        },
        cancel() {
          cancelled = true;
        },
      }),
    );
  });
  const environ = makeEnviron();
  let status = "";
  const body = await application(environ, (s) => {
    status = s;
    return () => Promise.resolve();
  });
  equal(status, "200 OK");
  const iterator = (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  equal(decoder.decode((await iterator.next()).value), "tick");
  await body.close!();
  equal(cancelled, true);
  equal(signal?.aborted, true);
});

Deno.test("fromFetchHandler(toFetchHandler(app)) serves the sample app unchanged", async () => {
  await using server = startServer(fromFetchHandler(toFetchHandler(app, { onError() {} })));
  const hello = await fetch(`${server.url}/hello`);
  equal(hello.headers.get("x-powered-by"), "MySimpleWSGIApp");
  equal(await hello.text(), "Hello, specific page!\n");
  const echo = await fetch(`${server.url}/echo`, { method: "POST", body: "round trip" });
  equal(await echo.text(), "round trip");
  const missing = await fetch(`${server.url}/nonexistent_page`);
  equal(missing.status, 404);
  equal(await missing.text(), "404 Not Found: This page does not exist.\n");
  deepEqual(server.errors, []);
});

Deno.test("fromFetchHandler() throws a TypeError for a handler that is not a function", () => {
  throws(() => fromFetchHandler(null as unknown as () => Response), TypeError);
});
