/**
 * A deterministic fuzzer for the sans-IO request parser (`_h1/parser.ts`).
 *
 * Each case takes one or two requests from a valid seed corpus
 * ({@linkcode SEED_CORPUS}), applies one to four mutations drawn from a
 * seeded PRNG (bit flips, byte insertions and deletions, splices of two
 * requests, truncations, CR/LF/NUL insertions, huge numbers, duplicated or
 * injected header lines, long repeats), and feeds the result to a fresh
 * {@linkcode RequestParser} twice: whole with `receive()`, and split in two
 * at a PRNG-chosen offset through `space()` and `commit()`, as the server
 * reads (one case in 64 is also fed one byte at a time). The same seed
 * always gives the same cases, so a failure is reproduced by its seed and
 * case index alone.
 *
 * Invariants checked on every case (h11's `fuzz/afl-server.py` states the
 * first one; the others are about framing):
 *
 * 1. `next()` returns events or throws a `RemoteProtocolError` whose status
 *    is one of {@linkcode ERROR_STATUSES}, and then throws that same error on
 *    every later call. Any other exception is a failure.
 * 2. The parser never reads past what framing allows: the consumed offset
 *    never goes back and never passes the bytes fed; every data event of a
 *    `Content-Length` body is exactly the last bytes consumed by its
 *    `next()` call (never invented), and a chunked body's data, joined, is
 *    the chunk data of the bytes it consumed, read by a separate decoder;
 *    a `Content-Length` body consumes exactly that many bytes, no more is
 *    emitted; `PAUSED` consumes nothing; forbidden trailers never come out;
 *    the head's request line and fields are all found, in order, in the
 *    bytes the head consumed (the parser invents and mixes up nothing).
 * 3. Every accepted head, written back with {@linkcode serializeHead} and
 *    its body re-framed with {@linkcode serializeBody}, parses to an equal
 *    head, body and trailers, and to nothing more.
 * 4. Whole and split feeding give the same events, offsets and outcome.
 *
 * @module
 */

import { RemoteProtocolError } from "../_h1/errors.ts";
import { latin1 } from "../_h1/grammar.ts";
import { latin1Bytes } from "./_bytes.ts";
import {
  DEFAULT_PARSER_LIMITS,
  FORBIDDEN_TRAILERS,
  type HeaderField,
  type ParserLimits,
  type RequestHead,
  RequestParser,
} from "../_h1/parser.ts";

/** The statuses a `RemoteProtocolError` from the parser may carry. */
export const ERROR_STATUSES: readonly number[] = Object.freeze([400, 413, 414, 431, 501, 505]);

const ERROR_STATUS_SET = new Set(ERROR_STATUSES);

/**
 * Limits small enough that the corpus and its mutations reach 413, 414 and
 * 431; a quarter of the cases run under them, the rest under the defaults.
 */
export const TIGHT_LIMITS: Readonly<ParserLimits> = Object.freeze({
  maxRequestLineBytes: 48,
  maxHeaderBytes: 160,
  maxHeaders: 6,
  maxBodyBytes: 32,
});

// ---------------------------------------------------------------------------
// PRNG

/**
 * A seeded pseudo-random generator (mulberry32: 32-bit state, full period,
 * good enough for picking mutations; not for cryptography).
 *
 * @example
 * ```ts
 * import { Prng } from "./_fuzz.ts";
 * const a = new Prng(7), b = new Prng(7);
 * if (a.int(1000) !== b.int(1000)) throw new Error("not deterministic");
 * ```
 */
export class Prng {
  #state: number;

  /** @param seed Any number; only its low 32 bits matter. */
  constructor(seed: number) {
    this.#state = seed >>> 0;
  }

  /** The next 32-bit unsigned integer. */
  next(): number {
    let t = (this.#state = (this.#state + 0x6d2b79f5) >>> 0);
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** An integer in `[0, n)`; `n` must be a positive integer below 2^32. */
  int(n: number): number {
    return this.next() % n;
  }

  /** True with probability `1 / n`. */
  oneIn(n: number): boolean {
    return this.next() % n === 0;
  }

  /** A random element of a non-empty array. */
  pick<T>(items: readonly T[]): T {
    return items[this.next() % items.length]!;
  }
}

// ---------------------------------------------------------------------------
// Bytes

export { latin1Bytes };

/** Lower-case hex of `bytes`, two digits per byte. */
export function toHex(bytes: Uint8Array): string {
  let s = "";
  for (let i = 0; i < bytes.length; i++) s += bytes[i]!.toString(16).padStart(2, "0");
  return s;
}

/** The bytes of a hex string as {@linkcode toHex} writes it. */
export function fromHex(hex: string): Uint8Array {
  const out = new Uint8Array(hex.length >> 1);
  for (let i = 0; i < out.length; i++) out[i] = parseInt(hex.slice(2 * i, 2 * i + 2), 16);
  return out;
}

function concat(parts: readonly Uint8Array[]): Uint8Array {
  let n = 0;
  for (const p of parts) n += p.length;
  const out = new Uint8Array(n);
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

function bytesEqual(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

// ---------------------------------------------------------------------------
// Seed corpus

/**
 * Valid requests (latin-1 strings) the mutations start from: every target
 * form (absolute-form with a Host of its own too), both versions and a later
 * minor one, `Content-Length` and chunked bodies (with extensions
 * and trailers, forbidden ones included), pipelined pairs, `Expect`, empty
 * and IPv6 `Host`, obs-text in values, underscores in names.
 */
export const SEED_CORPUS: readonly string[] = Object.freeze([
  "GET / HTTP/1.1\r\nHost: example.com\r\n\r\n",
  "GET /search?q=a%20b&x=1 HTTP/1.1\r\nHost: example.com:8080\r\nUser-Agent: fuzz/1.0\r\n" +
  "Accept: */*\r\n\r\n",
  "POST /echo HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\nContent-Length: 11\r\n\r\n" +
  "hello world",
  "POST /up HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n" +
  "5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: 42\r\nContent-Length: 9\r\n\r\n",
  "GET /1 HTTP/1.1\r\nHost: a\r\n\r\nGET /2 HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n",
  "GET http://example.com/p?q HTTP/1.1\r\nHost: example.com\r\n\r\n",
  "GET https://Example.COM:443/a/b?c=d HTTP/1.1\r\nHost: example.com:443\r\n\r\n",
  "GET http://a.example:8080/p HTTP/1.1\r\nHost: b.example\r\n\r\n",
  "GET /v HTTP/1.2\r\nHost: a\r\n\r\n",
  "GET /old HTTP/1.0\r\n\r\n",
  "POST /form HTTP/1.0\r\nConnection: keep-alive\r\nContent-Length: 3\r\n\r\nabc",
  "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n",
  "PUT /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\ndata",
  'POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n3;name="quoted; value"\r\n' +
  "abc\r\n0\r\n\r\n",
  "GET /caf%C3%A9 HTTP/1.1\r\nHost: a\r\nX-Latin: \xe9t\xe9\r\nX-Empty:\r\nX-Tab:\tv \t\r\n\r\n",
  "\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n",
  "GET / HTTP/1.1\r\nHost: [::1]:8000\r\n\r\n",
  "GET / HTTP/1.1\r\nHost: a\r\nCookie: a=1\r\nCookie: b=2\r\nX_Under: 1\r\n" +
  "Connection: keep-alive, Upgrade\r\n\r\n",
  "POST /a HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nx\r\n0\r\n\r\n" +
  "GET /b HTTP/1.1\r\nHost: a\r\n\r\n",
  "POST /a HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\n12345" +
  "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
  "delete /r HTTP/1.1\r\nhost: a\r\ncontent-length: 0\r\n\r\n",
  "POST /hex HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: Chunked\r\nTE: trailers\r\n\r\n" +
  "00A\r\n0123456789\r\n0\r\nHost: evil\r\nX-Note: fine\r\n\r\n",
  "GET / HTTP/1.1\r\nHost:\r\n\r\n",
  "HEAD /h?x HTTP/1.1\r\nHost: a.b.c\r\nConnection: close\r\n\r\n",
]);

// ---------------------------------------------------------------------------
// Serialiser

/**
 * Writes a parsed head back as request bytes (a latin-1 string): the request
 * line exactly as received, then every field as `name: value` in order of
 * arrival, then the empty line. The field lines keep the framing fields
 * (`Content-Length`, `Transfer-Encoding`), so {@linkcode serializeBody}
 * re-frames the body the same way.
 *
 * A field line sent as `name:value` comes back one byte longer
 * (`name: value`); any other whitespace around values was dropped by the
 * parser, so the result is never longer than the original by more than one
 * byte per field.
 *
 * @example
 * ```ts
 * import { RequestParser } from "../_h1/parser.ts";
 * import { latin1Bytes, serializeHead } from "./_fuzz.ts";
 * const parser = new RequestParser();
 * parser.receive(latin1Bytes("GET /a?b HTTP/1.1\r\nHost:x\r\nX-A:  1 \r\n\r\n"));
 * const head = parser.next();
 * if (head.type !== "head") throw new Error();
 * if (serializeHead(head) !== "GET /a?b HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n") throw new Error();
 * ```
 */
export function serializeHead(head: RequestHead): string {
  let s = `${head.method} ${head.target} ${head.version}\r\n`;
  for (const [name, value] of head.headers) s += `${name}: ${value}\r\n`;
  return s + "\r\n";
}

/**
 * The body bytes that follow {@linkcode serializeHead}`(head)`, framed as
 * the head says: the pieces as they are for a `Content-Length` body (their
 * total must equal it), or one chunk per non-empty piece, the last chunk,
 * the trailer fields and the empty line for a chunked body. Returns a latin-1
 * string.
 *
 * @example
 * ```ts
 * import { latin1Bytes, serializeBody } from "./_fuzz.ts";
 * import type { RequestHead } from "../_h1/parser.ts";
 * const head = { chunked: true } as RequestHead;
 * const body = serializeBody(head, [latin1Bytes("abc")], [["X-Sum", "1"]]);
 * if (body !== "3\r\nabc\r\n0\r\nX-Sum: 1\r\n\r\n") throw new Error();
 * ```
 */
export function serializeBody(
  head: RequestHead,
  pieces: readonly Uint8Array[],
  trailers: readonly HeaderField[] = [],
): string {
  let s = "";
  if (!head.chunked) {
    for (const p of pieces) s += latin1(p, 0, p.length);
    return s;
  }
  for (const p of pieces) {
    if (p.length === 0) continue;
    s += `${p.length.toString(16)}\r\n${latin1(p, 0, p.length)}\r\n`;
  }
  s += "0\r\n";
  for (const [name, value] of trailers) s += `${name}: ${value}\r\n`;
  return s + "\r\n";
}

// ---------------------------------------------------------------------------
// Mutations

const SPECIAL_BYTES = [
  "\r",
  "\n",
  "\x00",
  "\r\n",
  "\r\n\r\n",
  " ",
  "\t",
  ":",
  ";",
  ",",
  '"',
  "\x0b",
  "\x7f",
  "\xff",
  "\x80",
  "_",
];

const HUGE_NUMBERS = [
  "99999999999999999999",
  "18446744073709551616",
  "9007199254740993",
  "4294967296",
  "2147483648",
  "1073741825",
  "ffffffffffffffff",
  "FFFFFFFFFFFFF",
  "10000000000000",
  "00000000000000000005",
  "-1",
  "+1",
  "0x10",
  "1e3",
  " 5",
  "5 ",
  "1_0",
  "0",
];

const INJECTED_LINES = [
  "Transfer-Encoding: chunked",
  "Transfer-Encoding: gzip, chunked",
  "Transfer-Encoding: chunked, identity",
  "Transfer-Encoding: identity",
  "Transfer-encoding: cow",
  "Content-Length: 0",
  "Content-Length: 5",
  "Content-Length: 5, 5",
  "Content_Length: 5",
  "Host: other.example",
  "Host: a b",
  "Connection: close",
  "Connection: keep-alive",
  "Expect: 100-continue",
  "X_Forwarded_For: 1.2.3.4",
  " folded",
  ": empty-name",
  "X-A : spaced",
  "Trailer: X-Sum",
];

function isDigitLike(b: number): boolean {
  return (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x46) || (b >= 0x61 && b <= 0x66);
}

function insert(input: Uint8Array, at: number, piece: Uint8Array): Uint8Array {
  const out = new Uint8Array(input.length + piece.length);
  out.set(input.subarray(0, at));
  out.set(piece, at);
  out.set(input.subarray(at), at + piece.length);
  return out;
}

/** Offsets just after each LF of `input` (where a line starts), the first line excluded. */
function lineStarts(input: Uint8Array): number[] {
  const starts: number[] = [];
  for (let i = 0; i < input.length; i++) if (input[i] === 0x0a) starts.push(i + 1);
  return starts;
}

/** Applies one randomly chosen mutation; `corpus` supplies the other half of a splice. */
function mutateOnce(rng: Prng, input: Uint8Array, corpus: readonly Uint8Array[]): Uint8Array {
  const n = input.length;
  switch (rng.int(11)) {
    case 0: { // bit flip
      if (n === 0) return input;
      const out = input.slice();
      out[rng.int(n)]! ^= 1 << rng.int(8);
      return out;
    }
    case 1: // random byte insertion
      return insert(input, rng.int(n + 1), Uint8Array.of(rng.int(256)));
    case 2: { // deletion of 1 to 4 bytes
      if (n === 0) return input;
      const at = rng.int(n);
      const len = 1 + rng.int(4);
      return concat([input.subarray(0, at), input.subarray(Math.min(n, at + len))]);
    }
    case 3: { // splice: a prefix of this input and a suffix of another request
      const other = rng.pick(corpus);
      return concat([input.subarray(0, rng.int(n + 1)), other.subarray(rng.int(other.length + 1))]);
    }
    case 4: // truncation
      return input.subarray(0, rng.int(n + 1));
    case 5: // CR, LF, NUL and other framing bytes
      return insert(input, rng.int(n + 1), latin1Bytes(rng.pick(SPECIAL_BYTES)));
    case 6: { // a run of digits or hex digits replaced by a huge or odd number
      if (n === 0) return input;
      let at = rng.int(n);
      let tries = 0;
      while (!isDigitLike(input[at]!) && tries++ < n) at = (at + 1) % n;
      if (!isDigitLike(input[at]!)) return input;
      let end = at;
      while (at > 0 && isDigitLike(input[at - 1]!)) at--;
      while (end < n && isDigitLike(input[end]!)) end++;
      return concat([
        input.subarray(0, at),
        latin1Bytes(rng.pick(HUGE_NUMBERS)),
        input.subarray(end),
      ]);
    }
    case 7: { // duplicate a line (a second Host, Content-Length, Transfer-Encoding...)
      const starts = lineStarts(input);
      if (starts.length < 2) return input;
      const i = rng.int(starts.length - 1);
      const line = input.subarray(starts[i]!, starts[i + 1]!);
      return insert(input, starts[rng.int(starts.length)]!, line);
    }
    case 8: { // inject a framing-relevant header line after some line
      const starts = lineStarts(input);
      const at = starts.length === 0 ? n : rng.pick(starts);
      return insert(input, at, latin1Bytes(`${rng.pick(INJECTED_LINES)}\r\n`));
    }
    case 9: { // repeat a short slice into a long run (huge headers, lines, extensions)
      if (n === 0) return input;
      const at = rng.int(n);
      const slice = input.slice(at, Math.min(n, at + 1 + rng.int(8)));
      const times = 1 + rng.int(rng.oneIn(4) ? 2048 : 64);
      const run = new Uint8Array(slice.length * times);
      for (let i = 0; i < times; i++) run.set(slice, i * slice.length);
      return insert(input, at, run);
    }
    default: { // overwrite a byte with an interesting one
      if (n === 0) return input;
      const out = input.slice();
      out[rng.int(n)] = rng.pick([0x00, 0x0a, 0x0d, 0x20, 0x09, 0x3a, 0x7f, 0xff, 0x30, 0x2c]);
      return out;
    }
  }
}

/**
 * One fuzz input: a corpus entry (sometimes two, pipelined) with one to four
 * mutations, or, one time in 16, an entry left as it is.
 */
export function mutate(rng: Prng, corpus: readonly Uint8Array[]): Uint8Array {
  let input = rng.pick(corpus);
  if (rng.oneIn(8)) input = concat([input, rng.pick(corpus)]);
  if (rng.oneIn(16)) return input;
  const count = 1 + (rng.oneIn(2) ? 0 : rng.int(4));
  for (let i = 0; i < count; i++) input = mutateOnce(rng, input, corpus);
  return input;
}

// ---------------------------------------------------------------------------
// Driving the parser

/** One request as the parser delivered it. */
interface RequestRecord {
  head: RequestHead;
  pieces: Uint8Array[];
  bodyBytes: number;
  /** The `end` event arrived. */
  ended: boolean;
  trailers: readonly HeaderField[];
  /** Consumed offset right after the head, and at the end of the body. */
  headEnd: number;
  bodyEnd: number;
}

/** What feeding one input in given pieces produced. */
interface Run {
  requests: RequestRecord[];
  /** The parser wanted more data after the last piece (before EOF was fed). */
  needData: boolean;
  /** `"closed"` after a clean EOF, or the status of the error. */
  outcome: "closed" | number;
  /** A broken invariant, or `null`. */
  failure: string | null;
}

class InvariantError extends Error {}

/**
 * The data of the chunked body that starts at `from` in `input`, read
 * independently of the parser and leniently (the parser has already
 * accepted its framing): each chunk's size is the hex digits that start its
 * line, its data follows that line's LF, and CRLF follows its data.
 */
function dechunk(input: Uint8Array, from: number): Uint8Array {
  const pieces: Uint8Array[] = [];
  let at = from;
  for (;;) {
    const lf = input.indexOf(0x0a, at);
    const size = parseInt(latin1(input, at, lf).match(/^[0-9a-fA-F]*/)![0], 16);
    if (!(size > 0)) return concat(pieces);
    pieces.push(input.subarray(lf + 1, lf + 1 + size));
    at = lf + 1 + size + 2;
  }
}

function fail(message: string): never {
  throw new InvariantError(message);
}

/**
 * Feeds `input` to a fresh parser in pieces cut at `cuts` (ascending
 * offsets), then the end of the stream, and checks invariants 1 and 2 on
 * every event.
 */
function drive(input: Uint8Array, cuts: readonly number[], limits: ParserLimits): Run {
  const parser = new RequestParser(limits);
  const run: Run = { requests: [], needData: false, outcome: "closed", failure: null };
  let fed = 0;
  let consumed = 0;
  let current: RequestRecord | null = null;
  // Every call of next() consumes a byte or moves the state on; a parser
  // stuck in a loop would exceed this.
  let budget = input.length * 4 + 64;

  /** Pulls events until NEED_DATA (returns true), CLOSED or an error (false). */
  function pump(): boolean {
    for (;;) {
      if (--budget < 0) fail("the parser makes no progress (more calls than bytes allow)");
      let event;
      try {
        event = parser.next();
      } catch (error) {
        if (!(error instanceof RemoteProtocolError)) {
          fail(
            `next() threw ${
              error instanceof Error ? `${error.name}: ${error.message}` : String(error)
            }`,
          );
        }
        if (!ERROR_STATUS_SET.has(error.status)) {
          fail(`RemoteProtocolError with status ${error.status}: ${error.message}`);
        }
        let again: unknown = null;
        try {
          parser.next();
        } catch (e) {
          again = e;
        }
        if (again !== error) fail("next() after an error did not throw the same error");
        run.outcome = error.status;
        return false;
      }
      const buffered = parser.bufferedBytes;
      if (buffered < 0 || buffered > fed) fail(`bufferedBytes ${buffered} outside [0, ${fed}]`);
      const now = fed - buffered;
      if (now < consumed) fail(`the consumed offset went back from ${consumed} to ${now}`);
      const step = now - consumed;
      consumed = now;
      switch (event.type) {
        case "head": {
          if (current !== null) fail("a head arrived before the previous request ended");
          const h = event;
          if (h.chunked !== (h.contentLength === null)) {
            fail("chunked and contentLength disagree");
          }
          if (h.contentLength !== null && h.contentLength > limits.maxBodyBytes) {
            fail(`Content-Length ${h.contentLength} over maxBodyBytes was accepted`);
          }
          checkFidelity(input, run.requests.at(-1)?.bodyEnd ?? 0, now, h);
          current = {
            head: h,
            pieces: [],
            bodyBytes: 0,
            ended: false,
            trailers: [],
            headEnd: now,
            bodyEnd: -1,
          };
          run.requests.push(current);
          break;
        }
        case "data": {
          if (current === null || current.ended) fail("data outside a request body");
          const data = event.data;
          if (data.length === 0) fail("an empty data event");
          if (data.length > step) fail("a data event holds more bytes than were consumed");
          // Chunk data may come joined across chunks: checked at the end.
          if (!current.head.chunked && !bytesEqual(data, input.subarray(now - data.length, now))) {
            fail("a data event is not the bytes just consumed");
          }
          current.bodyBytes += data.length;
          const cl = current.head.contentLength;
          if (cl !== null && current.bodyBytes > cl) {
            fail(`body bytes ${current.bodyBytes} exceed Content-Length ${cl}`);
          }
          if (current.bodyBytes > limits.maxBodyBytes) {
            fail(`body bytes ${current.bodyBytes} exceed maxBodyBytes`);
          }
          current.pieces.push(data.slice());
          break;
        }
        case "end": {
          if (current === null || current.ended) fail("an end event outside a request");
          const cl = current.head.contentLength;
          if (cl !== null) {
            if (current.bodyBytes !== cl) {
              fail(`body ended after ${current.bodyBytes} of Content-Length ${cl} bytes`);
            }
            if (now - current.headEnd !== cl) {
              fail(`a Content-Length ${cl} body consumed ${now - current.headEnd} bytes`);
            }
          } else if (now - current.headEnd < current.bodyBytes + 5) {
            fail("a chunked body consumed fewer bytes than its framing needs");
          } else if (!bytesEqual(concat(current.pieces), dechunk(input, current.headEnd))) {
            fail("a chunked body's data is not the chunk data of the bytes consumed");
          }
          for (const [name] of event.trailers) {
            if (FORBIDDEN_TRAILERS.has(name.toLowerCase())) {
              fail(`forbidden trailer ${name} passed`);
            }
          }
          if (!current.head.chunked && event.trailers.length > 0) {
            fail("trailers on a body that is not chunked");
          }
          current.ended = true;
          current.trailers = event.trailers.map(([n, v]): HeaderField => [n, v]);
          current.bodyEnd = now;
          break;
        }
        case "paused": {
          if (current === null || !current.ended) fail("PAUSED before the end of a request");
          if (step !== 0) fail("PAUSED consumed bytes");
          if (parser.next().type !== "paused" || parser.bufferedBytes !== buffered) {
            fail("a second next() while PAUSED did not return PAUSED with the same buffer");
          }
          current = null;
          parser.startNextCycle();
          break;
        }
        case "need-data":
          // Complete header lines are consumed before the head is: no check here.
          return true;
        case "closed":
          if (!parser.eof) fail("CLOSED before EOF");
          if (current !== null) fail("CLOSED inside a request");
          if (buffered !== 0) fail("CLOSED with bytes left");
          run.outcome = "closed";
          return false;
      }
    }
  }

  try {
    let going = true;
    for (let i = 0; i <= cuts.length && going; i++) {
      const end = i < cuts.length ? cuts[i]! : input.length;
      if (end > fed) {
        const piece = input.subarray(fed, end);
        if (cuts.length === 0) {
          parser.receive(piece);
        } else {
          // As the server reads: straight into the parser's free space, asked
          // for in read-sized blocks.
          parser.space(Math.max(piece.length, 1024)).set(piece);
          parser.commit(piece.length);
        }
        fed = end;
      }
      going = pump();
    }
    if (going) {
      run.needData = true;
      parser.receiveEof();
      if (pump()) fail("NEED_DATA after EOF");
    }
  } catch (error) {
    if (!(error instanceof InvariantError)) throw error;
    run.failure = error.message;
  }
  return run;
}

const OWS_ONLY = /^[ \t]*$/;

/**
 * The head says only what its bytes say: the request line, then each field
 * name followed by a colon, optional whitespace and its value, in order,
 * all within `input[from, to)` (the bytes the head consumed). One field
 * comes from the request line instead: the `Host` value of an
 * absolute-form request is the target's authority (RFC 9112 section 3.2.2).
 */
function checkFidelity(input: Uint8Array, from: number, to: number, h: RequestHead): void {
  const text = latin1(input, from, to);
  const line = `${h.method} ${h.target} HTTP/1.`;
  let at = text.indexOf(line);
  if (at < 0) fail(`the request line ${JSON.stringify(line)} is not in the head's bytes`);
  at += line.length;
  // HTTP/1.2 and later minors are read as HTTP/1.1 (RFC 9110 section 2.5).
  const minor = text.charCodeAt(at) - 0x30;
  if (h.version === "HTTP/1.0" ? minor !== 0 : !(minor >= 1 && minor <= 9)) {
    fail(`the version ${h.version} is not what its bytes say`);
  }
  if (text.slice(at + 1, at + 3) !== "\r\n") {
    fail("the request line does not end after the version");
  }
  at += 3;
  const absoluteForm = !h.target.startsWith("/") && h.target !== "*";
  for (const [name, value] of h.headers) {
    const nameAt = text.indexOf(`${name}:`, at);
    if (nameAt < 0) fail(`the field name ${JSON.stringify(name)} is not in the head's bytes`);
    if (absoluteForm && name.toLowerCase() === "host") {
      if (value !== h.authority) fail("the Host of an absolute-form request is not its authority");
      at = nameAt + name.length + 1;
      continue;
    }
    const valueAt = text.indexOf(value, nameAt + name.length + 1);
    if (valueAt < 0 || !OWS_ONLY.test(text.slice(nameAt + name.length + 1, valueAt))) {
      fail(`the value of ${JSON.stringify(name)} is not what its bytes say`);
    }
    at = valueAt + value.length;
  }
}

/** Everything that must agree between two feedings of the same input. */
function fingerprint(run: Run): string {
  const parts: unknown[] = [run.outcome, run.needData];
  for (const r of run.requests) {
    const body = concat(r.pieces);
    parts.push(headView(r.head), latin1(body, 0, body.length), r.ended, r.trailers, [
      r.headEnd,
      r.bodyEnd,
    ]);
  }
  return JSON.stringify(parts);
}

function headView(h: RequestHead): unknown[] {
  return [
    h.method,
    h.target,
    h.path,
    h.query,
    h.authority,
    h.version,
    h.headers,
    h.contentLength,
    h.chunked,
    h.keepAlive,
    h.expectContinue,
  ];
}

/** Invariant 3 for one request: written back and parsed again, it is the same request. */
function checkRoundTrip(record: RequestRecord, limits: ParserLimits): string | null {
  const head = record.head;
  let text = serializeHead(head);
  if (record.ended) text += serializeBody(head, record.pieces, record.trailers);
  // "name:value" comes back as "name: value": one byte more per field line.
  const relaxed: ParserLimits = {
    ...limits,
    maxHeaderBytes: limits.maxHeaderBytes + Math.max(head.headers.length, record.trailers.length),
  };
  const again = drive(latin1Bytes(text), [], relaxed);
  if (again.failure !== null) return `round trip: ${again.failure}`;
  const first = again.requests[0];
  if (again.requests.length !== 1 || first === undefined) {
    return `round trip: ${again.requests.length} requests from ${JSON.stringify(text)}`;
  }
  if (JSON.stringify(headView(first.head)) !== JSON.stringify(headView(head))) {
    return `round trip: the head differs: ${JSON.stringify(headView(first.head))} from ${
      JSON.stringify(text)
    }`;
  }
  if (!record.ended) return null;
  if (!first.ended || again.outcome !== "closed") {
    return `round trip: the request did not end cleanly (${again.outcome}): ${
      JSON.stringify(text)
    }`;
  }
  if (!bytesEqual(concat(first.pieces), concat(record.pieces))) {
    return "round trip: the body differs";
  }
  if (JSON.stringify(first.trailers) !== JSON.stringify(record.trailers)) {
    return "round trip: the trailers differ";
  }
  return null;
}

function describeCuts(cuts: readonly number[], length: number): string {
  if (cuts.length === length - 1 && length > 2) return "byte by byte";
  return `cut at ${cuts.join(", ")}`;
}

/** Which limits a case runs under. */
export type LimitsProfile = "default" | "tight";

/** A broken invariant, with what it takes to reproduce it. */
export interface FuzzFailure {
  /** The case's index: `fuzzParser({ seed, cases: index + 1 })` reaches it again. */
  readonly index: number;
  /** What broke. */
  readonly message: string;
  /** The input, as lower-case hex. */
  readonly inputHex: string;
  /** How the failing feeding cut the input: `"whole"`, `"cut at 17"`, `"byte by byte"`. */
  readonly feeding: string;
  /** The limits of the case. */
  readonly limits: LimitsProfile;
}

/** How one input fared: its outcome and heads, or the invariant it broke. */
export interface CaseResult {
  /** `"closed"` after a clean end of stream, else the error status. */
  readonly outcome: "closed" | number;
  /** Request heads the parser accepted. */
  readonly heads: number;
  /** Whether the parser wanted more bytes when the input ran out. */
  readonly needData: boolean;
  /** A broken invariant: the message and the feeding that broke it (see {@linkcode FuzzFailure.feeding}). */
  readonly failure: { message: string; feeding: string } | null;
}

/**
 * Runs one input through every check: fed whole and fed in pieces cut at
 * each of `splits` (each entry a list of ascending offsets), all feedings
 * agreeing, every accepted request round-tripping. Deterministic; useful to
 * replay a reported failure from its hex.
 *
 * @example
 * ```ts
 * import { checkInput, latin1Bytes } from "./_fuzz.ts";
 * import { DEFAULT_PARSER_LIMITS } from "../_h1/parser.ts";
 * const input = latin1Bytes("GET / HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 5\r\n\r\n");
 * const result = checkInput(input, [[10], [30]], DEFAULT_PARSER_LIMITS);
 * if (result.failure !== null || result.outcome !== 400) throw new Error();
 * ```
 */
export function checkInput(
  input: Uint8Array,
  splits: readonly (readonly number[])[],
  limits: ParserLimits,
): CaseResult {
  const whole = drive(input, [], limits);
  const result = (failure: CaseResult["failure"]): CaseResult => ({
    outcome: whole.outcome,
    heads: whole.requests.length,
    needData: whole.needData,
    failure,
  });
  if (whole.failure !== null) return result({ message: whole.failure, feeding: "whole" });
  const expected = fingerprint(whole);
  for (const cuts of splits) {
    const feeding = describeCuts(cuts, input.length);
    const split = drive(input, cuts, limits);
    if (split.failure !== null) return result({ message: split.failure, feeding });
    const got = fingerprint(split);
    if (got !== expected) {
      return result({
        message: `fed in pieces, the parser disagrees with the whole feeding: ${
          got.slice(0, 300)
        } vs ${expected.slice(0, 300)}`,
        feeding,
      });
    }
  }
  for (const record of whole.requests) {
    const problem = checkRoundTrip(record, limits);
    if (problem !== null) return result({ message: problem, feeding: "whole" });
  }
  return result(null);
}

// ---------------------------------------------------------------------------
// The fuzzer

/** What {@linkcode fuzzParser} runs. */
export interface FuzzOptions {
  /** The PRNG seed: the same seed gives the same cases. */
  seed: number;
  /** How many cases. */
  cases: number;
  /** Stop collecting failures after this many (the run goes on counting). Default 20. */
  maxFailures?: number;
  /** Called every `progressEvery` cases with the number done (for a CLI). */
  onProgress?: (done: number) => void;
  /** Default 100,000. */
  progressEvery?: number;
}

/** What a fuzz run found. */
export interface FuzzReport {
  readonly seed: number;
  readonly cases: number;
  /** Wall-clock time of the run. */
  readonly elapsedMs: number;
  /** Cases that ended in a clean end of stream (every request in them accepted). */
  readonly accepted: number;
  /** Cases that ended in a protocol error, by status. */
  readonly statuses: Readonly<Record<number, number>>;
  /** Request heads accepted over all cases (each one round-tripped). */
  readonly heads: number;
  /** Cases whose bytes ran out inside a request (before EOF was fed). */
  readonly incomplete: number;
  /** How many cases broke an invariant. */
  readonly failureCount: number;
  /** The first failures (at most `maxFailures`). */
  readonly failures: readonly FuzzFailure[];
}

/**
 * Runs `cases` seeded fuzz cases against the parser and reports the
 * outcomes and every broken invariant (see the module documentation). A
 * quarter of the cases run under {@linkcode TIGHT_LIMITS}. Never throws for
 * a parser bug: failures are in the report.
 *
 * @example
 * ```ts
 * import { fuzzParser } from "./_fuzz.ts";
 * const report = fuzzParser({ seed: 1, cases: 200 });
 * if (report.failureCount !== 0) throw new Error(report.failures[0]!.message);
 * ```
 */
export function fuzzParser(options: FuzzOptions): FuzzReport {
  const { seed, cases } = options;
  const maxFailures = options.maxFailures ?? 20;
  const progressEvery = options.progressEvery ?? 100_000;
  const rng = new Prng(seed);
  const corpus = SEED_CORPUS.map(latin1Bytes);
  const statuses: Record<number, number> = {};
  const failures: FuzzFailure[] = [];
  let accepted = 0;
  let heads = 0;
  let incomplete = 0;
  let failureCount = 0;
  const started = performance.now();
  for (let index = 0; index < cases; index++) {
    const input = mutate(rng, corpus);
    const profile: LimitsProfile = rng.oneIn(4) ? "tight" : "default";
    const limits = profile === "tight" ? TIGHT_LIMITS : DEFAULT_PARSER_LIMITS;
    const splits: number[][] = [];
    if (input.length > 1) splits.push([1 + rng.int(input.length - 1)]);
    if (rng.oneIn(64) && input.length > 1) {
      splits.push(Array.from({ length: input.length - 1 }, (_, i) => i + 1));
    }
    const result = checkInput(input, splits, limits);
    if (result.failure !== null) {
      failureCount++;
      if (failures.length < maxFailures) {
        failures.push({
          index,
          message: result.failure.message,
          inputHex: toHex(input),
          feeding: result.failure.feeding,
          limits: profile,
        });
      }
    } else {
      heads += result.heads;
      if (result.needData) incomplete++;
      if (result.outcome === "closed") accepted++;
      else statuses[result.outcome] = (statuses[result.outcome] ?? 0) + 1;
    }
    if (options.onProgress !== undefined && (index + 1) % progressEvery === 0) {
      options.onProgress(index + 1);
    }
  }
  return {
    seed,
    cases,
    elapsedMs: performance.now() - started,
    accepted,
    statuses,
    heads,
    incomplete,
    failureCount,
    failures,
  };
}

/** A failure as text: the message, how to reproduce it, and the input in hex. */
export function formatFailure(f: FuzzFailure, seed: number): string {
  return `case ${f.index} (seed ${seed}, ${f.limits} limits, fed ${f.feeding}): ${f.message}\n` +
    `  input hex: ${f.inputHex}`;
}
