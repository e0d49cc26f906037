/**
 * A sans-IO HTTP/1.1 request parser: bytes in, events out, no sockets.
 *
 * Theory of operation. A {@linkcode RequestParser} owns a receive buffer and
 * one request cycle at a time. The caller (the server's connection loop, or a
 * test, or a fuzzer) hands it whatever bytes arrived with
 * {@linkcode RequestParser.receive}, the end of the stream with
 * {@linkcode RequestParser.receiveEof}, and pulls events with
 * {@linkcode RequestParser.next}:
 *
 * - a {@linkcode RequestHead} once the whole head is in and valid;
 * - {@linkcode DataEvent}s carrying the body, decoded from `Content-Length` or
 *   `chunked` framing;
 * - one {@linkcode EndEvent} at the end of the body (with any trailers);
 * - then {@linkcode PAUSED} until the caller has answered the request and
 *   calls {@linkcode RequestParser.startNextCycle}, so a pipelined request is
 *   never read while the previous one is in flight;
 * - {@linkcode NEED_DATA} whenever it cannot go on without more bytes;
 * - {@linkcode CLOSED} once the peer ended the stream between requests.
 *
 * Anything that breaks RFC 9112 raises a {@linkcode RemoteProtocolError}
 * whose `status` is the answer (400, 413, 414, 431, 501, 505). The parser never
 * guesses: ambiguous framing is an error, not a repair. After an error every
 * later `next()` raises the same error again.
 *
 * Every step only looks at bytes it has not looked at before, and every
 * buffer it keeps is bounded by a limit, so a hostile peer cannot make it do
 * quadratic work or hold unbounded memory.
 *
 * @module
 */

import { LocalProtocolError, RemoteProtocolError } from "./errors.ts";
import {
  asciiLower,
  equalsLower,
  FIELD_VALUE_CHAR,
  HEX_VALUE,
  HOST_CHAR,
  latin1,
  TARGET_CHAR,
  TCHAR,
} from "./grammar.ts";

/** A header or trailer field as received: the name as the peer spelled it, and the value without surrounding whitespace. */
export type HeaderField = [name: string, value: string];

/** The limits a parser enforces, each answered by its own status code. */
export interface ParserLimits {
  /** Longest request line, CRLF excluded; longer is 414. */
  maxRequestLineBytes: number;
  /** Largest header section (field lines and the blank line); larger is 431. Also bounds the trailer section. */
  maxHeaderBytes: number;
  /** Most header fields; more is 431. Also bounds the number of trailers. */
  maxHeaders: number;
  /** Largest body; a larger `Content-Length` or chunked total is 413. */
  maxBodyBytes: number;
}

/** The default limits: the same as the server's defaults. */
export const DEFAULT_PARSER_LIMITS: Readonly<ParserLimits> = {
  maxRequestLineBytes: 8 * 1024,
  maxHeaderBytes: 16 * 1024,
  maxHeaders: 100,
  maxBodyBytes: 1024 * 1024 * 1024,
};

/**
 * Longest chunk-size line (size, extensions, CRLF excluded). Extensions carry
 * nothing this server uses; the bound stops a peer from streaming an endless
 * one. hyper uses 16 KiB for all extensions of a message; one line of 4 KiB
 * is plenty for any real client.
 */
const MAX_CHUNK_LINE_BYTES = 4096;

/** Empty lines tolerated before a request line (RFC 9112 section 2.2 says to ignore at least one). */
const MAX_LEADING_EMPTY_LINES = 8;

/** A complete, validated request head. */
export interface RequestHead {
  readonly type: "head";
  /** The method token, case preserved (`"GET"`). */
  readonly method: string;
  /** The request-target exactly as received (latin-1 native string). */
  readonly target: string;
  /** The path part of the target, still percent-encoded: `"/a%20b"`; `"*"` for `OPTIONS *`. */
  readonly path: string;
  /** The query part of the target without the `?`, still encoded; `""` when there is none. */
  readonly query: string;
  /** The authority from an absolute-form target, else the `Host` value, else `null`. */
  readonly authority: string | null;
  /**
   * `"HTTP/1.1"` or `"HTTP/1.0"`. A later HTTP/1 minor version (`HTTP/1.2`)
   * is read as HTTP/1.1 (RFC 9110 section 2.5); other major versions are
   * answered with 505 before a head is produced.
   */
  readonly version: "HTTP/1.1" | "HTTP/1.0";
  /**
   * Every header field in order of arrival; but with an absolute-form
   * target, the `Host` field's value is the target's authority, which RFC
   * 9112 section 3.2.2 says to use instead of it.
   */
  readonly headers: readonly HeaderField[];
  /** The body length from `Content-Length` (0 when there is neither it nor chunked), `null` for chunked. */
  readonly contentLength: number | null;
  /** Whether the body is chunked. */
  readonly chunked: boolean;
  /** Whether the peer wants the connection kept open after this request. */
  readonly keepAlive: boolean;
  /** Whether the peer sent `Expect: 100-continue` for a non-empty body on HTTP/1.1. */
  readonly expectContinue: boolean;
}

/**
 * A piece of the request body. `data` is a view into the parser's buffer and
 * is valid only until the next call of `receive()`; copy it to keep it.
 */
export interface DataEvent {
  readonly type: "data";
  readonly data: Uint8Array;
}

/** The end of the request body, with the trailer fields of a chunked body. */
export interface EndEvent {
  readonly type: "end";
  readonly trailers: readonly HeaderField[];
}

/** The parser needs more bytes (or the end of the stream) to go on. */
export const NEED_DATA: { readonly type: "need-data" } = Object.freeze({ type: "need-data" });
/** The request is complete; call `startNextCycle()` once it is answered. */
export const PAUSED: { readonly type: "paused" } = Object.freeze({ type: "paused" });
/** The peer ended the stream cleanly between requests. */
export const CLOSED: { readonly type: "closed" } = Object.freeze({ type: "closed" });

/** Everything {@linkcode RequestParser.next} can return. */
export type ParserEvent =
  | RequestHead
  | DataEvent
  | EndEvent
  | typeof NEED_DATA
  | typeof PAUSED
  | typeof CLOSED;

/** Where the parser is in the request cycle. */
export type ParserState =
  | "head"
  | "body-length"
  | "chunk-size"
  | "chunk-data"
  | "chunk-data-end"
  | "trailers"
  | "end"
  | "done"
  | "closed"
  | "error";

const CR = 0x0d;
const LF = 0x0a;
const SP = 0x20;
const HTAB = 0x09;
const COLON = 0x3a;

/** Fields that must not come as trailers (RFC 9110 section 6.5.1): dropped if they do. */
export const FORBIDDEN_TRAILERS: ReadonlySet<string> = new Set([
  "content-length",
  "transfer-encoding",
  "host",
  "content-type",
  "content-encoding",
  "content-range",
  "trailer",
  "connection",
  "te",
  "expect",
  "authorization",
  "cookie",
  "set-cookie",
]);

const EMPTY_FIELDS: readonly HeaderField[] = Object.freeze([]);
const EMPTY_BUFFER = new Uint8Array(0);
/** The receive buffer's size once something arrives; it grows as needed. */
const INITIAL_BUFFER_BYTES = 2048;
const END_WITHOUT_TRAILERS: EndEvent = Object.freeze({ type: "end", trailers: EMPTY_FIELDS });

/** What the header lines of one head said about framing and routing. */
/** A request line's three parts, as sent (native strings). */
export interface RequestLine {
  readonly method: string;
  readonly target: string;
  readonly version: "HTTP/1.1" | "HTTP/1.0";
}

interface PendingHead {
  method: string;
  target: string;
  version: "HTTP/1.1" | "HTTP/1.0";
  headers: HeaderField[];
  headerBytes: number;
  contentLength: string | null;
  /** Whether a `Content-Type` field came. */
  contentType: boolean;
  transferEncoding: string | null;
  host: string | null;
  hostCount: number;
  /** Where the `Host` field is in `headers`. */
  hostIndex: number;
  connection: string | null;
  expect: string | null;
}

// What `#findLine` throws for a line over its limit (made once, not per call).
const requestLineTooLong = () => new RemoteProtocolError("Request line is too long", 414);
const headerSectionTooLarge = () =>
  new RemoteProtocolError("Request header section is too large", 431);
const chunkLineTooLong = () => new RemoteProtocolError("Chunk size line is too long");
const trailerSectionTooLarge = () => new RemoteProtocolError("Trailer section is too large", 431);

/**
 * Parses a stream of HTTP/1.1 requests from bytes. See the module
 * documentation for the protocol between the parser and its caller.
 *
 * @example Parse one request
 * ```ts
 * import { RequestParser } from "./parser.ts";
 * const parser = new RequestParser();
 * parser.receive(new TextEncoder().encode("GET /hi?x=1 HTTP/1.1\r\nHost: a\r\n\r\n"));
 * const head = parser.next();
 * if (head.type !== "head" || head.path !== "/hi" || head.query !== "x=1") throw new Error();
 * if (parser.next().type !== "end" || parser.next().type !== "paused") throw new Error();
 * ```
 */
export class RequestParser {
  readonly #limits: ParserLimits;
  #buf: Uint8Array;
  #start = 0;
  #end = 0;
  #eof = false;
  #state: ParserState = "head";
  #error: RemoteProtocolError | null = null;

  // Head in progress.
  #pending: PendingHead | null = null;
  #requestLine: RequestLine | null = null;
  #emptyLines = 0;
  /** The last `Host` value found valid. */
  #validHost: string | null = null;
  /** Offset from `#start` up to which the current line was already searched for LF. */
  #scanned = 0;

  // Body in progress.
  #remaining = 0;
  #bodyBytes = 0;
  #trailers: HeaderField[] | null = null;
  #trailerBytes = 0;

  /** @param limits Limits to enforce; missing ones take {@linkcode DEFAULT_PARSER_LIMITS}. */
  constructor(limits: Partial<ParserLimits> = {}) {
    this.#limits = { ...DEFAULT_PARSER_LIMITS, ...limits };
    this.#buf = EMPTY_BUFFER;
  }

  /** Where the parser is in the request cycle. */
  get state(): ParserState {
    return this.#state;
  }

  /** How many received bytes are not consumed yet (e.g. a pipelined request waiting). */
  get bufferedBytes(): number {
    return this.#end - this.#start;
  }

  /**
   * Body bytes not yet decoded in the current request: exact for a
   * `Content-Length` body, 0 once the body has ended, `Infinity` for a chunked
   * body still under way (its size is unknown).
   */
  get bodyRemaining(): number {
    const state = this.#state;
    if (state === "body-length") return this.#remaining;
    if (
      state === "chunk-size" || state === "chunk-data" || state === "chunk-data-end" ||
      state === "trailers"
    ) {
      return Infinity;
    }
    return 0;
  }

  /**
   * Whether part of a request head has arrived but not all of it: the peer
   * is sending a request (as opposed to idling between requests).
   */
  get headStarted(): boolean {
    return this.#state === "head" &&
      (this.#pending !== null || this.#emptyLines > 0 || this.#start < this.#end);
  }

  /**
   * The request line of the request being parsed, once it is complete:
   * what an access log records even when the rest of the head is refused
   * (a `Content-Length` over the limit, a bad field). `null` before it is
   * complete; cleared by `startNextCycle()`.
   */
  get requestLine(): RequestLine | null {
    return this.#requestLine;
  }

  /** Whether the end of the stream was received. */
  get eof(): boolean {
    return this.#eof;
  }

  /**
   * Appends received bytes. The bytes are copied, so the caller may reuse its
   * buffer at once. Bytes after the end of the stream are a caller bug.
   */
  receive(data: Uint8Array): void {
    const n = data.length;
    if (n === 0) {
      if (this.#eof) throw new LocalProtocolError("Cannot receive data: the stream has ended");
      return;
    }
    this.space(n).set(data);
    this.#end += n;
  }

  /**
   * Returns free space at the end of the receive buffer, at least `min`
   * bytes, so that the caller can read from its socket straight into the
   * parser (no copy); then it calls {@linkcode RequestParser.commit} with
   * the number of bytes it wrote. Makes room by compacting or growing the
   * buffer, so earlier data views become invalid, as with `receive()`.
   *
   * @example Read into the parser
   * ```ts ignore
   * const n = await conn.read(parser.space(2048));
   * if (n === null) parser.receiveEof(); else parser.commit(n);
   * ```
   */
  space(min: number): Uint8Array {
    if (this.#eof) throw new LocalProtocolError("Cannot receive data: the stream has ended");
    this.#makeRoom(min);
    // An empty buffer is handed out whole, without making a view of it.
    return this.#end === 0 ? this.#buf : this.#buf.subarray(this.#end);
  }

  /**
   * How many bytes of the current request body the caller may read from its
   * socket itself, past the parser: the rest of a `Content-Length` body
   * when none of it is buffered here, else 0 (a chunked body always needs
   * the parser, for its framing). The caller reads at most this many and
   * reports them with {@linkcode RequestParser.receiveBody}; a body then
   * goes from the socket to its reader with no copy in between.
   */
  get directBodyBytes(): number {
    return this.#state === "body-length" && this.#start === this.#end ? this.#remaining : 0;
  }

  /**
   * Records that the caller read `n` bytes of the current `Content-Length`
   * body itself (see {@linkcode RequestParser.directBodyBytes}).
   */
  receiveBody(n: number): void {
    if (!(n >= 0) || n > this.directBodyBytes) {
      throw new LocalProtocolError(
        `Cannot receive ${n} body bytes directly: only ${this.directBodyBytes} may be`,
      );
    }
    this.#remaining -= n;
    if (this.#remaining === 0) this.#state = "end";
  }

  /** Records that `n` bytes were written into the last {@linkcode RequestParser.space}. */
  commit(n: number): void {
    if (!(n >= 0) || this.#end + n > this.#buf.length) {
      throw new LocalProtocolError(`Cannot commit ${n} bytes: more than the space given`);
    }
    this.#end += n;
  }

  #makeRoom(n: number): void {
    if (this.#start === this.#end) {
      this.#start = this.#end = 0;
      // A buffer that grew for a large head or a burst goes back to the
      // small size once it is empty, so idle connections stay cheap.
      if (this.#buf.length > INITIAL_BUFFER_BYTES && n <= INITIAL_BUFFER_BYTES) {
        this.#buf = new Uint8Array(INITIAL_BUFFER_BYTES);
      }
    }
    if (this.#end + n > this.#buf.length) {
      const live = this.#end - this.#start;
      if (live + n <= this.#buf.length) {
        this.#buf.copyWithin(0, this.#start, this.#end);
      } else {
        const grown = new Uint8Array(
          Math.max(INITIAL_BUFFER_BYTES, this.#buf.length * 2, live + n),
        );
        grown.set(this.#buf.subarray(this.#start, this.#end));
        this.#buf = grown;
      }
      this.#start = 0;
      this.#end = live;
    }
  }

  /** Records that the peer closed its side of the stream (a read returned EOF). */
  receiveEof(): void {
    this.#eof = true;
  }

  /**
   * Returns the next event. Throws a {@linkcode RemoteProtocolError} when the
   * bytes break HTTP/1.1, and the same error on every call after that.
   */
  next(): ParserEvent {
    if (this.#error !== null) throw this.#error;
    try {
      return this.#next();
    } catch (error) {
      if (error instanceof RemoteProtocolError) {
        this.#error = error;
        this.#state = "error";
      }
      throw error;
    }
  }

  /**
   * Starts reading the next request, once the current one is answered. Legal
   * only after the request's end event (when `next()` would return
   * {@linkcode PAUSED}).
   */
  startNextCycle(): void {
    if (this.#state !== "done") {
      throw new LocalProtocolError(`Cannot start the next cycle in state "${this.#state}"`);
    }
    this.#state = "head";
    this.#emptyLines = 0;
    this.#requestLine = null;
    this.#scanned = 0;
  }

  #next(): ParserEvent {
    switch (this.#state) {
      case "head":
        return this.#readHead();
      case "body-length":
        return this.#readLengthBody();
      case "chunk-size":
      case "chunk-data":
      case "chunk-data-end":
      case "trailers":
        return this.#readChunked();
      case "end":
        this.#state = "done";
        return END_WITHOUT_TRAILERS;
      case "done":
        return PAUSED;
      case "closed":
        return CLOSED;
      case "error":
        throw this.#error;
    }
  }

  /**
   * Finds the end of the line starting at `#start`: returns the index of its
   * LF, or -1 when the line is not complete yet. Throws `tooLong` when the
   * line's content (CRLF excluded) is longer than `limit`, and 400 on a bare LF.
   */
  #findLine(limit: number, tooLong: () => RemoteProtocolError): number {
    const buf = this.#buf;
    const start = this.#start;
    const end = this.#end;
    for (let i = start + this.#scanned; i < end; i++) {
      if (buf[i] === LF) {
        // The length check comes first so that the answer does not depend
        // on how the bytes were split (an unfinished line is checked below).
        const contentEnd = i > start && buf[i - 1] === CR ? i - 1 : i;
        if (contentEnd - start > limit) throw tooLong();
        if (contentEnd === i) {
          throw new RemoteProtocolError("Invalid line ending: LF without CR");
        }
        this.#scanned = 0;
        return i;
      }
    }
    this.#scanned = end - start;
    // Content so far, plus a possible CR that ends it.
    if (end - start > limit + 1) throw tooLong();
    return -1;
  }

  #readHead(): ParserEvent {
    for (;;) {
      const pending = this.#pending;
      if (pending === null) {
        if (this.#start === this.#end) return this.#eof ? this.#closeCleanly() : NEED_DATA;
        // Reject a stream that cannot be HTTP/1.x at its first byte (a TLS
        // handshake or binary garbage) instead of waiting for a line end.
        const first = this.#buf[this.#start]!;
        if (TCHAR[first] === 0 && first !== CR) {
          throw new RemoteProtocolError("Invalid request line: it does not start with a method");
        }
        const lf = this.#findLine(
          this.#limits.maxRequestLineBytes,
          requestLineTooLong,
        );
        if (lf < 0) return this.#needMore("request line");
        const lineEnd = lf - 1;
        if (lineEnd === this.#start) {
          if (++this.#emptyLines > MAX_LEADING_EMPTY_LINES) {
            throw new RemoteProtocolError("Too many empty lines before the request line");
          }
          this.#start = lf + 1;
          continue;
        }
        const pending = this.#parseRequestLine(this.#start, lineEnd);
        this.#pending = pending;
        this.#requestLine = pending;
        this.#start = lf + 1;
        continue;
      }
      const remainingBudget = this.#limits.maxHeaderBytes - pending.headerBytes;
      const lf = this.#findLine(
        remainingBudget - 2,
        headerSectionTooLarge,
      );
      if (lf < 0) return this.#needMore("header section");
      const lineEnd = lf - 1;
      pending.headerBytes += lf + 1 - this.#start;
      if (lineEnd === this.#start) {
        this.#start = lf + 1;
        this.#pending = null;
        return this.#finishHead(pending);
      }
      this.#parseHeaderLine(pending, this.#start, lineEnd);
      this.#start = lf + 1;
    }
  }

  #needMore(what: string): ParserEvent {
    if (this.#eof) throw new RemoteProtocolError(`Connection closed inside the ${what}`);
    return NEED_DATA;
  }

  #closeCleanly(): ParserEvent {
    this.#state = "closed";
    return CLOSED;
  }

  #parseRequestLine(start: number, end: number): PendingHead {
    const buf = this.#buf;
    let i = start;
    let hash = 0;
    while (i < end && TCHAR[buf[i]!] === 1) hash = (hash * 31 + buf[i++]!) | 0;
    if (i === end || buf[i] !== SP || i === start) {
      throw new RemoteProtocolError("Invalid request line: the method is not a token");
    }
    const method = intern(buf, start, i, hash);
    const targetStart = ++i;
    while (i < end && TARGET_CHAR[buf[i]!] === 1) i++;
    if (i === targetStart || i === end || buf[i] !== SP) {
      throw new RemoteProtocolError("Invalid request line: malformed request-target");
    }
    const target = latin1(buf, targetStart, i);
    i++;
    // HTTP-version = "HTTP/" DIGIT "." DIGIT
    if (
      end - i !== 8 || buf[i] !== 0x48 || buf[i + 1] !== 0x54 || buf[i + 2] !== 0x54 ||
      buf[i + 3] !== 0x50 || buf[i + 4] !== 0x2f || buf[i + 6] !== 0x2e ||
      !isDigit(buf[i + 5]!) || !isDigit(buf[i + 7]!)
    ) {
      throw new RemoteProtocolError("Invalid request line: malformed HTTP version");
    }
    const major = buf[i + 5]! - 0x30;
    const minor = buf[i + 7]! - 0x30;
    if (major !== 1) {
      throw new RemoteProtocolError(`HTTP version ${major}.${minor} is not supported`, 505);
    }
    return {
      method,
      target,
      // RFC 9110 section 2.5: a later minor version of HTTP/1 is served as
      // the highest this server speaks, HTTP/1.1.
      version: minor === 0 ? "HTTP/1.0" : "HTTP/1.1",
      headers: [],
      headerBytes: 0,
      contentLength: null,
      contentType: false,
      transferEncoding: null,
      host: null,
      hostCount: 0,
      hostIndex: -1,
      connection: null,
      expect: null,
    };
  }

  #parseField(start: number, end: number): HeaderField {
    const buf = this.#buf;
    const first = buf[start]!;
    if (first === SP || first === HTAB) {
      throw new RemoteProtocolError("Obsolete line folding in a header field is not allowed");
    }
    let i = start;
    let hash = 0;
    while (i < end && TCHAR[buf[i]!] === 1) hash = (hash * 31 + buf[i++]!) | 0;
    if (i === end || buf[i] !== COLON) {
      throw new RemoteProtocolError(
        i < end && (buf[i] === SP || buf[i] === HTAB)
          ? "Whitespace between a header name and the colon is not allowed"
          : "Invalid header field: the name is not a token",
      );
    }
    if (i === start) throw new RemoteProtocolError("Invalid header field: the name is empty");
    const name = intern(buf, start, i, hash);
    const vStart = skipWhitespace(buf, i + 1, end);
    let vEnd = end;
    while (vEnd > vStart && (buf[vEnd - 1] === SP || buf[vEnd - 1] === HTAB)) vEnd--;
    hash = 0;
    for (let j = vStart; j < vEnd; j++) {
      const b = buf[j]!;
      if (FIELD_VALUE_CHAR[b] === 0) {
        throw new RemoteProtocolError(
          `Invalid header field "${name}": the value contains a control character`,
        );
      }
      hash = (hash * 31 + b) | 0;
    }
    const value = vEnd - vStart <= MAX_INTERNED_LENGTH
      ? intern(buf, vStart, vEnd, hash)
      : latin1(buf, vStart, vEnd);
    return [name, value];
  }

  #parseHeaderLine(pending: PendingHead, start: number, end: number): void {
    if (pending.headers.length >= this.#limits.maxHeaders) {
      throw new RemoteProtocolError("Too many header fields", 431);
    }
    const field = this.#parseField(start, end);
    pending.headers.push(field);
    const name = field[0];
    // Only a handful of fields steer the protocol; test the length first so
    // that most names are never lower-cased.
    switch (name.length) {
      case 4:
        if (equalsLower(name, "host")) {
          pending.hostCount++;
          pending.host = field[1];
          pending.hostIndex = pending.headers.length - 1;
        }
        break;
      case 6:
        if (equalsLower(name, "expect")) pending.expect = field[1];
        break;
      case 10:
        if (equalsLower(name, "connection")) {
          pending.connection = pending.connection === null
            ? field[1]
            : `${pending.connection}, ${field[1]}`;
        }
        break;
      case 12:
        // A field that is not a list must come once (RFC 9110 section 5.3);
        // two would reach the application joined as "a, b", which is
        // neither. (Host is checked once the head is complete.)
        if (equalsLower(name, "content-type")) {
          if (pending.contentType) throw new RemoteProtocolError("Duplicate Content-Type header");
          pending.contentType = true;
        }
        break;
      case 14:
        if (equalsLower(name, "content-length")) {
          if (pending.contentLength !== null) {
            throw new RemoteProtocolError("Duplicate Content-Length header");
          }
          pending.contentLength = field[1];
        }
        break;
      case 17:
        if (equalsLower(name, "transfer-encoding")) {
          pending.transferEncoding = pending.transferEncoding === null
            ? field[1]
            : `${pending.transferEncoding}, ${field[1]}`;
        }
        break;
    }
  }

  #finishHead(p: PendingHead): RequestHead {
    // Host (RFC 9112 section 3.2): exactly one on HTTP/1.1, at most one ever.
    if (p.hostCount > 1) throw new RemoteProtocolError("Duplicate Host header");
    if (p.hostCount === 0 && p.version === "HTTP/1.1") {
      throw new RemoteProtocolError("Missing Host header");
    }
    // Clients repeat their Host on every request of a connection: validate a
    // value once.
    if (p.host !== null && p.host !== this.#validHost) {
      if (!isValidHost(p.host, true)) throw new RemoteProtocolError("Invalid Host header");
      this.#validHost = p.host;
    }

    // Target forms (RFC 9112 section 3.2).
    let path: string;
    let query = "";
    let authority = p.host;
    const target = p.target;
    const first = target.charCodeAt(0);
    if (p.method === "CONNECT") {
      throw new RemoteProtocolError("The CONNECT method is not supported", 501);
    } else if (first === 0x2f /* "/" */) {
      const q = target.indexOf("?");
      path = q < 0 ? target : target.slice(0, q);
      if (q >= 0) query = target.slice(q + 1);
    } else if (target === "*") {
      if (p.method !== "OPTIONS") {
        throw new RemoteProtocolError("The asterisk-form target is only allowed with OPTIONS");
      }
      path = "*";
    } else {
      const absolute = parseAbsoluteForm(target);
      if (absolute === null) {
        throw new RemoteProtocolError("Invalid request-target");
      }
      // RFC 9112 section 3.2.2: an origin server MUST ignore the Host field
      // and use the target's authority. (Host must still be there, once and
      // valid, as checked above.) The field then carries the authority, so
      // that everything downstream sees the one host the request is for.
      authority = absolute[0];
      if (p.hostIndex >= 0) p.headers[p.hostIndex] = [p.headers[p.hostIndex]![0], authority];
      path = absolute[1];
      query = absolute[2];
    }

    // Framing (RFC 9112 section 6.3).
    let chunked = false;
    let contentLength: number | null = 0;
    if (p.transferEncoding !== null) {
      if (p.contentLength !== null) {
        throw new RemoteProtocolError("Both Content-Length and Transfer-Encoding were sent");
      }
      if (p.version === "HTTP/1.0") {
        throw new RemoteProtocolError("Transfer-Encoding is not allowed on HTTP/1.0");
      }
      checkTransferEncoding(p.transferEncoding);
      chunked = true;
      contentLength = null;
    } else if (p.contentLength !== null) {
      contentLength = parseContentLength(p.contentLength);
      if (contentLength > this.#limits.maxBodyBytes) {
        throw new RemoteProtocolError("Request body is larger than the limit", 413);
      }
    }

    // Persistence (RFC 9112 section 9.3).
    let keepAlive = p.version === "HTTP/1.1";
    if (p.connection !== null) {
      for (const option of p.connection.split(",")) {
        const token = asciiLower(option.trim());
        if (token === "close") {
          keepAlive = false;
          break;
        }
        if (token === "keep-alive" && p.version === "HTTP/1.0") keepAlive = true;
      }
    }

    const expectContinue = p.expect !== null && p.version === "HTTP/1.1" &&
      equalsLower(p.expect, "100-continue") && (chunked || contentLength! > 0);

    this.#bodyBytes = 0;
    if (chunked) {
      this.#state = "chunk-size";
    } else if (contentLength! > 0) {
      this.#state = "body-length";
      this.#remaining = contentLength!;
    } else {
      this.#state = "end";
    }

    return {
      type: "head",
      method: p.method,
      target,
      path,
      query,
      authority,
      version: p.version,
      headers: p.headers,
      contentLength,
      chunked,
      keepAlive,
      expectContinue,
    };
  }

  #takeData(max: number): DataEvent | null {
    const available = this.#end - this.#start;
    if (available === 0) return null;
    const n = available < max ? available : max;
    const data = this.#buf.subarray(this.#start, this.#start + n);
    this.#start += n;
    this.#remaining -= n;
    return { type: "data", data };
  }

  #readLengthBody(): ParserEvent {
    const event = this.#takeData(this.#remaining);
    if (event === null) return this.#needMore("request body");
    if (this.#remaining === 0) this.#state = "end";
    return event;
  }

  #readChunked(): ParserEvent {
    for (;;) {
      switch (this.#state) {
        case "chunk-size": {
          const lf = this.#findLine(
            MAX_CHUNK_LINE_BYTES,
            chunkLineTooLong,
          );
          if (lf < 0) return this.#needMore("chunked body");
          const size = this.#parseChunkSize(this.#start, lf - 1);
          this.#start = lf + 1;
          if (size === 0) {
            this.#state = "trailers";
            this.#trailers = null;
            this.#trailerBytes = 0;
            continue;
          }
          this.#bodyBytes += size;
          if (this.#bodyBytes > this.#limits.maxBodyBytes) {
            throw new RemoteProtocolError("Request body is larger than the limit", 413);
          }
          this.#remaining = size;
          this.#state = "chunk-data";
          continue;
        }
        case "chunk-data": {
          const data = this.#takeChunks();
          if (data === null) return this.#needMore("chunked body");
          if (this.#remaining === 0) this.#state = "chunk-data-end";
          return { type: "data", data };
        }
        case "chunk-data-end": {
          if (this.#end - this.#start < 2) {
            if (this.#end - this.#start === 1 && this.#buf[this.#start] !== CR) {
              throw new RemoteProtocolError("Chunk data is not followed by CRLF");
            }
            return this.#needMore("chunked body");
          }
          if (this.#buf[this.#start] !== CR || this.#buf[this.#start + 1] !== LF) {
            throw new RemoteProtocolError("Chunk data is not followed by CRLF");
          }
          this.#start += 2;
          this.#state = "chunk-size";
          continue;
        }
        case "trailers": {
          const lf = this.#findLine(
            this.#limits.maxHeaderBytes - this.#trailerBytes - 2,
            trailerSectionTooLarge,
          );
          if (lf < 0) return this.#needMore("trailer section");
          this.#trailerBytes += lf + 1 - this.#start;
          if (lf - 1 === this.#start) {
            this.#start = lf + 1;
            this.#state = "done";
            const trailers = this.#trailers;
            this.#trailers = null;
            return trailers === null ? END_WITHOUT_TRAILERS : { type: "end", trailers };
          }
          const field = this.#parseField(this.#start, lf - 1);
          this.#start = lf + 1;
          const trailers = this.#trailers ??= [];
          if (trailers.length >= this.#limits.maxHeaders) {
            throw new RemoteProtocolError("Too many trailer fields", 431);
          }
          if (!FORBIDDEN_TRAILERS.has(asciiLower(field[0]))) trailers.push(field);
          continue;
        }
        default:
          throw new LocalProtocolError(`Unexpected parser state "${this.#state}"`);
      }
    }
  }

  /**
   * The data of the chunk in progress, and of the chunks after it whose
   * framing is wholly buffered, as one piece: each next chunk's data is
   * moved down over the framing before it (consumed bytes, never handed
   * out), so that a body of many small chunks becomes one event per read,
   * not one per chunk. It never throws: it stops before anything the
   * general path must judge (a last chunk, an extension, an incomplete or
   * invalid line, a body over the limit), which then comes after the data
   * taken so far. `null` when no data is buffered.
   */
  #takeChunks(): Uint8Array | null {
    const buf = this.#buf;
    const end = this.#end;
    const dataStart = this.#start;
    let dataEnd = dataStart;
    for (;;) {
      const start = this.#start;
      const n = end - start < this.#remaining ? end - start : this.#remaining;
      if (dataEnd !== start) {
        if (n < 16) {
          for (let i = 0; i < n; i++) buf[dataEnd + i] = buf[start + i]!;
        } else {
          buf.copyWithin(dataEnd, start, start + n);
        }
      }
      dataEnd += n;
      this.#start = start + n;
      this.#remaining -= n;
      if (this.#remaining > 0) break;
      // The chunk is complete: is the next one's size line here, after CRLF?
      const line = this.#start + 2;
      if (line >= end || buf[line - 2] !== CR || buf[line - 1] !== LF) break;
      // Only a plain hex size is taken here, up to 13 digits (exact in a
      // number) and within the body limit; anything else (an extension, a
      // bad byte) is left for the general path.
      const limit = end < line + 13 ? end : line + 13;
      let size = 0;
      let i = line;
      for (let v; i < limit && (v = HEX_VALUE[buf[i]!]!) >= 0; i++) size = size * 16 + v;
      if (i === line || i + 1 >= end || buf[i] !== CR || buf[i + 1] !== LF) break;
      if (size === 0 || this.#bodyBytes + size > this.#limits.maxBodyBytes) break;
      this.#bodyBytes += size;
      this.#start = i + 2;
      this.#remaining = size;
    }
    return dataEnd === dataStart ? null : buf.subarray(dataStart, dataEnd);
  }

  /** `chunk-size [ chunk-ext ]`, where `chunk-ext = *( BWS ";" BWS name [ BWS "=" BWS value ] )`. */
  #parseChunkSize(start: number, end: number): number {
    const buf = this.#buf;
    let i = start;
    let size = 0;
    let digits = 0;
    while (i < end && HEX_VALUE[buf[i]!]! >= 0) {
      // 13 significant hex digits stay exact in a number; leading zeros are free.
      if (size > 0 || buf[i] !== 0x30) digits++;
      if (digits > 13) throw new RemoteProtocolError("Chunk size is too large");
      size = size * 16 + HEX_VALUE[buf[i]!]!;
      i++;
    }
    if (i === start) throw new RemoteProtocolError("Invalid chunk size");
    // Extensions are ignored, but must follow their grammar (RFC 9112
    // section 7.1.1): a peer in front of us that reads an unterminated quote
    // differently would frame the body differently. Whitespace (BWS) comes
    // only before a ";", "=" or value, never at the end of the line.
    const sizeEnd = i;
    while (i < end) {
      const semicolon = skipWhitespace(buf, i, end);
      if (semicolon === end) {
        throw new RemoteProtocolError("Whitespace at the end of a chunk size line");
      }
      if (buf[semicolon] !== SEMICOLON) {
        throw new RemoteProtocolError(
          i === sizeEnd ? "Invalid chunk size" : "Invalid chunk extension",
        );
      }
      i = skipToken(buf, skipWhitespace(buf, semicolon + 1, end), end);
      const equals = skipWhitespace(buf, i, end);
      if (equals < end && buf[equals] === EQUALS) {
        i = skipWhitespace(buf, equals + 1, end);
        i = buf[i] === DQUOTE ? skipQuotedString(buf, i, end) : skipToken(buf, i, end);
      }
    }
    return size;
  }
}

/**
 * Strings seen before (methods, header names, short header values), in a
 * direct-mapped table indexed by a hash of their bytes. Clients repeat the
 * same few on every request (`GET`, `Host: example.com`, their
 * `User-Agent`); handing out the same string object saves making it again,
 * and lets every later comparison or lookup (the Host check, environ keys)
 * use pointer equality and the string's cached hash. A fixed size: hostile
 * variety only overwrites slots.
 */
const INTERN_SLOTS = 1024;
const interned: (string | undefined)[] = new Array(INTERN_SLOTS).fill(undefined);
/** Longer header values are decoded each time. */
const MAX_INTERNED_LENGTH = 128;

function intern(buf: Uint8Array, start: number, end: number, hash: number): string {
  const slot = hash & (INTERN_SLOTS - 1);
  const known = interned[slot];
  if (known !== undefined && known.length === end - start) {
    let i = start;
    while (i < end && known.charCodeAt(i - start) === buf[i]) i++;
    if (i === end) return known;
  }
  const text = latin1(buf, start, end);
  interned[slot] = text;
  return text;
}

const SEMICOLON = 0x3b;
const EQUALS = 0x3d;
const DQUOTE = 0x22;
const BACKSLASH = 0x5c;

/** `BWS`: skips spaces and tabs. */
function skipWhitespace(buf: Uint8Array, i: number, end: number): number {
  while (i < end && (buf[i] === SP || buf[i] === HTAB)) i++;
  return i;
}

/** Skips a non-empty `token`, or throws. */
function skipToken(buf: Uint8Array, i: number, end: number): number {
  const start = i;
  while (i < end && TCHAR[buf[i]!] === 1) i++;
  if (i === start) throw new RemoteProtocolError("Invalid chunk extension");
  return i;
}

/**
 * Skips `quoted-string = DQUOTE *( qdtext / quoted-pair ) DQUOTE` (RFC 9110
 * section 5.6.4) starting at the opening quote, or throws if it does not end
 * on this line or holds a control byte.
 */
function skipQuotedString(buf: Uint8Array, i: number, end: number): number {
  for (i++; i < end; i++) {
    const b = buf[i]!;
    if (b === DQUOTE) return i + 1;
    if (b === BACKSLASH) i++;
    if (i >= end || FIELD_VALUE_CHAR[buf[i]!] === 0) break;
  }
  throw new RemoteProtocolError("Invalid chunk extension: unterminated quoted string");
}

function isDigit(b: number): boolean {
  return b >= 0x30 && b <= 0x39;
}

/** `Content-Length = 1*DIGIT`, at most 15 digits so the value is exact in a number. */
function parseContentLength(value: string): number {
  if (value.length === 0 || value.length > 15) {
    throw new RemoteProtocolError("Invalid Content-Length header");
  }
  let n = 0;
  for (let i = 0; i < value.length; i++) {
    const c = value.charCodeAt(i);
    if (!isDigit(c)) throw new RemoteProtocolError("Invalid Content-Length header");
    n = n * 10 + (c - 0x30);
  }
  return n;
}

/**
 * Accepts exactly one coding, a final `chunked`. RFC 9112 section 6.3: a
 * request whose final coding is not chunked cannot be framed (400); a chunked
 * body under another coding is framed but would need decoding this server
 * does not do (501).
 */
function checkTransferEncoding(value: string): void {
  const codings = value.split(",").map((c) => asciiLower(c.trim())).filter((c) => c !== "");
  const chunkedCount = codings.filter((c) => c === "chunked").length;
  if (chunkedCount !== 1 || codings[codings.length - 1] !== "chunked") {
    throw new RemoteProtocolError(
      `Invalid Transfer-Encoding "${value}": chunked must come once, last`,
    );
  }
  if (codings.length !== 1) {
    throw new RemoteProtocolError(`Unsupported Transfer-Encoding "${value}"`, 501);
  }
}

/** `uri-host [ ":" port ]`; an empty value is allowed only for a `Host` header. */
function isValidHost(host: string, allowEmpty: boolean): boolean {
  if (host.length === 0) return allowEmpty;
  let colon = -1;
  for (let i = 0; i < host.length; i++) {
    const c = host.charCodeAt(i);
    if (c > 0xff || HOST_CHAR[c] === 0) return false;
    if (c === COLON) colon = i;
    if (c === 0x5d /* "]" */) colon = -1;
  }
  if (host.charCodeAt(0) === 0x5b /* "[" */) {
    const close = host.indexOf("]");
    if (close < 0) return false;
    if (close !== host.length - 1 && host.charCodeAt(close + 1) !== COLON) return false;
  } else if (host.includes("[") || host.includes("]")) {
    return false;
  } else if (host.indexOf(":") !== colon) {
    return false; // more than one colon outside an IP literal
  }
  if (colon >= 0) {
    for (let i = colon + 1; i < host.length; i++) {
      if (!isDigit(host.charCodeAt(i))) return false;
    }
  }
  return true;
}

/** Splits `http://authority/path?query` into `[authority, path, query]`, or `null` if it is not one. */
function parseAbsoluteForm(target: string): [string, string, string] | null {
  const sep = target.indexOf("://");
  if (sep < 0) return null;
  const scheme = asciiLower(target.slice(0, sep));
  if (scheme !== "http" && scheme !== "https") return null;
  let i = sep + 3;
  const authorityStart = i;
  while (i < target.length && target[i] !== "/" && target[i] !== "?") i++;
  const authority = target.slice(authorityStart, i);
  if (!isValidHost(authority, false)) return null;
  const rest = target.slice(i);
  const q = rest.indexOf("?");
  const path = q < 0 ? rest : rest.slice(0, q);
  return [authority, path === "" ? "/" : path, q < 0 ? "" : rest.slice(q + 1)];
}
