/**
 * `validator(app)`: a WSGI contract checker, the TypeScript analogue of
 * Python's `wsgiref.validate`. It sits between a server and an application
 * and checks both sides of PEP 3333 on every call:
 *
 * - the server's side: the `environ` it builds (keys, types, native
 *   strings, `SCRIPT_NAME`/`PATH_INFO` rules), what `wsgi.input` returns,
 *   how it iterates the body (once, never after `close()`), and that it
 *   calls `close()` exactly once;
 * - the application's side: `start_response` arguments and call order,
 *   `write()`, body chunks (bytes only, only after `start_response`, none
 *   for 204/304, no more or fewer than its `Content-Length`), and how it
 *   uses `wsgi.input` and `wsgi.errors`.
 *
 * A broken rule throws a {@linkcode ValidationError} from the call that
 * broke it, naming the rule and blaming one side. Wrap an application with
 * it while developing or testing a server or an application; it costs a few
 * checks per call, so production servers run the bare application.
 *
 * @module
 */

import type {
  Application,
  Body,
  Environ,
  ErrorStream,
  InputStream,
  StartResponse,
  Write,
} from "../types.ts";
import { isFieldValue, isToken } from "../_h1/grammar.ts";
import { isHopByHop, isPromiseLike } from "../_gateway/response.ts";

/**
 * A broken PEP 3333 rule, found by {@linkcode validator}. The message names
 * the rule and where PEP 3333 states it, e.g. `Invalid status "20 OK":
 * expected "NNN reason" (PEP 3333, start_response)`.
 *
 * @example Catch a violation
 * ```ts
 * import { ValidationError, validator } from "./validator.ts";
 * import type { Environ } from "../types.ts";
 * import { equal, ok, throws } from "node:assert/strict";
 *
 * const app = validator((_environ, startResponse) => {
 *   startResponse("20 OK", []);
 *   return [];
 * });
 * throws(() => app({} as Environ, () => () => Promise.resolve()), (error) => {
 *   ok(error instanceof ValidationError);
 *   equal(error.blame, "server"); // an empty environ: the server's fault, found first
 *   return true;
 * });
 * ```
 */
export class ValidationError extends Error {
  /** Always `"ValidationError"`. */
  override readonly name = "ValidationError";
  /** Which side broke the rule: the `"application"` or the `"server"` (or whatever called the application). */
  readonly blame: "application" | "server";

  /**
   * Makes an error for one broken rule.
   *
   * @param message The rule that was broken, ending with where PEP 3333 states it.
   * @param blame Which side broke it.
   * @param options The standard `Error` options (`cause`).
   */
  constructor(message: string, blame: "application" | "server", options?: ErrorOptions) {
    super(message, options);
    this.blame = blame;
  }
}

/**
 * The body that a {@linkcode validator}-wrapped application returns: the
 * application's body, checked as the server iterates it, plus a way to check
 * that the server closed it.
 *
 * Iterable bodies (generators, custom iterables) are wrapped in an object
 * of the same kind (sync or async iterable). A list body (an array) stays an
 * array, so that a server can still see its length: it is copied, its
 * chunks are checked at once, and it may be iterated more than once.
 */
export type ValidatedBody = Body & {
  /** Whether the server has called `close()`. */
  readonly closed: boolean;
  /** Closes the application's body; the server must call it exactly once. */
  close(): void | Promise<void>;
  /**
   * Throws a {@linkcode ValidationError} (blaming the server) unless
   * `close()` was called: call it once the server is done with the
   * response, on every path (finished, failed, aborted).
   */
  assertClosed(): void;
};

function appError(message: string, section: string): ValidationError {
  return new ValidationError(`${message} (PEP 3333, ${section})`, "application");
}

function serverError(message: string, section: string): ValidationError {
  return new ValidationError(`${message} (PEP 3333, ${section})`, "server");
}

/** A short description of a value's type, for messages. */
function describe(value: unknown): string {
  if (value === null) return "null";
  if (Array.isArray(value)) return "an array";
  if (typeof value === "object") {
    const name = (value as { constructor?: { name?: string } }).constructor?.name;
    return name ? `a ${name}` : "an object";
  }
  if (typeof value === "string") return `a string (${JSON.stringify(value.slice(0, 40))})`;
  return typeof value;
}

function isObject(value: unknown): value is Record<PropertyKey, unknown> {
  return value !== null && (typeof value === "object" || typeof value === "function");
}

/** The index of the first character above U+00FF, or -1: a native string has none. */
function nonNativeIndex(s: string): number {
  for (let i = 0; i < s.length; i++) {
    if (s.charCodeAt(i) > 0xff) return i;
  }
  return -1;
}

function codePoint(s: string, i: number): string {
  return `U+${s.charCodeAt(i).toString(16).toUpperCase().padStart(4, "0")}`;
}

// ---------------------------------------------------------------------------
// environ (the server's side)

/** CGI keys every request has (PEP 3333 lists them; this server always sets every one). */
const REQUIRED_CGI_KEYS = [
  "REQUEST_METHOD",
  "SCRIPT_NAME",
  "PATH_INFO",
  "QUERY_STRING",
  "SERVER_NAME",
  "SERVER_PORT",
  "SERVER_PROTOCOL",
] as const;

const BOOLEAN_KEYS = ["wsgi.multithread", "wsgi.multiprocess", "wsgi.run_once"] as const;

function environError(message: string): ValidationError {
  return serverError(`Invalid environ: ${message}`, "environ");
}

function checkEnviron(environ: unknown): asserts environ is Environ {
  if (!isObject(environ) || Array.isArray(environ) || typeof environ === "function") {
    throw environError(`expected an object, got ${describe(environ)}`);
  }
  for (const key of REQUIRED_CGI_KEYS) {
    if (environ[key] === undefined) throw environError(`${key} is missing`);
  }
  // Every CGI variable (a key without a ".") is a native string.
  for (const key of Object.keys(environ)) {
    if (key.includes(".")) continue;
    const value = environ[key];
    if (value === undefined) continue;
    if (typeof value !== "string") {
      throw environError(`${key} must be a string, got ${describe(value)}`);
    }
    const bad = nonNativeIndex(value);
    if (bad >= 0) {
      throw environError(
        `${key} holds ${
          codePoint(value, bad)
        } at index ${bad}: a native string has one character per byte (at most U+00FF)`,
      );
    }
  }
  for (const key of ["HTTP_CONTENT_TYPE", "HTTP_CONTENT_LENGTH"]) {
    if (environ[key] !== undefined) {
      throw environError(`${key} must not be set: that header goes in ${key.slice(5)}`);
    }
  }
  const e = environ as Record<string, string | undefined> & Record<string, unknown>;
  const method = e.REQUEST_METHOD as string;
  if (!isToken(method)) {
    throw environError(`REQUEST_METHOD ${JSON.stringify(method)} is not a token`);
  }
  const scriptName = e.SCRIPT_NAME as string;
  if (scriptName !== "" && (!scriptName.startsWith("/") || scriptName.endsWith("/"))) {
    throw environError(
      `SCRIPT_NAME ${
        JSON.stringify(scriptName)
      } must be empty, or start with "/" and not end with "/"`,
    );
  }
  const pathInfo = e.PATH_INFO as string;
  if (pathInfo !== "" && !pathInfo.startsWith("/") && !(pathInfo === "*" && method === "OPTIONS")) {
    throw environError(
      `PATH_INFO ${
        JSON.stringify(pathInfo)
      } must be empty or start with "/" ("*" only for OPTIONS)`,
    );
  }
  if (e.SERVER_NAME === "") throw environError(`SERVER_NAME must not be empty`);
  if (!/^\d+$/.test(e.SERVER_PORT as string)) {
    throw environError(`SERVER_PORT ${JSON.stringify(e.SERVER_PORT)} must be a port number`);
  }
  if (!/^HTTP\/\d+(\.\d+)?$/.test(e.SERVER_PROTOCOL as string)) {
    throw environError(
      `SERVER_PROTOCOL ${JSON.stringify(e.SERVER_PROTOCOL)} must be a version like "HTTP/1.1"`,
    );
  }
  const contentLength = e.CONTENT_LENGTH;
  if (contentLength !== undefined && contentLength !== "" && !/^\d+$/.test(contentLength)) {
    throw environError(`CONTENT_LENGTH ${JSON.stringify(contentLength)} must be empty or digits`);
  }
  const version = e["wsgi.version"];
  if (!Array.isArray(version) || version.length !== 2 || version[0] !== 1 || version[1] !== 0) {
    throw environError(`wsgi.version must be [1, 0], got ${JSON.stringify(version) ?? "nothing"}`);
  }
  const scheme = e["wsgi.url_scheme"];
  if (scheme !== "http" && scheme !== "https") {
    throw environError(
      `wsgi.url_scheme must be "http" or "https", got ${JSON.stringify(scheme) ?? "nothing"}`,
    );
  }
  for (const key of BOOLEAN_KEYS) {
    if (typeof e[key] !== "boolean") {
      throw environError(`${key} must be a boolean, got ${describe(e[key])}`);
    }
  }
  const terminated = e["wsgi.input_terminated"];
  if (terminated !== undefined && typeof terminated !== "boolean") {
    throw environError(
      `wsgi.input_terminated must be a boolean when present, got ${describe(terminated)}`,
    );
  }
  if (e["wsgi.file_wrapper"] !== undefined && typeof e["wsgi.file_wrapper"] !== "function") {
    throw environError(`wsgi.file_wrapper must be a function when present`);
  }
  const input = e["wsgi.input"];
  if (
    !isObject(input) || typeof input.read !== "function" ||
    typeof input.readline !== "function" || typeof input.readlines !== "function" ||
    typeof input[Symbol.asyncIterator] !== "function"
  ) {
    throw environError(
      `wsgi.input must have read(), readline(), readlines() and [Symbol.asyncIterator](), got ${
        describe(input)
      }`,
    );
  }
  const errors = e["wsgi.errors"];
  if (
    !isObject(errors) || typeof errors.write !== "function" ||
    typeof errors.writelines !== "function" || typeof errors.flush !== "function"
  ) {
    throw environError(
      `wsgi.errors must have write(), writelines() and flush(), got ${describe(errors)}`,
    );
  }
}

// ---------------------------------------------------------------------------
// start_response arguments (the application's side)

function statusError(status: string, why: string): ValidationError {
  return appError(`Invalid status ${JSON.stringify(status)}: ${why}`, "start_response");
}

/** Checks `"NNN reason"` (200-999) and returns the code. */
function checkStatus(status: unknown): number {
  if (typeof status !== "string") {
    throw appError(`Invalid status: expected a string, got ${describe(status)}`, "start_response");
  }
  if (!/^\d{3} /.test(status)) throw statusError(status, `expected "NNN reason"`);
  const code = Number(status.slice(0, 3));
  if (code < 100) throw statusError(status, `expected "NNN reason" with NNN from 200 to 999`);
  if (code < 200) throw statusError(status, `a 1xx status is not a final response`);
  const bad = nonNativeIndex(status);
  if (bad >= 0) {
    throw statusError(status, `${codePoint(status, bad)} is not latin-1`);
  }
  if (!isFieldValue(status)) throw statusError(status, `it contains a control character`);
  return code;
}

function headerError(message: string): ValidationError {
  return appError(message, "start_response");
}

/** Checks the header list and returns the `Content-Length` it sets, or `null`. */
function checkHeaders(headers: unknown): number | null {
  if (!Array.isArray(headers)) {
    throw headerError(
      `Invalid headers: expected an array of [name, value] pairs, got ${describe(headers)}`,
    );
  }
  let contentLength: number | null = null;
  for (const header of headers) {
    if (!Array.isArray(header) || header.length !== 2) {
      throw headerError(`Invalid header ${describe(header)}: expected a [name, value] pair`);
    }
    const [name, value] = header as [unknown, unknown];
    if (typeof name !== "string") {
      throw headerError(`Invalid header name: expected a string, got ${describe(name)}`);
    }
    if (!isToken(name)) {
      throw headerError(`Invalid header name ${JSON.stringify(name)}: it is not a token`);
    }
    if (typeof value !== "string") {
      throw headerError(
        `Invalid value for header "${name}": expected a string, got ${describe(value)}`,
      );
    }
    const bad = nonNativeIndex(value);
    if (bad >= 0) {
      throw headerError(
        `Invalid value for header "${name}": ${
          codePoint(value, bad)
        } is not latin-1 (encode text to a native string first)`,
      );
    }
    if (!isFieldValue(value)) {
      throw headerError(
        `Invalid value for header "${name}": it contains CR, LF, NUL or another control character`,
      );
    }
    const lower = name.toLowerCase();
    if (isHopByHop(lower)) {
      throw headerError(`Invalid header "${name}": hop-by-hop headers are set by the server`);
    }
    if (lower === "status") {
      throw headerError(
        `Invalid header "${name}": the status is start_response's first argument, not a header`,
      );
    }
    if (lower === "content-length") {
      if (contentLength !== null) {
        throw headerError(`Invalid headers: Content-Length is given more than once`);
      }
      if (!/^\d{1,15}$/.test(value)) {
        throw headerError(`Invalid Content-Length ${JSON.stringify(value)}: expected digits`);
      }
      contentLength = Number(value);
    }
  }
  return contentLength;
}

function isNoBodyStatus(code: number): boolean {
  return code === 204 || code === 304;
}

// ---------------------------------------------------------------------------
// One application call

/** The state of one call of the validated application: both sides' moves, in order. */
class Call {
  readonly #serverStartResponse: StartResponse;
  readonly #head: boolean;
  /** `start_response` has been called successfully. */
  started = false;
  code = 0;
  contentLength: number | null = null;
  /** The server may have sent the head: a non-empty chunk or `write()` reached it, or the body ended. */
  headSent = false;
  /** The response is over: the body ended or was closed, or the application failed. */
  finished = false;
  /** Body bytes sent so far (chunks and `write()`). */
  bodyBytes = 0;
  #serverWrite: Write | null = null;

  constructor(environ: Environ, serverStartResponse: StartResponse) {
    this.#serverStartResponse = serverStartResponse;
    this.#head = environ.REQUEST_METHOD === "HEAD";
  }

  readonly startResponse: StartResponse = (...args: unknown[]): Write => {
    if (args.length < 2 || args.length > 3) {
      throw appError(
        `start_response takes (status, headers, excInfo?), got ${args.length} arguments`,
        "start_response",
      );
    }
    const [status, headers, excInfo] = args;
    const hasExcInfo = excInfo !== undefined && excInfo !== null;
    if (this.finished) {
      throw appError(`start_response was called after the response finished`, "start_response");
    }
    if (this.started && !hasExcInfo) {
      throw appError(`start_response was called a second time without excInfo`, "start_response");
    }
    const code = checkStatus(status);
    const contentLength = checkHeaders(headers);
    const serverStartResponse = this.#serverStartResponse as (...args: unknown[]) => unknown;
    if (hasExcInfo && this.headSent) {
      // The head may be on the wire: the server must rethrow excInfo.
      serverStartResponse(status, headers, excInfo);
      throw serverError(
        `start_response with excInfo after the head was sent must rethrow excInfo, but it returned`,
        "start_response",
      );
    }
    const write = args.length === 3
      ? serverStartResponse(status, headers, excInfo)
      : serverStartResponse(status, headers);
    if (typeof write !== "function") {
      throw serverError(
        `start_response must return the write() callable, got ${describe(write)}`,
        "start_response",
      );
    }
    this.#serverWrite = write as Write;
    this.started = true;
    this.code = code;
    this.contentLength = contentLength;
    return this.#write;
  };

  readonly #write: Write = (...args: unknown[]): Promise<void> => {
    const chunk = args[0];
    if (args.length !== 1 || !(chunk instanceof Uint8Array)) {
      throw appError(
        `write() takes one Uint8Array, got ${
          args.length === 1 ? describe(chunk) : `${args.length} arguments`
        }`,
        "write()",
      );
    }
    if (this.finished) throw appError(`write() was called after the response finished`, "write()");
    this.countBytes(chunk, "write()");
    this.headSent = true;
    const result: unknown = this.#serverWrite!(chunk);
    if (!isPromiseLike(result)) {
      throw serverError(`write() must return a Promise, got ${describe(result)}`, "write()");
    }
    return result as Promise<void>;
  };

  /** Checks one chunk's bytes against the status and `Content-Length`, and counts them. */
  countBytes(chunk: Uint8Array, where: string): void {
    const n = chunk.length;
    if (n === 0) return;
    if (isNoBodyStatus(this.code)) {
      throw appError(
        `A ${this.code} response has no body, but the ${where} sent ${n} bytes`,
        "response body",
      );
    }
    this.bodyBytes += n;
    if (this.contentLength !== null && !this.#head && this.bodyBytes > this.contentLength) {
      throw appError(
        `The body is longer than its Content-Length (${this.contentLength} bytes)`,
        "response body",
      );
    }
  }

  /** Checks a chunk that the body yielded. */
  checkChunk(chunk: unknown): Uint8Array {
    if (!(chunk instanceof Uint8Array)) {
      throw appError(
        `The body yielded ${describe(chunk)}: chunks must be Uint8Array` +
          (typeof chunk === "string" ? " (encode strings to bytes)" : ""),
        "response body",
      );
    }
    if (!this.started) {
      throw appError(
        `The body yielded a chunk before start_response was called`,
        "start_response",
      );
    }
    this.countBytes(chunk, "body");
    if (chunk.length > 0) this.headSent = true;
    return chunk;
  }

  /** Checks the end of the body. */
  checkEnd(): void {
    this.headSent = true;
    this.finished = true;
    if (!this.started) {
      throw appError(`The body ended but start_response was never called`, "start_response");
    }
    if (
      this.contentLength !== null && !this.#head && !isNoBodyStatus(this.code) &&
      this.bodyBytes < this.contentLength
    ) {
      throw appError(
        `The body is shorter than its Content-Length (${this.bodyBytes} of ${this.contentLength} bytes)`,
        "response body",
      );
    }
  }
}

// ---------------------------------------------------------------------------
// wsgi.input and wsgi.errors (both sides)

function sizeArgument(method: string, args: unknown[]): number | undefined {
  const size = args[0];
  if (args.length > 1 || (size !== undefined && !Number.isInteger(size))) {
    throw appError(
      `wsgi.input.${method}() takes an optional integer, got ${
        args.length > 1 ? `${args.length} arguments` : describe(size)
      }`,
      "wsgi.input",
    );
  }
  return size as number | undefined;
}

function checkReadResult(method: string, result: unknown, limit: number | undefined): Uint8Array {
  if (!(result instanceof Uint8Array)) {
    throw serverError(
      `wsgi.input.${method}() must resolve to a Uint8Array, got ${describe(result)}`,
      "wsgi.input",
    );
  }
  if (limit !== undefined && limit >= 0 && result.length > limit) {
    throw serverError(
      `wsgi.input.${method}(${limit}) returned ${result.length} bytes`,
      "wsgi.input",
    );
  }
  return result;
}

function checkLine(line: Uint8Array, method: string): void {
  const lf = line.indexOf(0x0a);
  if (lf >= 0 && lf !== line.length - 1) {
    throw serverError(
      `wsgi.input.${method}() returned bytes past the end of a line`,
      "wsgi.input",
    );
  }
}

/** `wsgi.input` as the application sees it: every call checked. */
class ValidatedInput implements InputStream {
  readonly #inner: InputStream;
  readonly #call: Call;
  #pending: string | null = null;

  constructor(inner: InputStream, call: Call) {
    this.#inner = inner;
    this.#call = call;
  }

  async #guard<T>(method: string, work: () => unknown): Promise<T> {
    if (this.#call.finished) {
      throw appError(`wsgi.input.${method}() was called after the response finished`, "wsgi.input");
    }
    if (this.#pending !== null) {
      throw appError(
        `wsgi.input.${method}() was called while ${this.#pending}() was pending: await each read`,
        "wsgi.input",
      );
    }
    this.#pending = method;
    try {
      const result = work();
      if (!isPromiseLike(result)) {
        throw serverError(
          `wsgi.input.${method}() must return a Promise, got ${describe(result)}`,
          "wsgi.input",
        );
      }
      return await result as T;
    } finally {
      this.#pending = null;
    }
  }

  /** Reads at most `size` bytes, or all that is left: checked on both sides. */
  async read(...args: unknown[]): Promise<Uint8Array> {
    const size = sizeArgument("read", args);
    const result = await this.#guard<unknown>("read", () => this.#inner.read(size));
    return checkReadResult("read", result, size);
  }

  /** Reads one line, or at most `size` bytes of it: checked on both sides. */
  async readline(...args: unknown[]): Promise<Uint8Array> {
    const size = sizeArgument("readline", args);
    const result = await this.#guard<unknown>("readline", () => this.#inner.readline(size));
    const line = checkReadResult("readline", result, size);
    checkLine(line, "readline");
    return line;
  }

  /** Reads the remaining lines, or about `hint` bytes of them: checked on both sides. */
  async readlines(...args: unknown[]): Promise<Uint8Array[]> {
    const hint = sizeArgument("readlines", args);
    const result = await this.#guard<unknown>("readlines", () => this.#inner.readlines(hint));
    if (!Array.isArray(result)) {
      throw serverError(
        `wsgi.input.readlines() must resolve to an array of Uint8Array, got ${describe(result)}`,
        "wsgi.input",
      );
    }
    for (const line of result) {
      checkLine(checkReadResult("readlines", line, undefined), "readlines");
    }
    return result;
  }

  /** Yields the body line by line, through the checked {@linkcode readline}. */
  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const line = await this.readline();
      if (line.length === 0) return;
      yield line;
    }
  }
}

/** `wsgi.errors` as the application sees it: text only. */
class ValidatedErrors implements ErrorStream {
  readonly #inner: ErrorStream;

  constructor(inner: ErrorStream) {
    this.#inner = inner;
  }

  /** Writes `text`, which must be a string. */
  write(...args: unknown[]): void {
    const text = args[0];
    if (args.length !== 1 || typeof text !== "string") {
      throw appError(
        `wsgi.errors.write() takes one string, got ${
          args.length === 1 ? describe(text) : `${args.length} arguments`
        }`,
        "wsgi.errors",
      );
    }
    this.#inner.write(text);
  }

  /** Writes each string of `lines`. */
  writelines(...args: unknown[]): void {
    const lines = args[0];
    if (
      args.length !== 1 || !isObject(lines) ||
      typeof (lines as Partial<Iterable<unknown>>)[Symbol.iterator] !== "function"
    ) {
      throw appError(
        `wsgi.errors.writelines() takes one iterable of strings, got ${describe(lines)}`,
        "wsgi.errors",
      );
    }
    const checked: string[] = [];
    for (const line of lines as unknown as Iterable<unknown>) {
      if (typeof line !== "string") {
        throw appError(
          `wsgi.errors.writelines() takes strings, got ${describe(line)}`,
          "wsgi.errors",
        );
      }
      checked.push(line);
    }
    this.#inner.writelines(checked);
  }

  /** Flushes the stream. */
  flush(...args: unknown[]): void {
    if (args.length !== 0) {
      throw appError(`wsgi.errors.flush() takes no arguments`, "wsgi.errors");
    }
    this.#inner.flush();
  }
}

// ---------------------------------------------------------------------------
// The body (both sides)

/** Close bookkeeping shared by every kind of wrapped body. */
class CloseState {
  readonly #body: Body;
  readonly #call: Call;
  closed = false;
  /** How the server left the iteration, for assertClosed's message. */
  ending: "ended" | "stopped" | "failed" | null = null;

  constructor(body: Body, call: Call) {
    this.#body = body;
    this.#call = call;
  }

  close(): void | Promise<void> {
    if (this.closed) {
      throw serverError(
        `close() was called a second time: the server must call it exactly once`,
        "close()",
      );
    }
    this.closed = true;
    this.#call.finished = true;
    if (typeof this.#body.close === "function") return this.#body.close();
  }

  assertClosed(): void {
    if (this.closed) return;
    const how = this.ending === "ended"
      ? "iterated the body to its end"
      : this.ending === "stopped"
      ? "stopped iterating the body"
      : this.ending === "failed"
      ? "saw the body fail"
      : "was done with the body";
    throw serverError(`The server ${how} but did not call close()`, "close()");
  }

  /** Checks that the server may start iterating. */
  checkIterate(iterated: boolean): void {
    if (this.closed) {
      throw serverError(`The server iterated the body after calling close()`, "close()");
    }
    if (iterated) {
      throw serverError(
        `The server iterated the body twice: it is an iterator, usable once`,
        "response body",
      );
    }
  }

  /** Checks that the server may ask for the next chunk. */
  checkNext(): void {
    if (this.closed) {
      throw serverError(`The server asked for a chunk after calling close()`, "close()");
    }
  }
}

function iteratorError(kind: string, value: unknown): ValidationError {
  return appError(
    `The body's ${kind}() returned ${describe(value)}, not an iterator`,
    "response body",
  );
}

function resultError(value: unknown): ValidationError {
  return appError(
    `The body's iterator returned ${describe(value)} from next(), not an iterator result`,
    "response body",
  );
}

/** Stops `iterator` after a violation it caused, so its `finally` blocks run; errors are dropped. */
function stopQuietly(iterator: Iterator<unknown> | AsyncIterator<unknown>): void {
  try {
    const result = iterator.return?.();
    if (isPromiseLike(result)) result.then(undefined, () => {});
  } catch {
    // The violation is the error to report.
  }
}

/**
 * Checks one result of the application's body iterator (sync or async):
 * an object; at its end, the body's rules for the end; otherwise a valid
 * chunk. A violation marks the body failed and stops the iterator.
 */
function checkStep(
  state: CloseState,
  call: Call,
  inner: Iterator<unknown> | AsyncIterator<unknown>,
  result: unknown,
): IteratorResult<Uint8Array> {
  try {
    if (!isObject(result)) throw resultError(result);
    if (result.done) {
      state.ending = "ended";
      call.checkEnd();
      return { done: true, value: undefined };
    }
    return { done: false, value: call.checkChunk(result.value) };
  } catch (error) {
    state.ending = "failed";
    stopQuietly(inner);
    throw error;
  }
}

/**
 * What both wrapped bodies share: the wrapped body, the call it belongs to,
 * its close bookkeeping, and the one-iteration rule.
 */
abstract class ValidatedBodyBase {
  protected readonly body: Body;
  protected readonly call: Call;
  protected readonly state: CloseState;
  #iterated = false;

  constructor(body: Body, call: Call) {
    this.body = body;
    this.call = call;
    this.state = new CloseState(body, call);
  }

  get closed(): boolean {
    return this.state.closed;
  }

  close(): void | Promise<void> {
    return this.state.close();
  }

  assertClosed(): void {
    this.state.assertClosed();
  }

  /** Checks that the body is iterated once, and not after close(). */
  protected startIterating(): void {
    this.state.checkIterate(this.#iterated);
    this.#iterated = true;
  }
}

class ValidatedSyncBody extends ValidatedBodyBase implements Iterable<Uint8Array> {
  [Symbol.iterator](): Iterator<Uint8Array> {
    const state = this.state;
    const call = this.call;
    this.startIterating();
    const inner = (this.body as Iterable<unknown>)[Symbol.iterator]();
    if (!isObject(inner) || typeof inner.next !== "function") {
      throw iteratorError("[Symbol.iterator]", inner);
    }
    const iterator: Iterator<Uint8Array> & Iterable<Uint8Array> = {
      next() {
        state.checkNext();
        let result: unknown;
        try {
          result = inner.next();
        } catch (error) {
          state.ending = "failed";
          throw error;
        }
        return checkStep(state, call, inner, result);
      },
      return(value?: unknown) {
        state.ending ??= "stopped";
        inner.return?.(value);
        return { done: true, value: undefined };
      },
      [Symbol.iterator]() {
        return this;
      },
    };
    return iterator;
  }
}

class ValidatedAsyncBody extends ValidatedBodyBase implements AsyncIterable<Uint8Array> {
  [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    const state = this.state;
    const call = this.call;
    this.startIterating();
    const inner = (this.body as AsyncIterable<unknown>)[Symbol.asyncIterator]();
    if (!isObject(inner) || typeof inner.next !== "function") {
      throw iteratorError("[Symbol.asyncIterator]", inner);
    }
    const iterator: AsyncIterator<Uint8Array> & AsyncIterable<Uint8Array> = {
      async next() {
        state.checkNext();
        let result: unknown;
        try {
          result = await inner.next();
        } catch (error) {
          state.ending = "failed";
          throw error;
        }
        return checkStep(state, call, inner, result);
      },
      async return(value?: unknown) {
        state.ending ??= "stopped";
        await inner.return?.(value);
        return { done: true, value: undefined };
      },
      [Symbol.asyncIterator]() {
        return this;
      },
    };
    return iterator;
  }
}

/** A list body: copied (so the application's array is never changed), checked whole, given close(). */
function validatedList(body: unknown[], call: Call): ValidatedBody {
  const chunks = body.map((chunk) => call.checkChunk(chunk));
  if (!call.started) {
    // checkChunk saw no chunk: an empty list.
    throw appError(
      `The application returned its body before calling start_response`,
      "start_response",
    );
  }
  call.checkEnd();
  // The list is complete: the response ends once the server is done with it.
  call.finished = false;
  const state = new CloseState(body as Body, call);
  Object.defineProperties(chunks, {
    closed: { get: () => state.closed },
    close: { value: () => state.close() },
    assertClosed: { value: () => state.assertClosed() },
  });
  return chunks as unknown as ValidatedBody;
}

function wrapBody(body: unknown, call: Call): ValidatedBody {
  if (typeof body === "string") {
    throw appError(
      `The application returned a string: return an iterable of Uint8Array chunks, such as [bytes]`,
      "response body",
    );
  }
  if (body instanceof Uint8Array) {
    throw appError(
      `The application returned a Uint8Array: return an iterable of chunks, such as [bytes]`,
      "response body",
    );
  }
  if (!isObject(body)) {
    throw appError(
      `The application returned ${describe(body)}: expected an iterable of Uint8Array chunks`,
      "response body",
    );
  }
  if (Array.isArray(body)) return validatedList(body, call);
  if (Symbol.iterator in body) return new ValidatedSyncBody(body as unknown as Body, call);
  if (Symbol.asyncIterator in body) return new ValidatedAsyncBody(body as unknown as Body, call);
  throw appError(
    `The application returned ${describe(body)}, which is neither iterable nor async iterable`,
    "response body",
  );
}

// ---------------------------------------------------------------------------

/**
 * Wraps `app` in a checker of the WSGI contract, as Python's
 * `wsgiref.validate.validator` does. Serve the result instead of `app`; each
 * broken rule throws a {@linkcode ValidationError} from the call that broke
 * it (so a server typically logs it and answers 500, or aborts the response
 * if its head was already sent).
 *
 * Checked on every call, on the server's side:
 * - `environ`: the CGI keys (`REQUEST_METHOD` a token, `SCRIPT_NAME` empty
 *   or `"/x"` without a trailing slash, `PATH_INFO` empty or starting with
 *   `"/"` (`"*"` for `OPTIONS`), `QUERY_STRING`, `SERVER_NAME`,
 *   `SERVER_PORT` digits, `SERVER_PROTOCOL`) present; every CGI value a
 *   native string (each character at most U+00FF); no `HTTP_CONTENT_TYPE`
 *   or `HTTP_CONTENT_LENGTH`; `CONTENT_LENGTH` empty or digits;
 *   `wsgi.version` `[1, 0]`; `wsgi.url_scheme` `"http"` or `"https"`; the
 *   `wsgi.*` flags booleans; `wsgi.input` and `wsgi.errors` complete.
 * - `start_response` returns a `write` callable, which returns a promise,
 *   and rethrows `excInfo` once the head may have been sent; `wsgi.input`
 *   reads resolve to bytes, never more than asked, lines ending at `\n`.
 * - the body is iterated once, never after `close()`, and `close()` is
 *   called at most once; {@linkcode ValidatedBody.assertClosed} checks that
 *   it was called at all.
 *
 * On the application's side:
 * - `start_response(status, headers, excInfo?)`: `status` is `"NNN reason"`
 *   with NNN from 200 to 999, latin-1 without controls; `headers` an array
 *   of `[name, value]` string pairs, names tokens, values latin-1 without
 *   CR, LF, NUL or other controls, no hop-by-hop header, no `Status`, at
 *   most one `Content-Length` (digits). A second call needs `excInfo`; no
 *   call after the response finished.
 * - the body is an iterable (not a string, not a bare `Uint8Array`) of
 *   `Uint8Array` chunks, none before `start_response`; no body bytes for
 *   204 and 304; exactly `Content-Length` bytes when it is set (except for
 *   HEAD). `write()` takes one `Uint8Array`.
 * - `wsgi.input`: sizes are integers, reads are awaited one at a time, and
 *   nothing is read once the response has finished. `wsgi.errors` gets
 *   strings only.
 *
 * Unlike `wsgiref`, a body that is never closed is not detected when it is
 * garbage-collected: call `assertClosed()` on the returned
 * {@linkcode ValidatedBody} where a test knows the server is done.
 *
 * @example Check a server and an application against each other
 * ```ts
 * import { validator } from "./validator.ts";
 * import { serve } from "../server.ts";
 * import { app } from "../app.ts";
 * import { equal } from "node:assert/strict";
 *
 * const errors: string[] = [];
 * const server = serve(validator(app), {
 *   port: 0,
 *   onListen() {},
 *   onError: (message, error) => errors.push(`${message}: ${error}`),
 * });
 * const { port } = server.addr as Deno.NetAddr;
 * const response = await fetch(`http://127.0.0.1:${port}/hello`);
 * equal(await response.text(), "Hello, specific page!\n");
 * await server.shutdown();
 * equal(errors.length, 0);
 * ```
 *
 * @param app The application to check.
 * @returns An application that behaves as `app` does while checking every
 * step; the body it returns is a {@linkcode ValidatedBody}.
 * @throws {TypeError} If `app` is not a function.
 */
export function validator(app: Application): Application {
  if (typeof app !== "function") {
    throw new TypeError(`Cannot validate: the application must be a function, got ${typeof app}`);
  }
  return function validated(...args: unknown[]): Body | Promise<Body> {
    if (args.length !== 2) {
      throw serverError(
        `The application was called with ${args.length} arguments: expected (environ, startResponse)`,
        "the application",
      );
    }
    const [environ, startResponse] = args;
    if (typeof startResponse !== "function") {
      throw serverError(
        `The application's second argument must be start_response, got ${describe(startResponse)}`,
        "the application",
      );
    }
    checkEnviron(environ);
    const call = new Call(environ, startResponse as StartResponse);
    environ["wsgi.input"] = new ValidatedInput(environ["wsgi.input"], call);
    environ["wsgi.errors"] = new ValidatedErrors(environ["wsgi.errors"]);
    let result: unknown;
    try {
      result = app(environ, call.startResponse);
    } catch (error) {
      call.finished = true;
      throw error;
    }
    if (isPromiseLike(result)) {
      return Promise.resolve(result).then(
        (body) => wrapBody(body, call),
        (error) => {
          call.finished = true;
          throw error;
        },
      );
    }
    return wrapBody(result, call);
  };
}
