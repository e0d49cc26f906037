/**
 * Test helpers: start a server on a free port, talk raw bytes to it, and
 * parse what comes back. No sleeps: every wait ends on an event (bytes, EOF)
 * or on an explicit deadline that fails the test.
 */

import type { Application, Environ } from "../mod.ts";
import { BodyReader } from "../_gateway/input.ts";
import { LogErrorStream } from "../_gateway/error_stream.ts";
import { serve, type Server, type ServerOptions } from "../server.ts";
import { validator } from "../tooling/validator.ts";
import { latin1Bytes, latin1String } from "./_bytes.ts";

export { latin1Bytes, latin1String };

export const encoder = new TextEncoder();
export const decoder = new TextDecoder();

/** UTF-8 bytes of `s`. */
export function bytes(s: string): Uint8Array {
  return encoder.encode(s);
}

/** A running test server and where to reach it. */
export interface TestServer {
  server: Server;
  port: number;
  url: string;
  /** Error-log lines (message plus error) captured instead of printed. */
  errors: string[];
  [Symbol.asyncDispose](): Promise<void>;
}

/**
 * Starts `app` on 127.0.0.1, port 0, with the error log captured. Use with
 * `await using`. The app runs under `validator()`, so every test also checks
 * that the server keeps its side of PEP 3333; tests of deliberately broken
 * applications pass `validate: false`.
 */
export function startServer(
  app: Application,
  options: ServerOptions & { validate?: boolean } = {},
): TestServer {
  const errors: string[] = [];
  const { validate = true, ...serverOptions } = options;
  const server = serve(validate ? validator(app) : app, {
    port: 0,
    onListen() {},
    onError(message, error) {
      errors.push(error === undefined ? message : `${message}: ${error}`);
    },
    ...serverOptions,
  });
  const port = (server.addr as Deno.NetAddr).port;
  return {
    server,
    port,
    url: `http://127.0.0.1:${port}`,
    errors,
    [Symbol.asyncDispose]: () => deadline(TEST_DEADLINE_MS, server.shutdown(), "The shutdown"),
  };
}

/** How long one wait of a test (a read, a response, a shutdown) may take before the test fails. */
export const TEST_DEADLINE_MS = 10_000;

/**
 * Settles as `promise` does, or rejects once `ms` have passed with an error
 * naming `what`: a test that awaits something that could hang fails instead
 * of hanging the suite. `onExpire` runs first when the time is up, to end
 * what `promise` waits for (close a socket, kill a child) so that no
 * operation outlives the test. The timer never does.
 */
export async function deadline<T>(
  ms: number,
  promise: Promise<T>,
  what = "The awaited operation",
  onExpire?: () => void,
): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const expired = new Promise<never>((_, reject) => {
    timer = setTimeout(() => {
      onExpire?.();
      reject(new Error(`${what} did not finish within ${ms} ms`));
    }, ms);
  });
  try {
    return await Promise.race([promise, expired]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * Reads everything until the peer closes (or resets) the connection; fails
 * (closing `conn`) if that takes longer than {@linkcode TEST_DEADLINE_MS}.
 */
export async function readAll(conn: Deno.Conn): Promise<Uint8Array> {
  const parts: Uint8Array[] = [];
  const buf = new Uint8Array(64 * 1024);
  const expire = () => {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  };
  for (;;) {
    let n: number | null;
    try {
      n = await deadline(TEST_DEADLINE_MS, conn.read(buf), "Reading to the end", expire);
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) break;
      throw error;
    }
    if (n === null) break;
    parts.push(buf.slice(0, n));
  }
  return concat(parts);
}

export function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}

/**
 * Sends `request` (a string is sent as latin-1 bytes) on a new connection,
 * half-closes nothing, and reads until the server closes. For requests the
 * server answers with `Connection: close`.
 */
export async function exchange(port: number, request: string | Uint8Array): Promise<string> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  try {
    await writeAll(conn, typeof request === "string" ? latin1Bytes(request) : request);
    return latin1String(await readAll(conn));
  } finally {
    conn.close();
  }
}

export async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.length) at += await conn.write(data.subarray(at));
}

/** One parsed HTTP/1.1 response. Header names are lower-cased. */
export interface ParsedResponse {
  status: number;
  reason: string;
  headers: Map<string, string>;
  /** Header lines in order, as sent. */
  rawHeaders: [string, string][];
  body: string;
}

/**
 * Parses consecutive responses from `text` (latin-1), decoding
 * Content-Length and chunked bodies; a response without either runs to the
 * end. `headRequests` lists which responses (by index) answer HEAD.
 */
export function parseResponses(text: string, headRequests: number[] = []): ParsedResponse[] {
  const responses: ParsedResponse[] = [];
  let at = 0;
  while (at < text.length) {
    const end = text.indexOf("\r\n\r\n", at);
    if (end < 0) {
      throw new Error(`Incomplete response head: ${JSON.stringify(text.slice(at, at + 200))}`);
    }
    const lines = text.slice(at, end).split("\r\n");
    const statusMatch = /^HTTP\/1\.1 (\d{3}) ?(.*)$/.exec(lines[0]!);
    if (!statusMatch) throw new Error(`Bad status line: ${JSON.stringify(lines[0])}`);
    const status = Number(statusMatch[1]);
    const rawHeaders: [string, string][] = lines.slice(1).map((l) => {
      const colon = l.indexOf(":");
      return [l.slice(0, colon), l.slice(colon + 1).trim()];
    });
    const headers = new Map<string, string>();
    for (const [name, value] of rawHeaders) {
      const key = name.toLowerCase();
      headers.set(key, headers.has(key) ? `${headers.get(key)}, ${value}` : value);
    }
    at = end + 4;
    let body = "";
    const noBody = headRequests.includes(responses.length) || status < 200 || status === 204 ||
      status === 304;
    if (noBody) {
      // nothing
    } else if (headers.get("transfer-encoding") === "chunked") {
      for (;;) {
        const lineEnd = text.indexOf("\r\n", at);
        if (lineEnd < 0) throw new Error("Incomplete chunk size line");
        const size = parseInt(text.slice(at, lineEnd), 16);
        at = lineEnd + 2;
        if (size === 0) {
          const trailerEnd = text.indexOf("\r\n", at);
          at = trailerEnd + 2;
          break;
        }
        body += text.slice(at, at + size);
        at += size + 2;
      }
    } else if (headers.has("content-length")) {
      const n = Number(headers.get("content-length"));
      body = text.slice(at, at + n);
      at += n;
    } else {
      body = text.slice(at);
      at = text.length;
    }
    responses.push({ status, reason: statusMatch[2]!, headers, rawHeaders, body });
  }
  return responses;
}

/** An application that answers 200 with `text`. */
export function textApp(text: string): Application {
  const body = bytes(text);
  return (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return [body];
  };
}

/** A promise with its resolve function exposed. */
export function deferred<T = void>(): { promise: Promise<T>; resolve: (value: T) => void } {
  let resolve!: (value: T) => void;
  const promise = new Promise<T>((r) => resolve = r);
  return { promise, resolve };
}

/** What {@linkcode uploadReadingApp} records. */
export interface UploadReadingApp {
  readonly app: Application;
  /** Resolves with the error `wsgi.input.read()` rejected with. */
  readonly readFailed: Promise<unknown>;
  /** Resolves when the body's `close()` is called. */
  readonly closed: Promise<void>;
  /** How many times `close()` was called. */
  closes(): number;
}

/**
 * An application whose `/upload` reads the whole request body with
 * `wsgi.input.read()` inside its (async) body, recording whether the read
 * rejects and how often `close()` runs; every other path answers
 * `still here\n`. For tests of uploads that break off or stall.
 */
export function uploadReadingApp(): UploadReadingApp {
  let closes = 0;
  const closed = deferred();
  const readFailed = deferred<unknown>();
  const app: Application = (environ, startResponse) => {
    if (environ.PATH_INFO !== "/upload") return textApp("still here\n")(environ, startResponse);
    startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    const input = environ["wsgi.input"];
    return {
      async *[Symbol.asyncIterator]() {
        let data: Uint8Array;
        try {
          data = await input.read();
        } catch (error) {
          readFailed.resolve(error);
          throw error;
        }
        yield data;
      },
      close() {
        closes++;
        closed.resolve();
      },
    };
  };
  return { app, readFailed: readFailed.promise, closed: closed.promise, closes: () => closes };
}

/**
 * A valid environ for `GET /` without a server, with `body` as `wsgi.input`;
 * `overrides` replace keys (or, as `undefined`, remove them).
 */
export function makeEnviron(overrides: Record<string, unknown> = {}, body = ""): Environ {
  const pieces = body === "" ? [] : [bytes(body)];
  return {
    REQUEST_METHOD: "GET",
    SCRIPT_NAME: "",
    PATH_INFO: "/",
    QUERY_STRING: "",
    SERVER_NAME: "localhost",
    SERVER_PORT: "80",
    SERVER_PROTOCOL: "HTTP/1.1",
    "wsgi.version": [1, 0],
    "wsgi.url_scheme": "http",
    "wsgi.input": new BodyReader({ pull: () => Promise.resolve(pieces.shift() ?? null) }),
    "wsgi.errors": new LogErrorStream(() => {}),
    "wsgi.multithread": true,
    "wsgi.multiprocess": false,
    "wsgi.run_once": false,
    "wsgi.input_terminated": true,
    ...overrides,
  } as Environ;
}
