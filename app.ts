/**
 * The sample application: a small routed WSGI app that shows the interface
 * from the application's side.
 *
 * | route | shows |
 * | --- | --- |
 * | `GET /` | the plain case: one `start_response`, a one-chunk body |
 * | `GET /hello` | the same, another page |
 * | `GET /info` | what the server puts in `environ` |
 * | `POST /echo` | reading `wsgi.input` as a stream, echoing it back as it arrives |
 * | `GET /stream` | a generator body, sent chunked as it is produced |
 * | `GET /write` | the legacy `write()` callable |
 * | anything else | 404 (405 with `Allow` for a known path and another method) |
 *
 * The route is chosen before `start_response` is called, so every request
 * calls it exactly once.
 *
 * Run it with `deno task start` (or `deno run --allow-net app.ts`, which
 * takes the same flags as `server.ts`); import {@linkcode app} to serve it
 * otherwise.
 *
 * @module
 */

import {
  type Application,
  type Body,
  type Environ,
  type Header,
  nativeToBytes,
  type StartResponse,
} from "./mod.ts";

const encoder = new TextEncoder();

/** UTF-8 bytes of `text`. */
function utf8(text: string): Uint8Array {
  return encoder.encode(text);
}

const TEXT_PLAIN: Header = ["Content-type", "text/plain; charset=utf-8"];
const POWERED_BY: Header = ["X-Powered-By", "MySimpleWSGIApp"];

/** Answers 200 with a fixed UTF-8 text body. */
function textPage(text: string): Application {
  const body = utf8(text);
  return (_environ, startResponse) => {
    startResponse("200 OK", [TEXT_PLAIN, POWERED_BY]);
    return [body];
  };
}

/** Formats an environ value for `/info`: strings as they are, everything else described. */
function describeValue(value: unknown): string {
  if (typeof value === "string") return value;
  if (typeof value === "function") return `<function ${value.name || "anonymous"}>`;
  if (Array.isArray(value)) return `[${value.join(", ")}]`;
  if (value !== null && typeof value === "object") {
    return `<${value.constructor?.name ?? "object"}>`;
  }
  return String(value);
}

/**
 * `/info`: one `KEY: value` line per environ entry, sorted by key. The values
 * are native strings, so the body is made with `nativeToBytes`: the bytes the
 * client sent come back unchanged.
 */
function info(environ: Environ, startResponse: StartResponse): Body {
  const lines = Object.keys(environ).sort().map((key) =>
    `${key}: ${describeValue(environ[key])}\n`
  );
  startResponse("200 OK", [TEXT_PLAIN, POWERED_BY]);
  return [utf8("Environment info:\n"), nativeToBytes(lines.join(""))];
}

/**
 * `POST /echo`: streams the request body back as it is read, 64 KiB at a
 * time, so an upload of any size needs only that much memory.
 */
function echo(environ: Environ, startResponse: StartResponse): Body {
  const headers: Header[] = [
    ["Content-Type", environ.CONTENT_TYPE || "application/octet-stream"],
    POWERED_BY,
  ];
  if (environ.CONTENT_LENGTH !== undefined) {
    headers.push(["Content-Length", environ.CONTENT_LENGTH]);
  }
  startResponse("200 OK", headers);
  const input = environ["wsgi.input"];
  return (async function* () {
    for (;;) {
      const chunk = await input.read(64 * 1024);
      if (chunk.length === 0) return;
      yield chunk;
    }
  })();
}

/** `GET /stream`: a generator body; the server sends each chunk as it comes (chunked framing). */
function stream(environ: Environ, startResponse: StartResponse): Body {
  const count = Math.min(
    1000,
    Math.max(1, Number(/(?:^|&)n=(\d+)/.exec(environ.QUERY_STRING)?.[1] ?? 5)),
  );
  startResponse("200 OK", [TEXT_PLAIN, POWERED_BY]);
  return (function* () {
    for (let i = 1; i <= count; i++) yield utf8(`chunk ${i} of ${count}\n`);
  })();
}

/** `GET /write`: the imperative `write()` callable, awaited for backpressure; the returned body is empty. */
async function writeDemo(_environ: Environ, startResponse: StartResponse): Promise<Body> {
  const write = startResponse("200 OK", [TEXT_PLAIN, POWERED_BY]);
  await write(utf8("written with write(), "));
  await write(utf8("one call at a time\n"));
  return [];
}

function notFound(_environ: Environ, startResponse: StartResponse): Body {
  startResponse("404 Not Found", [TEXT_PLAIN]);
  return [utf8("404 Not Found: This page does not exist.\n")];
}

function methodNotAllowed(allow: readonly string[]): Application {
  return (_environ, startResponse) => {
    startResponse("405 Method Not Allowed", [TEXT_PLAIN, ["Allow", allow.join(", ")]]);
    return [utf8("405 Method Not Allowed\n")];
  };
}

/** One route: a path, the methods it answers, and its handler. */
export interface Route {
  /** The exact `PATH_INFO` this route answers. */
  readonly path: string;
  /** The methods it answers (`HEAD` is answered wherever `GET` is). */
  readonly methods: readonly string[];
  /** The application that answers. */
  readonly handler: Application;
}

/** The sample application's routes, first match wins. */
export const routes: readonly Route[] = [
  { path: "/", methods: ["GET"], handler: textPage("Hello from My Simple WSGI App! (Homepage)\n") },
  { path: "/hello", methods: ["GET"], handler: textPage("Hello, specific page!\n") },
  { path: "/info", methods: ["GET"], handler: info },
  { path: "/echo", methods: ["POST", "PUT"], handler: echo },
  { path: "/stream", methods: ["GET"], handler: stream },
  { path: "/write", methods: ["GET"], handler: writeDemo },
];

/** The routes by path, each list in the order of `routes`. */
const routesByPath = Map.groupBy(routes, (r) => r.path);

/** Picks the handler for a request: the route's, or 404, or 405 with `Allow`. */
export function route(environ: Environ): Application {
  const path = environ.PATH_INFO || "/";
  const method = environ.REQUEST_METHOD === "HEAD" ? "GET" : environ.REQUEST_METHOD;
  const matching = routesByPath.get(path);
  if (matching === undefined) return notFound;
  for (const r of matching) {
    if (r.methods.includes(method)) return r.handler;
  }
  const allow = matching.flatMap((r) =>
    r.methods.includes("GET") ? [...r.methods, "HEAD"] : r.methods
  );
  return methodNotAllowed(allow);
}

/**
 * The sample application. The route is picked first; only the chosen
 * handler calls `start_response`, once.
 *
 * @example Call it directly, without a server
 * ```ts
 * import { app } from "./app.ts";
 * import type { Environ } from "./mod.ts";
 * import { equal } from "node:assert/strict";
 *
 * let status = "";
 * const body = await app(
 *   { REQUEST_METHOD: "GET", PATH_INFO: "/hello" } as unknown as Environ,
 *   (s) => { status = s; return () => Promise.resolve(); },
 * );
 * equal(status, "200 OK");
 * equal(new TextDecoder().decode((body as Uint8Array[])[0]), "Hello, specific page!\n");
 * ```
 */
export const app: Application = (environ, startResponse) => route(environ)(environ, startResponse);

if (import.meta.main) {
  // Served by the command line (cli.ts), as `server.ts` would serve it.
  import("./cli.ts")
    .then(({ main }) => main(Deno.args, { name: "app.ts", defaultApp: import.meta.url }))
    .then((code) => Deno.exit(code));
}
