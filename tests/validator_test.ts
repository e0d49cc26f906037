/**
 * validator(): the sample app passes through the real server without a
 * violation, and each rule, on either side, is caught with a message that
 * names it.
 */

import { deepEqual, equal, fail, ok, throws } from "node:assert/strict";
import type { Application, Body, Environ, StartResponse } from "../mod.ts";
import { type ValidatedBody, ValidationError, validator } from "../tooling/validator.ts";
import { app } from "../app.ts";
import { toFetchHandler } from "../tooling/fetch.ts";
import { LogErrorStream } from "../_gateway/error_stream.ts";
import { bytes, concat, decoder, makeEnviron, startServer } from "./_helpers.ts";

// ---------------------------------------------------------------------------
// Helpers: a valid environ, a recording start_response, and a tiny correct
// server loop that drives a validated application.

interface Recorder {
  startResponse: StartResponse;
  statuses: string[];
  written: Uint8Array[];
}

/** A correct server-side start_response: records calls, rethrows excInfo once `write()` was used. */
function recorder(): Recorder {
  const statuses: string[] = [];
  const written: Uint8Array[] = [];
  const startResponse: StartResponse = (status, _headers, excInfo) => {
    if (excInfo !== undefined && written.length > 0) throw excInfo;
    statuses.push(status);
    return (chunk) => {
      written.push(chunk);
      return Promise.resolve();
    };
  };
  return { startResponse, statuses, written };
}

/** Runs `app` as a correct server would: iterate once, then close. Returns what it saw. */
async function drive(
  application: Application,
  environ: Environ = makeEnviron(),
): Promise<{ statuses: string[]; text: string; body: ValidatedBody }> {
  const rec = recorder();
  const body = await application(environ, rec.startResponse) as ValidatedBody;
  const chunks = [...rec.written];
  try {
    if (Symbol.iterator in body) {
      for (const chunk of body as Iterable<Uint8Array>) chunks.push(chunk);
    } else {
      for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(chunk);
    }
  } finally {
    await body.close();
  }
  return { statuses: rec.statuses, text: decoder.decode(concat(chunks)), body };
}

/** Asserts that `action` throws or rejects with a ValidationError blaming `blame` whose message contains `text`. */
async function violation(
  action: () => unknown,
  blame: "application" | "server",
  text: string,
): Promise<ValidationError> {
  try {
    await action();
  } catch (error) {
    if (!(error instanceof ValidationError)) throw error;
    equal(error.blame, blame, error.message);
    ok(error.message.includes(text), `${JSON.stringify(error.message)} should say ${text}`);
    ok(/\(PEP 3333, .+\)$/.test(error.message), `${error.message} should name its rule`);
    return error;
  }
  fail(`Expected a ValidationError saying ${text}`);
}

const ok200: Application = (_environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [bytes("ok")];
};

/** An application that calls start_response with these arguments, then returns `body`. */
function startWith(status: unknown, headers: unknown, body: Body = []): Application {
  return (_environ, startResponse) => {
    (startResponse as (...args: unknown[]) => unknown)(status, headers);
    return body;
  };
}

// ---------------------------------------------------------------------------
// The sample application through the real server

Deno.test("validator() finds no violation in the sample app served by serve()", async () => {
  const bodies: ValidatedBody[] = [];
  const checked = validator(app);
  const recording: Application = async (environ, startResponse) => {
    const body = await checked(environ, startResponse) as ValidatedBody;
    bodies.push(body);
    return body;
  };
  await using server = startServer(recording);
  const cases: [string, string, number, string | RegExp, string?][] = [
    ["GET", "/", 200, "Hello from My Simple WSGI App! (Homepage)\n"],
    ["GET", "/hello", 200, "Hello, specific page!\n"],
    ["GET", "/info?a=1", 200, /^Environment info:\n(.|\n)*QUERY_STRING: a=1\n/],
    ["GET", "/nonexistent_page", 404, "404 Not Found: This page does not exist.\n"],
    ["GET", "/stream?n=3", 200, "chunk 1 of 3\nchunk 2 of 3\nchunk 3 of 3\n"],
    ["POST", "/echo", 200, "echo me, please", "echo me, please"],
    ["GET", "/write", 200, "written with write(), one call at a time\n"],
    ["POST", "/hello", 405, "405 Method Not Allowed\n"],
    ["HEAD", "/", 200, ""],
    ["HEAD", "/stream", 200, ""],
  ];
  for (const [method, path, status, expected, body] of cases) {
    const response = await fetch(`${server.url}${path}`, {
      method,
      ...(body === undefined ? {} : { body, headers: { "Content-Type": "text/plain" } }),
    });
    const text = await response.text();
    equal(response.status, status, `${method} ${path}`);
    if (typeof expected === "string") equal(text, expected, `${method} ${path}`);
    else ok(expected.test(text), `${method} ${path}: ${text}`);
  }
  deepEqual(server.errors, []);
  equal(bodies.length, cases.length);
  for (const body of bodies) body.assertClosed();
});

Deno.test("validator() finds no violation in the sample app behind toFetchHandler()", async () => {
  const errors: string[] = [];
  const handler = toFetchHandler(validator(app), {
    onError: (message, error) => errors.push(`${message}: ${error}`),
  });
  const requests = [
    new Request("http://localhost/"),
    new Request("http://localhost/info?a=1"),
    new Request("http://localhost/stream"),
    new Request("http://localhost/write"),
    new Request("http://localhost/echo", { method: "POST", body: "x" }),
    new Request("http://localhost/", { method: "HEAD" }),
    new Request("http://localhost/missing"),
  ];
  for (const request of requests) {
    const response = await handler(request);
    ok(response.status === 200 || response.status === 404, `${request.url}: ${response.status}`);
    await response.arrayBuffer();
  }
  deepEqual(errors, []);
});

Deno.test("validator() violations reach the real server as a 500 with the rule logged", async () => {
  await using server = startServer(validator(startWith("20 OK", [])));
  const response = await fetch(server.url);
  equal(response.status, 500);
  await response.body?.cancel();
  equal(server.errors.length, 1);
  ok(
    server.errors[0]!.includes(
      `ValidationError: Invalid status "20 OK": expected "NNN reason" (PEP 3333, start_response)`,
    ),
    server.errors[0],
  );
});

Deno.test("validator() keeps a list body a list, so the server still sends Content-Length", async () => {
  await using server = startServer(validator(app));
  const response = await fetch(`${server.url}/hello`);
  equal(response.headers.get("content-length"), "22");
  equal(response.headers.get("transfer-encoding"), null);
  equal(await response.text(), "Hello, specific page!\n");
});

Deno.test("validator() passes a correct application's results through unchanged", async () => {
  const { statuses, text, body } = await drive(
    validator(app),
    makeEnviron({ PATH_INFO: "/stream" }),
  );
  deepEqual(statuses, ["200 OK"]);
  equal(text, "chunk 1 of 5\nchunk 2 of 5\nchunk 3 of 5\nchunk 4 of 5\nchunk 5 of 5\n");
  equal(body.closed, true);
  body.assertClosed();
});

Deno.test("validator() throws a TypeError for an application that is not a function", () => {
  throws(() => validator("app" as unknown as Application), TypeError);
});

// ---------------------------------------------------------------------------
// The server's side: environ

Deno.test("validator() checks the environ the server builds", async (t) => {
  const cases: [string, Record<string, unknown>, string][] = [
    ["a required CGI key is missing", { REQUEST_METHOD: undefined }, "REQUEST_METHOD is missing"],
    ["QUERY_STRING is missing", { QUERY_STRING: undefined }, "QUERY_STRING is missing"],
    ["a CGI value is not a string", { SERVER_PORT: 80 }, "SERVER_PORT must be a string"],
    ["an HTTP_ value is not a string", { HTTP_X_A: ["a"] }, "HTTP_X_A must be a string"],
    [
      "a value is not a native string",
      { PATH_INFO: "/caf\u00e9\u2603" },
      "PATH_INFO holds U+2603 at index 5",
    ],
    ["wsgi.version is not [1, 0]", { "wsgi.version": [1, 1] }, "wsgi.version must be [1, 0]"],
    ["wsgi.url_scheme is not http(s)", { "wsgi.url_scheme": "ftp" }, `"http" or "https"`],
    ["HTTP_CONTENT_TYPE is set", { HTTP_CONTENT_TYPE: "text/plain" }, "goes in CONTENT_TYPE"],
    ["HTTP_CONTENT_LENGTH is set", { HTTP_CONTENT_LENGTH: "1" }, "goes in CONTENT_LENGTH"],
    ["SCRIPT_NAME ends with /", { SCRIPT_NAME: "/app/" }, `SCRIPT_NAME "/app/" must be empty`],
    ["SCRIPT_NAME is /", { SCRIPT_NAME: "/" }, `SCRIPT_NAME "/" must be empty`],
    ["SCRIPT_NAME lacks its /", { SCRIPT_NAME: "app" }, `SCRIPT_NAME "app" must be empty`],
    ["PATH_INFO lacks its /", { PATH_INFO: "x" }, `PATH_INFO "x" must be empty or start`],
    ["PATH_INFO is * without OPTIONS", { PATH_INFO: "*" }, `PATH_INFO "*" must be empty`],
    ["REQUEST_METHOD is not a token", { REQUEST_METHOD: "GE T" }, `"GE T" is not a token`],
    ["SERVER_NAME is empty", { SERVER_NAME: "" }, "SERVER_NAME must not be empty"],
    ["SERVER_PORT is empty", { SERVER_PORT: "" }, `SERVER_PORT "" must be a port number`],
    ["SERVER_PROTOCOL is odd", { SERVER_PROTOCOL: "1.1" }, `SERVER_PROTOCOL "1.1"`],
    ["CONTENT_LENGTH is not digits", { CONTENT_LENGTH: "-1" }, `CONTENT_LENGTH "-1"`],
    ["a wsgi flag is not a boolean", { "wsgi.multithread": 1 }, "wsgi.multithread must be"],
    ["wsgi.run_once is missing", { "wsgi.run_once": undefined }, "wsgi.run_once must be"],
    ["wsgi.input_terminated is not boolean", { "wsgi.input_terminated": "yes" }, "terminated"],
    ["wsgi.input is incomplete", { "wsgi.input": { read() {} } }, "wsgi.input must have"],
    ["wsgi.errors is incomplete", { "wsgi.errors": console }, "wsgi.errors must have"],
  ];
  for (const [name, overrides, text] of cases) {
    await t.step(name, async () => {
      let called = false;
      const checked = validator((environ, startResponse) => {
        called = true;
        return ok200(environ, startResponse);
      });
      await violation(
        () => checked(makeEnviron(overrides), recorder().startResponse),
        "server",
        text,
      );
      equal(called, false, "the application is not called with a bad environ");
    });
  }
  await t.step("environ is not an object", async () => {
    await violation(
      () => validator(ok200)("GET /" as unknown as Environ, recorder().startResponse),
      "server",
      "Invalid environ: expected an object",
    );
  });
  await t.step("PATH_INFO * is fine for OPTIONS, and empty strings where allowed", async () => {
    const { statuses } = await drive(
      validator(ok200),
      makeEnviron({ REQUEST_METHOD: "OPTIONS", PATH_INFO: "*", CONTENT_LENGTH: "" }),
    );
    deepEqual(statuses, ["200 OK"]);
    await drive(validator(ok200), makeEnviron({ SCRIPT_NAME: "/app", PATH_INFO: "" }));
  });
});

Deno.test("validator() checks how the server calls the application", async (t) => {
  const checked = validator(ok200) as (...args: unknown[]) => unknown;
  await t.step("with the wrong number of arguments", async () => {
    await violation(
      () => checked(makeEnviron(), recorder().startResponse, {}),
      "server",
      "called with 3 arguments",
    );
  });
  await t.step("without a start_response function", async () => {
    await violation(() => checked(makeEnviron(), {}), "server", "must be start_response");
  });
});

// ---------------------------------------------------------------------------
// The server's side: start_response, write and wsgi.input results

Deno.test("validator() rejects a start_response that returns no write() callable", async () => {
  const checked = validator(ok200);
  await violation(
    () => checked(makeEnviron(), (() => undefined) as unknown as StartResponse),
    "server",
    "start_response must return the write() callable",
  );
});

Deno.test("validator() rejects a write() that returns no promise", async () => {
  const checked = validator(async (_environ, startResponse) => {
    await startResponse("200 OK", [])(bytes("x"));
    return [];
  });
  const startResponse = (() => () => undefined) as unknown as StartResponse;
  await violation(() => checked(makeEnviron(), startResponse), "server", "write() must return");
});

Deno.test("validator() rejects a server that does not rethrow excInfo after the head was sent", async () => {
  const checked = validator(async (_environ, startResponse) => {
    const write = startResponse("200 OK", []);
    await write(bytes("partial"));
    startResponse("500 Oops", [], new Error("late failure"));
    return [];
  });
  const lenient: StartResponse = () => () => Promise.resolve();
  await violation(() => checked(makeEnviron(), lenient), "server", "must rethrow excInfo");
});

Deno.test("validator() rejects wsgi.input results that break the contract", async (t) => {
  const reader = (result: unknown) => ({
    read: () => Promise.resolve(result),
    readline: () => Promise.resolve(result),
    readlines: () => Promise.resolve(result),
    async *[Symbol.asyncIterator]() {},
  });
  const readWith = (call: (input: Environ["wsgi.input"]) => Promise<unknown>, input: unknown) =>
    drive(
      validator(async (environ, startResponse) => {
        await call(environ["wsgi.input"]);
        return ok200(environ, startResponse);
      }),
      makeEnviron({ "wsgi.input": input }),
    );
  await t.step("read() resolves to a string", async () => {
    await violation(() => readWith((i) => i.read(), reader("abc")), "server", "a Uint8Array");
  });
  await t.step("read(2) returns 3 bytes", async () => {
    await violation(
      () => readWith((i) => i.read(2), reader(bytes("abc"))),
      "server",
      "read(2) returned 3 bytes",
    );
  });
  await t.step("readline() returns more than a line", async () => {
    await violation(
      () => readWith((i) => i.readline(), reader(bytes("a\nb"))),
      "server",
      "past the end of a line",
    );
  });
  await t.step("readlines() resolves to something else than an array", async () => {
    await violation(
      () => readWith((i) => i.readlines(), reader(bytes("a\n"))),
      "server",
      "readlines() must resolve to an array",
    );
  });
  await t.step("read() returns no promise", async () => {
    const input = { ...reader(null), read: () => bytes("x") };
    await violation(() => readWith((i) => i.read(), input), "server", "must return a Promise");
  });
});

// ---------------------------------------------------------------------------
// The server's side: iterating and closing the body

Deno.test("validator() rejects a server that iterates the body twice", async () => {
  const checked = validator((_environ, startResponse) => {
    startResponse("200 OK", []);
    return (function* () {
      yield bytes("once");
    })();
  });
  const body = await checked(makeEnviron(), recorder().startResponse) as Iterable<Uint8Array>;
  for (const _ of body) { /* exhaust */ }
  await violation(() => [...body], "server", "iterated the body twice");
});

Deno.test("validator() rejects a server that asks for a chunk after close()", async () => {
  const checked = validator((_environ, startResponse) => {
    startResponse("200 OK", []);
    return (async function* () {
      yield bytes("a");
      yield bytes("b");
    })();
  });
  const body = await checked(makeEnviron(), recorder().startResponse) as ValidatedBody;
  const iterator = (body as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  await iterator.next();
  await body.close();
  await violation(() => iterator.next(), "server", "asked for a chunk after calling close()");
  await violation(() => body.close(), "server", "close() was called a second time");
});

Deno.test("validator() rejects a server that iterates a body it closed", async () => {
  const body = await validator(app)(
    makeEnviron({ PATH_INFO: "/stream" }),
    recorder().startResponse,
  ) as ValidatedBody;
  await body.close();
  await violation(() => [...body as Iterable<Uint8Array>], "server", "after calling close()");
});

Deno.test("validator() assertClosed() reports a server that never calls close()", async (t) => {
  const generator: Application = (_environ, startResponse) => {
    startResponse("200 OK", []);
    return (function* () {
      yield bytes("a");
      yield bytes("b");
    })();
  };
  await t.step("after iterating to the end", async () => {
    const body = await validator(generator)(makeEnviron(), recorder().startResponse);
    for (const _ of body as Iterable<Uint8Array>) { /* exhaust */ }
    await violation(
      () => (body as ValidatedBody).assertClosed(),
      "server",
      "iterated the body to its end but did not call close()",
    );
  });
  await t.step("after stopping early", async () => {
    const body = await validator(generator)(makeEnviron(), recorder().startResponse);
    for (const _ of body as Iterable<Uint8Array>) break;
    await violation(
      () => (body as ValidatedBody).assertClosed(),
      "server",
      "stopped iterating the body but did not call close()",
    );
  });
  await t.step("for a list body", async () => {
    const body = await validator(ok200)(makeEnviron(), recorder().startResponse) as ValidatedBody;
    await violation(() => body.assertClosed(), "server", "did not call close()");
    equal(body.closed, false);
    await body.close();
    body.assertClosed();
    equal(body.closed, true);
  });
});

Deno.test("validator() close() calls the application's close() once", async () => {
  let closes = 0;
  const checked = validator((_environ, startResponse) => {
    startResponse("200 OK", []);
    return Object.assign([bytes("x")], { close: () => void closes++ });
  });
  const { body } = await drive(checked);
  equal(closes, 1);
  await violation(() => body.close(), "server", "close() was called a second time");
  equal(closes, 1);
});

// ---------------------------------------------------------------------------
// The application's side: start_response arguments

Deno.test("validator() checks the status given to start_response", async (t) => {
  const cases: [unknown, string][] = [
    ["20 OK", `Invalid status "20 OK": expected "NNN reason" (PEP 3333, start_response)`],
    ["200OK", `Invalid status "200OK": expected "NNN reason"`],
    [200, "Invalid status: expected a string, got number"],
    ["099 Low", `NNN from 200 to 999`],
    ["100 Continue", "a 1xx status is not a final response"],
    ["200 OK\r\nX-Injected: 1", "it contains a control character"],
    ["200 \u2603", "U+2603 is not latin-1"],
  ];
  for (const [status, text] of cases) {
    await t.step(JSON.stringify(status), async () => {
      await violation(() => drive(validator(startWith(status, []))), "application", text);
    });
  }
  await t.step("an empty reason and a latin-1 reason are fine", async () => {
    await drive(validator(startWith("299 ", [])));
    await drive(validator(startWith("200 Tr\u00e8s bien", [])));
  });
});

Deno.test("validator() checks the headers given to start_response", async (t) => {
  const cases: [string, unknown, string][] = [
    ["not an array", new Headers({ a: "b" }), "expected an array of [name, value] pairs"],
    ["a pair of three", [["a", "b", "c"]], "expected a [name, value] pair"],
    ["a name that is not a string", [[1, "b"]], "Invalid header name: expected a string"],
    ["a name that is not a token", [["X Bad", "b"]], `Invalid header name "X Bad"`],
    ["a value that is not a string", [["X-A", 1]], `header "X-A": expected a string`],
    ["a value with CR LF", [["X-A", "a\r\nSet-Cookie: x"]], "CR, LF, NUL"],
    ["a value with NUL", [["X-A", "a\0"]], "CR, LF, NUL"],
    ["a value with another control", [["X-A", "a\x01"]], "another control character"],
    ["a value that is not latin-1", [["X-A", "\u2603"]], "U+2603 is not latin-1"],
    ["a hop-by-hop header", [["Connection", "close"]], "hop-by-hop headers are set"],
    ["a Proxy- header", [["Proxy-Authenticate", "x"]], "hop-by-hop headers are set"],
    ["Transfer-Encoding", [["Transfer-Encoding", "chunked"]], "hop-by-hop headers are set"],
    ["a Status header", [["Status", "200 OK"]], "the status is start_response's first"],
    [
      "a duplicated Content-Length",
      [["Content-Length", "0"], ["content-length", "0"]],
      "Content-Length is given more than once",
    ],
    ["a Content-Length that is not digits", [["Content-Length", "1e3"]], `"1e3": expected digits`],
  ];
  for (const [name, headers, text] of cases) {
    await t.step(name, async () => {
      await violation(() => drive(validator(startWith("200 OK", headers))), "application", text);
    });
  }
  await t.step("latin-1 values and tabs are fine", async () => {
    await drive(validator(startWith("200 OK", [["X-A", "caf\u00e9\tok"], ["Set-Cookie", "a=1"]])));
  });
});

Deno.test("validator() rejects a start_response call with the wrong number of arguments", async () => {
  const checked = validator((_environ, startResponse) => {
    (startResponse as (...args: unknown[]) => unknown)("200 OK");
    return [];
  });
  await violation(() => drive(checked), "application", "got 1 arguments");
});

// ---------------------------------------------------------------------------
// The application's side: call order

Deno.test("validator() rejects a second start_response call without excInfo", async () => {
  const checked = validator((_environ, startResponse) => {
    startResponse("200 OK", []);
    startResponse("404 Not Found", []);
    return [];
  });
  await violation(
    () => drive(checked),
    "application",
    "start_response was called a second time without excInfo",
  );
});

Deno.test("validator() lets a second start_response call with excInfo replace the status", async () => {
  const checked = validator((_environ, startResponse) => {
    startResponse("200 OK", []);
    startResponse("500 Internal Server Error", [], new Error("caught"));
    return [bytes("error page")];
  });
  const { statuses, text } = await drive(checked);
  deepEqual(statuses, ["200 OK", "500 Internal Server Error"]);
  equal(text, "error page");
});

Deno.test("validator() rejects a start_response call after the response finished", async () => {
  let later: StartResponse | undefined;
  const checked = validator((_environ, startResponse) => {
    later = startResponse;
    startResponse("200 OK", []);
    return [];
  });
  await drive(checked);
  await violation(() => later!("200 OK", []), "application", "after the response finished");
});

Deno.test("validator() rejects a body chunk before start_response", async () => {
  const checked = validator((_environ, startResponse) => {
    return (function* () {
      yield bytes("too early");
      startResponse("200 OK", []);
    })();
  });
  await violation(
    () => drive(checked),
    "application",
    "The body yielded a chunk before start_response was called",
  );
});

Deno.test("validator() rejects a body that ends without start_response", async (t) => {
  await t.step("a generator", async () => {
    const checked = validator(() => (function* () {})());
    await violation(() => drive(checked), "application", "ended but start_response was never");
  });
  await t.step("a list", async () => {
    const checked = validator(() => []);
    await violation(() => drive(checked), "application", "before calling start_response");
  });
});

Deno.test("validator() allows start_response during the first iteration of the body", async () => {
  const checked = validator((_environ, startResponse) => {
    return (function* () {
      startResponse("200 OK", []);
      yield bytes("late but legal");
    })();
  });
  equal((await drive(checked)).text, "late but legal");
});

// ---------------------------------------------------------------------------
// The application's side: the body

Deno.test("validator() rejects a body that is not an iterable of bytes", async (t) => {
  const cases: [string, unknown, string][] = [
    ["a string", "hello", "returned a string"],
    ["a Uint8Array", bytes("hello"), "returned a Uint8Array: return an iterable of chunks"],
    ["null", null, "returned null"],
    ["a plain object", { close() {} }, "neither iterable nor async iterable"],
  ];
  for (const [name, body, text] of cases) {
    await t.step(name, async () => {
      await violation(
        () => drive(validator(startWith("200 OK", [], body as Body))),
        "application",
        text,
      );
    });
  }
});

Deno.test("validator() rejects a string chunk and stops the generator", async (t) => {
  await t.step("in a list", async () => {
    const checked = validator(startWith("200 OK", [], ["text"] as unknown as Body));
    await violation(() => drive(checked), "application", "chunks must be Uint8Array");
  });
  await t.step("from a generator, whose finally block still runs", async () => {
    let cleaned = false;
    const checked = validator(startWith(
      "200 OK",
      [],
      (function* () {
        try {
          yield "text" as unknown as Uint8Array;
        } finally {
          cleaned = true;
        }
      })(),
    ));
    await violation(() => drive(checked), "application", "(encode strings to bytes)");
    equal(cleaned, true);
  });
  await t.step("from an async generator", async () => {
    const checked = validator(startWith(
      "200 OK",
      [],
      (async function* () {
        yield 42 as unknown as Uint8Array;
      })(),
    ));
    await violation(() => drive(checked), "application", "The body yielded number");
  });
});

Deno.test("validator() rejects body bytes for 204 and 304", async (t) => {
  await t.step("204 with a list body", async () => {
    await violation(
      () => drive(validator(startWith("204 No Content", [], [bytes("x")]))),
      "application",
      "A 204 response has no body, but the body sent 1 bytes",
    );
  });
  await t.step("304 with write()", async () => {
    const checked = validator(async (_environ, startResponse) => {
      await startResponse("304 Not Modified", [])(bytes("xy"));
      return [];
    });
    await violation(() => drive(checked), "application", "the write() sent 2 bytes");
  });
  await t.step("204 with empty chunks is fine", async () => {
    await drive(validator(startWith("204 No Content", [], [new Uint8Array(0)])));
  });
});

Deno.test("validator() checks the body length against Content-Length", async (t) => {
  await t.step("more bytes than announced", async () => {
    const checked = validator(startWith("200 OK", [["Content-Length", "2"]], [bytes("abc")]));
    await violation(() => drive(checked), "application", "longer than its Content-Length (2");
  });
  await t.step("fewer bytes than announced", async () => {
    const checked = validator(startWith(
      "200 OK",
      [["Content-Length", "5"]],
      (function* () {
        yield bytes("abc");
      })(),
    ));
    await violation(() => drive(checked), "application", "shorter than its Content-Length (3 of 5");
  });
  await t.step("HEAD may send no body with the GET Content-Length", async () => {
    const checked = validator(startWith("200 OK", [["Content-Length", "5"]], []));
    await drive(checked, makeEnviron({ REQUEST_METHOD: "HEAD" }));
  });
});

Deno.test("validator() checks the write() callable's argument and timing", async (t) => {
  await t.step("a string", async () => {
    const checked = validator(async (_environ, startResponse) => {
      await startResponse("200 OK", [])("text" as unknown as Uint8Array);
      return [];
    });
    await violation(() => drive(checked), "application", "write() takes one Uint8Array");
  });
  await t.step("after the response finished", async () => {
    let write: ((chunk: Uint8Array) => Promise<void>) | undefined;
    const checked = validator((_environ, startResponse) => {
      write = startResponse("200 OK", []);
      return [];
    });
    await drive(checked);
    await violation(() => write!(bytes("x")), "application", "after the response finished");
  });
});

// ---------------------------------------------------------------------------
// The application's side: wsgi.input and wsgi.errors

Deno.test("validator() checks how the application reads wsgi.input", async (t) => {
  const reading = (read: (environ: Environ) => Promise<unknown>): Application =>
  async (
    environ,
    startResponse,
  ) => {
    await read(environ);
    return ok200(environ, startResponse);
  };
  const cases: [string, (environ: Environ) => Promise<unknown>, string][] = [
    ["read() with a string size", (e) => e["wsgi.input"].read("10" as unknown as number), "read()"],
    ["read() with a fraction", (e) => e["wsgi.input"].read(1.5), "takes an optional integer"],
    [
      "readline() with two arguments",
      (e) => (e["wsgi.input"].readline as (...a: unknown[]) => unknown)(1, 2) as Promise<unknown>,
      "got 2 arguments",
    ],
    ["readlines() with NaN", (e) => e["wsgi.input"].readlines(NaN), "readlines() takes"],
    [
      "two reads at once",
      (e) => Promise.all([e["wsgi.input"].read(1), e["wsgi.input"].read(1)]),
      "while read() was pending: await each read",
    ],
  ];
  for (const [name, read, text] of cases) {
    await t.step(name, async () => {
      await violation(
        () => drive(validator(reading(read)), makeEnviron({}, "body")),
        "application",
        text,
      );
    });
  }
  await t.step("a read after the response finished", async () => {
    let input: Environ["wsgi.input"] | undefined;
    const checked = validator((environ, startResponse) => {
      input = environ["wsgi.input"];
      return ok200(environ, startResponse);
    });
    await drive(checked, makeEnviron({}, "unread"));
    await violation(() => input!.read(), "application", "read() was called after the response");
    await violation(
      async () => {
        for await (const _ of input!) { /* never */ }
      },
      "application",
      "readline() was called after the response",
    );
  });
  await t.step("correct reads pass through", async () => {
    const lines: string[] = [];
    const checked = validator(async (environ, startResponse) => {
      const input = environ["wsgi.input"];
      lines.push(decoder.decode(await input.read(2)));
      lines.push(decoder.decode(await input.readline()));
      for (const line of await input.readlines(1)) lines.push(decoder.decode(line));
      for await (const line of input) lines.push(decoder.decode(line));
      lines.push(decoder.decode(await input.read()));
      return ok200(environ, startResponse);
    });
    await drive(checked, makeEnviron({}, "ab1\n2\n3\n4"));
    deepEqual(lines, ["ab", "1\n", "2\n", "3\n", "4", ""]);
  });
});

Deno.test("validator() checks what the application writes to wsgi.errors", async (t) => {
  const writing =
    (write: (errors: Environ["wsgi.errors"]) => void): Application => (environ, startResponse) => {
      write(environ["wsgi.errors"]);
      return ok200(environ, startResponse);
    };
  await t.step("write() with bytes", async () => {
    await violation(
      () => drive(validator(writing((e) => e.write(bytes("x") as unknown as string)))),
      "application",
      "wsgi.errors.write() takes one string, got a Uint8Array",
    );
  });
  await t.step("writelines() with a number", async () => {
    await violation(
      () => drive(validator(writing((e) => e.writelines(["ok", 1 as unknown as string])))),
      "application",
      "writelines() takes strings, got number",
    );
  });
  await t.step("writelines() with no iterable", async () => {
    await violation(
      () => drive(validator(writing((e) => e.writelines(5 as unknown as string[])))),
      "application",
      "takes one iterable of strings",
    );
  });
  await t.step("flush() with an argument", async () => {
    await violation(
      () => drive(validator(writing((e) => (e.flush as (x: unknown) => void)(1)))),
      "application",
      "flush() takes no arguments",
    );
  });
  await t.step("text goes through to the server's stream", async () => {
    const lines: string[] = [];
    const environ = makeEnviron({ "wsgi.errors": new LogErrorStream((l) => lines.push(l)) });
    await drive(
      validator(writing((e) => {
        e.write("one\n");
        e.writelines(["two", "\n"]);
        e.write("three");
        e.flush();
      })),
      environ,
    );
    deepEqual(lines, ["one", "two", "three"]);
  });
});
