/**
 * The request smuggling and framing corpus, over real sockets.
 *
 * `parser_test.ts` checks the parser on bytes; this file checks what a peer
 * on the wire gets: for every row, a fresh server whose application records
 * each request it is called for (`METHOD /path` on entry, then
 * `METHOD /path body=...` once it has read the whole body), the raw request
 * bytes, then these assertions:
 *
 * - the exact status of every response, in order;
 * - `Connection: close` on the last response (and on no earlier one);
 * - EOF right after it: the server closes, and no byte follows the response;
 * - the application saw exactly the requests it should: nothing at all for a
 *   head the server refuses, the entry but no body for a body whose framing
 *   breaks, and never a request smuggled behind a refused one or sent after
 *   `Connection: close`;
 * - nothing reached the error log (bad input is not an application error).
 *
 * Expected statuses follow RFC 9112 and the bad-input table of docs/hardening.md.
 * Where the RFC leaves a choice, the row says which one the server makes.
 * Test bytes are latin-1 strings: `"\xE9"` is the byte 0xE9.
 */

import { deepEqual, equal, notEqual, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import type { ServerOptions } from "../server.ts";
import {
  latin1Bytes,
  latin1String,
  type ParsedResponse,
  parseResponses,
  readAll,
  startServer,
  writeAll,
} from "./_helpers.ts";

// ---------------------------------------------------------------------------
// The recording application and the row runner
// ---------------------------------------------------------------------------

/** What the application saw: a log of requests, and the header keys of each environ. */
interface Recording {
  /** `METHOD /path?query` on entry; `METHOD /path?query body=...` after reading the body. */
  log: string[];
  /** The `HTTP_*`, `CONTENT_*`, `SERVER_NAME` and `SERVER_PORT` entries of each environ. */
  environs: Record<string, string>[];
}

/** An application that reads the whole body and records everything it sees. */
function recordingApp(): { app: Application; seen: Recording } {
  const seen: Recording = { log: [], environs: [] };
  const app: Application = async (environ, startResponse) => {
    const query = environ.QUERY_STRING === "" ? "" : `?${environ.QUERY_STRING}`;
    const what = `${environ.REQUEST_METHOD} ${environ.PATH_INFO}${query}`;
    seen.log.push(what);
    const keys: Record<string, string> = {};
    for (const [key, value] of Object.entries(environ)) {
      if (
        typeof value === "string" &&
        (key.startsWith("HTTP_") || key.startsWith("CONTENT_") || key.startsWith("SERVER_"))
      ) {
        keys[key] = value;
      }
    }
    seen.environs.push(keys);
    // A framing error in the body rejects here; the server answers it.
    const body = await environ["wsgi.input"].read();
    seen.log.push(`${what} body=${latin1String(body)}`);
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return [latin1Bytes(`${what} ${body.length}\n`)];
  };
  return { app, seen };
}

/** The log of a request the application served: its entry, then its body. */
function served(what: string, body = ""): string[] {
  return [what, `${what} body=${body}`];
}

interface Row {
  /** The step name. */
  name: string;
  /** The bytes to send, as a latin-1 string. */
  request: string;
  /** The status of each response, in order; the last one closes the connection. */
  statuses: number[];
  /** The application's log (see {@linkcode Recording}). */
  log: string[];
  /** Send one byte per write, awaiting each. */
  byteByByte?: boolean;
  /**
   * With `byteByByte`, also let one turn of the event loop pass after each
   * write. Awaiting a write alone does not let the server's pending read
   * complete (server and client share this process), so the server would
   * see the bytes in one or two reads; with the turn it reads them one by
   * one. This is a yield, not a wait for a condition: the row passes or
   * fails the same however the bytes are grouped.
   */
  pause?: boolean;
  /** Half-close the connection after sending (the server sees EOF). */
  halfClose?: boolean;
  /** Server options for this row. */
  options?: ServerOptions;
  /** More checks on what the application saw. */
  check?: (seen: Recording, responses: ParsedResponse[]) => void;
}

/** Sends `row.request` on a new connection and reads until the server closes it. */
async function send(port: number, row: Row): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    const data = latin1Bytes(row.request);
    if (row.byteByByte) {
      conn.setNoDelay(true);
      for (let i = 0; i < data.length; i++) {
        await writeAll(conn, data.subarray(i, i + 1));
        if (row.pause) await new Promise((resolve) => setTimeout(resolve, 0));
      }
    } else {
      await writeAll(conn, data);
    }
    if (row.halfClose) await conn.closeWrite();
    return latin1String(await readAll(conn));
  } finally {
    conn.close();
  }
}

/**
 * Runs one row against a fresh server. The server's header and keep-alive
 * timeouts are short (5 s) so that a server that wrongly keeps the
 * connection open fails the row instead of hanging it.
 */
async function runRow(row: Row): Promise<void> {
  const { app, seen } = recordingApp();
  await using server = startServer(app, {
    shutdownTimeoutMs: 3000,
    headerTimeoutMs: 5000,
    keepAliveTimeoutMs: 5000,
    ...row.options,
  });
  const text = await send(server.port, row);
  let responses: ParsedResponse[];
  try {
    responses = parseResponses(text);
  } catch (error) {
    throw new Error(`${(error as Error).message}; received ${JSON.stringify(text)}`);
  }
  const shown = JSON.stringify(text.slice(0, 600));
  deepEqual(responses.map((r) => r.status), row.statuses, `statuses; received ${shown}`);
  responses.forEach((r, i) => {
    const last = i === responses.length - 1;
    if (last) equal(r.headers.get("connection"), "close", `the last response closes: ${shown}`);
    else notEqual(r.headers.get("connection"), "close", `response ${i} keeps the connection`);
  });
  deepEqual(seen.log, row.log, "what the application saw");
  row.check?.(seen, responses);
  deepEqual(server.errors, [], "nothing reached the error log");
}

/** Registers one step per row. */
async function runRows(t: Deno.TestContext, rows: readonly Row[]): Promise<void> {
  for (const row of rows) {
    await t.step(row.name, () => runRow(row));
  }
}

/** `METHOD target HTTP/1.1` with `Host: x`, then `fields` (each ending in CRLF), then the empty line. */
function req(method: string, target: string, fields = "", version = "HTTP/1.1"): string {
  return `${method} ${target} ${version}\r\nHost: x\r\n${fields}\r\n`;
}

/** A request that must never reach the application. */
const SMUGGLED = "GET /smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
/** A last request that ends the connection. */
const CLOSING = "GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

// ---------------------------------------------------------------------------
// Content-Length and Transfer-Encoding together
// ---------------------------------------------------------------------------

Deno.test("serve() refuses Content-Length with Transfer-Encoding before calling the application", async (t) => {
  await runRows(t, [
    {
      name: "GET with Content-Length: 5 then Transfer-Encoding: chunked (CL.TE)",
      request: req("GET", "/", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") +
        "0\r\n\r\n" + SMUGGLED,
      statuses: [400],
      log: [],
    },
    {
      name: "POST with Transfer-Encoding: chunked then Content-Length (TE.CL)",
      request: req("POST", "/", "Transfer-Encoding: chunked\r\nContent-Length: 4\r\n") +
        `5c\r\n${SMUGGLED}\r\n0\r\n\r\n`,
      statuses: [400],
      log: [],
    },
    {
      name: "Content-Length with an obfuscated Transfer-Encoding: xchunked",
      request: req("POST", "/", "Content-Length: 5\r\nTransfer-Encoding: xchunked\r\n") +
        "hello" + SMUGGLED,
      statuses: [400],
      log: [],
    },
    {
      name: "Content-Length with Transfer-Encoding after a tab",
      request: req("POST", "/", "Content-Length: 5\r\nTransfer-Encoding:\tchunked\r\n") +
        "0\r\n\r\n" + SMUGGLED,
      statuses: [400],
      log: [],
    },
    {
      name: "lower-case content-length with upper-case TRANSFER-ENCODING: CHUNKED",
      request: req("POST", "/", "content-length: 5\r\nTRANSFER-ENCODING: CHUNKED\r\n") +
        "0\r\n\r\n" + SMUGGLED,
      statuses: [400],
      log: [],
    },
    {
      name: "Content-Length with Transfer-Encoding: identity",
      request: req("POST", "/", "Content-Length: 5\r\nTransfer-Encoding: identity\r\n") +
        "hello" + SMUGGLED,
      statuses: [400],
      log: [],
    },
    {
      name: "a refused request after a served one: only the first is served",
      request: req("GET", "/first") +
        req("POST", "/", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") +
        "0\r\n\r\n" + SMUGGLED,
      statuses: [200, 400],
      log: served("GET /first"),
    },
  ]);
});

// ---------------------------------------------------------------------------
// Content-Length values
// ---------------------------------------------------------------------------

/** A POST with the given Content-Length field value(s) and `body`, then a smuggled request. */
function withLength(values: string[], body = "hello"): string {
  return req("POST", "/", values.map((v) => `Content-Length: ${v}\r\n`).join("")) + body +
    SMUGGLED;
}

Deno.test("serve() refuses duplicate or invalid Content-Length before calling the application", async (t) => {
  const refused = (name: string, values: string[], status = 400, options = {}): Row => ({
    name,
    request: withLength(values),
    statuses: [status],
    log: [],
    options,
  });
  await runRows(
    t,
    [
      refused("a duplicate Content-Length with the same value", ["5", "5"]),
      refused("two differing Content-Length fields", ["5", "6"]),
      refused("a Content-Length list 5, 5", ["5, 5"]),
      refused("a Content-Length list 5,6", ["5,6"]),
      refused("a negative Content-Length", ["-5"]),
      refused("a Content-Length with a leading +", ["+5"]),
      refused("a Content-Length with a space inside", ["1 2"]),
      refused("a hex Content-Length 0x5", ["0x5"]),
      refused("a Content-Length with a hex digit", ["5a"]),
      refused("a decimal Content-Length 5.0", ["5.0"]),
      refused("an empty Content-Length", [""]),
      refused("a 20-digit Content-Length", ["99999999999999999999"]),
      refused("a Content-Length of 2^64 + 5, which wraps to 5 in 64 bits", [
        "18446744073709551621",
      ]),
      refused("a 15-digit Content-Length over the body limit", ["999999999999999"], 413),
      refused("a Content-Length over maxBodyBytes", ["5"], 413, { maxBodyBytes: 4 }),
      {
        name: "a Content-Length with a NUL after it",
        request: withLength(["5\x00"]),
        statuses: [400],
        log: [],
      },
      {
        name: "a Content-Length with spaces around it (OWS) is read as 5",
        request: req("POST", "/", "Content-Length:   5  \r\n") + "hello" + CLOSING,
        statuses: [200, 200],
        log: [...served("POST /", "hello"), ...served("GET /last")],
      },
      {
        name: "a Content-Length with leading zeros is read as 5",
        request: req("POST", "/", "Content-Length: 0005\r\n") + "hello" + CLOSING,
        statuses: [200, 200],
        log: [...served("POST /", "hello"), ...served("GET /last")],
      },
    ],
  );
});

// ---------------------------------------------------------------------------
// Transfer-Encoding values
// ---------------------------------------------------------------------------

/** A POST with the given Transfer-Encoding field value(s), a chunked body, then a smuggled request. */
function withCoding(values: string[], version = "HTTP/1.1"): string {
  const fields = values.map((v) => `Transfer-Encoding: ${v}\r\n`).join("");
  return req("POST", "/", fields, version) + "5\r\nhello\r\n0\r\n\r\n" + SMUGGLED;
}

Deno.test("serve() answers Transfer-Encoding variants as RFC 9112 section 6 says", async (t) => {
  const refused = (name: string, values: string[], status = 400, version?: string): Row => ({
    name,
    request: withCoding(values, version),
    statuses: [status],
    log: [],
  });
  const accepted = (name: string, values: string[]): Row => ({
    name,
    request: req(
      "POST",
      "/",
      values.map((v) => `Transfer-Encoding: ${v}\r\n`).join("") + "Connection: close\r\n",
    ) + "5\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
    statuses: [200],
    log: served("POST /", "hello"),
  });
  await runRows(t, [
    // RFC 9112 section 6.3: chunked not final means the length cannot be determined: 400.
    refused("chunked not last: chunked, gzip", ["chunked, gzip"]),
    refused("chunked twice in one field", ["chunked, chunked"]),
    refused("chunked twice in two fields", ["chunked", "chunked"]),
    refused("chunked, then a second field with an unknown coding", ["chunked", "cow"]),
    refused("identity alone", ["identity"]),
    refused("an unknown coding alone", ["foo"]),
    refused('a quoted "chunked"', ['"chunked"']),
    refused("an empty Transfer-Encoding", [""]),
    // RFC 9112 section 6.1: a coding the server does not understand: 501.
    refused("an unknown coding before chunked: gzip, chunked", ["gzip, chunked"], 501),
    refused("identity before chunked", ["identity, chunked"], 501),
    refused("a coding before chunked in a separate field", ["gzip", "chunked"], 501),
    // RFC 9112 section 6.1: Transfer-Encoding on HTTP/1.0 is faulty framing.
    refused("chunked on HTTP/1.0", ["chunked"], 400, "HTTP/1.0"),
    accepted("Chunked in mixed case", ["Chunked"]),
    accepted("chunked with an empty list element", ["chunked, "]),
    {
      name: "a chunked body followed by a pipelined request",
      request: req("POST", "/up", "Transfer-Encoding: chunked\r\n") +
        "5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n" + CLOSING,
      statuses: [200, 200],
      log: [...served("POST /up", "hello world"), ...served("GET /last")],
    },
  ]);
});

// ---------------------------------------------------------------------------
// Chunked framing
// ---------------------------------------------------------------------------

/** A chunked POST to /c whose body is `chunks` (raw framing), then a smuggled request. */
function chunked(chunks: string): string {
  return req("POST", "/c", "Transfer-Encoding: chunked\r\n") + chunks + SMUGGLED;
}

/** A chunked `POST /c` whose body is `chunks`, on a connection that closes after it. */
function acceptedChunked(chunks: string): string {
  return req("POST", "/c", "Transfer-Encoding: chunked\r\nConnection: close\r\n") + chunks;
}

Deno.test("serve() refuses bad chunk framing while the application reads the body", async (t) => {
  // The head is valid, so the application is called; reading the body fails
  // and the server answers the framing error. The request behind is never served.
  const broken = (name: string, chunks: string, status = 400): Row => ({
    name,
    request: chunked(chunks),
    statuses: [status],
    log: ["POST /c"],
  });
  await runRows(t, [
    broken("a 20-digit chunk size", "fffffffffffffffffff5\r\nhello\r\n0\r\n\r\n"),
    broken(
      "a chunk size of 2^64 + 5, which wraps to 5 in 64 bits",
      "10000000000000005\r\nhello\r\n0\r\n\r\n",
    ),
    broken("a 13-digit chunk size over the body limit", "FFFFFFFFFFFFF\r\nhello\r\n0\r\n\r\n", 413),
    broken("a chunk size with a leading space", " 5\r\nhello\r\n0\r\n\r\n"),
    broken("a chunk size with a leading +", "+5\r\nhello\r\n0\r\n\r\n"),
    broken("a chunk size with a leading 0x", "0x5\r\nhello\r\n0\r\n\r\n"),
    broken("a negative chunk size", "-5\r\nhello\r\n0\r\n\r\n"),
    broken("a chunk size with trailing junk", "5x\r\nhello\r\n0\r\n\r\n"),
    broken("a chunk size with junk after a space", "5 x\r\nhello\r\n0\r\n\r\n"),
    // RFC 9112 section 7.1: whitespace (BWS) may only come before a ";" that
    // starts an extension, never at the end of the line.
    broken("a chunk size with a trailing space", "5 \r\nhello\r\n0\r\n\r\n"),
    broken("a last chunk size with a trailing tab", "5\r\nhello\r\n0\t\r\n\r\n"),
    broken("a chunk extension with trailing whitespace", "5;a=1 \r\nhello\r\n0\r\n\r\n"),
    broken("an empty chunk size line", "\r\nhello\r\n0\r\n\r\n"),
    broken("chunk data longer than its size (no CRLF after it)", "5\r\nhelloX\r\n0\r\n\r\n"),
    broken("chunk data followed directly by the next size", "5\r\nhello0\r\n\r\n"),
    broken("a bare LF after the chunk size", "5\nhello\r\n0\r\n\r\n"),
    broken("a bare LF after the chunk data", "5\r\nhello\n0\r\n\r\n"),
    broken("a bare CR ending the chunk size", "5\rhello\r\n0\r\n\r\n"),
    broken("a bare CR after the chunk data", "5\r\nhello\r0\r\n\r\n"),
    broken("a bare LF after the last chunk", "5\r\nhello\r\n0\n\r\n"),
    broken("a bare LF ending the trailer section", "5\r\nhello\r\n0\r\n\n"),
    broken("a control byte in a chunk extension", "5;a=\x01\r\nhello\r\n0\r\n\r\n"),
    broken("a bare LF inside a chunk extension", "5;a\nb\r\nhello\r\n0\r\n\r\n"),
    broken("a space before the colon in a trailer", "5\r\nhello\r\n0\r\nX-A : 1\r\n\r\n"),
    broken("obs-fold in a trailer", "5\r\nhello\r\n0\r\nX-A: 1\r\n 2\r\n\r\n"),
    // RFC 9112 section 7.1.1: chunk-ext = *( BWS ";" BWS token [ BWS "=" BWS ( token /
    // quoted-string ) ] ); section 2.2: a server SHOULD answer 400 to bytes outside the
    // grammar. The parser checks extensions for control bytes only, so these pass today.
    // An unterminated quote matters: a front end that reads a quoted-string across the
    // line end would frame the body differently.
    {
      ...broken(
        "an unterminated quoted string in a chunk extension",
        '5;a="x\r\nhello\r\n0\r\n\r\n',
      ),
    },
    {
      ...broken("a chunk extension without a name", "5;=x\r\nhello\r\n0\r\n\r\n"),
    },
    {
      ...broken("a chunk extension name with a space inside", "5;a b\r\nhello\r\n0\r\n\r\n"),
    },
    {
      name: "EOF before the last chunk",
      request: req("POST", "/c", "Transfer-Encoding: chunked\r\n") + "5\r\nhello\r\n",
      halfClose: true,
      statuses: [400],
      log: ["POST /c"],
    },
    {
      name: "EOF inside the trailer section",
      request: req("POST", "/c", "Transfer-Encoding: chunked\r\n") +
        "5\r\nhello\r\n0\r\nX-A: 1\r\n",
      halfClose: true,
      statuses: [400],
      log: ["POST /c"],
    },
  ]);
});

Deno.test("serve() bounds chunk extensions and trailers and never passes trailers on", async (t) => {
  await runRows(t, [
    {
      name: "a quoted chunk extension with ; and = inside",
      request: acceptedChunked('5;name="a;b=c";x\r\nhello\r\n0\r\n\r\n'),
      statuses: [200],
      log: served("POST /c", "hello"),
    },
    {
      name: "chunk extensions with whitespace around ;",
      request: acceptedChunked("5 ; a=1 ;\tb=2\r\nhello\r\n0;last\r\n\r\n"),
      statuses: [200],
      log: served("POST /c", "hello"),
    },
    {
      name: "a chunk extension of 4000 bytes (under the 4 KiB line bound)",
      request: acceptedChunked(`5;x=${"a".repeat(4000)}\r\nhello\r\n0\r\n\r\n`),
      statuses: [200],
      log: served("POST /c", "hello"),
    },
    {
      name: "a chunk extension of 5000 bytes",
      request: chunked(`5;x=${"a".repeat(5000)}\r\nhello\r\n0\r\n\r\n`),
      statuses: [400],
      log: ["POST /c"],
    },
    {
      name: "a trailer section over maxHeaderBytes",
      request: chunked(`5\r\nhello\r\n0\r\nX-Big: ${"t".repeat(2000)}\r\n\r\n`),
      options: { maxHeaderBytes: 1024 },
      statuses: [431],
      log: ["POST /c"],
    },
    {
      name: "a trailer section over the default maxHeaderBytes (16 KiB)",
      request: chunked(
        `5\r\nhello\r\n0\r\n${
          Array.from({ length: 20 }, (_, i) => `X-T${i}: ${"t".repeat(1000)}\r\n`).join("")
        }\r\n`,
      ),
      statuses: [431],
      log: ["POST /c"],
    },
    {
      name: "more trailer fields than maxHeaders",
      request: chunked(
        `5\r\nhello\r\n0\r\n${
          Array.from({ length: 6 }, (_, i) => `X-T${i}: ${i}\r\n`).join("")
        }\r\n`,
      ),
      options: { maxHeaders: 5 },
      statuses: [431],
      log: ["POST /c"],
    },
    {
      name: "forbidden trailers are ignored and reach nothing",
      request: req("POST", "/c", "Transfer-Encoding: chunked\r\nTrailer: X-Sum\r\n") +
        "5\r\nhello\r\n0\r\nContent-Length: 100\r\nHost: evil.example\r\n" +
        "Transfer-Encoding: chunked\r\nConnection: close\r\nContent-Type: text/evil\r\n" +
        "X-Sum: 42\r\n\r\n" + CLOSING,
      statuses: [200, 200],
      log: [...served("POST /c", "hello"), ...served("GET /last")],
      check(seen) {
        // environ is built from the head alone: no trailer, forbidden or not, is in it.
        const env = seen.environs[0]!;
        equal(env.HTTP_HOST, "x");
        equal(env.SERVER_NAME, "x");
        equal(env.CONTENT_LENGTH, undefined);
        equal(env.CONTENT_TYPE, undefined);
        equal(env.HTTP_TRANSFER_ENCODING, "chunked");
        equal(env.HTTP_CONNECTION, undefined);
        equal(env.HTTP_X_SUM, undefined);
        equal(env.HTTP_TRAILER, "X-Sum");
      },
    },
    {
      name: "a trailer that looks like a request line is a bad trailer",
      request: chunked(`5\r\nhello\r\n0\r\n${SMUGGLED}`),
      statuses: [400],
      log: ["POST /c"],
    },
  ]);
});

// ---------------------------------------------------------------------------
// Header fields
// ---------------------------------------------------------------------------

Deno.test("serve() refuses malformed or repeated singleton header fields before calling the application", async (t) => {
  const refused = (name: string, fields: string): Row => ({
    name,
    request: req("GET", "/", fields) + SMUGGLED,
    statuses: [400],
    log: [],
  });
  await runRows(t, [
    refused("obs-fold with a space", "X-A: one\r\n two\r\n"),
    refused("obs-fold with a tab", "X-A: one\r\n\ttwo\r\n"),
    refused("obs-fold continuing Transfer-Encoding", "Content-Length: 0\r\nX-A: 1\r\n chunked\r\n"),
    refused("a space before the colon", "X-A : 1\r\n"),
    refused("a tab before the colon", "X-A\t: 1\r\n"),
    refused("Transfer-Encoding with a space before the colon", "Transfer-Encoding : chunked\r\n"),
    refused("Content-Length with a space before the colon", "Content-Length : 5\r\n"),
    refused("an empty header name", ": x\r\n"),
    refused("a whitespace-only header name (space)", "X-A: 1\r\n : x\r\n"),
    refused("a whitespace-only header name (tab)", "X-A: 1\r\n\t: x\r\n"),
    refused("a header line without a colon", "X-A\r\n"),
    refused("a NUL in a header name", "X-\x00A: 1\r\n"),
    refused("a CR in a header name", "X-\rA: 1\r\n"),
    refused("a LF in a header name", "X-\nA: 1\r\n"),
    refused("a control byte in a header name", "X-\x01A: 1\r\n"),
    refused("a DEL in a header name", "X-\x7fA: 1\r\n"),
    refused("a non-token byte in a header name", "X-(A): 1\r\n"),
    refused("a NUL in a header value", "X-A: a\x00b\r\n"),
    refused("a CR in a header value", "X-A: a\rb\r\n"),
    refused("a LF in a header value", "X-A: a\nb\r\n"),
    refused("a control byte in a header value", "X-A: a\x01b\r\n"),
    refused("a vertical tab in a header value", "X-A: a\x0bb\r\n"),
    refused("a DEL in a header value", "X-A: a\x7fb\r\n"),
    // RFC 9110 section 5.3: a field that is not a list must come once; two
    // Content-Type lines would reach the application as "a, b".
    refused("Content-Type sent twice", "Content-Type: text/plain\r\nContent-Type: text/html\r\n"),
    refused("Content-Type sent twice, in two cases", "content-type: a/b\r\nCONTENT-TYPE: a/b\r\n"),
    {
      name: "a request line starting with a space (obs-fold of the request line)",
      request: " GET / HTTP/1.1\r\nHost: x\r\n\r\n",
      statuses: [400],
      log: [],
    },
    {
      name: "obs-text (0x80-0xFF) in a value is accepted as latin-1",
      request: req("GET", "/", "X-Name: caf\xe9\r\nConnection: close\r\n"),
      statuses: [200],
      log: served("GET /"),
      check(seen) {
        equal(seen.environs[0]!.HTTP_X_NAME, "caf\xe9");
      },
    },
  ]);
});

Deno.test("serve() refuses line endings other than CRLF before calling the application", async (t) => {
  const refused = (name: string, request: string): Row => ({
    name,
    request: request + SMUGGLED,
    statuses: [400],
    log: [],
  });
  await runRows(t, [
    refused("bare LF line endings throughout", "GET / HTTP/1.1\nHost: x\n\n"),
    refused("a bare LF after the request line", "GET / HTTP/1.1\nHost: x\r\n\r\n"),
    refused("a bare LF after a header field", "GET / HTTP/1.1\r\nHost: x\n\r\n"),
    refused("a bare LF ending the header section", "GET / HTTP/1.1\r\nHost: x\r\n\n"),
    refused("bare CR line endings", "GET / HTTP/1.1\rHost: x\r\r\n"),
    refused("CR CR LF after a header field", "GET / HTTP/1.1\r\nHost: x\r\r\n\r\n"),
    refused("a bare LF before the request line", "\nGET / HTTP/1.1\r\nHost: x\r\n\r\n"),
  ]);
});

// ---------------------------------------------------------------------------
// Targets, Host, versions
// ---------------------------------------------------------------------------

Deno.test("serve() refuses a bad request-target, takes the host from an absolute-form one and requires one valid Host", async (t) => {
  const refused = (name: string, request: string): Row => ({
    name,
    request: request + SMUGGLED,
    statuses: [400],
    log: [],
  });
  /** Checks the host and port the application saw. */
  const sawHost = (host: string, name: string, port: string) => (seen: Recording) => {
    const env = seen.environs[0]!;
    deepEqual([env.HTTP_HOST, env.SERVER_NAME, env.SERVER_PORT], [host, name, port]);
  };
  await runRows(t, [
    // RFC 9112 section 3.2.2: an origin server MUST ignore the Host header
    // of an absolute-form request and use the target's authority instead.
    {
      name: "an absolute-form target whose host differs from Host is served for the target's",
      request: "GET http://internal.example/admin HTTP/1.1\r\nHost: public.example\r\n" +
        "Connection: close\r\n\r\n" + SMUGGLED,
      statuses: [200],
      log: served("GET /admin"),
      check: sawHost("internal.example", "internal.example", "80"),
    },
    {
      name: "an absolute-form target whose port differs from Host is served for the target's",
      request: "GET http://a.example:8080/ HTTP/1.1\r\nHost: a.example\r\n" +
        "Connection: close\r\n\r\n",
      statuses: [200],
      log: served("GET /"),
      check: sawHost("a.example:8080", "a.example", "8080"),
    },
    {
      name: "an absolute-form target with the default port, Host without it",
      request: "GET http://x:80/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      statuses: [200],
      log: served("GET /"),
      check: sawHost("x:80", "x", "80"),
    },
    refused(
      "an absolute-form target with an invalid Host",
      "GET http://a.example/ HTTP/1.1\r\nHost: a b\r\n\r\n",
    ),
    refused(
      "an absolute-form target with two Host fields",
      "GET http://a.example/ HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    ),
    refused(
      "an absolute-form target with userinfo",
      "GET http://user@a.example/ HTTP/1.1\r\nHost: a.example\r\n\r\n",
    ),
    refused(
      "an absolute-form target without Host on HTTP/1.1",
      "GET http://a.example/ HTTP/1.1\r\n\r\n",
    ),
    refused("a missing Host on HTTP/1.1", "GET / HTTP/1.1\r\nX-A: 1\r\n\r\n"),
    refused("a duplicate Host with the same value", "GET / HTTP/1.1\r\nHost: x\r\nHost: x\r\n\r\n"),
    refused("two differing Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n"),
    refused("a duplicate Host on HTTP/1.0", "GET / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n"),
    refused("a Host with a space", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n"),
    refused("a Host with a path", "GET / HTTP/1.1\r\nHost: a/b\r\n\r\n"),
    refused("a Host with userinfo", "GET / HTTP/1.1\r\nHost: evil@a\r\n\r\n"),
    refused("a Host with a non-numeric port", "GET / HTTP/1.1\r\nHost: a:http\r\n\r\n"),
    refused("a Host with two ports", "GET / HTTP/1.1\r\nHost: a:1:2\r\n\r\n"),
    refused("a Host list", "GET / HTTP/1.1\r\nHost: a, b\r\n\r\n"),
    refused("a Host with an unclosed IPv6 literal", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n"),
    refused("the asterisk-form with GET", "GET * HTTP/1.1\r\nHost: x\r\n\r\n"),
    // RFC 9112 section 3.2 and RFC 3986: the target is US-ASCII in the URI
    // grammar, and a fragment is never sent (RFC 9110 section 7.1).
    refused("a fragment in the target", "GET /a#b?c HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("raw UTF-8 bytes in the path", "GET /caf\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n"),
    refused("a raw non-ASCII byte in the query", "GET /?q=\xe9 HTTP/1.1\r\nHost: x\r\n\r\n"),
    {
      name: "an absolute-form target that agrees with Host (case-insensitively)",
      request: "GET http://A.Example:8080/p?q=1 HTTP/1.1\r\nHost: a.example:8080\r\n" +
        "Connection: close\r\n\r\n",
      statuses: [200],
      log: served("GET /p?q=1"),
      check: sawHost("A.Example:8080", "A.Example", "8080"),
    },
    {
      name: "a missing Host on HTTP/1.0 is allowed",
      request: "GET /old HTTP/1.0\r\n\r\n" + SMUGGLED,
      statuses: [200],
      log: served("GET /old"),
    },
    {
      name: "an empty Host on HTTP/1.1 is allowed (RFC 9112 section 3.2)",
      request: "GET / HTTP/1.1\r\nHost:\r\nConnection: close\r\n\r\n",
      statuses: [200],
      log: served("GET /"),
      check(seen) {
        equal(seen.environs[0]!.SERVER_NAME, "127.0.0.1");
      },
    },
    {
      name: "an IPv6 literal Host with a port",
      request: "GET / HTTP/1.1\r\nHost: [::1]:8080\r\nConnection: close\r\n\r\n",
      statuses: [200],
      log: served("GET /"),
      check(seen) {
        equal(seen.environs[0]!.SERVER_NAME, "[::1]");
        equal(seen.environs[0]!.SERVER_PORT, "8080");
      },
    },
  ]);
});

Deno.test("serve() answers HTTP/0.9, HTTP/2.0 and the HTTP/2 preface without calling the application, and serves HTTP/1.2 as 1.1", async (t) => {
  // The HTTP/2 connection preface, then an empty SETTINGS frame.
  const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04\x00\x00\x00\x00\x00";
  await runRows(t, [
    // An HTTP/0.9 simple request has no version: a malformed request line.
    { name: "an HTTP/0.9 simple request", request: "GET /\r\n\r\n", statuses: [400], log: [] },
    {
      name: "the version HTTP/0.9",
      request: "GET / HTTP/0.9\r\nHost: x\r\n\r\n" + SMUGGLED,
      statuses: [505],
      log: [],
    },
    {
      name: "the version HTTP/2.0",
      request: "GET / HTTP/2.0\r\nHost: x\r\n\r\n" + SMUGGLED,
      statuses: [505],
      log: [],
    },
    {
      // RFC 9110 section 2.5: a later minor version of HTTP/1 is served as
      // HTTP/1.1, the highest this server speaks, and answered with it.
      name: "the version HTTP/1.2 is served as HTTP/1.1",
      request: "GET / HTTP/1.2\r\nHost: x\r\n\r\n" + CLOSING,
      statuses: [200, 200],
      log: [...served("GET /"), ...served("GET /last")],
      check(seen) {
        equal(seen.environs[0]!.SERVER_PROTOCOL, "HTTP/1.1");
      },
    },
    {
      name: "the version HTTP/3.0",
      request: "GET / HTTP/3.0\r\nHost: x\r\n\r\n" + SMUGGLED,
      statuses: [505],
      log: [],
    },
    {
      name: "the version in lower case",
      request: "GET / http/1.1\r\nHost: x\r\n\r\n" + SMUGGLED,
      statuses: [400],
      log: [],
    },
    { name: "the HTTP/2 preface on the HTTP/1 port", request: preface, statuses: [505], log: [] },
    {
      name: "the HTTP/2 preface after a served request",
      request: req("GET", "/first") + preface,
      statuses: [200, 505],
      log: served("GET /first"),
    },
  ]);
});

// ---------------------------------------------------------------------------
// Connection: close, pipelining, slow writes
// ---------------------------------------------------------------------------

Deno.test("serve() never serves a request pipelined after the connection's last one", async (t) => {
  await runRows(t, [
    {
      name: "a request pipelined after Connection: close",
      request: req("GET", "/first", "Connection: close\r\n") + SMUGGLED + CLOSING,
      statuses: [200],
      log: served("GET /first"),
    },
    {
      name: "a request pipelined after a POST with Connection: close",
      request: req("POST", "/first", "Connection: close\r\nContent-Length: 5\r\n") + "hello" +
        SMUGGLED,
      statuses: [200],
      log: served("POST /first", "hello"),
    },
    {
      name: "a request pipelined after Connection: keep-alive, close",
      request: req("GET", "/first", "Connection: keep-alive, close\r\n") + SMUGGLED,
      statuses: [200],
      log: served("GET /first"),
    },
    {
      name: "a request pipelined after an HTTP/1.0 request without keep-alive",
      request: "GET /first HTTP/1.0\r\n\r\n" + SMUGGLED,
      statuses: [200],
      log: served("GET /first"),
    },
    {
      name: "a request pipelined after a refused one",
      request: req("GET", "/first") + "GET / HTTP/1.1\r\nHost: x\r\nX-A : 1\r\n\r\n" + SMUGGLED,
      statuses: [200, 400],
      log: served("GET /first"),
    },
    {
      name: "requests pipelined before Connection: close are all served, in order",
      request: req("GET", "/1") + req("POST", "/2", "Content-Length: 2\r\n") + "ok" +
        req("GET", "/3") + CLOSING + SMUGGLED,
      statuses: [200, 200, 200, 200],
      log: [
        ...served("GET /1"),
        ...served("POST /2", "ok"),
        ...served("GET /3"),
        ...served("GET /last"),
      ],
    },
  ]);
});

Deno.test("serve() assembles requests written one byte at a time", async (t) => {
  await runRows(t, [
    {
      name: "a request head in 1-byte writes",
      request: req("GET", "/slow?x=1", "X-A: 1\r\nConnection: close\r\n"),
      byteByByte: true,
      statuses: [200],
      log: served("GET /slow?x=1"),
    },
    {
      name: "a request head in 1-byte writes with a pause after each",
      request: req("GET", "/slow?x=1", "X-A: 1\r\nConnection: close\r\n"),
      byteByByte: true,
      pause: true,
      statuses: [200],
      log: served("GET /slow?x=1"),
    },
    {
      name: "a chunked request and a pipelined one in paused 1-byte writes, header timeout 10 min",
      request: req("POST", "/up", "Transfer-Encoding: chunked\r\n") +
        "5;e=1\r\nhello\r\n1\r\n!\r\n0\r\nX-T: 1\r\n\r\n" + CLOSING,
      byteByByte: true,
      pause: true,
      // No deadline can pass while the bytes trickle in.
      options: { headerTimeoutMs: 600_000, bodyTimeoutMs: 600_000 },
      statuses: [200, 200],
      log: [...served("POST /up", "hello!"), ...served("GET /last")],
    },
    {
      name: "a smuggling attempt in paused 1-byte writes is refused the same",
      request: req("POST", "/", "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n") +
        "0\r\n\r\n" + SMUGGLED,
      byteByByte: true,
      pause: true,
      statuses: [400],
      log: [],
    },
  ]);
});

// ---------------------------------------------------------------------------
// Underscores
// ---------------------------------------------------------------------------

Deno.test("serve() never lets header names with an underscore into environ or framing", async (t) => {
  const noUnderscoreKeys = (seen: Recording) => {
    for (const env of seen.environs) {
      for (const key of Object.keys(env)) {
        ok(!/FORWARDED|EVIL|TRANSFER/.test(key), `${key} in environ`);
      }
    }
  };
  await runRows(t, [
    {
      name: "X_Forwarded_For and X_Evil are dropped",
      request: req("GET", "/", "X_Forwarded_For: 10.0.0.1\r\nx_evil: 1\r\nConnection: close\r\n"),
      statuses: [200],
      log: served("GET /"),
      check: noUnderscoreKeys,
    },
    {
      name: "X_Forwarded_For is dropped while X-Forwarded-For is kept",
      request: req(
        "GET",
        "/",
        "X_Forwarded_For: 10.0.0.1\r\nX-Forwarded-For: 192.0.2.1\r\nConnection: close\r\n",
      ),
      statuses: [200],
      log: served("GET /"),
      check(seen) {
        equal(seen.environs[0]!.HTTP_X_FORWARDED_FOR, "192.0.2.1");
      },
    },
    {
      name: "Content_Length neither frames a body nor reaches environ",
      request: req("GET", "/a", "Content_Length: 5\r\n") + CLOSING,
      statuses: [200, 200],
      log: [...served("GET /a"), ...served("GET /last")],
      check(seen) {
        equal(seen.environs[0]!.CONTENT_LENGTH, undefined);
        equal(seen.environs[0]!.HTTP_CONTENT_LENGTH, undefined);
      },
    },
    {
      name: "Transfer_Encoding: chunked with Content-Length: the body is framed by Content-Length",
      request: req("POST", "/a", "Transfer_Encoding: chunked\r\nContent-Length: 5\r\n") +
        "hello" + CLOSING,
      statuses: [200, 200],
      log: [...served("POST /a", "hello"), ...served("GET /last")],
      check(seen) {
        equal(seen.environs[0]!.CONTENT_LENGTH, "5");
        equal(seen.environs[0]!.HTTP_TRANSFER_ENCODING, undefined);
      },
    },
    {
      name: "Content_Type does not pose as CONTENT_TYPE",
      request: req("POST", "/a", "Content_Type: text/evil\r\nContent-Length: 0\r\n") + CLOSING,
      statuses: [200, 200],
      log: [...served("POST /a"), ...served("GET /last")],
      check(seen) {
        equal(seen.environs[0]!.CONTENT_TYPE, undefined);
        equal(seen.environs[0]!.HTTP_CONTENT_TYPE, undefined);
        equal(seen.environs[0]!.CONTENT_LENGTH, "0");
      },
    },
  ]);
});
