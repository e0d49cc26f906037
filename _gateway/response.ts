/**
 * Running one application call: `start_response`, the `write()` callable,
 * iterating the body, and turning all of it into response bytes, with every
 * PEP 3333 rule enforced at this boundary. No sockets: bytes go into a
 * {@linkcode ResponseChannel}, which the server (or a test) drains.
 *
 * The rules, in the order a response meets them:
 *
 * 1. `start_response` validates its arguments before it changes anything; a
 *    second call needs `excInfo`, and with `excInfo` after the head was sent
 *    it rethrows `excInfo`.
 * 2. The head is held back until the body yields its first non-empty chunk,
 *    `write()` is called, or the body ends; then the framing is decided once
 *    (`decideFraming`) and the head goes into the channel's buffer.
 * 3. Body bytes never exceed an application `Content-Length`; fewer bytes
 *    than announced close the connection.
 * 4. An error before the head was sent becomes a plain 500 (or the status of
 *    a request-body error, such as 413); after it, the connection is
 *    aborted. The body's `close()` runs on every path.
 *
 * @module
 */

import type { Application, Body, Environ, Header, StartResponse, Write } from "../types.ts";
import { ProtocolError } from "../_h1/errors.ts";
import { isFieldValue, isToken } from "../_h1/grammar.ts";
import { statusLine } from "../_h1/status.ts";
import {
  decideFraming,
  type FramingDecision,
  type OutputBuffer,
  writeChunk,
  writeHead,
  writeLastChunk,
  writeSimpleResponse,
} from "../_h1/writer.ts";

/** Buffered response bytes above which the writer waits for the socket (backpressure). */
export const HIGH_WATER_MARK = 64 * 1024;

/** The connection went away while the response was being sent. */
export class ClientDisconnectedError extends Error {
  override readonly name = "ClientDisconnectedError";
}

/** Where a response goes: the server's connection, or a test's recorder. */
export interface ResponseChannel {
  /** Bytes waiting for the socket. */
  readonly out: OutputBuffer;
  /** Sends what `out` holds; resolves once handed to the socket, rejects with {@linkcode ClientDisconnectedError}. */
  flush(): Promise<void>;
  /**
   * Called once, as the response head is committed: the channel records
   * that the head is on its way (no `100 Continue` may follow it) and
   * answers whether the connection may stay open after this response.
   */
  commitHead(): boolean;
  /** The current `Date` header value. */
  date(): string;
  /** The `Server` header to add when the application sets none (`null`: none). */
  readonly serverHeader: string | null;
  /** Reports an application error or a contract violation to the error log. */
  logError(message: string, error?: unknown): void;
}

/** The request facts that shape a response. */
export interface ResponseRequest {
  readonly method: string;
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
export interface CheckedStart {
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
 * The rules of one `start_response` call (PEP 3333), for every gateway: a
 * second call needs `excInfo`; with `excInfo` once the head was sent,
 * `excInfo` is rethrown; the status and headers must be valid. Throws before
 * the caller records anything; returns the status code and what the headers
 * say.
 */
export function checkStartResponse(
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
export function checkChunk(chunk: unknown): Uint8Array {
  if (!(chunk instanceof Uint8Array)) {
    throw new TypeError(
      `Invalid body chunk: expected a Uint8Array, got ${describe(chunk)}` +
        (typeof chunk === "string" ? " (encode strings to bytes)" : ""),
    );
  }
  return chunk;
}

/**
 * Checks that an application's (awaited) result is an object that can be a
 * body, not a string or another primitive; throws a `TypeError` otherwise.
 * Whether it is iterable is checked where it is iterated.
 */
export function checkResult(value: unknown): Body {
  if (typeof value === "string" || value === null || typeof value !== "object") {
    throw new TypeError(
      `Invalid application result: expected an iterable of Uint8Array, got ${describe(value)}` +
        (typeof value === "string" ? " (return [bytes] instead of a string)" : ""),
    );
  }
  return value as Body;
}

/** The status that answers an error before the head went out: a request error's own 4xx, else 500. */
export function errorStatus(error: unknown): number {
  return error instanceof ProtocolError && error.status < 500 ? error.status : 500;
}

/** One response in progress. */
class Response {
  readonly #request: ResponseRequest;
  readonly #channel: ResponseChannel;
  readonly #head: boolean;
  #status: string | null = null;
  #code = 0;
  #headers: readonly Header[] = [];
  #appContentLength: number | null = null;
  #appSetServer = false;
  #decision: FramingDecision | null = null;
  #knownLength: number | null = null;
  #bodyBytes = 0;
  #overflow = false;
  #discardWarned = false;
  #finished = false;

  constructor(request: ResponseRequest, channel: ResponseChannel) {
    this.#request = request;
    this.#channel = channel;
    this.#head = request.method === "HEAD";
  }

  get committed(): boolean {
    return this.#decision !== null;
  }

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
    this.#appSetServer = validated.hasServer;
    return this.#write;
  };

  readonly #write: Write = async (chunk) => {
    if (!(chunk instanceof Uint8Array)) {
      throw new TypeError(`Cannot write ${describe(chunk)}: write() takes a Uint8Array`);
    }
    if (this.#finished) throw new Error("Cannot write: the response has finished");
    this.#commit();
    this.#append(chunk);
    await this.#channel.flush();
  };

  /** Sets the total body length when the whole body is known up front. */
  knowLength(total: number): void {
    if (!this.committed) this.#knownLength = total;
  }

  #commit(): void {
    if (this.#decision !== null) return;
    if (this.#status === null) {
      throw new Error("start_response was not called before the response body was sent");
    }
    const decision = decideFraming({
      requestVersion: this.#request.version,
      head: this.#head,
      status: this.#code,
      contentLength: this.#appContentLength,
      knownLength: this.#knownLength,
      keepAlive: this.#channel.commitHead(),
    });
    this.#decision = decision;
    writeHead(this.#channel.out, this.#request.version, this.#status, this.#headers, decision, {
      date: this.#channel.date(),
      server: this.#appSetServer ? null : this.#channel.serverHeader,
    });
  }

  #append(chunk: Uint8Array): void {
    const decision = this.#decision!;
    const n = chunk.length;
    switch (decision.framing) {
      case "length": {
        const room = decision.length - this.#bodyBytes;
        if (n > room) {
          this.#overflow = true;
          if (room > 0) {
            this.#channel.out.bytes(chunk.subarray(0, room));
            this.#bodyBytes += room;
          }
          return;
        }
        this.#channel.out.bytes(chunk);
        break;
      }
      case "chunked":
        writeChunk(this.#channel.out, chunk);
        break;
      case "close":
        this.#channel.out.bytes(chunk);
        break;
      case "none":
        if (n > 0 && !this.#head && !this.#discardWarned) {
          this.#discardWarned = true;
          this.#channel.logError(
            `Discarded the body of a ${this.#code} response: that status has no body`,
          );
        }
        return;
    }
    this.#bodyBytes += n;
  }

  /**
   * Sends one body chunk; returns a promise only when the buffer is full and
   * the caller must wait for the socket. Returns `"stop"` when the rest of
   * the body can never be sent (HEAD after the head went out).
   */
  send(value: unknown): Promise<void> | "stop" | undefined {
    const chunk = checkChunk(value);
    if (chunk.length === 0) return undefined;
    this.#commit();
    if (this.#head && this.#decision!.framing === "none") return "stop";
    this.#append(chunk);
    return this.#channel.out.length >= HIGH_WATER_MARK ? this.#channel.flush() : undefined;
  }

  /** Ends the response after the body is exhausted. */
  finish(): ResponseOutcome {
    if (!this.committed) {
      if (this.#status === null) {
        throw new Error("start_response was not called before the application returned");
      }
      if (this.#knownLength === null) this.#knownLength = this.#bodyBytes;
      this.#commit();
    }
    this.#finished = true;
    const decision = this.#decision!;
    let keepAlive = decision.keepAlive;
    if (decision.framing === "chunked") writeLastChunk(this.#channel.out);
    if (decision.framing === "length") {
      if (this.#bodyBytes < decision.length) {
        this.#channel.logError(
          `Response body was shorter than its Content-Length (${this.#bodyBytes} of ${decision.length} bytes): closing the connection`,
        );
        keepAlive = false;
      } else if (this.#overflow) {
        this.#channel.logError(
          `Response body was longer than its Content-Length (${decision.length} bytes): the rest was not sent`,
        );
        keepAlive = false;
      }
    }
    return { status: this.#code, bodyBytes: this.#bodyBytes, keepAlive, aborted: false };
  }

  /** Handles an error that escaped the application or the body. */
  fail(error: unknown): ResponseOutcome {
    this.#finished = true;
    if (error instanceof ClientDisconnectedError) {
      return { status: this.#code, bodyBytes: this.#bodyBytes, keepAlive: false, aborted: true };
    }
    if (this.committed) {
      this.#channel.logError("Application error after the response head was sent", error);
      return { status: this.#code, bodyBytes: this.#bodyBytes, keepAlive: false, aborted: true };
    }
    const status = errorStatus(error);
    if (status === 500) this.#channel.logError("Application error", error);
    const text = statusLine(status);
    const body = `${text.slice(4)}\n`;
    writeSimpleResponse(this.#channel.out, text, body, {
      date: this.#channel.date(),
      server: this.#channel.serverHeader,
    });
    return { status, bodyBytes: body.length, keepAlive: false, aborted: false };
  }
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

async function closeBody(body: Body, channel: ResponseChannel): Promise<void> {
  try {
    const result = body.close!();
    if (isPromiseLike(result)) await result;
  } catch (error) {
    channel.logError("The response body's close() failed", error);
  }
}

/**
 * Calls `app` once and sends its response into `channel`. Never throws: every
 * failure is reported through the outcome and `channel.logError`.
 *
 * The common case, a synchronous application returning an array of byte
 * chunks that fits under the high-water mark, is answered synchronously: the
 * outcome comes back as a value, with no turn of the event loop. Anything
 * else (a promise, an iterator, a `close()` method, backpressure) is answered
 * with a promise.
 */
export function runApplication(
  app: Application,
  environ: Environ,
  request: ResponseRequest,
  channel: ResponseChannel,
): ResponseOutcome | Promise<ResponseOutcome> {
  const response = new Response(request, channel);
  let result: unknown;
  try {
    result = app(environ, response.startResponse);
  } catch (error) {
    return response.fail(error);
  }
  if (Array.isArray(result) && typeof (result as Body).close !== "function") {
    const total = arrayLength(result);
    if (total !== null) {
      response.knowLength(total);
      try {
        for (let i = 0; i < result.length; i++) {
          const wait = response.send(result[i]);
          if (wait === "stop") break;
          if (wait !== undefined) {
            return sendBody(response, channel, result.slice(i + 1), wait);
          }
        }
        return response.finish();
      } catch (error) {
        return response.fail(error);
      }
    }
  }
  return sendBody(response, channel, result);
}

/**
 * Waits for the application's result if it is a promise (and first for
 * `pending`, a flush in progress), then sends its body.
 */
async function sendBody(
  response: Response,
  channel: ResponseChannel,
  result: unknown,
  pending?: Promise<void>,
): Promise<ResponseOutcome> {
  let body: Body | undefined;
  try {
    if (pending !== undefined) await pending;
    body = checkResult(isPromiseLike(result) ? await result : result);
    const total = arrayLength(body);
    if (total !== null) response.knowLength(total);
    if (Symbol.iterator in body) {
      for (const chunk of body as Iterable<unknown>) {
        const wait = response.send(chunk);
        if (wait === "stop") break;
        if (wait !== undefined) await wait;
      }
    } else if (Symbol.asyncIterator in body) {
      // An async body may wait (for a timer, a database, the request body)
      // before its next chunk, so each chunk goes out as soon as it comes. A
      // synchronous body cannot wait: its chunks are coalesced up to the
      // high-water mark.
      for await (const chunk of body as AsyncIterable<unknown>) {
        const wait = response.send(chunk);
        if (wait === "stop") break;
        await (wait ?? channel.flush());
      }
    } else {
      throw new TypeError(
        `Invalid application result: ${describe(body)} is neither iterable nor async iterable`,
      );
    }
    return response.finish();
  } catch (error) {
    return response.fail(error);
  } finally {
    if (typeof body?.close === "function") await closeBody(body, channel);
  }
}
