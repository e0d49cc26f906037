/**
 * Unit tests of the sans-IO HTTP/1.1 request parser (`_h1/parser.ts`).
 *
 * Every input is checked three ways: fed whole, fed one byte at a time, and
 * split into two pieces at every offset (plus a few seeded random splits). A
 * parser that only works when a line arrives in one read is the classic
 * HTTP/1.1 bug, so all of them must give exactly the same normalised events.
 *
 * Test bytes are written as latin-1 strings (one character per byte), so that
 * `"\xE9"` is the byte 0xE9 and not its UTF-8 encoding.
 */

import { deepEqual, equal, ok, throws } from "node:assert/strict";
import { LocalProtocolError, RemoteProtocolError } from "../_h1/errors.ts";
import {
  CLOSED,
  type HeaderField,
  NEED_DATA,
  type ParserEvent,
  type ParserLimits,
  PAUSED,
  type RequestHead,
  RequestParser,
} from "../_h1/parser.ts";
import { latin1Bytes, latin1String } from "./_bytes.ts";

// ---------------------------------------------------------------------------
// Bytes

// ---------------------------------------------------------------------------
// Normalised events

type Fields = [string, string][];

interface HeadStep {
  type: "head";
  method: string;
  target: string;
  path: string;
  query: string;
  authority: string | null;
  version: string;
  headers: Fields;
  contentLength: number | null;
  chunked: boolean;
  keepAlive: boolean;
  expectContinue: boolean;
}

/** A parser event as plain data; consecutive data events are merged into one `body`. */
type Step =
  | HeadStep
  | { type: "body"; data: string }
  | { type: "end"; trailers: Fields }
  | { type: "paused" }
  | { type: "need-data" }
  | { type: "closed" }
  | { type: "error"; status: number };

function copyFields(fields: readonly HeaderField[]): Fields {
  return fields.map(([name, value]): [string, string] => [name, value]);
}

function normaliseHead(h: RequestHead): HeadStep {
  return {
    type: "head",
    method: h.method,
    target: h.target,
    path: h.path,
    query: h.query,
    authority: h.authority,
    version: h.version,
    headers: copyFields(h.headers),
    contentLength: h.contentLength,
    chunked: h.chunked,
    keepAlive: h.keepAlive,
    expectContinue: h.expectContinue,
  };
}

interface RunOptions {
  limits?: Partial<ParserLimits>;
  /** Call `receiveEof()` after the last piece. */
  eof?: boolean;
}

/**
 * Feeds `pieces` to a fresh parser and collects every event, normalised.
 * On PAUSED it checks that PAUSED repeats and nothing more is consumed, then
 * starts the next cycle. It stops at NEED_DATA after the last piece (recorded
 * as a final `need-data`), at CLOSED, or at the first RemoteProtocolError
 * (recorded as `error`, after checking that `next()` keeps throwing it).
 */
function run(pieces: readonly Uint8Array[], options: RunOptions = {}): Step[] {
  const parser = new RequestParser(options.limits);
  const steps: Step[] = [];

  // Returns false when the parser is finished (closed or failed).
  function pull(): boolean {
    for (;;) {
      let event: ParserEvent;
      try {
        event = parser.next();
      } catch (error) {
        if (!(error instanceof RemoteProtocolError)) throw error;
        steps.push({ type: "error", status: error.status });
        equal(parser.state, "error");
        for (let k = 0; k < 3; k++) {
          throws(() => parser.next(), (e: unknown) => e === error);
        }
        return false;
      }
      switch (event.type) {
        case "head":
          steps.push(normaliseHead(event));
          break;
        case "data": {
          ok(event.data.length > 0, "a data event is never empty");
          // The view is only valid until the next receive(): copy it now.
          const chunk = latin1String(event.data);
          const last = steps.at(-1);
          if (last !== undefined && last.type === "body") last.data += chunk;
          else steps.push({ type: "body", data: chunk });
          break;
        }
        case "end":
          steps.push({ type: "end", trailers: copyFields(event.trailers) });
          break;
        case "paused": {
          steps.push({ type: "paused" });
          const buffered = parser.bufferedBytes;
          equal(parser.next(), PAUSED);
          equal(parser.bufferedBytes, buffered, "nothing is consumed while paused");
          parser.startNextCycle();
          break;
        }
        case "need-data":
          return true;
        case "closed":
          steps.push({ type: "closed" });
          equal(parser.next(), CLOSED);
          return false;
      }
    }
  }

  for (const piece of pieces) {
    parser.receive(piece);
    if (!pull()) return steps;
  }
  if (options.eof) {
    parser.receiveEof();
    // NEED_DATA after the end of the stream would be a parser bug.
    if (pull()) steps.push({ type: "need-data" });
  } else {
    steps.push({ type: "need-data" });
  }
  return steps;
}

function bytewise(input: Uint8Array): Uint8Array[] {
  const pieces: Uint8Array[] = [];
  for (let i = 0; i < input.length; i++) pieces.push(input.subarray(i, i + 1));
  return pieces;
}

/** The split offsets to try: all of them for small inputs, a sample for big ones. */
function splitOffsets(length: number): number[] {
  if (length <= 2048) return Array.from({ length: length + 1 }, (_, i) => i);
  const offsets = new Set<number>();
  for (let i = 0; i <= 64; i++) offsets.add(i);
  for (let i = length - 64; i <= length; i++) offsets.add(i);
  const stride = Math.ceil(length / 256);
  for (let i = 0; i <= length; i += stride) offsets.add(i);
  return [...offsets].sort((a, b) => a - b);
}

/** A small seeded PRNG (mulberry32) so that random splits are reproducible. */
function prng(seed: number): () => number {
  let a = seed >>> 0;
  return function next(): number {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function randomPieces(input: Uint8Array, seed: number): Uint8Array[] {
  const random = prng(seed);
  const pieces: Uint8Array[] = [];
  let at = 0;
  while (at < input.length) {
    const n = 1 + Math.floor(random() * Math.min(17, input.length - at));
    pieces.push(input.subarray(at, at + n));
    at += n;
  }
  return pieces;
}

/**
 * Runs `input` whole, byte by byte, split in two at every offset and in a few
 * random pieces; asserts that all give the same steps as the whole run, and
 * returns those.
 */
function runEverySplit(input: Uint8Array, options: RunOptions = {}): Step[] {
  const expected = run([input], options);
  deepEqual(run(bytewise(input), options), expected, "fed one byte at a time");
  for (const k of splitOffsets(input.length)) {
    deepEqual(
      run([input.subarray(0, k), input.subarray(k)], options),
      expected,
      `split at offset ${k}: ${JSON.stringify(latin1String(input.subarray(0, k)))} | ...`,
    );
  }
  for (let seed = 1; seed <= 8; seed++) {
    deepEqual(run(randomPieces(input, seed), options), expected, `random split, seed ${seed}`);
  }
  return expected;
}

// ---------------------------------------------------------------------------
// Expected-value helpers

/** A head for `target` with the defaults of a plain `GET` on HTTP/1.1 with `Host: a`. */
function head(
  target: string,
  overrides: Partial<Omit<HeadStep, "type" | "target">> = {},
): HeadStep {
  const q = target.indexOf("?");
  return {
    type: "head",
    method: "GET",
    target,
    path: q < 0 ? target : target.slice(0, q),
    query: q < 0 ? "" : target.slice(q + 1),
    authority: "a",
    version: "HTTP/1.1",
    headers: [["Host", "a"]],
    contentLength: 0,
    chunked: false,
    keepAlive: true,
    expectContinue: false,
    ...overrides,
  };
}

/** The steps of one complete request cycle. */
function cycle(h: HeadStep, body = "", trailers: Fields = []): Step[] {
  const steps: Step[] = [h];
  if (body !== "") steps.push({ type: "body", data: body });
  steps.push({ type: "end", trailers }, { type: "paused" });
  return steps;
}

const NEED: Step = { type: "need-data" };
const CLOSE: Step = { type: "closed" };

function error(status: number): Step {
  return { type: "error", status };
}

// ---------------------------------------------------------------------------
// 1. Valid requests

interface ValidCase {
  name: string;
  input: string;
  limits?: Partial<ParserLimits>;
  eof?: boolean;
  expected: Step[];
}

const FORM = "name=deno&lang=ts&x=%20";
const LETTERS = "abcdefghijklmnopqrstuvwxyz";
const LIMIT_LINE = "POST /abcdefg HTTP/1.1";
const LIMIT_HEADERS = "Host: a\r\nContent-Length: 10\r\n\r\n";

const VALID: ValidCase[] = [
  {
    name: "a GET with a query string",
    input:
      "GET /search?q=deno&page=2 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: test/1.0\r\nAccept: */*\r\n\r\n",
    expected: [
      ...cycle(head("/search?q=deno&page=2", {
        path: "/search",
        query: "q=deno&page=2",
        authority: "example.com",
        headers: [["Host", "example.com"], ["User-Agent", "test/1.0"], ["Accept", "*/*"]],
      })),
      NEED,
    ],
  },
  {
    name: "a HEAD request",
    input: "HEAD /index.html HTTP/1.1\r\nHost: a\r\n\r\n",
    expected: [...cycle(head("/index.html", { method: "HEAD" })), NEED],
  },
  {
    name: "an OPTIONS * request",
    input: "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
    expected: [...cycle(head("*", { method: "OPTIONS", path: "*", query: "" })), NEED],
  },
  {
    name: "an absolute-form target with a matching Host",
    input: "GET http://Example.com:8080/p/q?x=1&y=2 HTTP/1.1\r\nHost: example.com:8080\r\n\r\n",
    expected: [
      ...cycle(head("http://Example.com:8080/p/q?x=1&y=2", {
        path: "/p/q",
        query: "x=1&y=2",
        authority: "Example.com:8080",
        headers: [["Host", "Example.com:8080"]],
      })),
      NEED,
    ],
  },
  {
    // RFC 9112 section 3.2.2: the origin server ignores Host and uses the
    // target's authority; the Host field carries it on, so that HTTP_HOST says it.
    name: "an absolute-form target whose authority differs from Host",
    input: "GET http://a.example:8080/p?q HTTP/1.1\r\nHost: b.example\r\nX-A: 1\r\n\r\n",
    expected: [
      ...cycle(head("http://a.example:8080/p?q", {
        path: "/p",
        query: "q",
        authority: "a.example:8080",
        headers: [["Host", "a.example:8080"], ["X-A", "1"]],
      })),
      NEED,
    ],
  },
  {
    name: "an absolute-form target with the default port and a Host without it",
    input: "GET http://x:80/ HTTP/1.1\r\nhost: x\r\n\r\n",
    expected: [
      ...cycle(head("http://x:80/", { path: "/", authority: "x:80", headers: [["host", "x:80"]] })),
      NEED,
    ],
  },
  {
    name: "an absolute-form target with an empty Host",
    input: "GET http://a.example/ HTTP/1.1\r\nHost:\r\n\r\n",
    expected: [
      ...cycle(head("http://a.example/", {
        path: "/",
        authority: "a.example",
        headers: [["Host", "a.example"]],
      })),
      NEED,
    ],
  },
  {
    name: "an absolute-form target on HTTP/1.0 without Host",
    input: "GET http://a.example/old HTTP/1.0\r\n\r\n",
    expected: [
      ...cycle(head("http://a.example/old", {
        path: "/old",
        authority: "a.example",
        version: "HTTP/1.0",
        headers: [],
        keepAlive: false,
      })),
      NEED,
    ],
  },
  {
    name: "an absolute-form target without a path",
    input: "GET http://a?x=1 HTTP/1.1\r\nHost: a\r\n\r\n",
    expected: [...cycle(head("http://a?x=1", { path: "/", query: "x=1", authority: "a" })), NEED],
  },
  {
    name: "a POST with a Content-Length body",
    input:
      `POST /form HTTP/1.1\r\nHost: a\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: ${FORM.length}\r\n\r\n${FORM}`,
    expected: [
      ...cycle(
        head("/form", {
          method: "POST",
          headers: [
            ["Host", "a"],
            ["Content-Type", "application/x-www-form-urlencoded"],
            ["Content-Length", String(FORM.length)],
          ],
          contentLength: FORM.length,
        }),
        FORM,
      ),
      NEED,
    ],
  },
  {
    name: "a Content-Length with leading zeros and surrounding spaces",
    input: "PUT /x HTTP/1.1\r\nHost: a\r\nContent-Length:  007 \r\n\r\n1234567",
    expected: [
      ...cycle(
        head("/x", {
          method: "PUT",
          headers: [["Host", "a"], ["Content-Length", "007"]],
          contentLength: 7,
        }),
        "1234567",
      ),
      NEED,
    ],
  },
  {
    name: "a POST with Content-Length: 0",
    input: "POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n\r\n",
    expected: [
      ...cycle(head("/", {
        method: "POST",
        headers: [["Host", "a"], ["Content-Length", "0"]],
        contentLength: 0,
      })),
      NEED,
    ],
  },
  {
    name: "a chunked body with extensions and trailers",
    input: "POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n" +
      "Trailer: X-Checksum\r\n\r\n" +
      "5;name=value\r\nhello\r\n" +
      '6 ; a=b;c="d e"\r\n world\r\n' +
      "0;last\r\n" +
      "X-Checksum: abc123\r\nContent-Type: text/plain\r\nX-Other:  two words \r\n\r\n",
    expected: [
      ...cycle(
        head("/upload", {
          method: "POST",
          headers: [["Host", "a"], ["Transfer-Encoding", "chunked"], ["Trailer", "X-Checksum"]],
          contentLength: null,
          chunked: true,
        }),
        "hello world",
        // Content-Type is a forbidden trailer and is dropped.
        [["X-Checksum", "abc123"], ["X-Other", "two words"]],
      ),
      NEED,
    ],
  },
  {
    name: "a chunked body with uppercase hex sizes",
    input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\n\r\n" +
      `1A\r\n${LETTERS}\r\nF\r\n0123456789ABCDE\r\n0A\r\n${LETTERS.slice(0, 10)}\r\n000\r\n\r\n`,
    expected: [
      ...cycle(
        head("/", {
          method: "POST",
          headers: [["Host", "a"], ["Transfer-Encoding", "Chunked"]],
          contentLength: null,
          chunked: true,
        }),
        `${LETTERS}0123456789ABCDE${LETTERS.slice(0, 10)}`,
      ),
      NEED,
    ],
  },
  {
    // RFC 9110 section 2.5: a later minor version of HTTP/1 is served as the
    // highest one the server speaks.
    name: "the version HTTP/1.2, read as HTTP/1.1",
    input: "GET / HTTP/1.2\r\nHost: a\r\n\r\nGET /9 HTTP/1.9\r\nHost: a\r\n\r\n",
    expected: [...cycle(head("/")), ...cycle(head("/9")), NEED],
  },
  {
    name: "an HTTP/1.0 request without Host",
    input: "GET /old HTTP/1.0\r\n\r\n",
    expected: [
      ...cycle(head("/old", {
        version: "HTTP/1.0",
        authority: null,
        headers: [],
        keepAlive: false,
      })),
      NEED,
    ],
  },
  {
    name: "an HTTP/1.0 request with Connection: keep-alive",
    input: "GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n",
    expected: [
      ...cycle(head("/", {
        version: "HTTP/1.0",
        authority: null,
        headers: [["Connection", "Keep-Alive"]],
        keepAlive: true,
      })),
      NEED,
    ],
  },
  {
    name: "Connection: close on HTTP/1.1",
    input: "GET / HTTP/1.1\r\nHost: a\r\nConnection: foo, Close\r\n\r\n",
    expected: [
      ...cycle(head("/", {
        headers: [["Host", "a"], ["Connection", "foo, Close"]],
        keepAlive: false,
      })),
      NEED,
    ],
  },
  {
    name: "Expect: 100-continue with a body",
    input: "PUT /file HTTP/1.1\r\nHost: a\r\nExpect: 100-Continue\r\nContent-Length: 4\r\n\r\ndata",
    expected: [
      ...cycle(
        head("/file", {
          method: "PUT",
          headers: [["Host", "a"], ["Expect", "100-Continue"], ["Content-Length", "4"]],
          contentLength: 4,
          expectContinue: true,
        }),
        "data",
      ),
      NEED,
    ],
  },
  {
    name: "Expect: 100-continue without a body",
    input: "GET / HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n\r\n",
    expected: [
      ...cycle(head("/", {
        headers: [["Host", "a"], ["Expect", "100-continue"]],
        expectContinue: false,
      })),
      NEED,
    ],
  },
  {
    name: "Expect: 100-continue on HTTP/1.0",
    input: "POST / HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nok",
    expected: [
      ...cycle(
        head("/", {
          method: "POST",
          version: "HTTP/1.0",
          authority: null,
          headers: [["Expect", "100-continue"], ["Content-Length", "2"]],
          contentLength: 2,
          keepAlive: false,
          expectContinue: false,
        }),
        "ok",
      ),
      NEED,
    ],
  },
  {
    name: "header values with obs-text and inner whitespace",
    input: "GET / HTTP/1.1\r\nHost: a\r\nX-Latin: \t caf\xE9 \x80\xFF\tinner  spaces \t \r\n" +
      "X-Empty:\r\nX-Colon:b:c\r\n\r\n",
    expected: [
      ...cycle(head("/", {
        headers: [
          ["Host", "a"],
          ["X-Latin", "caf\xE9 \x80\xFF\tinner  spaces"],
          ["X-Empty", ""],
          ["X-Colon", "b:c"],
        ],
      })),
      NEED,
    ],
  },
  {
    name: "empty lines before the request line",
    input: "\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    expected: [...cycle(head("/")), NEED],
  },
  {
    name: "several pipelined requests in one buffer",
    input: "GET /1 HTTP/1.1\r\nHost: a\r\n\r\n" +
      "POST /2 HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello" +
      "POST /3 HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\nT: v\r\n\r\n" +
      "\r\n" +
      "GET /4?last HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
    expected: [
      ...cycle(head("/1")),
      ...cycle(
        head("/2", {
          method: "POST",
          headers: [["Host", "a"], ["Content-Length", "5"]],
          contentLength: 5,
        }),
        "hello",
      ),
      ...cycle(
        head("/3", {
          method: "POST",
          headers: [["Host", "a"], ["Transfer-Encoding", "chunked"]],
          contentLength: null,
          chunked: true,
        }),
        "abc",
        [["T", "v"]],
      ),
      ...cycle(head("/4?last", {
        headers: [["Host", "a"], ["Connection", "close"]],
        keepAlive: false,
      })),
      NEED,
    ],
  },
  {
    name: "a header name with an underscore",
    input:
      "GET / HTTP/1.1\r\nHost: a\r\nX_Forwarded_For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\n\r\n",
    expected: [
      ...cycle(head("/", {
        headers: [["Host", "a"], ["X_Forwarded_For", "10.0.0.1"], ["x-forwarded-for", "10.0.0.2"]],
      })),
      NEED,
    ],
  },
  {
    name: "percent-encoded UTF-8 and every other URI character in the target",
    input: "GET /caf%C3%A9/a-b._~!$&'()*+,;=:@[]/?q=%E2%9C%93&r=/?:@ HTTP/1.1\r\nHost: a\r\n\r\n",
    expected: [
      ...cycle(head("/caf%C3%A9/a-b._~!$&'()*+,;=:@[]/?q=%E2%9C%93&r=/?:@", {
        path: "/caf%C3%A9/a-b._~!$&'()*+,;=:@[]/",
        query: "q=%E2%9C%93&r=/?:@",
      })),
      NEED,
    ],
  },
  {
    name: "header names in any case",
    input: "post / HTTP/1.1\r\nhOsT: a\r\ncontent-LENGTH: 3\r\n\r\nabc",
    expected: [
      ...cycle(
        head("/", {
          method: "post",
          headers: [["hOsT", "a"], ["content-LENGTH", "3"]],
          contentLength: 3,
        }),
        "abc",
      ),
      NEED,
    ],
  },
  {
    name: "an IPv6 literal Host with a port",
    input: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\n\r\n",
    expected: [
      ...cycle(head("/", { authority: "[::1]:8080", headers: [["Host", "[::1]:8080"]] })),
      NEED,
    ],
  },
  {
    name: "an empty Host on HTTP/1.1",
    input: "GET / HTTP/1.1\r\nHost:\r\n\r\n",
    expected: [...cycle(head("/", { authority: "", headers: [["Host", ""]] })), NEED],
  },
  {
    name: "a request exactly at every limit",
    input: `${LIMIT_LINE}\r\n${LIMIT_HEADERS}0123456789`,
    limits: {
      maxRequestLineBytes: LIMIT_LINE.length,
      maxHeaderBytes: LIMIT_HEADERS.length,
      maxHeaders: 2,
      maxBodyBytes: 10,
    },
    expected: [
      ...cycle(
        head("/abcdefg", {
          method: "POST",
          headers: [["Host", "a"], ["Content-Length", "10"]],
          contentLength: 10,
        }),
        "0123456789",
      ),
      NEED,
    ],
  },
  {
    name: "a chunked body exactly at the body limit",
    input: "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n" +
      "4\r\nabcd\r\n6\r\nefghij\r\n0\r\n\r\n",
    limits: { maxBodyBytes: 10 },
    expected: [
      ...cycle(
        head("/", {
          method: "POST",
          headers: [["Host", "a"], ["Transfer-Encoding", "chunked"]],
          contentLength: null,
          chunked: true,
        }),
        "abcdefghij",
      ),
      NEED,
    ],
  },
  {
    name: "requests followed by EOF",
    input:
      "GET / HTTP/1.1\r\nHost: a\r\n\r\nPOST / HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi\r\n",
    eof: true,
    expected: [
      ...cycle(head("/")),
      ...cycle(
        head("/", {
          method: "POST",
          headers: [["Host", "a"], ["Content-Length", "2"]],
          contentLength: 2,
        }),
        "hi",
      ),
      CLOSE,
    ],
  },
];

for (const c of VALID) {
  Deno.test(`RequestParser parses ${c.name}`, async (t) => {
    const input = latin1Bytes(c.input);
    const options: RunOptions = {};
    if (c.limits !== undefined) options.limits = c.limits;
    if (c.eof !== undefined) options.eof = c.eof;
    await t.step("whole", () => {
      deepEqual(run([input], options), c.expected);
    });
    await t.step("byte by byte", () => {
      deepEqual(run(bytewise(input), options), c.expected);
    });
    await t.step("split at every offset", () => {
      deepEqual(runEverySplit(input, options), c.expected);
    });
  });
}

Deno.test("RequestParser streams a large Content-Length body in any split", () => {
  const random = prng(42);
  let body = "";
  for (let i = 0; i < 64 * 1024; i++) body += String.fromCharCode(Math.floor(random() * 256));
  const input = latin1Bytes(
    `POST /big HTTP/1.1\r\nHost: a\r\nContent-Length: ${body.length}\r\n\r\n${body}GET / HTTP/1.1\r\nHost: a\r\n\r\n`,
  );
  deepEqual(runEverySplit(input), [
    ...cycle(
      head("/big", {
        method: "POST",
        headers: [["Host", "a"], ["Content-Length", String(body.length)]],
        contentLength: body.length,
      }),
      body,
    ),
    ...cycle(head("/")),
    NEED,
  ]);
});

// ---------------------------------------------------------------------------
// 2. Bad input

interface BadCase {
  name: string;
  input: string;
  status: number;
  limits?: Partial<ParserLimits>;
  eof?: boolean;
  /** Steps that come before the error (a head and body data for body errors). */
  before?: Step[];
}

const CHUNKED_HEAD = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n";
const CHUNKED_STEP = head("/", {
  method: "POST",
  headers: [["Host", "a"], ["Transfer-Encoding", "chunked"]],
  contentLength: null,
  chunked: true,
});

function get(headers: string): string {
  return `GET / HTTP/1.1\r\n${headers}\r\n`;
}

function withContentLength(value: string): string {
  return `POST / HTTP/1.1\r\nHost: a\r\nContent-Length: ${value}\r\n\r\n`;
}

function withTransferEncoding(value: string, version = "HTTP/1.1"): string {
  return `POST / ${version}\r\nHost: a\r\nTransfer-Encoding: ${value}\r\n\r\n0\r\n\r\n`;
}

const BAD: BadCase[] = [
  // Request line.
  { name: "a request line without a version", input: "GET /\r\nHost: a\r\n\r\n", status: 400 },
  {
    name: "a double space in the request line",
    input: "GET  / HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "a request line without a target",
    input: "GET HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  { name: "a space after the version", input: "GET / HTTP/1.1 \r\nHost: a\r\n\r\n", status: 400 },
  {
    name: "a DEL byte in the target",
    input: "GET /a\x7Fb HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  // RFC 9112 section 3.2 and RFC 3986: a request-target is US-ASCII, and a
  // fragment is never sent (RFC 9110 section 7.1).
  {
    name: "a fragment in the target",
    input: "GET /a#b?c HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "a fragment in an absolute-form target",
    input: "GET http://a/p#f HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "raw UTF-8 bytes in the path",
    input: "GET /caf\xC3\xA9 HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "a raw byte 0x80 in the query",
    input: "GET /?q=\x80 HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "a raw byte 0xFF in the target",
    input: "GET /\xFF HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "a request line starting with a space",
    input: " GET / HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "too many empty lines before the request line",
    input: `${"\r\n".repeat(9)}${get("Host: a\r\n")}`,
    status: 400,
  },
  { name: "a method that is not a token", input: "G@T / HTTP/1.1\r\nHost: a\r\n\r\n", status: 400 },
  { name: "a tab after the method", input: "GET\t/ HTTP/1.1\r\nHost: a\r\n\r\n", status: 400 },
  { name: "the version HTTP/1.x", input: "GET / HTTP/1.x\r\nHost: a\r\n\r\n", status: 400 },
  { name: "the version HTTP/11", input: "GET / HTTP/11\r\nHost: a\r\n\r\n", status: 400 },
  { name: "a lowercase version http/1.1", input: "GET / http/1.1\r\nHost: a\r\n\r\n", status: 400 },
  { name: "the version HTTP/1.1.1", input: "GET / HTTP/1.1.1\r\nHost: a\r\n\r\n", status: 400 },
  { name: "the version HTTP/2.0", input: "GET / HTTP/2.0\r\nHost: a\r\n\r\n", status: 505 },
  { name: "the version HTTP/3.0", input: "GET / HTTP/3.0\r\nHost: a\r\n\r\n", status: 505 },
  { name: "the version HTTP/0.9", input: "GET / HTTP/0.9\r\nHost: a\r\n\r\n", status: 505 },
  {
    name: "a request line longer than the limit",
    input: "GET /abcdefghijklmnop HTTP/1.1\r\nHost: a\r\n\r\n",
    limits: { maxRequestLineBytes: 16 },
    status: 414,
  },
  {
    name: "a request line one byte over the limit",
    input: "GET /abcdefg HTTP/1.1\r\nHost: a\r\n\r\n", // 21 bytes
    limits: { maxRequestLineBytes: 20 },
    status: 414,
  },
  {
    name: "an endless request line before its line end",
    input: `GET /${"a".repeat(100)}`,
    limits: { maxRequestLineBytes: 16 },
    status: 414,
  },
  // Header section limits.
  {
    name: "a header section one byte over the limit",
    input: get("Host: a\r\nX: 0123456789abcdefg\r\n"), // 9 + 22 + 2 = 33 bytes
    limits: { maxHeaderBytes: 32 },
    status: 431,
  },
  {
    name: "an endless header line before its line end",
    input: `GET / HTTP/1.1\r\nHost: a\r\nX: ${"a".repeat(200)}`,
    limits: { maxHeaderBytes: 64 },
    status: 431,
  },
  {
    name: "too many header fields",
    input: get("Host: a\r\nX-A: 1\r\nX-B: 2\r\n"),
    limits: { maxHeaders: 2 },
    status: 431,
  },
  // Body limits.
  {
    name: "a Content-Length over the body limit",
    input: `${withContentLength("11")}01234567890`,
    limits: { maxBodyBytes: 10 },
    status: 413,
  },
  {
    name: "a 15-digit Content-Length over the default body limit",
    input: withContentLength("999999999999999"),
    status: 413,
  },
  {
    name: "a chunked body over the body limit",
    input: `${CHUNKED_HEAD}6\r\nabcdef\r\n5\r\nghijk\r\n0\r\n\r\n`,
    limits: { maxBodyBytes: 10 },
    status: 413,
    before: [CHUNKED_STEP, { type: "body", data: "abcdef" }],
  },
  {
    name: "a 13-digit chunk size over the default body limit",
    input: `${CHUNKED_HEAD}FFFFFFFFFFFFF\r\n`,
    status: 413,
    before: [CHUNKED_STEP],
  },
  // Content-Length.
  {
    name: "Content-Length with Transfer-Encoding",
    input: get("Host: a\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"),
    status: 400,
  },
  {
    name: "Transfer-Encoding with Content-Length",
    input: get("Host: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n"),
    status: 400,
  },
  {
    name: "a duplicate Content-Length",
    input: `${get("Host: a\r\nContent-Length: 5\r\nContent-Length: 5\r\n")}hello`,
    status: 400,
  },
  { name: "a Content-Length of -1", input: withContentLength("-1"), status: 400 },
  { name: "a Content-Length of +5", input: withContentLength("+5"), status: 400 },
  { name: "a Content-Length of 1 2", input: withContentLength("1 2"), status: 400 },
  { name: "a Content-Length of 0x10", input: withContentLength("0x10"), status: 400 },
  { name: "a Content-Length list 5, 5", input: withContentLength("5, 5"), status: 400 },
  { name: "an empty Content-Length", input: withContentLength(""), status: 400 },
  { name: "a 16-digit Content-Length", input: withContentLength("1234567890123456"), status: 400 },
  {
    name: "a 16-digit Content-Length of zeros",
    input: withContentLength("0000000000000000"),
    status: 400,
  },
  // Transfer-Encoding.
  {
    name: "Transfer-Encoding gzip, chunked",
    input: withTransferEncoding("gzip, chunked"),
    status: 501,
  },
  {
    name: "Transfer-Encoding chunked, gzip",
    input: withTransferEncoding("chunked, gzip"),
    status: 400,
  },
  {
    name: "Transfer-Encoding chunked, chunked",
    input: withTransferEncoding("chunked, chunked"),
    status: 400,
  },
  { name: "Transfer-Encoding identity", input: withTransferEncoding("identity"), status: 400 },
  { name: "an empty Transfer-Encoding", input: withTransferEncoding(""), status: 400 },
  {
    name: "Transfer-Encoding chunked sent twice",
    input: get("Host: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"),
    status: 400,
  },
  {
    name: "Transfer-Encoding on HTTP/1.0",
    input: withTransferEncoding("chunked", "HTTP/1.0"),
    status: 400,
  },
  // Field syntax.
  { name: "obs-fold with a space", input: get("Host: a\r\nX-A: one\r\n two\r\n"), status: 400 },
  { name: "obs-fold with a tab", input: get("Host: a\r\nX-A: one\r\n\ttwo\r\n"), status: 400 },
  { name: "obs-fold on the first field line", input: get(" Host: a\r\n"), status: 400 },
  { name: "a space before the colon", input: get("Host : a\r\n"), status: 400 },
  { name: "a tab before the colon", input: get("Host: a\r\nX-A\t: 1\r\n"), status: 400 },
  { name: "an empty header name", input: get("Host: a\r\n: x\r\n"), status: 400 },
  { name: "a header name that is not a token", input: get("Host: a\r\nX(A): 1\r\n"), status: 400 },
  { name: "a header line without a colon", input: get("Host: a\r\nX-A\r\n"), status: 400 },
  { name: "a CR inside a header value", input: get("Host: a\r\nX-A: a\rb\r\n"), status: 400 },
  { name: "a LF inside a header value", input: get("Host: a\r\nX-A: a\nb\r\n"), status: 400 },
  { name: "a NUL inside a header value", input: get("Host: a\r\nX-A: a\x00b\r\n"), status: 400 },
  { name: "a DEL inside a header value", input: get("Host: a\r\nX-A: a\x7Fb\r\n"), status: 400 },
  { name: "bare LF line endings", input: "GET / HTTP/1.1\nHost: a\n\n", status: 400 },
  { name: "a bare LF after a header line", input: "GET / HTTP/1.1\r\nHost: a\n\r\n", status: 400 },
  {
    name: "a bare LF ending the header section",
    input: "GET / HTTP/1.1\r\nHost: a\r\n\n",
    status: 400,
  },
  {
    name: "a bare LF before the request line",
    input: "\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  // Chunked framing.
  {
    name: "a chunk size zz",
    input: `${CHUNKED_HEAD}zz\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a chunk size -1",
    input: `${CHUNKED_HEAD}-1\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a 20-digit chunk size",
    input: `${CHUNKED_HEAD}${"F".repeat(20)}\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "an empty chunk size line",
    input: `${CHUNKED_HEAD}\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a chunk size followed by garbage",
    input: `${CHUNKED_HEAD}5 5\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  // RFC 9112 section 7.1: whitespace only before a ";" that starts an extension.
  {
    name: "a chunk size with a trailing space",
    input: `${CHUNKED_HEAD}5 \r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a last chunk size with a trailing tab",
    input: `${CHUNKED_HEAD}0\t\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a chunk extension with trailing whitespace",
    input: `${CHUNKED_HEAD}5;a=b \r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a chunk extension name with trailing whitespace",
    input: `${CHUNKED_HEAD}5;a\t\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a control byte in a chunk extension",
    input: `${CHUNKED_HEAD}5;a=\x01\r\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a bare LF after a chunk size",
    input: `${CHUNKED_HEAD}5\nhello\r\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "chunk data not followed by CRLF",
    input: `${CHUNKED_HEAD}5\r\nhelloXY0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP, { type: "body", data: "hello" }],
  },
  {
    name: "chunk data followed by a bare LF",
    input: `${CHUNKED_HEAD}5\r\nhello\n0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP, { type: "body", data: "hello" }],
  },
  {
    name: "chunk data followed by CR and another byte",
    input: `${CHUNKED_HEAD}5\r\nhello\rX0\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP, { type: "body", data: "hello" }],
  },
  {
    name: "obs-fold in a trailer",
    input: `${CHUNKED_HEAD}0\r\nX-T: 1\r\n 2\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "a NUL in a trailer value",
    input: `${CHUNKED_HEAD}0\r\nX-T: 1\x002\r\n\r\n`,
    status: 400,
    before: [CHUNKED_STEP],
  },
  // Singleton fields other than Host and Content-Length (RFC 9110 section 5.3).
  {
    name: "Content-Type sent twice",
    input: get("Host: a\r\nContent-Type: text/plain\r\ncontent-type: text/html\r\n"),
    status: 400,
  },
  {
    name: "Content-Type sent twice with the same value",
    input: get("Host: a\r\nContent-Type: text/plain\r\nContent-Type: text/plain\r\n"),
    status: 400,
  },
  // Host.
  { name: "a missing Host on HTTP/1.1", input: get("X-A: 1\r\n"), status: 400 },
  { name: "a duplicate Host", input: get("Host: a\r\nHost: a\r\n"), status: 400 },
  {
    name: "a duplicate Host on HTTP/1.0",
    input: "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n",
    status: 400,
  },
  { name: "a Host a b", input: get("Host: a b\r\n"), status: 400 },
  { name: "a Host a/b", input: get("Host: a/b\r\n"), status: 400 },
  { name: "a Host user@host", input: get("Host: user@host\r\n"), status: 400 },
  { name: "a Host with a non-numeric port", input: get("Host: a:http\r\n"), status: 400 },
  { name: "a Host with two colons", input: get("Host: a:1:2\r\n"), status: 400 },
  {
    name: "an absolute-form target with an invalid Host",
    input: "GET http://a/ HTTP/1.1\r\nHost: a b\r\n\r\n",
    status: 400,
  },
  {
    name: "an absolute-form target with a duplicate Host",
    input: "GET http://a/ HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "an absolute-form target with userinfo",
    input: "GET http://user@a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "an absolute-form target with an unknown scheme",
    input: "GET ftp://a/ HTTP/1.1\r\nHost: a\r\n\r\n",
    status: 400,
  },
  {
    name: "an absolute-form target without Host on HTTP/1.1",
    input: "GET http://a/ HTTP/1.1\r\n\r\n",
    status: 400,
  },
  { name: "the asterisk-form with GET", input: "GET * HTTP/1.1\r\nHost: a\r\n\r\n", status: 400 },
  {
    name: "a CONNECT request",
    input: "CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
    status: 501,
  },
  // Not HTTP/1.x at all.
  {
    name: "a TLS ClientHello",
    input: "\x16\x03\x01\x00\xA5\x01\x00\x00\xA1\x03\x03",
    status: 400,
  },
  { name: "the HTTP/2 preface", input: "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", status: 505 },
  // 3. The end of the stream inside a request.
  { name: "EOF inside the request line", input: "GET / HT", eof: true, status: 400 },
  { name: "EOF after a lone CR", input: "\r", eof: true, status: 400 },
  { name: "EOF after the request line", input: "GET / HTTP/1.1\r\n", eof: true, status: 400 },
  {
    name: "EOF before the end of the header section",
    input: "GET / HTTP/1.1\r\nHost: a\r\n",
    eof: true,
    status: 400,
  },
  {
    name: "EOF inside the second pipelined head",
    input: "GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHo",
    eof: true,
    status: 400,
    before: cycle(head("/")),
  },
  {
    name: "EOF inside a Content-Length body",
    input: `${withContentLength("10")}abc`,
    eof: true,
    status: 400,
    before: [
      head("/", {
        method: "POST",
        headers: [["Host", "a"], ["Content-Length", "10"]],
        contentLength: 10,
      }),
      { type: "body", data: "abc" },
    ],
  },
  {
    name: "EOF right after a head that announces a body",
    input: withContentLength("10"),
    eof: true,
    status: 400,
    before: [
      head("/", {
        method: "POST",
        headers: [["Host", "a"], ["Content-Length", "10"]],
        contentLength: 10,
      }),
    ],
  },
  {
    name: "EOF inside a chunk size line",
    input: `${CHUNKED_HEAD}5;ext`,
    eof: true,
    status: 400,
    before: [CHUNKED_STEP],
  },
  {
    name: "EOF inside chunk data",
    input: `${CHUNKED_HEAD}5\r\nhel`,
    eof: true,
    status: 400,
    before: [CHUNKED_STEP, { type: "body", data: "hel" }],
  },
  {
    name: "EOF before the CRLF after chunk data",
    input: `${CHUNKED_HEAD}5\r\nhello\r`,
    eof: true,
    status: 400,
    before: [CHUNKED_STEP, { type: "body", data: "hello" }],
  },
  {
    name: "EOF inside the trailer section",
    input: `${CHUNKED_HEAD}0\r\nX-T: 1\r\n`,
    eof: true,
    status: 400,
    before: [CHUNKED_STEP],
  },
];

for (const c of BAD) {
  Deno.test(`RequestParser answers ${c.name} with ${c.status}`, async (t) => {
    const input = latin1Bytes(c.input);
    const options: RunOptions = {};
    if (c.limits !== undefined) options.limits = c.limits;
    if (c.eof !== undefined) options.eof = c.eof;
    const expected = [...(c.before ?? []), error(c.status)];
    await t.step("whole", () => {
      deepEqual(run([input], options), expected);
    });
    await t.step("byte by byte", () => {
      deepEqual(run(bytewise(input), options), expected);
    });
    await t.step("split at every offset", () => {
      deepEqual(runEverySplit(input, options), expected);
    });
  });
}

Deno.test("RequestParser rejects a TLS handshake at its first byte", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes("\x16"));
  throws(
    () => parser.next(),
    (e: unknown) => e instanceof RemoteProtocolError && e.status === 400,
  );
});

Deno.test("RequestParser answers the HTTP/2 preface before its body arrives", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes("PRI * HTTP/2.0\r\n"));
  throws(
    () => parser.next(),
    (e: unknown) => e instanceof RemoteProtocolError && e.status === 505,
  );
});

Deno.test("RequestParser answers a too long request line before its line end", () => {
  const parser = new RequestParser({ maxRequestLineBytes: 16 });
  parser.receive(latin1Bytes("GET /0123456789a")); // 16 bytes: could still end with CRLF
  equal(parser.next(), NEED_DATA);
  parser.receive(latin1Bytes("b")); // 17 bytes: the last one could still be the CR
  equal(parser.next(), NEED_DATA);
  parser.receive(latin1Bytes("c")); // 18 bytes: over the limit whatever comes next
  throws(
    () => parser.next(),
    (e: unknown) => e instanceof RemoteProtocolError && e.status === 414,
  );
});

Deno.test("RequestParser answers a bad byte after chunk data without waiting for a second one", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes(`${CHUNKED_HEAD}5\r\nhelloX`));
  equal(parser.next().type, "head");
  equal(parser.next().type, "data");
  throws(
    () => parser.next(),
    (e: unknown) => e instanceof RemoteProtocolError && e.status === 400,
  );
});

// ---------------------------------------------------------------------------
// 3. The end of the stream between requests

Deno.test("RequestParser returns CLOSED on EOF before any request", () => {
  const parser = new RequestParser();
  equal(parser.next(), NEED_DATA);
  parser.receiveEof();
  equal(parser.eof, true);
  equal(parser.next(), CLOSED);
  equal(parser.next(), CLOSED);
  equal(parser.state, "closed");
});

Deno.test("RequestParser returns CLOSED on EOF between requests", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes("GET / HTTP/1.1\r\nHost: a\r\n\r\n"));
  equal(parser.next().type, "head");
  equal(parser.next().type, "end");
  parser.receiveEof();
  // The current request is still in flight: EOF does not skip PAUSED.
  equal(parser.next(), PAUSED);
  parser.startNextCycle();
  equal(parser.next(), CLOSED);
  equal(parser.next(), CLOSED);
});

Deno.test("RequestParser refuses bytes after EOF", () => {
  const parser = new RequestParser();
  parser.receiveEof();
  throws(() => parser.receive(latin1Bytes("GET")), LocalProtocolError);
});

// ---------------------------------------------------------------------------
// 4. PAUSED and startNextCycle()

Deno.test("RequestParser pauses after each request until startNextCycle()", () => {
  const first = "POST /1 HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n\r\nhi";
  const second = "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
  const parser = new RequestParser();
  parser.receive(latin1Bytes(first + second));
  const h = parser.next();
  ok(h.type === "head");
  equal(h.path, "/1");
  const d = parser.next();
  ok(d.type === "data");
  equal(latin1String(d.data), "hi");
  deepEqual(parser.next(), { type: "end", trailers: [] });
  for (let i = 0; i < 5; i++) {
    equal(parser.next(), PAUSED);
    equal(parser.state, "done");
    // The pipelined request waits untouched in the buffer.
    equal(parser.bufferedBytes, second.length);
  }
  parser.startNextCycle();
  equal(parser.state, "head");
  const h2 = parser.next();
  ok(h2.type === "head");
  equal(h2.path, "/2");
  equal(parser.next().type, "end");
  equal(parser.next(), PAUSED);
  equal(parser.bufferedBytes, 0);
  parser.startNextCycle();
  equal(parser.next(), NEED_DATA);
});

Deno.test("RequestParser pauses after a chunked request until startNextCycle()", () => {
  const second = "GET /2 HTTP/1.1\r\nHost: a\r\n\r\n";
  const parser = new RequestParser();
  parser.receive(latin1Bytes(`${CHUNKED_HEAD}2\r\nhi\r\n0\r\n\r\n${second}`));
  equal(parser.next().type, "head");
  equal(parser.next().type, "data");
  equal(parser.next().type, "end");
  equal(parser.next(), PAUSED);
  equal(parser.next(), PAUSED);
  equal(parser.bufferedBytes, second.length);
  parser.startNextCycle();
  equal(parser.next().type, "head");
});

Deno.test("RequestParser refuses startNextCycle() in the wrong state", () => {
  function refuses(parser: RequestParser, state: string): void {
    equal(parser.state, state);
    throws(() => parser.startNextCycle(), LocalProtocolError);
  }

  // Before any request.
  const fresh = new RequestParser();
  refuses(fresh, "head");
  equal(fresh.next(), NEED_DATA);
  refuses(fresh, "head");

  // Inside a head.
  const inHead = new RequestParser();
  inHead.receive(latin1Bytes("GET / HTTP/1.1\r\nHo"));
  equal(inHead.next(), NEED_DATA);
  refuses(inHead, "head");

  // Inside a Content-Length body, and inside a chunked body.
  const inBody = new RequestParser();
  inBody.receive(latin1Bytes(withContentLength("5")));
  equal(inBody.next().type, "head");
  refuses(inBody, "body-length");
  const inChunks = new RequestParser();
  inChunks.receive(latin1Bytes(`${CHUNKED_HEAD}5\r\nhe`));
  equal(inChunks.next().type, "head");
  equal(inChunks.next().type, "data");
  refuses(inChunks, "chunk-data");

  // Twice in a row.
  const twice = new RequestParser();
  twice.receive(latin1Bytes(get("Host: a\r\n")));
  equal(twice.next().type, "head");
  equal(twice.next().type, "end");
  equal(twice.next(), PAUSED);
  twice.startNextCycle();
  refuses(twice, "head");

  // After an error, and after CLOSED.
  const failed = new RequestParser();
  failed.receive(latin1Bytes("GET / HTTP/9.9\r\n"));
  throws(() => failed.next(), RemoteProtocolError);
  refuses(failed, "error");
  const closed = new RequestParser();
  closed.receiveEof();
  equal(closed.next(), CLOSED);
  refuses(closed, "closed");
});

// ---------------------------------------------------------------------------
// 5. bodyRemaining and bufferedBytes

Deno.test("RequestParser reports bodyRemaining and bufferedBytes during a Content-Length body", () => {
  const next = "GET /next HTTP/1.1\r\nHost: a\r\n\r\n";
  const parser = new RequestParser();
  equal(parser.bodyRemaining, 0);
  equal(parser.bufferedBytes, 0);

  const head = withContentLength("10");
  parser.receive(latin1Bytes(`${head}0123`));
  equal(parser.bufferedBytes, head.length + 4);
  const h = parser.next();
  ok(h.type === "head");
  equal(h.contentLength, 10);
  equal(parser.bodyRemaining, 10);
  equal(parser.bufferedBytes, 4);

  const d1 = parser.next();
  ok(d1.type === "data");
  equal(latin1String(d1.data), "0123");
  equal(parser.bodyRemaining, 6);
  equal(parser.bufferedBytes, 0);
  equal(parser.next(), NEED_DATA);
  equal(parser.bodyRemaining, 6);

  parser.receive(latin1Bytes("45"));
  equal(parser.bufferedBytes, 2);
  const d2 = parser.next();
  ok(d2.type === "data");
  equal(latin1String(d2.data), "45");
  equal(parser.bodyRemaining, 4);

  // The rest of the body and a pipelined request in one read: only the body
  // is taken.
  parser.receive(latin1Bytes(`6789${next}`));
  equal(parser.bufferedBytes, 4 + next.length);
  const d3 = parser.next();
  ok(d3.type === "data");
  equal(latin1String(d3.data), "6789");
  equal(parser.bodyRemaining, 0);
  equal(parser.bufferedBytes, next.length);
  equal(parser.next().type, "end");
  equal(parser.bodyRemaining, 0);
  equal(parser.next(), PAUSED);
  equal(parser.bufferedBytes, next.length);
  parser.startNextCycle();
  equal(parser.next().type, "head");
  equal(parser.bodyRemaining, 0);
  equal(parser.bufferedBytes, 0);
});

Deno.test("RequestParser reports an unknown bodyRemaining during a chunked body", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes(`${CHUNKED_HEAD}3\r\nabc\r\n`));
  equal(parser.next().type, "head");
  equal(parser.bodyRemaining, Infinity);
  equal(parser.next().type, "data");
  equal(parser.bodyRemaining, Infinity);
  equal(parser.next(), NEED_DATA);
  parser.receive(latin1Bytes("0\r\n\r\n"));
  equal(parser.next().type, "end");
  equal(parser.bodyRemaining, 0);
  equal(parser.bufferedBytes, 0);
});

Deno.test("RequestParser copies received bytes", () => {
  const parser = new RequestParser();
  const chunk = latin1Bytes(get("Host: a\r\n"));
  parser.receive(chunk);
  chunk.fill(0x21);
  const h = parser.next();
  ok(h.type === "head");
  equal(h.path, "/");
  deepEqual(h.headers, [["Host", "a"]]);
});

Deno.test("RequestParser answers an over-long line ending in a bare LF with 414 however it is split", () => {
  const line = `GET /${"a".repeat(40)} HTTP/1.1\n`;
  const steps = runEverySplit(latin1Bytes(line), { limits: { maxRequestLineBytes: 20 } });
  deepEqual(steps.at(-1), error(414));
});

Deno.test("RequestParser accepts leading zeros in a chunk size", () => {
  const steps = runEverySplit(
    latin1Bytes(`${CHUNKED_HEAD}00000000000000000003\r\nabc\r\n0\r\n\r\n`),
  );
  const data = steps.find((s) => s.type === "end");
  ok(data !== undefined);
  ok(JSON.stringify(steps).includes('"abc"'), JSON.stringify(steps));
});

Deno.test("RequestParser gives the data of chunks buffered together as one event, stopping at an extension and at the last chunk", () => {
  const tiny = "1\r\na\r\n".repeat(1000);
  const parser = new RequestParser();
  parser.receive(latin1Bytes(`${CHUNKED_HEAD}${tiny}2;x=y\r\nbc\r\n3\r\ndef\r\n0\r\n\r\n`));
  equal(parser.next().type, "head");
  const events: string[] = [];
  for (let event = parser.next(); event.type === "data"; event = parser.next()) {
    events.push(latin1String(event.data));
  }
  // One event per run of plain chunks, not one per chunk: a body of many
  // tiny chunks costs a few events per read, whatever its chunk count.
  deepEqual(events, ["a".repeat(1000), "bcdef"]);
  equal(parser.state, "done");
});

Deno.test("RequestParser.space() and commit() read straight into the parser", () => {
  const parser = new RequestParser();
  const request = latin1Bytes("POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc");
  const room = parser.space(16);
  ok(room.length >= 16);
  room.set(request.subarray(0, 10));
  parser.commit(10);
  equal(parser.next(), NEED_DATA);
  const more = parser.space(request.length);
  more.set(request.subarray(10));
  parser.commit(request.length - 10);
  equal(parser.next().type, "head");
  const data = parser.next();
  ok(data.type === "data");
  equal(latin1String(data.data), "abc");
  throws(() => parser.commit(parser.space(1).length + 1), LocalProtocolError);
  parser.receiveEof();
  throws(() => parser.space(1), LocalProtocolError);
});

Deno.test("RequestParser never hands out a remembered string for other bytes with the same hash", () => {
  // "Aa" and "BB" (and "AaBB", "BBAa") have the same 31-multiplier hash.
  const heads = ["Aa", "BB", "Aa", "AaBB", "BBAa", "BBBB", "aA"].map((value) => {
    const parser = new RequestParser();
    parser.receive(
      latin1Bytes(`GET / HTTP/1.1\r\nHost: a\r\nX-V: ${value}\r\nAa: 1\r\nBB: 2\r\n\r\n`),
    );
    const head = parser.next();
    ok(head.type === "head");
    return head;
  });
  deepEqual(heads.map((h) => h.headers[1]![1]), ["Aa", "BB", "Aa", "AaBB", "BBAa", "BBBB", "aA"]);
  for (const head of heads) deepEqual(head.headers.slice(2), [["Aa", "1"], ["BB", "2"]]);
});

Deno.test("RequestParser lets the caller read a Content-Length body past it, once nothing is buffered", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n\r\nabc"));
  equal(parser.next().type, "head");
  equal(parser.directBodyBytes, 0, "body bytes are buffered");
  const data = parser.next();
  ok(data.type === "data");
  equal(latin1String(data.data), "abc");
  equal(parser.directBodyBytes, 7);
  throws(() => parser.receiveBody(8), LocalProtocolError);
  parser.receiveBody(4);
  equal(parser.directBodyBytes, 3);
  equal(parser.bodyRemaining, 3);
  parser.receive(latin1Bytes("xyz"));
  equal(parser.directBodyBytes, 0, "bytes received the usual way are the parser's again");
  const rest = parser.next();
  ok(rest.type === "data");
  equal(latin1String(rest.data), "xyz");
  equal(parser.next().type, "end");
  equal(parser.directBodyBytes, 0);
  throws(() => parser.receiveBody(1), LocalProtocolError);
});

Deno.test("RequestParser never offers a chunked body for direct reads", () => {
  const parser = new RequestParser();
  parser.receive(latin1Bytes(`${CHUNKED_HEAD}`));
  equal(parser.next().type, "head");
  equal(parser.next(), NEED_DATA);
  equal(parser.directBodyBytes, 0);
});
