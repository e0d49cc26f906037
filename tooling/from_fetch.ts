/**
 * {@linkcode fromFetchHandler} runs a fetch handler (Hono, Oak's `handle`, a
 * plain `(request) => Response` function) as a WSGI application, so that
 * this package's server (or any WSGI server) can serve it. Its counterpart,
 * `toFetchHandler` in `fetch.ts`, runs a WSGI application as a fetch
 * handler.
 *
 * @module
 */

import type { Application, Body, Environ, StartResponse } from "../types.ts";
import { STATUS_TEXT } from "../_h1/status.ts";
import { ClientDisconnectedError, describe, isHopByHop } from "../_gateway/response.ts";
import { applicationUri, requestUri } from "../_gateway/util.ts";

function noop(): void {}

/** Methods a fetch `Request` refuses to carry. */
const FORBIDDEN_METHODS = new Set(["CONNECT", "TRACE", "TRACK"]);

/** The request body, as a stream read from `wsgi.input` on demand. */
function inputStream(input: Environ["wsgi.input"]): ReadableStream<Uint8Array> {
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      const chunk = await input.read(64 * 1024);
      if (chunk.length === 0) {
        controller.close();
      } else {
        controller.enqueue(chunk);
      }
    },
  }, { highWaterMark: 0 });
}

/** Whether the request has a body to pass on: never for GET and HEAD, which fetch cannot give one. */
function hasBody(environ: Environ, method: string): boolean {
  if (method === "GET" || method === "HEAD") return false;
  const length = environ.CONTENT_LENGTH;
  if (length !== undefined && length !== "") return length !== "0";
  return environ.HTTP_TRANSFER_ENCODING !== undefined;
}

function toRequest(environ: Environ, signal: AbortSignal): Request {
  const method = environ.REQUEST_METHOD;
  const url = environ.PATH_INFO === "*" ? applicationUri(environ) : requestUri(environ);
  const headers = new Headers();
  for (const key of Object.keys(environ)) {
    const value = environ[key];
    if (typeof value !== "string") continue;
    if (key.startsWith("HTTP_")) {
      headers.append(key.slice(5).replaceAll("_", "-").toLowerCase(), value);
    } else if (key === "CONTENT_TYPE" || (key === "CONTENT_LENGTH" && value !== "")) {
      headers.set(key.replace("_", "-").toLowerCase(), value);
    }
  }
  const body = hasBody(environ, method.toUpperCase()) ? inputStream(environ["wsgi.input"]) : null;
  // `duplex` is in the Fetch standard but not yet in Deno's RequestInit type.
  return new Request(url, { method, headers, body, signal, duplex: "half" } as RequestInit);
}

/**
 * Tells the handler that its response will not be sent to its end (the
 * client went away, or the body failed): cancels what is left of the stream
 * and aborts the request's signal.
 */
function abandon(reader: ReadableStreamDefaultReader<Uint8Array>, abort: AbortController): void {
  reader.cancel().catch(noop);
  abort.abort(new ClientDisconnectedError("The response was not sent to its end"));
}

/**
 * The body of a `Response` for the server. A body the handler gave whole
 * (a string, bytes, JSON: what Hono's `c.text()` and `c.json()` make)
 * becomes a list of one chunk, whose length the server sends as
 * `Content-Length`, as `Deno.serve` does; any other body is streamed chunk
 * by chunk.
 *
 * Deno makes a whole body a stream that closes as its only chunk is read:
 * its `closed` promise settles in the microtask after that read settles. One
 * turn of the microtask queue tells such a body from a stream that is still
 * producing, without waiting for the stream.
 */
async function responseBody(
  stream: ReadableStream<Uint8Array>,
  abort: AbortController,
): Promise<Body> {
  const reader = stream.getReader();
  let closed = false;
  reader.closed.then(() => closed = true, noop);
  let first: ReadableStreamReadResult<Uint8Array>;
  try {
    first = await reader.read();
  } catch (error) {
    abandon(reader, abort);
    throw error;
  }
  if (first.done) return [];
  await undefined; // Lets `closed` settle if the stream ended with that chunk.
  return closed ? [first.value] : streamBody(reader, first.value, abort);
}

/** A response body read from `reader` as the server asks, after `first`; `close()` cancels what is left. */
function streamBody(
  reader: ReadableStreamDefaultReader<Uint8Array>,
  first: Uint8Array,
  abort: AbortController,
): Body {
  let waiting: Uint8Array | null = first;
  let ended = false;
  return {
    [Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
      return {
        async next(): Promise<IteratorResult<Uint8Array>> {
          if (waiting !== null) {
            const value = waiting;
            waiting = null;
            return { done: false, value };
          }
          const { done, value } = await reader.read();
          if (done) {
            ended = true;
            return { done: true, value: undefined };
          }
          return { done: false, value };
        },
      };
    },
    close(): void {
      if (!ended) {
        ended = true;
        abandon(reader, abort);
      }
      reader.releaseLock();
    },
  };
}

function plainText(startResponse: StartResponse, status: string, text: string): Body {
  startResponse(status, [["Content-Type", "text/plain; charset=utf-8"]]);
  return [new TextEncoder().encode(text)];
}

/**
 * Runs a fetch handler, `(request) => Response | Promise<Response>`, as a
 * WSGI application, so that this package's server (or any WSGI server) can
 * serve a Hono app, an Oak app's `handle`, or a hand-written handler.
 *
 * The `Request` is rebuilt from the environ: its URL from `wsgi.url_scheme`,
 * `HTTP_HOST` (or `SERVER_NAME` and `SERVER_PORT`), `SCRIPT_NAME` and
 * `PATH_INFO` percent-encoded again, and `QUERY_STRING`; its headers from
 * the `HTTP_*` keys, `CONTENT_TYPE` and `CONTENT_LENGTH`; its body streamed
 * from `wsgi.input` (not for GET and HEAD, which fetch cannot give a body).
 * Its `signal` aborts when the response is not sent to its end. `OPTIONS *`
 * becomes `OPTIONS` of the application's root URL; `CONNECT`, `TRACE` and
 * `TRACK`, which fetch refuses, get 501, and a request it cannot represent
 * otherwise gets 400.
 *
 * The `Response` becomes `start_response(status + " " + statusText)` (the
 * standard reason phrase when `statusText` is empty) with its headers minus
 * hop-by-hop ones. A body given whole (a string, bytes, JSON) is sent with a
 * `Content-Length`, as `Deno.serve` sends it; any other body is streamed to
 * the server chunk by chunk, and `close()` cancels what is left of it.
 *
 * @example Serve a fetch handler with this package's server
 * ```ts
 * import { fromFetchHandler } from "./from_fetch.ts";
 * import { serve } from "../server.ts";
 * import { equal } from "node:assert/strict";
 *
 * const app = fromFetchHandler((request) => new Response(`You asked for ${new URL(request.url).pathname}\n`));
 * const server = serve(app, { port: 0, onListen() {} });
 * const { port } = server.addr as Deno.NetAddr;
 * const response = await fetch(`http://127.0.0.1:${port}/thing`);
 * equal(await response.text(), "You asked for /thing\n");
 * await server.shutdown();
 * ```
 *
 * @param handler The fetch handler.
 * @returns A WSGI application that calls `handler` once per request.
 * @throws {TypeError} If `handler` is not a function.
 */
export function fromFetchHandler(
  handler: (request: Request) => Response | Promise<Response>,
): Application {
  if (typeof handler !== "function") {
    throw new TypeError(
      `Cannot make an application: the handler must be a function, got ${typeof handler}`,
    );
  }
  return async (environ, startResponse) => {
    if (FORBIDDEN_METHODS.has(environ.REQUEST_METHOD.toUpperCase())) {
      return plainText(startResponse, "501 Not Implemented", "Not Implemented\n");
    }
    const abort = new AbortController();
    let request: Request;
    try {
      request = toRequest(environ, abort.signal);
    } catch (error) {
      environ["wsgi.errors"].write(`Cannot make a Request of this request: ${error}\n`);
      return plainText(startResponse, "400 Bad Request", "Bad Request\n");
    }
    const response: unknown = await handler(request);
    if (!(response instanceof Response)) {
      throw new TypeError(`Invalid handler result: expected a Response, got ${describe(response)}`);
    }
    const headers: [string, string][] = [];
    for (const [name, value] of response.headers) {
      if (!isHopByHop(name)) headers.push([name, value]);
    }
    const reason = response.statusText || STATUS_TEXT[response.status] || "";
    startResponse(`${response.status} ${reason}`, headers);
    return response.body === null ? [] : await responseBody(response.body, abort);
  };
}
