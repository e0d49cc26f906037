/**
 * One response's rules, whatever carries it (PEP 3333; RFC 9110 and RFC
 * 9112 for the framing). {@linkcode ResponseState} holds them and knows
 * nothing of where bytes go; a {@linkcode ResponseWriter} carries out what
 * it decides. There are two writers: the socket server's, which frames
 * HTTP/1.1 bytes (`h1_response.ts`), and `toFetchHandler`'s, which builds a
 * fetch `Response` (`tooling/fetch.ts`).
 *
 * The rules, in the order a response meets them:
 *
 * 1. `start_response` validates its arguments before it changes anything; a
 *    second call needs `excInfo`, and with `excInfo` after the head was sent
 *    it rethrows `excInfo`.
 * 2. The head is held back until the body yields its first non-empty chunk,
 *    `write()` is called, or the body ends; then the framing is decided once
 *    (`decideFraming`) and the head goes to the writer.
 * 3. Body bytes never exceed an application `Content-Length` (the rest is
 *    dropped and logged); fewer bytes than announced leave the response
 *    incomplete. A response to HEAD, or with a status that has no body,
 *    sends none, and its body is not iterated further.
 * 4. An error before the head was sent becomes a plain 500 (or the status of
 *    a request-body error, such as 413); after it, the response is cut off.
 * 5. The body's `close()` runs on every path; the drivers that iterate the
 *    body call it.
 *
 * @module
 */

import type { Body, Header, StartResponse, Write } from "../types.ts";
import { ProtocolError } from "../_h1/errors.ts";
import { isFieldValue, isToken } from "../_h1/grammar.ts";
import { statusLine } from "../_h1/status.ts";
import { decideFraming, type FramingDecision } from "../_h1/writer.ts";

/** The connection went away while the response was being sent. */
export class ClientDisconnectedError extends Error {
  override readonly name = "ClientDisconnectedError";
}

/** The request facts that shape a response. */
export interface ResponseRequest {
  /** The request method: a response to `HEAD` has no body. */
  readonly method: string;
  /** The request's version: it chooses between chunked and close-delimited framing. */
  readonly version: "HTTP/1.1" | "HTTP/1.0";
}

/** How a response ended, for the access log and the connection loop. */
export interface ResponseOutcome {
  /** The status code sent, or 0 if nothing was sent. */
  readonly status: number;
  /** Body bytes sent. */
  readonly bodyBytes: number;
  /** Whether the connection may serve another request. */
  readonly keepAlive: boolean;
  /** Whether the response was cut off: the connection must be dropped at once. */
  readonly aborted: boolean;
}

/**
 * Hop-by-hop fields belong to the connection, so only the server may set
 * them (PEP 3333, "Other HTTP Features"; RFC 9110 section 7.6.1).
 */
const HOP_BY_HOP = new Set([
  "connection",
  "keep-alive",
  "te",
  "trailer",
  "trailers",
  "transfer-encoding",
  "upgrade",
]);

/** Whether a lower-cased header name is hop-by-hop, which only the server may set. */
export function isHopByHop(lowerName: string): boolean {
  return HOP_BY_HOP.has(lowerName) || lowerName.startsWith("proxy-");
}

/**
 * Validation results of status lines, header names and header values,
 * remembered by string: applications send the same few again and again.
 * Bounded, so hostile variety cannot grow them.
 */
const CACHE_LIMIT = 1000;
const statusCodes = new Map<string, number>();
const nameKinds = new Map<string, number>();
const validValues = new Set<string>();

const NAME_OTHER = 0;
const NAME_CONTENT_LENGTH = 1;
const NAME_SERVER = 2;

/** What a header name is to the server: other, Content-Length or Server; throws if not allowed. */
function nameKind(name: string): number {
  const cached = nameKinds.get(name);
  if (cached !== undefined) return cached;
  if (!isToken(name)) {
    throw new TypeError(`Invalid header name ${JSON.stringify(name)}: it is not a token`);
  }
  const lower = name.toLowerCase();
  if (isHopByHop(lower)) {
    throw new TypeError(`Invalid header "${name}": hop-by-hop headers are set by the server`);
  }
  const kind = lower === "content-length"
    ? NAME_CONTENT_LENGTH
    : lower === "server"
    ? NAME_SERVER
    : NAME_OTHER;
  if (nameKinds.size < CACHE_LIMIT) nameKinds.set(name, kind);
  return kind;
}

function checkValue(name: string, value: unknown): void {
  if (typeof value === "string" && validValues.has(value)) return;
  if (typeof value !== "string" || !isFieldValue(value)) {
    throw new TypeError(
      `Invalid value for header "${name}": expected a latin-1 string without CR, LF or NUL`,
    );
  }
  if (value.length <= 256 && validValues.size < CACHE_LIMIT) validValues.add(value);
}

/**
 * Checks a `start_response` status, `"200 OK"`: three digits (200-999, not a
 * 1xx interim status), a space, an optional reason; latin-1 without control
 * characters. Returns the code; throws a `TypeError` naming the problem.
 */
function parseStatus(status: unknown): number {
  if (typeof status === "string") {
    const cached = statusCodes.get(status);
    if (cached !== undefined) return cached;
  }
  const code = checkStatus(status);
  if (statusCodes.size < CACHE_LIMIT) statusCodes.set(status as string, code);
  return code;
}

function checkStatus(status: unknown): number {
  if (typeof status !== "string") {
    throw new TypeError(`Invalid status: expected a string, got ${typeof status}`);
  }
  const code = status.length >= 4 && status.charCodeAt(3) === 0x20
    ? Number(status.slice(0, 3))
    : NaN;
  if (!Number.isInteger(code) || code < 100 || !/^\d{3}$/.test(status.slice(0, 3))) {
    throw new TypeError(`Invalid status ${JSON.stringify(status)}: expected "NNN Reason"`);
  }
  if (code < 200) {
    throw new TypeError(
      `Invalid status ${JSON.stringify(status)}: a 1xx status is not a final response`,
    );
  }
  if (!isFieldValue(status)) {
    throw new TypeError(
      `Invalid status ${JSON.stringify(status)}: it contains a control or non-latin-1 character`,
    );
  }
  return code;
}

/** What a valid `start_response` call says: its status code and what its headers hold. */
interface CheckedStart {
  readonly code: number;
  /** The application's `Content-Length`, if it set one. */
  readonly contentLength: number | null;
  /** Whether the application set `Server`. */
  readonly hasServer: boolean;
}

/**
 * Checks `start_response` headers: an array of `[name, value]` pairs, names
 * tokens and not hop-by-hop, values latin-1 without CR, LF or NUL, at most
 * one valid `Content-Length`. Throws a `TypeError` naming the problem.
 */
function checkHeaders(code: number, headers: unknown): CheckedStart {
  if (!Array.isArray(headers)) {
    throw new TypeError(`Invalid headers: expected an array of [name, value] pairs`);
  }
  let contentLength: number | null = null;
  let hasServer = false;
  for (const header of headers) {
    if (!Array.isArray(header) || header.length !== 2) {
      throw new TypeError(`Invalid header ${JSON.stringify(header)}: expected [name, value]`);
    }
    const [name, value] = header;
    if (typeof name !== "string") {
      throw new TypeError(`Invalid header name ${JSON.stringify(name)}: it is not a token`);
    }
    const kind = nameKind(name);
    checkValue(name, value);
    if (kind === NAME_CONTENT_LENGTH) {
      if (contentLength !== null || !/^\d{1,15}$/.test(value)) {
        throw new TypeError(`Invalid Content-Length ${JSON.stringify(value)}`);
      }
      contentLength = Number(value);
    } else if (kind === NAME_SERVER) {
      hasServer = true;
    }
  }
  return { code, contentLength, hasServer };
}

/**
 * The rules of one `start_response` call (PEP 3333): a second call needs
 * `excInfo`; with `excInfo` once the head was sent, `excInfo` is rethrown;
 * the status and headers must be valid. Throws before the caller records
 * anything; returns the status code and what the headers say.
 */
function checkStartResponse(
  alreadyCalled: boolean,
  headSent: boolean,
  status: unknown,
  headers: unknown,
  excInfo: unknown,
): CheckedStart {
  if (excInfo !== undefined && excInfo !== null) {
    if (headSent) throw excInfo;
  } else if (alreadyCalled) {
    throw new Error("start_response was called a second time without excInfo");
  }
  return checkHeaders(parseStatus(status), headers);
}

/** A short description of a value's type for error messages: `"null"`, `"Object"`, `"string"`. */
export function describe(value: unknown): string {
  if (value === null) return "null";
  if (typeof value === "object") return value.constructor?.name ?? "object";
  return typeof value;
}

/** Checks that a body chunk is bytes; throws a `TypeError` saying what it is instead. */
function checkChunk(chunk: unknown): Uint8Array {
  if (!(chunk instanceof Uint8Array)) {
    throw new TypeError(
      `Invalid body chunk: expected a Uint8Array, got ${describe(chunk)}` +
        (typeof chunk === "string" ? " (encode strings to bytes)" : ""),
    );
  }
  return chunk;
}

/**
 * Checks that an application's (awaited) result can be a body: an object that
 * is iterable or async iterable, not a string or another primitive. Throws a
 * `TypeError` saying what it is instead; its chunks are checked as they come.
 */
export function checkResult(value: unknown): Body {
  if (typeof value === "string" || value === null || typeof value !== "object") {
    throw new TypeError(
      `Invalid application result: expected an iterable of Uint8Array, got ${describe(value)}` +
        (typeof value === "string" ? " (return [bytes] instead of a string)" : ""),
    );
  }
  if (!(Symbol.iterator in value) && !(Symbol.asyncIterator in value)) {
    throw new TypeError(
      `Invalid application result: ${describe(value)} is neither iterable nor async iterable`,
    );
  }
  return value as Body;
}

/** The status that answers an error before the head went out: a request error's own 4xx, else 500. */
function errorStatus(error: unknown): number {
  return error instanceof ProtocolError && error.status < 500 ? error.status : 500;
}

/** Whether `value` is a promise (or any thenable). */
export function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === "function";
}

/** Sum of the chunk lengths when `body` is an array of bytes (its length is known up front), else `null`. */
export function arrayLength(body: unknown): number | null {
  if (!Array.isArray(body)) return null;
  let total = 0;
  for (const chunk of body) {
    if (!(chunk instanceof Uint8Array)) return null;
    total += chunk.length;
  }
  return total;
}

/** Calls the body's `close()` and waits for it; a failure goes to `log`, never to the caller. */
export async function closeBody(body: Body, log: Pick<ResponseWriter, "logError">): Promise<void> {
  try {
    const result = body.close?.();
    if (isPromiseLike(result)) await result;
  } catch (error) {
    log.logError("The response body's close() failed", error);
  }
}

/** A committed response head, as {@linkcode ResponseState} hands it to its writer. */
export interface ResponseHead {
  /** The application's status, `"200 OK"`. */
  readonly status: string;
  /** Its code, `200`. */
  readonly code: number;
  /** The application's header fields, validated, in a copy it can no longer change. */
  readonly headers: readonly Header[];
  /** Whether the application set `Server`: then the writer adds none. */
  readonly hasServer: boolean;
  /** How the body is delimited, and what that adds to the head or removes from it. */
  readonly framing: FramingDecision;
}

/**
 * What carries out one response's decisions: the socket server frames them
 * as HTTP/1.1 bytes, the fetch bridge builds a `Response`. A writer checks
 * nothing and decides nothing about the body: every byte it is given was
 * admitted by the rules.
 */
export interface ResponseWriter {
  /**
   * Asked once, as the head is committed: whether the connection may stay
   * open after this response, which the framing decision needs to know.
   */
  keepAlive(): boolean;
  /**
   * Carries out the committed head, once, before any body bytes. Returns
   * whether the head can carry a body: `false` where the transport has none
   * although HTTP/1.1 framing would allow one (a fetch `Response` for a
   * 205), and the body is then discarded as for a 204. A writer that throws
   * here fails the response before its head, as an application error does.
   */
  head(head: ResponseHead): boolean;
  /**
   * Bytes of the iterated body, never empty. Returns a promise when the
   * producer must wait for it before the next chunk (backpressure).
   */
  body(chunk: Uint8Array): Promise<void> | undefined;
  /**
   * Bytes from the application's `write()`, possibly none (the head alone
   * is then sent). Resolves once they are handed on; the application may
   * then reuse its buffer.
   */
  write(chunk: Uint8Array): Promise<void>;
  /**
   * Ends the body. `shortfall` is set when the body fell short of its
   * `Content-Length`: the response must not look complete.
   */
  end(shortfall: Error | null): void;
  /** Cuts the response off after its head was committed; `error` says why. */
  abort(error: unknown): void;
  /**
   * Answers an error before any head: a plain-text response with `status`
   * (`"500 Internal Server Error"`) and `body`, after which the connection
   * closes. To a HEAD request (`headRequest`) the head announces the
   * body's length and the body is left out.
   */
  errorResponse(status: string, body: string, headRequest: boolean): void;
  /** Reports an application error or a contract violation to the error log. */
  logError(message: string, error?: unknown): void;
}

const NO_BYTES = new Uint8Array(0);

/**
 * One response's rules, with no idea where its bytes go (see the module
 * documentation for the rules themselves). It moves through three states:
 *
 * - open: `start_response` may be called (again only with `excInfo`);
 * - committed: the first non-empty chunk, the first `write()` or the end of
 *   the body decided the framing, and the head went to the writer; body
 *   bytes are admitted against that decision;
 * - finished: {@linkcode ResponseState.finish} or
 *   {@linkcode ResponseState.fail} ended it, and `write()` is refused.
 *
 * A driver runs the application with {@linkcode ResponseState.startResponse},
 * feeds it the body chunk by chunk ({@linkcode ResponseState.send}) and says
 * how the body ended. Iterating the body and calling its `close()` are the
 * driver's: the socket server pushes chunks as fast as the socket takes
 * them, the fetch bridge pulls one per read of its stream.
 */
export class ResponseState {
  readonly #request: ResponseRequest;
  readonly #writer: ResponseWriter;
  readonly #isHead: boolean;

  // What start_response said.
  #status: string | null = null;
  #code = 0;
  #headers: readonly Header[] = [];
  #appContentLength: number | null = null;
  #hasServer = false;
  /** The body's total length, when the driver knows it before the head is committed. */
  #knownLength: number | null = null;

  // The committed response.
  #decision: FramingDecision | null = null;
  #bodyless = false;
  #bodyBytes = 0;
  #overflow = false;
  #discardWarned = false;
  #finished = false;

  /**
   * @param request The method and version the response answers.
   * @param writer Where the response goes.
   */
  constructor(request: ResponseRequest, writer: ResponseWriter) {
    this.#request = request;
    this.#writer = writer;
    this.#isHead = request.method === "HEAD";
  }

  /** Whether the head has been committed to the writer (PEP 3333: "headers sent"). */
  get committed(): boolean {
    return this.#decision !== null;
  }

  /**
   * Whether the committed head carries no body (HEAD, 1xx, 204, 304, or a
   * head the writer cannot give one): the rest of the body is not sent, so
   * a driver need not iterate it.
   */
  get bodyless(): boolean {
    return this.#bodyless;
  }

  /** The application's `start_response`: records a valid call, throws before recording an invalid one. */
  readonly startResponse: StartResponse = (status, headers, excInfo) => {
    const validated = checkStartResponse(
      this.#status !== null,
      this.committed,
      status,
      headers,
      excInfo,
    );
    this.#status = status;
    this.#code = validated.code;
    // A copy: the application may change its list after the check.
    this.#headers = headers.slice();
    this.#appContentLength = validated.contentLength;
    this.#hasServer = validated.hasServer;
    return this.#write;
  };

  readonly #write: Write = async (chunk) => {
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError(`Cannot write ${describe(chunk)}: write() takes a Uint8Array`);
    }
    if (this.#finished) throw new Error("Cannot write: the response has finished");
    this.#commit();
    await this.#writer.write(this.#admit(chunk));
  };

  /** Records the body's total length, known before anything is sent (a list of chunks); ignored after the commit. */
  knowLength(total: number | null): void {
    if (!this.committed && total !== null) this.#knownLength = total;
  }

  /**
   * Sends one chunk of the iterated body: checks that it is bytes, commits
   * the head at the first non-empty one, and hands the writer what may be
   * sent of it. Returns the writer's promise when the driver must wait
   * before the next chunk, and `"stop"` when no more of the body can ever
   * be sent ({@linkcode ResponseState.bodyless}). Throws a `TypeError` for
   * a chunk that is not bytes.
   */
  send(value: unknown): Promise<void> | "stop" | undefined {
    const chunk = checkChunk(value);
    if (chunk.length === 0) return undefined;
    this.#commit();
    const part = this.#admit(chunk);
    if (this.#bodyless) return "stop";
    return part.length === 0 ? undefined : this.#writer.body(part);
  }

  /**
   * Ends the response after the body is exhausted; a head that nothing
   * committed is committed now, for an empty body. A body shorter or longer
   * than its `Content-Length` is logged, and the connection may not stay
   * open. Throws if `start_response` was never called; the driver then calls
   * {@linkcode ResponseState.fail}.
   */
  finish(): ResponseOutcome {
    if (!this.committed) {
      if (this.#status === null) {
        throw new Error("start_response was not called before the application returned");
      }
      // No chunk had a byte in it: the body is known to be empty.
      this.#knownLength = 0;
      this.#commit();
    }
    this.#finished = true;
    const decision = this.#decision!;
    let keepAlive = decision.keepAlive;
    let shortfall: Error | null = null;
    if (decision.framing === "length" && !this.#bodyless) {
      if (this.#bodyBytes < decision.length) {
        shortfall = new Error(
          `Response body was shorter than its Content-Length (${this.#bodyBytes} of ${decision.length} bytes): the response is cut short`,
        );
        this.#writer.logError(shortfall.message);
        keepAlive = false;
      } else if (this.#overflow) {
        this.#writer.logError(
          `Response body was longer than its Content-Length (${decision.length} bytes): the rest was not sent`,
        );
        keepAlive = false;
      }
    }
    this.#writer.end(shortfall);
    return { status: this.#code, bodyBytes: this.#bodyBytes, keepAlive, aborted: false };
  }

  /**
   * Ends the response after an error escaped the application or its body.
   * Before the head: a plain error response (500, or a request-body error's
   * own 4xx), the details only in the log. After it: the response is cut
   * off. A client that went away is no application error: it is not
   * logged, and nothing more is sent; a request error after the head (the
   * client's fault) is logged as one line without a stack.
   */
  fail(error: unknown): ResponseOutcome {
    this.#finished = true;
    const gone = error instanceof ClientDisconnectedError;
    if (this.committed || gone) {
      if (gone) {
        // The client went away: nobody's error.
      } else if (errorStatus(error) < 500) {
        // The client's own fault (a body over the limit, broken chunk
        // framing) met while the application streamed: one line, no stack.
        this.#writer.logError(
          `Request refused after the response head was sent: ${
            (error as Error).message
          }; the response is cut off`,
        );
      } else {
        this.#writer.logError("Application error after the response head was sent", error);
      }
      this.#writer.abort(error);
      return { status: this.#code, bodyBytes: this.#bodyBytes, keepAlive: false, aborted: true };
    }
    const status = errorStatus(error);
    if (status === 500) this.#writer.logError("Application error", error);
    const text = statusLine(status);
    const body = `${text.slice(4)}\n`;
    this.#writer.errorResponse(text, body, this.#isHead);
    return { status, bodyBytes: this.#isHead ? 0 : body.length, keepAlive: false, aborted: false };
  }

  /** Decides the framing and hands the head to the writer, once. */
  #commit(): void {
    if (this.#decision !== null) return;
    if (this.#status === null) {
      throw new Error("start_response was not called before the response body was sent");
    }
    const decision = decideFraming({
      requestVersion: this.#request.version,
      head: this.#isHead,
      status: this.#code,
      contentLength: this.#appContentLength,
      knownLength: this.#knownLength,
      keepAlive: this.#writer.keepAlive(),
    });
    const carriesBody = this.#writer.head({
      status: this.#status,
      code: this.#code,
      headers: this.#headers,
      hasServer: this.#hasServer,
      framing: decision,
    });
    this.#decision = decision;
    this.#bodyless = decision.framing === "none" || !carriesBody;
  }

  /**
   * The part of `chunk` that may be sent: nothing without a body (logged
   * once, unless the request was HEAD, where that is expected), nothing
   * past a `Content-Length`.
   */
  #admit(chunk: Uint8Array): Uint8Array {
    if (this.#bodyless) {
      if (chunk.length > 0 && !this.#isHead && !this.#discardWarned) {
        this.#discardWarned = true;
        this.#writer.logError(
          `Discarded the body of a ${this.#code} response: that status has no body`,
        );
      }
      return NO_BYTES;
    }
    const decision = this.#decision!;
    if (decision.framing === "length") {
      const room = decision.length - this.#bodyBytes;
      if (chunk.length > room) {
        this.#overflow = true;
        chunk = chunk.subarray(0, room);
      }
    }
    this.#bodyBytes += chunk.length;
    return chunk;
  }
}
