/**
 * WSGI (PEP 3333) for TypeScript on Deno: the gateway interface between a web
 * server and an application, and a production HTTP/1.1 server that speaks it.
 *
 * An application is a function of two arguments. It gets the request as an
 * {@linkcode Environ} (CGI variables plus `wsgi.*` keys), calls
 * {@linkcode StartResponse} with a status and headers, and returns the body as
 * an iterable of byte chunks:
 *
 * @example A complete application, served
 * ```ts ignore
 * import { type Application, serve } from "./mod.ts";
 *
 * const app: Application = (environ, startResponse) => {
 *   const body = new TextEncoder().encode(`Hello, ${environ.PATH_INFO}\n`);
 *   startResponse("200 OK", [["Content-Type", "text/plain; charset=utf-8"]]);
 *   return [body];
 * };
 *
 * const server = serve(app, { port: 8000 });
 * await server.finished;
 * ```
 *
 * Strings taken from the request are "native strings" as in PEP 3333: one
 * character per byte, latin-1. {@linkcode nativeToText} and
 * {@linkcode textToNative} convert them to and from Unicode text.
 *
 * @module
 */

export type {
  Application,
  Body,
  Chunk,
  Environ,
  ErrorStream,
  FileLike,
  FileWrapper,
  Header,
  InputStream,
  StartResponse,
  Write,
} from "./types.ts";
export {
  bytesToNative,
  nativeToBytes,
  nativeToText,
  percentDecodeToNative,
  textToNative,
} from "./_gateway/native.ts";
export { applicationUri, requestUri, shiftPathInfo } from "./_gateway/util.ts";
export { serve } from "./server.ts";
export type { Server, ShutdownOptions } from "./server.ts";
export type {
  AccessLogEntry,
  AccessLogFormat,
  AccessLogOptions,
  ServerOptions,
} from "./options.ts";
export { proxyFix } from "./middleware/proxy_fix.ts";
export type { ProxyFixOptions, ProxyFixOriginal } from "./middleware/proxy_fix.ts";
export { staticFiles } from "./middleware/static_files.ts";
export type { StaticFilesOptions } from "./middleware/static_files.ts";
export { mount } from "./middleware/mount.ts";
export { ValidationError, validator } from "./tooling/validator.ts";
export type { ValidatedBody } from "./tooling/validator.ts";
export { toFetchHandler } from "./tooling/fetch.ts";
export type { FetchHandler, FetchHandlerInfo, FetchHandlerOptions } from "./tooling/fetch.ts";
export { fromFetchHandler } from "./tooling/from_fetch.ts";
export { serveWorkers } from "./workers.ts";
export type { AppSpec, WorkerGroup, WorkersOptions } from "./workers.ts";
export { catchUncaughtErrors, shutdownOnSignals } from "./signals.ts";
export type { ShutdownOnSignalsOptions, Stoppable } from "./signals.ts";
