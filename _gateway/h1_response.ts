/**
 * The socket server's side of a response: {@linkcode runApplication} calls
 * the application and pushes its body through a {@linkcode ResponseState},
 * whose decisions a writer frames as HTTP/1.1 bytes into a
 * {@linkcode ResponseChannel}'s buffer. No sockets: the server (or a test)
 * drains the channel.
 *
 * @module
 */

import type { Application, Body, Environ } from "../types.ts";
import {
  type BodyFraming,
  type OutputBuffer,
  writeChunk,
  writeHead,
  writeLastChunk,
  writeSimpleResponse,
} from "../_h1/writer.ts";
import {
  arrayLength,
  checkResult,
  closeBody,
  isPromiseLike,
  type ResponseHead,
  type ResponseOutcome,
  type ResponseRequest,
  ResponseState,
  type ResponseWriter,
} from "./response.ts";

/** Buffered response bytes above which the writer waits for the socket (backpressure). */
export const HIGH_WATER_MARK = 64 * 1024;

/** Where a response goes: the server's connection, or a test's recorder. */
export interface ResponseChannel {
  /** Bytes waiting for the socket. */
  readonly out: OutputBuffer;
  /** Sends what `out` holds; resolves once handed to the socket, rejects with a `ClientDisconnectedError`. */
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

/**
 * Frames one response as HTTP/1.1 into a channel's buffer: the head with
 * `Date` and `Server`, the body as the framing decision says (chunked or
 * raw bytes), and the last chunk. Small responses stay queued, so that the
 * connection sends a whole response (or several pipelined ones) in one
 * write; the producer waits for the socket only above the high-water mark.
 */
class H1Writer implements ResponseWriter {
  readonly #channel: ResponseChannel;
  readonly #version: "HTTP/1.1" | "HTTP/1.0";
  #framing: BodyFraming = "none";

  constructor(channel: ResponseChannel, version: "HTTP/1.1" | "HTTP/1.0") {
    this.#channel = channel;
    this.#version = version;
  }

  keepAlive(): boolean {
    return this.#channel.commitHead();
  }

  head(head: ResponseHead): boolean {
    const channel = this.#channel;
    this.#framing = head.framing.framing;
    writeHead(channel.out, this.#version, head.status, head.headers, head.framing, {
      date: channel.date(),
      server: head.hasServer ? null : channel.serverHeader,
    });
    return true;
  }

  body(chunk: Uint8Array): Promise<void> | undefined {
    this.#frame(chunk);
    return this.#channel.out.length >= HIGH_WATER_MARK ? this.#channel.flush() : undefined;
  }

  write(chunk: Uint8Array): Promise<void> {
    this.#frame(chunk);
    return this.#channel.flush();
  }

  #frame(chunk: Uint8Array): void {
    if (this.#framing === "chunked") {
      writeChunk(this.#channel.out, chunk);
    } else if (chunk.length > 0) {
      this.#channel.out.bytes(chunk);
    }
  }

  end(): void {
    // A short body needs nothing here: the outcome closes the connection.
    if (this.#framing === "chunked") writeLastChunk(this.#channel.out);
  }

  abort(): void {
    // Nothing to undo: the connection sends what is queued, then closes.
  }

  errorResponse(status: string, body: string, headRequest: boolean): void {
    const channel = this.#channel;
    writeSimpleResponse(
      channel.out,
      status,
      body,
      {
        date: channel.date(),
        server: channel.serverHeader,
      },
      [],
      headRequest,
    );
  }

  logError(message: string, error?: unknown): void {
    this.#channel.logError(message, error);
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
  const response = new ResponseState(request, new H1Writer(channel, request.version));
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
 * `pending`, a flush in progress), then pushes its body through `response`.
 */
async function sendBody(
  response: ResponseState,
  channel: ResponseChannel,
  result: unknown,
  pending?: Promise<void>,
): Promise<ResponseOutcome> {
  let body: Body | undefined;
  try {
    if (pending !== undefined) await pending;
    body = checkResult(isPromiseLike(result) ? await result : result);
    response.knowLength(arrayLength(body));
    if (Symbol.iterator in body) {
      for (const chunk of body as Iterable<unknown>) {
        const wait = response.send(chunk);
        if (wait === "stop") break;
        if (wait !== undefined) await wait;
      }
    } else {
      // An async body may wait (for a timer, a database, the request body)
      // before its next chunk, so each chunk goes out as soon as it comes. A
      // synchronous body cannot wait: its chunks are coalesced up to the
      // high-water mark.
      for await (const chunk of body as AsyncIterable<unknown>) {
        const wait = response.send(chunk);
        if (wait === "stop") break;
        await (wait ?? channel.flush());
      }
    }
    return response.finish();
  } catch (error) {
    return response.fail(error);
  } finally {
    if (typeof body?.close === "function") await closeBody(body, channel);
  }
}
