/**
 * The gateway contract (PEP 3333) as TypeScript types: what an application
 * receives ({@linkcode Environ}, {@linkcode StartResponse}), what it returns
 * ({@linkcode Body}), and the streams in between. Types only: every module of
 * the package that needs them imports them from here, and `mod.ts`
 * re-exports them for users.
 *
 * @module
 */

/**
 * One byte chunk of a response body. Chunks are bytes, never strings: a
 * string chunk is an application error (PEP 3333, "Unicode Issues").
 */
export type Chunk = Uint8Array;

/**
 * The value an {@linkcode Application} returns: the response body as a
 * synchronous or asynchronous iterable of byte chunks.
 *
 * The server iterates it once, sending each non-empty chunk as soon as it
 * has it (nothing is buffered to the end). If the body has a `close()`
 * method, the server calls it exactly once when it is done with the body:
 * after the last chunk, after an error, or after the client went away. A
 * generator is the natural streaming body: the server's `for...of` calls its
 * `return()`, so its `finally` blocks run on every path too.
 *
 * A body whose total length the server can see before sending (an array of
 * chunks) gets a `Content-Length`; any other body without an application
 * `Content-Length` is sent chunked (HTTP/1.1) or until the connection closes
 * (HTTP/1.0).
 *
 * @example Three ways to return a body
 * ```ts
 * import type { Body } from "./mod.ts";
 * const bytes = new TextEncoder().encode("hi\n");
 * const list: Body = [bytes];
 * const generated: Body = (function* () { yield bytes; yield bytes; })();
 * const streamed: Body = (async function* () { yield bytes; })();
 * ```
 */
export type Body = (Iterable<Chunk> | AsyncIterable<Chunk>) & {
  /** Called once by the server when it is done with the body, on every path. */
  close?(): void | Promise<void>;
};

/**
 * The legacy imperative write callable that {@linkcode StartResponse}
 * returns (PEP 3333, "The write() Callable"). It sends `chunk` at once,
 * sending the headers first if they are not sent yet, and resolves when the
 * bytes have been handed to the socket: awaiting it is the backpressure. New
 * applications should return an iterable body instead.
 */
export type Write = (chunk: Uint8Array) => Promise<void>;

/** A response header as an application gives it: `[name, value]`. */
export type Header = readonly [name: string, value: string];

/**
 * Begins the response (PEP 3333, "The start_response() Callable").
 *
 * - `status` is `"NNN Reason"`: three digits, a space, and a reason phrase
 *   (which may be empty), e.g. `"200 OK"` or `"404 Not Found"`.
 * - `headers` are `[name, value]` pairs: names are tokens, values are
 *   latin-1 strings without CR, LF or NUL. Hop-by-hop headers
 *   (`Connection`, `Keep-Alive`, `Transfer-Encoding`, `Upgrade`, `TE`,
 *   `Trailer`, `Proxy-*`) belong to the server and are refused.
 * - Nothing is sent yet: the server holds the status and headers back until
 *   the body yields its first non-empty chunk, the app calls `write()`, or
 *   the body ends. Until then the app may call again with `excInfo` (the
 *   error it caught) to replace them, typically with an error page.
 *
 * Calling it a second time without `excInfo` throws. Calling it with
 * `excInfo` after the headers were sent rethrows `excInfo`, and the server
 * then aborts the connection. Invalid arguments throw a `TypeError`; the
 * server answers 500 if that escapes the application.
 *
 * @returns The {@linkcode Write} callable.
 */
export type StartResponse = (
  status: string,
  headers: readonly Header[],
  excInfo?: unknown,
) => Write;

/**
 * `wsgi.input`: the request body, read lazily from the connection as the
 * application asks for it. It never reads past the end of the body, which
 * the server decodes from `Content-Length` or chunked framing; at the end,
 * every read returns an empty array.
 *
 * When the client sent `Expect: 100-continue`, the first read sends the
 * interim `100 Continue` response. A read rejects if the client disconnects,
 * stalls past the body timeout, or breaks the framing; a body over the
 * server's limit rejects with an error whose `status` is 413.
 *
 * Async iteration yields the body line by line, like a Python file.
 *
 * @example Read a whole body as text
 * ```ts ignore
 * const text = new TextDecoder().decode(await environ["wsgi.input"].read());
 * ```
 */
export interface InputStream extends AsyncIterable<Uint8Array> {
  /** Reads at most `size` bytes, or everything that is left when `size` is omitted or negative. */
  read(size?: number): Promise<Uint8Array>;
  /** Reads one line, up to and including its `\n`, or at most `size` bytes of it. */
  readline(size?: number): Promise<Uint8Array>;
  /** Reads lines until the end, or until about `hint` bytes were read. */
  readlines(hint?: number): Promise<Uint8Array[]>;
}

/**
 * `wsgi.errors`: a text stream for error output, which goes to the server's
 * error log (standard error by default).
 */
export interface ErrorStream {
  /** Writes `text`; it reaches the log once a line is complete, or on `flush()`. */
  write(text: string): void;
  /** Writes each string of `lines` (no newlines are added, as in Python). */
  writelines(lines: Iterable<string>): void;
  /** Sends what is buffered to the log. */
  flush(): void;
}

/**
 * What `wsgi.file_wrapper` takes: an open file, or anything that reads into
 * a buffer as `Deno.FsFile` does, resolving to the number of bytes read or
 * `null` at the end.
 */
export interface FileLike {
  /** Reads up to `p.length` bytes into `p`; `null` at the end of the file. */
  read(p: Uint8Array): Promise<number | null>;
  /** Closes the file; the body's `close()` calls it. */
  close?(): void;
}

/**
 * `wsgi.file_wrapper` (PEP 3333, "Optional Platform-Specific File
 * Handling"): turns an open file into a response body that sends the rest
 * of it, from its current position, in blocks of `blockSize` bytes (64 KiB
 * by default), and closes it when the server calls the body's `close()`.
 * Applications use it when it is present and fall back to reading the file
 * themselves when it is not, since a server need not offer it.
 *
 * @example Send a file
 * ```ts ignore
 * const app: Application = async (environ, startResponse) => {
 *   const file = await Deno.open("./report.pdf");
 *   const { size } = await file.stat();
 *   startResponse("200 OK", [["Content-Type", "application/pdf"], ["Content-Length", String(size)]]);
 *   return environ["wsgi.file_wrapper"]!(file);
 * };
 * ```
 */
export type FileWrapper = (file: FileLike, blockSize?: number) => Body;

/**
 * The request, as a fresh object for every request (PEP 3333, "environ
 * Variables"). Every string taken from the request is a native string: its
 * characters are the raw bytes, one per character (latin-1).
 *
 * - `REQUEST_METHOD`, `SERVER_PROTOCOL` (`"HTTP/1.1"`), `QUERY_STRING` (raw,
 *   still percent-encoded, without `?`).
 * - `SCRIPT_NAME` is where the application is mounted (`""` at the root) and
 *   `PATH_INFO` the rest of the path, percent-decoded to bytes.
 * - `CONTENT_TYPE` and `CONTENT_LENGTH` come from those headers (without an
 *   `HTTP_` prefix) and are absent when the request did not send them.
 * - Every other header `Name-Here` is `HTTP_NAME_HERE`; repeated headers are
 *   joined with `", "` (`"; "` for `Cookie`). Header names that contain `_`
 *   are dropped, so that `X_User` cannot pose as `X-User`.
 * - `SERVER_NAME` and `SERVER_PORT` come from the `Host` header (else the
 *   listening address); `REMOTE_ADDR` and `REMOTE_PORT` are the peer's.
 * - Servers and middleware may add their own keys, namespaced as `x.y`.
 */
export interface Environ {
  /** The method, case preserved: `"GET"`, `"POST"`. */
  REQUEST_METHOD: string;
  /** The mount point of the application: `""` at the root, else a path like `"/app"`. */
  SCRIPT_NAME: string;
  /** The rest of the path, percent-decoded (a native string); `"*"` for `OPTIONS *`. */
  PATH_INFO: string;
  /** The query string as sent, still percent-encoded, without the `?`; `""` when absent. */
  QUERY_STRING: string;
  /** The `Content-Type` header, absent when not sent. */
  CONTENT_TYPE?: string;
  /** The `Content-Length` header, absent when not sent (and for chunked bodies). */
  CONTENT_LENGTH?: string;
  /** The host name the request was addressed to (`Host` header), else the listening address. */
  SERVER_NAME: string;
  /** The port the request was addressed to, as a string. */
  SERVER_PORT: string;
  /** The request's version: `"HTTP/1.1"` or `"HTTP/1.0"`. */
  SERVER_PROTOCOL: string;
  /** The peer's IP address (absent on Unix sockets). */
  REMOTE_ADDR?: string;
  /** The peer's port, as a string (absent on Unix sockets). */
  REMOTE_PORT?: string;
  /** The raw request-target as sent (as gunicorn and waitress provide). */
  REQUEST_URI?: string;
  /** Always `[1, 0]`. */
  "wsgi.version": readonly [1, 0];
  /** `"http"` or `"https"`. */
  "wsgi.url_scheme": string;
  /** The request body. */
  "wsgi.input": InputStream;
  /** The error log. */
  "wsgi.errors": ErrorStream;
  /** Whether another request may run concurrently in the same process (true: one event loop serves many). */
  "wsgi.multithread": boolean;
  /** Whether other processes serve the same application. */
  "wsgi.multiprocess": boolean;
  /** Whether this process serves only this one request. */
  "wsgi.run_once": boolean;
  /** True: `wsgi.input` ends at the end of the body (it may be read to the end even without `CONTENT_LENGTH`). */
  "wsgi.input_terminated"?: boolean;
  /** Sends an open file as the body; offered by this package's server and fetch bridge. */
  "wsgi.file_wrapper"?: FileWrapper;
  /** A request header, as a native string. */
  [header: `HTTP_${string}`]: string | undefined;
  /** Other CGI variables and `x.y` extension keys. */
  [key: string]: unknown;
}

/**
 * A WSGI application: called once per request with a fresh
 * {@linkcode Environ} and a {@linkcode StartResponse}. It must call
 * `startResponse` before its body yields its first chunk (or before it
 * returns, for an empty body), and returns the {@linkcode Body}, or a promise
 * of it for an application that must wait (for instance to read the request
 * body first).
 *
 * An exception thrown before the headers are sent gives a plain 500 response
 * (the details go to the error log only); after they are sent, the
 * connection is aborted. Either way only this request is affected.
 *
 * @example Hello world
 * ```ts
 * import type { Application } from "./mod.ts";
 * const app: Application = (_environ, startResponse) => {
 *   startResponse("200 OK", [["Content-Type", "text/plain"]]);
 *   return [new TextEncoder().encode("Hello\n")];
 * };
 * ```
 */
export type Application = (environ: Environ, startResponse: StartResponse) => Body | Promise<Body>;
