/**
 * {@linkcode toFetchHandler} runs a WSGI application as a fetch handler:
 * under `Deno.serve`, or called directly with a `Request` as a test client
 * that needs no socket. Its counterpart, `fromFetchHandler` in
 * `from_fetch.ts`, runs a fetch handler as a WSGI application.
 *
 * It applies the same rules as the server: the environ is built by the
 * server's own `buildEnviron`, and the response follows the server's own
 * `ResponseState` (`_gateway/response.ts`): headers held back until the
 * first non-empty chunk, the framing decided by `decideFraming`,
 * `Content-Length` honored exactly, `close()` always called, a 500 for an
 * error before the head. Only the writer differs: it builds a `Response`
 * where the server writes HTTP/1.1 bytes.
 *
 * @module
 */

import type { Application, Body, Environ } from "../types.ts";
import { buildEnviron, type ConnectionInfo, type RequestDescription } from "../_gateway/environ.ts";
import { LogErrorStream, printError } from "../_gateway/error_stream.ts";
import { BodyReader } from "../_gateway/input.ts";
import {
  arrayLength,
  checkResult,
  ClientDisconnectedError,
  closeBody,
  describe,
  isPromiseLike,
  type ResponseHead,
  type ResponseRequest,
  ResponseState,
  type ResponseWriter,
} from "../_gateway/response.ts";
import { checkScriptName } from "../options.ts";

/** Options of {@linkcode toFetchHandler}. Every field is optional. */
export interface FetchHandlerOptions {
  /**
   * Where the application is mounted: requests under this path prefix get it
   * as `SCRIPT_NAME` and the rest as `PATH_INFO` (as the server's option).
   * @default {""}
   */
  scriptName?: string;
  /**
   * What `wsgi.multiprocess` says: whether other processes serve the same
   * application.
   * @default {false}
   */
  multiprocess?: boolean;
  /**
   * Called with every application error and contract violation, and with
   * each line written to `wsgi.errors`. By default they are printed to
   * standard error.
   */
  onError?: (message: string, error?: unknown) => void;
}

/**
 * What a fetch handler may learn about the connection: `Deno.serve`'s
 * handler info, or just the peer's address (or nothing, for a test).
 */
export type FetchHandlerInfo =
  | Deno.ServeHandlerInfo
  | { readonly remoteAddr?: { readonly hostname: string; readonly port: number } };

/** A fetch-style handler made by {@linkcode toFetchHandler}; `Deno.serve` takes it as it is. */
export type FetchHandler = (request: Request, info?: FetchHandlerInfo) => Promise<Response>;

/**
 * Splits a request URL into authority, path and query without normalizing
 * it: `Deno.serve` puts the request-target into `request.url` as it was
 * sent, and `new URL()` would resolve `..` segments the application should
 * see (as it does behind this package's server).
 */
function splitUrl(url: string): { authority: string; path: string; query: string | null } {
  const schemeEnd = url.indexOf("://");
  const start = schemeEnd < 0 ? 0 : schemeEnd + 3;
  let end = start;
  while (end < url.length && url[end] !== "/" && url[end] !== "?" && url[end] !== "#") end++;
  const authority = url.slice(start, end);
  const hash = url.indexOf("#", end);
  const stop = hash < 0 ? url.length : hash;
  const question = url.indexOf("?", end);
  const hasQuery = question >= 0 && question < stop;
  return {
    authority: authority.slice(authority.lastIndexOf("@") + 1),
    path: url.slice(end, hasQuery ? question : stop) || "/",
    query: hasQuery ? url.slice(question + 1, stop) : null,
  };
}

/**
 * The request line and header fields of a `Request`, as `buildEnviron` takes
 * them. Its header values are native strings already: the Fetch API holds
 * them as latin-1 "ByteStrings".
 */
function describeRequest(request: Request): RequestDescription {
  const { authority, path, query } = splitUrl(request.url);
  const headers: [string, string][] = [...request.headers];
  let host = request.headers.get("host");
  if (host === null) {
    // A Request made in code has no Host field; every HTTP/1.1 client sends one.
    host = authority;
    headers.unshift(["host", authority]);
  }
  return {
    method: request.method,
    target: query === null ? path : `${path}?${query}`,
    path,
    query: query ?? "",
    version: "HTTP/1.1",
    authority: host,
    headers,
    chunked: request.headers.has("transfer-encoding"),
  };
}

interface HandlerConfig {
  readonly scriptName: string;
  readonly multiprocess: boolean;
  readonly onError: (message: string, error?: unknown) => void;
}

/** Body bytes waiting for the stream's reader; a `write()` resolves once its bytes are read. */
interface PendingChunk {
  readonly chunk: Uint8Array;
  readonly resolve: () => void;
  readonly reject: (error: unknown) => void;
}

function noop(): void {}

/**
 * One application call answered as a fetch `Response`. The rules are
 * {@linkcode ResponseState}'s; this class is its writer (the committed head
 * becomes a `Response`, body bytes go into that `Response`'s stream) and
 * the driver of the application's body, which it reads until the head is
 * committed and then one chunk per read of the stream.
 */
class Exchange implements ResponseWriter {
  /** The `Response`, once the head is committed (a body-less one once the body is closed too). */
  readonly response: Promise<Response>;
  readonly #state: ResponseState;
  readonly #log: (message: string, error?: unknown) => void;
  readonly #done: () => void;
  #resolve!: (response: Response) => void;
  #reject!: (error: unknown) => void;

  // The Response.
  #delivered = false;
  /** A body-less `Response`, handed out once the body is closed: the server, too, sends such a head only then. */
  #held: Response | null = null;
  #controller: ReadableStreamDefaultController<Uint8Array> | null = null;
  #pending: PendingChunk[] = [];
  /** A read is waiting for bytes that nothing has given it yet. */
  #pullWaiting = false;
  /** Wakes a read that waits for a running application's `write()`. */
  #wake: (() => void) | null = null;
  #cancelled = false;

  // The application's body.
  #body: Body | null = null;
  #iterator: Iterator<unknown> | AsyncIterator<unknown> | null = null;
  #sync = false;
  /** A `next()` is in flight. */
  #iterating = false;
  /** The iteration is over: ended or failed. */
  #ended = false;
  #closed = false;
  /** The application has not returned yet: its body cannot be closed before it has one. */
  #appRunning = true;

  constructor(
    request: ResponseRequest,
    log: (message: string, error?: unknown) => void,
    done: () => void,
  ) {
    this.#state = new ResponseState(request, this);
    this.#log = log;
    this.#done = done;
    this.response = new Promise((resolve, reject) => {
      this.#resolve = resolve;
      this.#reject = reject;
    });
  }

  // -------------------------------------------------------------------------
  // ResponseWriter: the rules' decisions, carried out as a Response.

  keepAlive(): boolean {
    // Deno.serve, not the application, decides about the connection.
    return true;
  }

  head(head: ResponseHead): boolean {
    const { code, framing } = head;
    if (code > 599) {
      throw new RangeError(
        `Cannot answer ${code}: a fetch Response takes a status from 200 to 599`,
      );
    }
    const headers = new Headers();
    for (const [name, value] of head.headers) {
      if (framing.dropContentLength && name.toLowerCase() === "content-length") continue;
      headers.append(name, value);
    }
    if (framing.addContentLength !== null) {
      headers.set("content-length", String(framing.addContentLength));
    }
    // The framing itself is Deno.serve's (it chunks a stream of unknown
    // length). A fetch Response has no body for 205 either (RFC 9110
    // section 15.3.6), where HTTP/1.1 framing would allow one.
    const hasBody = framing.framing !== "none" && code !== 205;
    const body = hasBody
      ? new ReadableStream<Uint8Array>({
        start: (controller) => {
          this.#controller = controller;
        },
        pull: () => this.#pull(),
        cancel: () => this.#cancel(),
      }, { highWaterMark: 0 })
      : null;
    const response = new Response(body, {
      status: code,
      statusText: head.status.slice(4),
      headers,
    });
    if (hasBody) {
      this.#deliver(response);
    } else {
      this.#held = response;
    }
    return hasBody;
  }

  body(chunk: Uint8Array): undefined {
    this.#offer({ chunk, resolve: noop, reject: noop });
    return undefined;
  }

  write(chunk: Uint8Array): Promise<void> {
    if (this.#cancelled) {
      return Promise.reject(new ClientDisconnectedError("The client cancelled the response body"));
    }
    if (chunk.length === 0) return Promise.resolve();
    // Resolve once the reader has the bytes (the socket, under Deno.serve):
    // copy them, since the application may reuse its buffer after that.
    return new Promise((resolve, reject) => this.#offer({ chunk: chunk.slice(), resolve, reject }));
  }

  end(shortfall: Error | null): void {
    const controller = this.#controller;
    if (controller === null) return;
    if (shortfall === null) {
      controller.close();
    } else {
      controller.error(shortfall);
    }
  }

  abort(error: unknown): void {
    try {
      this.#controller?.error(error);
    } catch {
      // The stream is already closed or cancelled.
    }
    if (this.#held !== null) {
      this.#deliver(this.#held);
    } else if (!this.#delivered) {
      // No head to cut off: the client went away before there was one.
      this.#delivered = true;
      this.#reject(error);
    }
  }

  errorResponse(status: string, body: string, headRequest: boolean): void {
    this.#deliver(
      new Response(headRequest ? null : body, {
        status: Number(status.slice(0, 3)),
        statusText: status.slice(4),
        headers: {
          "content-type": "text/plain; charset=utf-8",
          "content-length": String(body.length),
        },
      }),
    );
  }

  logError(message: string, error?: unknown): void {
    this.#log(message, error);
  }

  #deliver(response: Response): void {
    if (this.#delivered) return;
    this.#delivered = true;
    this.#resolve(response);
  }

  /** Hands body bytes to a read that waits for them, or queues them for the next read. */
  #offer(pending: PendingChunk): void {
    if (this.#pullWaiting) {
      this.#pullWaiting = false;
      this.#controller!.enqueue(pending.chunk);
      pending.resolve();
    } else {
      this.#pending.push(pending);
    }
    this.#wakeUp();
  }

  #takePending(): boolean {
    const pending = this.#pending.shift();
    if (pending === undefined) return false;
    this.#controller!.enqueue(pending.chunk);
    pending.resolve();
    return true;
  }

  #wakeUp(): void {
    const wake = this.#wake;
    this.#wake = null;
    wake?.();
  }

  // -------------------------------------------------------------------------
  // Driving the application and its body.

  /** Calls the application, then reads its body until the head is committed. */
  async run(app: Application, environ: Environ): Promise<void> {
    const state = this.#state;
    let result: unknown;
    try {
      result = app(environ, state.startResponse);
      if (isPromiseLike(result)) result = await result;
    } catch (error) {
      this.#appRunning = false;
      await this.#fail(error);
      return;
    }
    this.#appRunning = false;
    try {
      const body = checkResult(result);
      this.#body = body;
      state.knowLength(arrayLength(body));
      if (Symbol.iterator in body) {
        this.#iterator = (body as Iterable<unknown>)[Symbol.iterator]();
        this.#sync = true;
      } else {
        this.#iterator = (body as AsyncIterable<unknown>)[Symbol.asyncIterator]();
      }
      // Until the head is committed there is no Response, hence no reader.
      while (!state.committed && !this.#ended) {
        const next = await this.#next();
        if (!next.done) state.send(next.value);
      }
    } catch (error) {
      await this.#fail(error);
      return;
    }
    if (this.#cancelled) {
      await this.#stopAndClose();
    } else if (
      state.bodyless || (this.#ended && this.#pending.length === 0 && !this.#pullWaiting)
    ) {
      // Nothing (more) can be sent: end now rather than on the next read.
      await this.#finish();
    } else {
      this.#wakeUp();
    }
  }

  /** The next result of the application's body; records its end. */
  async #next(): Promise<IteratorResult<unknown>> {
    this.#iterating = true;
    try {
      const result = this.#sync
        ? (this.#iterator as Iterator<unknown>).next()
        : await (this.#iterator as AsyncIterator<unknown>).next();
      if (result.done) this.#ended = true;
      return result;
    } catch (error) {
      this.#ended = true;
      throw error;
    } finally {
      this.#iterating = false;
    }
  }

  /** The stream asks for one more chunk. */
  async #pull(): Promise<void> {
    if (this.#takePending()) return;
    this.#pullWaiting = true;
    try {
      // Until a chunk has been handed over (#offer clears #pullWaiting).
      while (this.#pullWaiting && !this.#cancelled && !this.#closed) {
        if (this.#takePending()) return;
        if (this.#ended) {
          await this.#finish();
          return;
        }
        if (this.#iterator === null) {
          // The application is still running (it committed with write()).
          await new Promise<void>((resolve) => this.#wake = resolve);
          continue;
        }
        try {
          const next = await this.#next();
          if (this.#cancelled) {
            await this.#stopAndClose();
            return;
          }
          if (!next.done) this.#state.send(next.value);
        } catch (error) {
          await this.#fail(error);
          return;
        }
      }
    } finally {
      this.#pullWaiting = false;
    }
  }

  /** The body was sent to its end (or none can be): end the response, then close the body. */
  async #finish(): Promise<void> {
    try {
      this.#state.finish();
    } catch (error) {
      await this.#fail(error);
      return;
    }
    await this.#stopAndClose();
    if (this.#held !== null) this.#deliver(this.#held);
  }

  /** An error escaped the application or its body. */
  async #fail(error: unknown): Promise<void> {
    this.#state.fail(error);
    for (const pending of this.#pending.splice(0)) pending.resolve();
    this.#wakeUp();
    await this.#stopAndClose();
  }

  /** The reader cancelled the stream (under Deno.serve: the client went away). */
  async #cancel(): Promise<void> {
    this.#cancelled = true;
    const error = new ClientDisconnectedError("The client cancelled the response body");
    for (const pending of this.#pending.splice(0)) pending.reject(error);
    this.#wakeUp();
    // A next() in flight finishes first; the read that made it then closes.
    if (!this.#iterating) await this.#stopAndClose();
  }

  /** Stops the iteration if it is not over, then calls the body's `close()`; once, on every path. */
  async #stopAndClose(): Promise<void> {
    if (this.#closed || this.#appRunning) return;
    this.#closed = true;
    if (this.#iterator !== null && !this.#ended) {
      this.#ended = true;
      try {
        await this.#iterator.return?.();
      } catch (error) {
        this.logError("The response body's return() failed", error);
      }
    }
    if (this.#body !== null) await closeBody(this.#body, this);
    this.#done();
  }
}

function connectionInfo(
  request: Request,
  info: FetchHandlerInfo | undefined,
  config: HandlerConfig,
): ConnectionInfo {
  const url = new URL(request.url);
  const urlScheme = url.protocol === "https:" ? "https" : "http";
  const remote = info?.remoteAddr as { hostname?: unknown; port?: unknown } | undefined;
  return {
    urlScheme,
    serverName: url.hostname,
    serverPort: url.port || (urlScheme === "https" ? "443" : "80"),
    ...(typeof remote?.hostname === "string" && typeof remote.port === "number"
      ? { remoteAddr: remote.hostname, remotePort: String(remote.port) }
      : {}),
    scriptName: config.scriptName,
    multiprocess: config.multiprocess,
  };
}

function handle(
  app: Application,
  request: Request,
  info: FetchHandlerInfo | undefined,
  config: HandlerConfig,
): Promise<Response> {
  const description = describeRequest(request);

  let reader: ReadableStreamDefaultReader<Uint8Array> | null = null;
  let inputEnded = request.body === null;
  const input = new BodyReader({
    async pull() {
      if (inputEnded) return null;
      reader ??= request.body!.getReader();
      const { done, value } = await reader.read();
      if (done) {
        inputEnded = true;
        return null;
      }
      if (!(value instanceof Uint8Array)) {
        throw new TypeError(
          `Invalid request body chunk: expected a Uint8Array, got ${describe(value)}`,
        );
      }
      return value;
    },
  });
  const errors = new LogErrorStream((line) => config.onError(line));
  const environ = buildEnviron(description, connectionInfo(request, info, config), input, errors);

  const exchange = new Exchange(description, config.onError, () => {
    errors.flush();
    if (reader !== null && !inputEnded) {
      inputEnded = true;
      reader.cancel().catch(noop);
    }
  });
  exchange.run(app, environ).catch((error) => config.onError("Unexpected gateway error", error));
  return exchange.response;
}

/**
 * Runs a WSGI application as a fetch handler: `(request, info?) =>
 * Promise<Response>`. Give it to `Deno.serve`, or call it with a `Request`
 * to test an application without a socket.
 *
 * The environ is built as the server builds it (`buildEnviron`): `PATH_INFO`
 * is the URL path percent-decoded to a native string (not normalized: `..`
 * stays as `Deno.serve` received it), header values are native strings
 * already (the Fetch API holds them as latin-1 "ByteStrings"),
 * `SERVER_NAME`/`SERVER_PORT` come from `Host` (or the URL), and
 * `REMOTE_ADDR`/`REMOTE_PORT` from `info.remoteAddr`. A `Request` made in
 * code has no `Host` field, so `HTTP_HOST` is then taken from its URL, as
 * a client would send it. `SERVER_PROTOCOL` is `"HTTP/1.1"`. `wsgi.input`
 * streams `request.body` as the application reads it; `wsgi.errors` lines
 * go to `options.onError`.
 *
 * The response follows the server's rules, from the same code
 * (`ResponseState`): the `Response` resolves once the body yields its first
 * non-empty chunk (or `write()` is called, or the body ends), so
 * `start_response` may still be called again with `excInfo` until then. Its
 * body is a `ReadableStream` that pulls the application's body one chunk per
 * read and calls its `close()` once it ends or the stream is cancelled. A
 * list body gets a `Content-Length`; an application
 * `Content-Length` is honored (extra bytes dropped, too few error the
 * stream). An error before the head gives a plain 500 `Response`; after it,
 * the stream errors. HEAD, 204, 205 and 304 responses have a `null` body (and
 * the application's body is not iterated further). Statuses from 600 to 999,
 * which a fetch `Response` cannot carry, give a 500.
 *
 * @example Test an application without a socket
 * ```ts
 * import { toFetchHandler } from "./fetch.ts";
 * import { app } from "../app.ts";
 * import { equal } from "node:assert/strict";
 *
 * const handler = toFetchHandler(app);
 * const response = await handler(new Request("http://localhost/hello"));
 * equal(response.status, 200);
 * equal(await response.text(), "Hello, specific page!\n");
 * ```
 *
 * @example Serve an application with Deno.serve
 * ```ts ignore
 * import { toFetchHandler } from "./fetch.ts";
 * import { app } from "../app.ts";
 *
 * Deno.serve({ port: 8000 }, toFetchHandler(app));
 * ```
 *
 * @param app The WSGI application.
 * @param options Mount point, `wsgi.multiprocess`, where errors go.
 * @returns A fetch handler that calls `app` once per request.
 * @throws {TypeError} If `app` is not a function.
 * @throws {RangeError} If `options.scriptName` is not `""` or a path like `"/app"`.
 */
export function toFetchHandler(app: Application, options: FetchHandlerOptions = {}): FetchHandler {
  if (typeof app !== "function") {
    throw new TypeError(
      `Cannot make a fetch handler: the application must be a function, got ${typeof app}`,
    );
  }
  const scriptName = checkScriptName(options.scriptName);
  const config: HandlerConfig = {
    scriptName,
    multiprocess: options.multiprocess ?? false,
    onError: options.onError ?? printError,
  };
  return (request, info) => handle(app, request, info, config);
}
