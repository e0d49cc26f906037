/** environ building, wsgi.input, wsgi.errors, native strings and URL helpers, without sockets. */

import { deepEqual, equal, ok, rejects, throws } from "node:assert/strict";
import type { Environ } from "../mod.ts";
import {
  applicationUri,
  bytesToNative,
  nativeToBytes,
  nativeToText,
  percentDecodeToNative,
  requestUri,
  shiftPathInfo,
  textToNative,
} from "../mod.ts";
import { type RequestHead, RequestParser } from "../_h1/parser.ts";
import { buildEnviron, type ConnectionInfo } from "../_gateway/environ.ts";
import { BodyReader } from "../_gateway/input.ts";
import { Prng } from "./_fuzz.ts";
import { LogErrorStream } from "../_gateway/error_stream.ts";
import { bytes, decoder, latin1Bytes } from "./_helpers.ts";

function parseHead(request: string): RequestHead {
  const parser = new RequestParser();
  parser.receive(latin1Bytes(request));
  const event = parser.next();
  if (event.type !== "head") throw new Error(`Expected a head, got ${event.type}`);
  return event;
}

const CONN: ConnectionInfo = {
  urlScheme: "http",
  serverName: "127.0.0.1",
  serverPort: "8000",
  remoteAddr: "10.0.0.9",
  remotePort: "51234",
  scriptName: "",
  multiprocess: false,
};

function environFor(request: string, conn: Partial<ConnectionInfo> = {}): Environ {
  const input = new BodyReader({ pull: () => Promise.resolve(null) });
  return buildEnviron(
    parseHead(request),
    { ...CONN, ...conn },
    input,
    new LogErrorStream(() => {}),
  );
}

Deno.test("buildEnviron() sets the CGI and wsgi keys", () => {
  const environ = environFor(
    "POST /p/a%20th?x=1&y=%20 HTTP/1.1\r\nHost: example.com:8080\r\nContent-Type: text/plain\r\n" +
      "Content-Length: 0\r\nX-Custom: one\r\n\r\n",
  );
  equal(environ.REQUEST_METHOD, "POST");
  equal(environ.SCRIPT_NAME, "");
  equal(environ.PATH_INFO, "/p/a th");
  equal(environ.QUERY_STRING, "x=1&y=%20");
  equal(environ.REQUEST_URI, "/p/a%20th?x=1&y=%20");
  equal(environ.CONTENT_TYPE, "text/plain");
  equal(environ.CONTENT_LENGTH, "0");
  equal(environ.HTTP_CONTENT_TYPE, undefined);
  equal(environ.HTTP_CONTENT_LENGTH, undefined);
  equal(environ.HTTP_X_CUSTOM, "one");
  equal(environ.HTTP_HOST, "example.com:8080");
  equal(environ.SERVER_NAME, "example.com");
  equal(environ.SERVER_PORT, "8080");
  equal(environ.SERVER_PROTOCOL, "HTTP/1.1");
  equal(environ.REMOTE_ADDR, "10.0.0.9");
  equal(environ.REMOTE_PORT, "51234");
  deepEqual(environ["wsgi.version"], [1, 0]);
  equal(environ["wsgi.url_scheme"], "http");
  equal(environ["wsgi.multithread"], true);
  equal(environ["wsgi.multiprocess"], false);
  equal(environ["wsgi.run_once"], false);
  equal(environ["wsgi.input_terminated"], true);
  ok(environ["wsgi.input"] instanceof BodyReader);
});

Deno.test("buildEnviron() gives PATH_INFO as percent-decoded native bytes", () => {
  const environ = environFor("GET /caf%C3%A9/%2F/%zz/%e2%98%83 HTTP/1.1\r\nHost: h\r\n\r\n");
  equal(environ.PATH_INFO, "/caf\u00c3\u00a9///%zz/\u00e2\u0098\u0083");
  equal(nativeToText(environ.PATH_INFO), "/café///%zz/\u2603");
});

Deno.test("buildEnviron() keeps header values as native strings (byte-exact, not windows-1252)", () => {
  const environ = environFor("GET / HTTP/1.1\r\nHost: h\r\nX-Bytes: \x80\x9f\xff\r\n\r\n");
  equal(environ.HTTP_X_BYTES, "\u0080\u009f\u00ff");
});

Deno.test("buildEnviron() drops header names with an underscore", () => {
  const environ = environFor(
    "GET / HTTP/1.1\r\nHost: h\r\nX_User: evil\r\nX-User: good\r\nContent_Length: 5\r\n\r\n",
  );
  equal(environ.HTTP_X_USER, "good");
  equal(environ.CONTENT_LENGTH, undefined);
  ok(!Object.values(environ).includes("evil"));
});

Deno.test("buildEnviron() joins repeated headers, cookies with a semicolon", () => {
  const environ = environFor(
    "GET / HTTP/1.1\r\nHost: h\r\nAccept: a\r\naccept: b\r\nCookie: x=1\r\nCookie: y=2\r\n\r\n",
  );
  equal(environ.HTTP_ACCEPT, "a, b");
  equal(environ.HTTP_COOKIE, "x=1; y=2");
});

Deno.test("buildEnviron() omits CONTENT_LENGTH for a chunked body", () => {
  const environ = environFor(
    "POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
  );
  equal(environ.CONTENT_LENGTH, undefined);
  equal(environ.HTTP_TRANSFER_ENCODING, "chunked");
});

Deno.test("buildEnviron() takes a plain request description, not only a parsed head", () => {
  // The fetch bridge describes a Request this way. A Content-Length beside
  // chunked framing, which the parser refuses, says nothing about the body.
  const environ = buildEnviron(
    {
      method: "PUT",
      target: "/a%20b?x=1",
      path: "/a%20b",
      query: "x=1",
      version: "HTTP/1.0",
      authority: null,
      headers: [["Content-Length", "5"], ["Transfer-Encoding", "chunked"], ["X-A", "1"]],
      chunked: true,
    },
    CONN,
    new BodyReader({ pull: () => Promise.resolve(null) }),
    new LogErrorStream(() => {}),
  );
  equal(environ.REQUEST_METHOD, "PUT");
  equal(environ.REQUEST_URI, "/a%20b?x=1");
  equal(environ.PATH_INFO, "/a b");
  equal(environ.QUERY_STRING, "x=1");
  equal(environ.SERVER_PROTOCOL, "HTTP/1.0");
  equal(environ.SERVER_NAME, "127.0.0.1", "no authority: the listening address");
  equal(environ.SERVER_PORT, "8000");
  equal(environ.CONTENT_LENGTH, undefined);
  equal(environ.HTTP_X_A, "1");
});

Deno.test("buildEnviron() splits the mount point into SCRIPT_NAME", () => {
  const mounted = environFor("GET /app/x/y HTTP/1.1\r\nHost: h\r\n\r\n", { scriptName: "/app" });
  equal(mounted.SCRIPT_NAME, "/app");
  equal(mounted.PATH_INFO, "/x/y");
  const root = environFor("GET /app HTTP/1.1\r\nHost: h\r\n\r\n", { scriptName: "/app" });
  equal(root.SCRIPT_NAME, "/app");
  equal(root.PATH_INFO, "");
  const outside = environFor("GET /application HTTP/1.1\r\nHost: h\r\n\r\n", {
    scriptName: "/app",
  });
  equal(outside.SCRIPT_NAME, "");
  equal(outside.PATH_INFO, "/application");
});

Deno.test("buildEnviron() takes SERVER_NAME from an absolute-form target and defaults the port", () => {
  const environ = environFor("GET http://Example.org/x?q HTTP/1.1\r\nHost: example.org\r\n\r\n");
  equal(environ.SERVER_NAME, "Example.org");
  equal(environ.SERVER_PORT, "80");
  equal(environ.PATH_INFO, "/x");
  equal(environ.QUERY_STRING, "q");
  const https = environFor("GET / HTTP/1.1\r\nHost: [::1]\r\n\r\n", { urlScheme: "https" });
  equal(https.SERVER_NAME, "[::1]");
  equal(https.SERVER_PORT, "443");
});

Deno.test("buildEnviron() falls back to the listening address without Host (HTTP/1.0)", () => {
  const environ = environFor("GET / HTTP/1.0\r\n\r\n");
  equal(environ.SERVER_NAME, "127.0.0.1");
  equal(environ.SERVER_PORT, "8000");
  equal(environ.SERVER_PROTOCOL, "HTTP/1.0");
});

Deno.test("buildEnviron() gives OPTIONS * a PATH_INFO of *", () => {
  equal(environFor("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n").PATH_INFO, "*");
});

/** A source that hands out the given pieces, then the end. */
function reader(...pieces: string[]): BodyReader {
  const queue = pieces.map((p) => bytes(p));
  return new BodyReader({ pull: () => Promise.resolve(queue.shift() ?? null) });
}

const text = (b: Uint8Array) => decoder.decode(b);

Deno.test("BodyReader.read() reads sizes across pieces and is empty at the end", async () => {
  const input = reader("abc", "defgh", "ij");
  equal(text(await input.read(2)), "ab");
  equal(text(await input.read(4)), "cdef");
  equal(text(await input.read()), "ghij");
  equal((await input.read()).length, 0);
  equal((await input.read(10)).length, 0);
  equal(input.bytesRead, 10);
});

Deno.test("BodyReader.readline() splits lines across pieces and honors size", async () => {
  const input = reader("one\ntw", "o\nthr", "ee");
  equal(text(await input.readline()), "one\n");
  equal(text(await input.readline(2)), "tw");
  equal(text(await input.readline()), "o\n");
  equal(text(await input.readline()), "three");
  equal((await input.readline()).length, 0);
});

Deno.test("BodyReader.readlines() honors the hint, async iteration yields lines", async () => {
  const input = reader("a\nb\nc\n", "d\n");
  deepEqual((await input.readlines(3)).map(text), ["a\n", "b\n"]);
  const rest: string[] = [];
  for await (const line of input) rest.push(text(line));
  deepEqual(rest, ["c\n", "d\n"]);
});

Deno.test("BodyReader pulls lazily: nothing is read before the app asks", async () => {
  let pulls = 0;
  const input = new BodyReader({
    pull: () => {
      pulls++;
      return Promise.resolve(pulls < 100 ? bytes("0123456789") : null);
    },
  });
  equal(pulls, 0);
  await input.read(15);
  equal(pulls, 2);
});

Deno.test("BodyReader passes on a source error and refuses concurrent reads", async () => {
  const failing = new BodyReader({ pull: () => Promise.reject(new Error("stalled")) });
  await rejects(failing.read(), /stalled/);
  const slow = new BodyReader({ pull: () => new Promise((r) => queueMicrotask(() => r(null))) });
  const first = slow.read();
  await rejects(slow.read(), /another read has not finished/);
  await first;
});

Deno.test("LogErrorStream logs whole lines and refuses non-strings", () => {
  const lines: string[] = [];
  const errors = new LogErrorStream((line) => lines.push(line));
  errors.write("a\nb");
  deepEqual(lines, ["a"]);
  errors.flush();
  deepEqual(lines, ["a", "b"]);
  throws(() => errors.write(42 as unknown as string), TypeError);
});

Deno.test("native string helpers round-trip every byte value", () => {
  const all = new Uint8Array(256).map((_, i) => i);
  const native = bytesToNative(all);
  equal(native.length, 256);
  deepEqual(nativeToBytes(native), all);
  equal(native.charCodeAt(0x80), 0x80, "0x80 is not turned into the euro sign");
  throws(() => nativeToBytes("\u20ac"), RangeError);
  equal(textToNative("é"), "\u00c3\u00a9");
  equal(nativeToText(textToNative("naïve ☃")), "naïve ☃");
  equal(nativeToText("\u00ff"), "\ufffd");
  throws(() => nativeToText("\u00ff", true), TypeError);
  equal(percentDecodeToNative("%41%4a%4A%"), "AJJ%");
});

function urlEnviron(fields: Record<string, string>): Environ {
  return {
    "wsgi.url_scheme": "http",
    SERVER_NAME: "example.com",
    SERVER_PORT: "80",
    SCRIPT_NAME: "",
    PATH_INFO: "",
    QUERY_STRING: "",
    ...fields,
  } as unknown as Environ;
}

Deno.test("requestUri() and applicationUri() rebuild URLs as wsgiref.util does", () => {
  equal(
    requestUri(urlEnviron({ PATH_INFO: "/a b/\u00e9", QUERY_STRING: "x=1" })),
    "http://example.com/a%20b/%E9?x=1",
  );
  equal(
    requestUri(urlEnviron({ PATH_INFO: "/p", QUERY_STRING: "x=1" }), false),
    "http://example.com/p",
  );
  equal(requestUri(urlEnviron({ SERVER_PORT: "8080" })), "http://example.com:8080/");
  equal(
    requestUri(urlEnviron({ HTTP_HOST: "h:1", SCRIPT_NAME: "/app", PATH_INFO: "/x" })),
    "http://h:1/app/x",
  );
  equal(applicationUri(urlEnviron({ SCRIPT_NAME: "/app" })), "http://example.com/app");
  equal(applicationUri(urlEnviron({})), "http://example.com/");
  equal(
    applicationUri(urlEnviron({ "wsgi.url_scheme": "https", SERVER_PORT: "443" })),
    "https://example.com/",
  );
});

Deno.test("shiftPathInfo() moves segments as wsgiref.util.shift_path_info does", () => {
  const environ = urlEnviron({ SCRIPT_NAME: "/app", PATH_INFO: "/a//b/./c/" });
  equal(shiftPathInfo(environ), "a");
  equal(environ.SCRIPT_NAME, "/app/a");
  equal(environ.PATH_INFO, "/b/c/");
  equal(shiftPathInfo(environ), "b");
  equal(shiftPathInfo(environ), "c");
  equal(environ.PATH_INFO, "/");
  equal(shiftPathInfo(environ), "");
  equal(environ.SCRIPT_NAME, "/app/a/b/c/");
  equal(environ.PATH_INFO, "");
  equal(shiftPathInfo(environ), null);
  const dotted = urlEnviron({ SCRIPT_NAME: "", PATH_INFO: "/x/.." });
  equal(shiftPathInfo(dotted), "x");
  equal(dotted.PATH_INFO, "/..");
  equal(shiftPathInfo(dotted), "..");
  equal(dotted.SCRIPT_NAME, "");
  equal(dotted.PATH_INFO, "");
});

Deno.test("buildEnviron() gives an empty Host port the scheme's default (RFC 3986 section 3.2.3)", () => {
  const environ = environFor("GET / HTTP/1.1\r\nHost: h:\r\n\r\n");
  equal(environ.SERVER_NAME, "h");
  equal(environ.SERVER_PORT, "80");
});

/**
 * A Content-Length body source with a direct path, as the server's: the
 * first `held` bytes come as a piece from `pull()` (they arrived with the
 * head), the rest through `readInto()`, at most `perRead` bytes a call.
 */
function directSource(body: Uint8Array, held: number, perRead: number) {
  let at = 0;
  const calls = { pull: 0, readInto: 0 };
  const source = {
    calls,
    pull(): Promise<Uint8Array | null> {
      calls.pull++;
      if (at < held) {
        const piece = body.slice(at, held);
        at = held;
        return Promise.resolve(piece);
      }
      if (at === body.length) return Promise.resolve(null);
      const piece = body.slice(at, Math.min(body.length, at + perRead));
      at += piece.length;
      return Promise.resolve(piece);
    },
    directBytes: () => at < held ? 0 : body.length - at,
    readInto(dest: Uint8Array): Promise<number> {
      calls.readInto++;
      const n = Math.min(dest.length, perRead, body.length - at);
      if (at < held || n > source.directBytes()) throw new Error("readInto() past directBytes()");
      dest.set(body.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
  };
  return source;
}

Deno.test("BodyReader reads large pieces straight from a direct source, exact and in order", async () => {
  const body = new Uint8Array(200_000).map((_, i) => (i * 7) % 251);
  const source = directSource(body, 1000, 30_000);
  const input = new BodyReader(source);
  const first = await input.read(64 * 1024);
  deepEqual(first, body.subarray(0, 64 * 1024));
  equal(source.calls.pull, 1, "the held bytes came as one piece");
  ok(source.calls.readInto >= 3, "the rest was read straight into the result");
  const small = await input.read(100);
  deepEqual(small, body.subarray(64 * 1024, 64 * 1024 + 100));
  const rest = await input.read();
  deepEqual(rest, body.subarray(64 * 1024 + 100));
  equal((await input.read()).length, 0);
  equal(input.bytesRead, body.length);
});

Deno.test("BodyReader.read() with no size takes the whole rest directly, after what it holds", async () => {
  const body = new Uint8Array(100_000).map((_, i) => i % 256);
  const source = directSource(body, 5, 8192);
  const input = new BodyReader(source);
  equal(text(await input.readline(3)), "\x00\x01\x02");
  deepEqual(await input.read(), body.subarray(3));
  equal(source.calls.pull, 1);
  equal(input.bytesRead, body.length);
});

Deno.test("BodyReader gives back the exact body under any mix of reads, pieces and direct reads (seeded)", async () => {
  const rng = new Prng(2026);
  for (let round = 0; round < 300; round++) {
    const length = rng.int(4) === 0 ? rng.int(100) : rng.int(300_000);
    const body = new Uint8Array(length);
    for (let i = 0; i < length; i++) body[i] = rng.int(4) === 0 ? 0x0a : rng.int(256);
    const held = Math.min(length, rng.int(6000));
    const perRead = 1 + rng.int(80_000);
    const source = directSource(body, held, perRead);
    // Half the rounds offer no direct path: every byte comes through pull().
    if (rng.int(2) === 0) delete (source as { directBytes?: unknown }).directBytes;
    const input = new BodyReader(source);
    const parts: Uint8Array[] = [];
    for (;;) {
      const kind = rng.int(4);
      const part = kind === 0
        ? await input.readline(rng.int(3) === 0 ? 1 + rng.int(50) : undefined)
        : kind === 1 && rng.int(8) === 0
        ? await input.read()
        : await input.read(1 + rng.int(rng.int(2) === 0 ? 100 : 100_000));
      if (part.length === 0) break;
      parts.push(part);
    }
    const got = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
    let at = 0;
    for (const part of parts) {
      got.set(part, at);
      at += part.length;
    }
    equal(got.length, length, `round ${round}: length`);
    ok(got.every((b, i) => b === body[i]), `round ${round}: bytes differ`);
    equal(input.bytesRead, length, `round ${round}: bytesRead`);
    equal((await input.read()).length, 0);
  }
});

// ---------------------------------------------------------------------------
// wsgi.input over many tiny pieces: linear work, exact lines

/**
 * A body piece that counts how often the reader touches it: reads of its
 * `length`, and `subarray()` and `indexOf()` calls (views made from it are
 * pieces too, and count alike).
 */
class CountedPiece extends Uint8Array {
  static touches = 0;

  override subarray(begin?: number, end?: number): Uint8Array<ArrayBuffer> {
    CountedPiece.touches++;
    return super.subarray(begin, end);
  }

  override indexOf(value: number, from?: number): number {
    CountedPiece.touches++;
    return super.indexOf(value, from);
  }
}
{
  const typedArrayLength = Object.getOwnPropertyDescriptor(
    Object.getPrototypeOf(Uint8Array.prototype),
    "length",
  )!.get!;
  Object.defineProperty(CountedPiece.prototype, "length", {
    get(this: Uint8Array) {
      CountedPiece.touches++;
      return typedArrayLength.call(this);
    },
  });
}

/** Array methods that move or copy every element after the one they start at. */
const MOVING_METHODS = ["shift", "unshift", "splice", "slice", "copyWithin"] as const;

/**
 * Runs `work` and counts the operations that grow with the body: every time
 * a piece is touched, and every element that an Array method moving
 * elements could move in an array of pieces (the reader's queue is
 * private, so the methods are watched instead). A reader whose cost grows
 * with the square of the number of pieces shows it here, without a clock.
 */
async function countOperations(work: () => Promise<unknown>): Promise<number> {
  let moved = 0;
  const originals = MOVING_METHODS.map((name) => [name, Array.prototype[name]] as const);
  for (const [name, original] of originals) {
    Object.defineProperty(Array.prototype, name, {
      configurable: true,
      writable: true,
      value: function (this: unknown[], ...args: unknown[]) {
        if (this.at(-1) instanceof CountedPiece) moved += this.length;
        return (original as (...args: unknown[]) => unknown).apply(this, args);
      },
    });
  }
  CountedPiece.touches = 0;
  try {
    await work();
  } finally {
    for (const [name, original] of originals) {
      Object.defineProperty(Array.prototype, name, {
        configurable: true,
        writable: true,
        value: original,
      });
    }
  }
  return CountedPiece.touches + moved;
}

/** A source of `body` in pieces of one byte each, every piece a {@linkcode CountedPiece}. */
function bytewiseSource(body: Uint8Array): BodyReader {
  let at = 0;
  return new BodyReader({
    pull: () => Promise.resolve(at < body.length ? new CountedPiece([body[at++]!]) : null),
  });
}

Deno.test("BodyReader does work in proportion to the pieces, not their square, on every read path", async () => {
  const pieces = 20_000;
  // A few dozen operations per piece: a quadratic reader needs thousands.
  const bound = 32 * pieces;
  const oneLine = new Uint8Array(pieces).fill(0x61);
  oneLine[pieces - 1] = 0x0a;
  const shortLines = new Uint8Array(pieces).map((_, i) => i % 50 === 49 ? 0x0a : 0x61);
  const cases: [string, Uint8Array, (input: BodyReader) => Promise<unknown>][] = [
    ["read() of the whole body", oneLine, (input) => input.read()],
    ["read(n) with n larger than the body", oneLine, (input) => input.read(pieces * 2)],
    ["read(100) to the end", oneLine, async (input) => {
      while ((await input.read(100)).length > 0);
    }],
    ["readline() of one line in every piece", oneLine, (input) => input.readline()],
    ["readline(size) of a long line", oneLine, async (input) => {
      while ((await input.readline(3000)).length > 0);
    }],
    ["readlines() of short lines", shortLines, (input) => input.readlines()],
  ];
  const counts: string[] = [];
  for (const [name, body, work] of cases) {
    const operations = await countOperations(() => work(bytewiseSource(body)));
    counts.push(`${operations <= bound ? "ok" : "TOO MANY"}: ${name}: ${operations}`);
  }
  ok(
    counts.every((line) => line.startsWith("ok")),
    `operations for ${pieces} one-byte pieces (at most ${bound}):\n${counts.join("\n")}`,
  );
});

Deno.test("BodyReader reads lines exactly over one- to five-byte pieces, as a plain model does (seeded)", async () => {
  const rng = new Prng(14);
  for (let round = 0; round < 200; round++) {
    const length = rng.int(3000);
    const body = new Uint8Array(length).map(() => rng.int(8) === 0 ? 0x0a : 0x61 + rng.int(3));
    let at = 0;
    const input = new BodyReader({
      pull() {
        if (at === length) return Promise.resolve(null);
        const piece = body.slice(at, Math.min(length, at + 1 + rng.int(5)));
        at += piece.length;
        return Promise.resolve(piece);
      },
    });
    // The model: a position in the whole body.
    let position = 0;
    const modelLine = (limit: number) => {
      const lf = body.indexOf(0x0a, position);
      const end = Math.min(lf < 0 ? length : lf + 1, position + limit);
      return body.subarray(position, position = end);
    };
    for (let step = 0; position < length; step++) {
      const what = `round ${round}, step ${step}`;
      if (rng.int(3) === 0) {
        const size = 1 + rng.int(40);
        deepEqual(await input.read(size), body.subarray(position, position += size), what);
        position = Math.min(position, length);
      } else {
        const limit = rng.int(3) === 0 ? 1 + rng.int(20) : Infinity;
        deepEqual(
          await input.readline(limit === Infinity ? undefined : limit),
          modelLine(limit),
          what,
        );
      }
    }
    equal((await input.readline()).length, 0);
    equal(input.bytesRead, length);
  }
});
