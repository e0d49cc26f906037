/**
 * The sans-IO response side of HTTP/1.1: deciding how a response is framed,
 * and turning a response head and body pieces into bytes.
 *
 * {@linkcode decideFraming} is the one place that decides Content-Length,
 * chunked or close-delimited framing and whether the connection stays open
 * (h11's `_clean_up_response_headers_for_sending`, waitress's
 * `build_response_header`); {@linkcode writeHead} and the body encoders only
 * carry that decision out. Nothing here touches a socket: everything is
 * written into an {@linkcode OutputBuffer} that the caller sends.
 *
 * @module
 */

import { equalsLower } from "./grammar.ts";
import type { HeaderField } from "./parser.ts";

/** How a response body is delimited on the wire. */
export type BodyFraming =
  /** No body bytes at all: HEAD, 1xx, 204, 205, 304. */
  | "none"
  /** Exactly `length` bytes, announced by `Content-Length`. */
  | "length"
  /** `Transfer-Encoding: chunked` (HTTP/1.1 only). */
  | "chunked"
  /** The body ends when the connection closes (HTTP/1.0 without a length). */
  | "close";

/** What {@linkcode decideFraming} needs to know about the exchange. */
export interface FramingInput {
  /** The request's version. */
  readonly requestVersion: "HTTP/1.1" | "HTTP/1.0";
  /** Whether the request was HEAD (headers as for GET, but no body bytes). */
  readonly head: boolean;
  /** The response status code. */
  readonly status: number;
  /** The `Content-Length` the application set, if any. */
  readonly contentLength: number | null;
  /** The body's total length, when known before the head is sent. */
  readonly knownLength: number | null;
  /** Whether both sides allow the connection to stay open after this response. */
  readonly keepAlive: boolean;
}

/** The framing decision: how the body is sent, and what it adds to the head. */
export interface FramingDecision {
  readonly framing: BodyFraming;
  /** For `"length"` framing: the exact number of body bytes to send. */
  readonly length: number;
  /** Whether the connection stays open after the response. */
  readonly keepAlive: boolean;
  /** `Content-Length` to add to the head (`null`: none, or the application's is kept). */
  readonly addContentLength: number | null;
  /** Whether to drop an application `Content-Length` (it is not allowed on 1xx and 204). */
  readonly dropContentLength: boolean;
}

/** Whether a response with this status can carry no body (RFC 9110 sections 15.2, 15.3.5, 15.4.5). */
export function statusHasNoBody(status: number): boolean {
  return status < 200 || status === 204 || status === 304;
}

/**
 * Decides the framing of a response (RFC 9112 section 6.3), the single place
 * that does. The rules, in order:
 *
 * 1. 1xx, 204 and 304 responses, and responses to HEAD, have no body. HEAD
 *    keeps the `Content-Length` a GET would have had. A 205 has an empty
 *    body, with `Content-Length: 0` in place of any the application set.
 * 2. A `Content-Length` from the application is honored exactly.
 * 3. A body whose total length is known gets a `Content-Length`.
 * 4. Otherwise HTTP/1.1 uses chunked framing, and HTTP/1.0 delimits the body
 *    by closing the connection.
 */
export function decideFraming(input: FramingInput): FramingDecision {
  const { status, contentLength, knownLength } = input;
  if (status === 205) {
    // RFC 9110 section 15.3.6: a 205 has no content. Unlike a 204 it is
    // not bodyless by its status (RFC 9112 section 6.3), so the client
    // reads its framing: no body bytes, announced as `Content-Length: 0`.
    return {
      framing: "none",
      length: 0,
      keepAlive: input.keepAlive,
      addContentLength: 0,
      dropContentLength: true,
    };
  }
  if (statusHasNoBody(status)) {
    return {
      framing: "none",
      length: 0,
      keepAlive: input.keepAlive,
      addContentLength: null,
      dropContentLength: status !== 304,
    };
  }
  if (contentLength !== null) {
    return {
      framing: input.head ? "none" : "length",
      length: contentLength,
      keepAlive: input.keepAlive,
      addContentLength: null,
      dropContentLength: false,
    };
  }
  if (knownLength !== null) {
    return {
      framing: input.head ? "none" : "length",
      length: knownLength,
      keepAlive: input.keepAlive,
      addContentLength: knownLength,
      dropContentLength: false,
    };
  }
  if (input.head) {
    return {
      framing: "none",
      length: 0,
      keepAlive: input.keepAlive,
      addContentLength: null,
      dropContentLength: false,
    };
  }
  if (input.requestVersion === "HTTP/1.1") {
    return {
      framing: "chunked",
      length: 0,
      keepAlive: input.keepAlive,
      addContentLength: null,
      dropContentLength: false,
    };
  }
  return {
    framing: "close",
    length: 0,
    keepAlive: false,
    addContentLength: null,
    dropContentLength: false,
  };
}

const INITIAL_CAPACITY = 4 * 1024;
const EMPTY_BLOCK = new Uint8Array(0);
/** Blocks released by idle buffers, for the next buffer that needs one (bounded: 1 MiB). */
const freeBlocks: Uint8Array[] = [];
const MAX_FREE_BLOCKS = 256;

/** Chunks at least this large are queued by reference instead of copied. */
const COPY_LIMIT = 16 * 1024;

/** Puts a block of the pooled size back into the pool, unless the pool is full. */
function recycle(block: Uint8Array): void {
  if (block.length === INITIAL_CAPACITY && freeBlocks.length < MAX_FREE_BLOCKS) {
    freeBlocks.push(block);
  }
}

/**
 * A queue of bytes waiting for the socket. Small pieces (heads, small body
 * chunks) are copied into one contiguous block so that a whole response, or
 * several pipelined responses, go out in a single write; large chunks are
 * queued by reference, so they are never copied.
 */
export class OutputBuffer {
  // Blocks are allocated on first use, so an idle connection holds none.
  #block: Uint8Array = EMPTY_BLOCK;
  /** The other block: `take()` swaps blocks, so bytes handed out stay intact while new ones queue. */
  #spare: Uint8Array = EMPTY_BLOCK;
  #length = 0;
  #segments: Uint8Array[] = [];
  #queued = 0;

  /** Total bytes queued. */
  get length(): number {
    return this.#queued + this.#length;
  }

  #reserve(n: number): void {
    if (this.#length + n <= this.#block.length) return;
    if (this.#block.length === 0 && n <= INITIAL_CAPACITY) {
      this.#block = freeBlocks.pop() ?? new Uint8Array(INITIAL_CAPACITY);
      return;
    }
    const grown = new Uint8Array(
      Math.max(INITIAL_CAPACITY, this.#block.length * 2, this.#length + n),
    );
    grown.set(this.#block.subarray(0, this.#length));
    this.#block = grown;
  }

  /** Appends a string whose characters are all at most U+00FF, one byte each. */
  latin1(s: string): void {
    const n = s.length;
    this.#reserve(n);
    const block = this.#block;
    let at = this.#length;
    for (let i = 0; i < n; i++) block[at++] = s.charCodeAt(i);
    this.#length = at;
  }

  /** Appends a `name: value` head field and its CRLF, both latin-1. */
  field(name: string, value: string): void {
    const a = name.length;
    const b = value.length;
    this.#reserve(a + b + 4);
    const block = this.#block;
    let at = this.#length;
    for (let i = 0; i < a; i++) block[at++] = name.charCodeAt(i);
    block[at++] = 0x3a;
    block[at++] = 0x20;
    for (let i = 0; i < b; i++) block[at++] = value.charCodeAt(i);
    block[at++] = 0x0d;
    block[at++] = 0x0a;
    this.#length = at;
  }

  /** Where the next byte goes in the current block; pass it to {@linkcode copySince}. */
  get mark(): number {
    return this.#length;
  }

  /**
   * A copy of the bytes appended since `mark` was read. Only `latin1` and
   * `field` may be called in between (`bytes` may move earlier bytes out of
   * the block).
   */
  copySince(mark: number): Uint8Array {
    return this.#block.slice(mark, this.#length);
  }

  /**
   * Appends bytes. Large chunks are kept by reference: the caller must not
   * change them until the buffer has been taken.
   */
  bytes(data: Uint8Array): void {
    const n = data.length;
    if (n >= COPY_LIMIT) {
      this.#seal();
      this.#segments.push(data);
      this.#queued += n;
      return;
    }
    this.#reserve(n);
    this.#block.set(data, this.#length);
    this.#length += n;
  }

  #swap(): void {
    const block = this.#block;
    this.#block = this.#spare;
    this.#spare = block;
    this.#length = 0;
  }

  #seal(): void {
    if (this.#length === 0) return;
    this.#segments.push(this.#block.slice(0, this.#length));
    this.#queued += this.#length;
    this.#length = 0;
  }

  /**
   * Removes and returns everything queued when it is one contiguous block
   * (the usual response: a head and a small body), else `null`: then use
   * {@linkcode take}. The bytes stay valid as with `take()`.
   */
  takeBlock(): Uint8Array | null {
    if (this.#segments.length !== 0 || this.#length === 0) return null;
    const only = this.#block.subarray(0, this.#length);
    this.#swap();
    return only;
  }

  /**
   * Removes and returns everything queued, as pieces to write in order. The
   * pieces stay valid while more bytes are queued, until the next `take()`:
   * write them out completely before taking again.
   */
  take(): Uint8Array[] {
    if (this.#segments.length === 0) {
      const only = this.takeBlock();
      return only === null ? [] : [only];
    }
    this.#seal();
    const segments = this.#segments;
    this.#segments = [];
    this.#queued = 0;
    return segments;
  }

  /**
   * Gives the buffer's memory back to a shared pool while nothing is queued
   * and nothing taken is still being written (a connection about to idle
   * calls it); the next write takes a block from the pool again.
   */
  release(): void {
    if (this.length !== 0) return;
    recycle(this.#block);
    recycle(this.#spare);
    this.#block = EMPTY_BLOCK;
    this.#spare = EMPTY_BLOCK;
  }

  /** Drops everything queued. */
  clear(): void {
    this.#segments = [];
    this.#queued = 0;
    this.#length = 0;
  }
}

/** What goes into a response head besides the application's headers. */
export interface HeadOptions {
  /** The IMF-fixdate for the `Date` header. */
  readonly date: string;
  /** The `Server` header to add (`null`: none, as when the application set its own). */
  readonly server: string | null;
}

/**
 * A head's start (status line and application fields) as bytes, with the
 * strings it was made from. Applications send the same few heads again and
 * again, so the last one per status is kept: comparing a handful of strings
 * costs less than encoding them.
 */
interface EncodedStart {
  readonly fields: readonly string[];
  readonly dropContentLength: boolean;
  readonly bytes: Uint8Array;
}

const lastStarts = new Map<string, EncodedStart>();
/** Statuses remembered at most; more clears the map, so hostile variety costs only encoding. */
const MAX_STARTS = 64;

function sameStart(
  start: EncodedStart,
  headers: readonly (readonly [string, string])[],
  dropContentLength: boolean,
): boolean {
  const fields = start.fields;
  if (start.dropContentLength !== dropContentLength || fields.length !== headers.length * 2) {
    return false;
  }
  for (let i = 0, j = 0; i < headers.length; i++, j += 2) {
    const header = headers[i]!;
    if (header[0] !== fields[j] || header[1] !== fields[j + 1]) return false;
  }
  return true;
}

function writeStart(
  out: OutputBuffer,
  status: string,
  headers: readonly (readonly [string, string])[],
  dropContentLength: boolean,
): void {
  const last = lastStarts.get(status);
  if (last !== undefined && sameStart(last, headers, dropContentLength)) {
    out.bytes(last.bytes);
    return;
  }
  const mark = out.mark;
  const fields: string[] = [];
  out.latin1(`HTTP/1.1 ${status}\r\n`);
  for (const [name, value] of headers) {
    fields.push(name, value);
    if (dropContentLength && equalsLower(name, "content-length")) continue;
    out.field(name, value);
  }
  if (lastStarts.size >= MAX_STARTS) lastStarts.clear();
  lastStarts.set(status, { fields, dropContentLength, bytes: out.copySince(mark) });
}

/** The encoded `Date` (and `Server`) fields and the blank line, kept while the date stays the same. */
let lastEnd: { date: string; server: string | null; bytes: Uint8Array } | null = null;

function writeEnd(out: OutputBuffer, date: string, server: string | null): void {
  if (lastEnd !== null && lastEnd.date === date && lastEnd.server === server) {
    out.bytes(lastEnd.bytes);
    return;
  }
  const mark = out.mark;
  out.field("Date", date);
  if (server !== null) out.field("Server", server);
  out.latin1("\r\n");
  lastEnd = { date, server, bytes: out.copySince(mark) };
}

/**
 * Writes a response head. `status` is the application's `"NNN reason"`
 * status and `headers` its fields, both already validated as latin-1 without
 * CR, LF or NUL; the framing decision adds `Content-Length`,
 * `Transfer-Encoding` and `Connection` (the application may set none of the
 * latter two). The status line always says `HTTP/1.1`, the highest version
 * this server speaks (RFC 9110 section 6.2).
 */
export function writeHead(
  out: OutputBuffer,
  requestVersion: "HTTP/1.1" | "HTTP/1.0",
  status: string,
  headers: readonly (readonly [string, string])[],
  decision: FramingDecision,
  options: HeadOptions,
): void {
  writeStart(out, status, headers, decision.dropContentLength);
  if (decision.addContentLength !== null) {
    out.field("Content-Length", String(decision.addContentLength));
  }
  if (decision.framing === "chunked") out.field("Transfer-Encoding", "chunked");
  if (!decision.keepAlive) {
    out.field("Connection", "close");
  } else if (requestVersion === "HTTP/1.0") {
    out.field("Connection", "keep-alive");
  }
  writeEnd(out, options.date, options.server);
}

/** The interim `100 Continue` response (RFC 9110 section 15.2.1). */
export const CONTINUE_RESPONSE: Uint8Array = new TextEncoder().encode(
  "HTTP/1.1 100 Continue\r\n\r\n",
);

/** Writes one chunk of a chunked body: size line, data, CRLF. Empty data is skipped (it would end the body). */
export function writeChunk(out: OutputBuffer, data: Uint8Array): void {
  if (data.length === 0) return;
  out.latin1(`${data.length.toString(16)}\r\n`);
  out.bytes(data);
  out.latin1("\r\n");
}

/** Writes the last chunk of a chunked body, with no trailers. */
export function writeLastChunk(out: OutputBuffer): void {
  out.latin1("0\r\n\r\n");
}

/**
 * Writes a complete plain-text response that the server itself produces
 * (errors, timeouts), always with `Connection: close`; to a HEAD request
 * (`headRequest`), without the body its `Content-Length` announces.
 */
export function writeSimpleResponse(
  out: OutputBuffer,
  status: string,
  body: string,
  options: HeadOptions,
  extraHeaders: readonly HeaderField[] = [],
  headRequest = false,
): void {
  writeHead(
    out,
    "HTTP/1.1",
    status,
    [["Content-Type", "text/plain; charset=utf-8"], ...extraHeaders],
    {
      framing: "length",
      length: body.length,
      keepAlive: false,
      addContentLength: body.length,
      dropContentLength: false,
    },
    options,
  );
  // To HEAD, the head says how long the body would be, and none follows.
  if (!headRequest) out.latin1(body);
}
