/**
 * `staticFiles()`: serve the files of a directory under a URL prefix, in
 * front of an application (the job whitenoise does for Python WSGI apps).
 *
 * @module
 */

import { sep } from "node:path";
import type { Application, Body, Environ, Header, StartResponse } from "../types.ts";
import { fileBody } from "../_gateway/file_wrapper.ts";
import { nativeToText, textToNative } from "../_gateway/native.ts";
import { checkPathPrefix, optionError } from "../options.ts";

/** Options of {@linkcode staticFiles}. */
export interface StaticFilesOptions {
  /** The directory to serve, as a path or a `file:` URL. Nothing outside it is ever served. */
  readonly root: string | URL;
  /**
   * The URL path under which the files appear, matched against `PATH_INFO`
   * at a segment boundary: `"/static"` serves `/static/app.css` from
   * `root/app.css`, and leaves `/staticky` to the application. `"/"` serves
   * from the top. It is text (not percent-encoded); it must start with `/`
   * and, unless it is `"/"`, not end with one.
   *
   * @default {"/static"}
   */
  readonly prefix?: string;
  /**
   * The file to serve for a directory (`"index.html"`), or `null` to leave
   * directory paths to the application. A directory path without its
   * trailing slash is redirected (301) to the path with one, so that
   * relative links in the index page resolve.
   *
   * @default {null}
   */
  readonly index?: string | null;
  /**
   * When set, responses carry `Cache-Control: public, max-age=<seconds>`;
   * otherwise no `Cache-Control` at all (clients still revalidate with
   * `ETag` and `Last-Modified`).
   */
  readonly maxAgeSeconds?: number;
}

/** How many bytes each body chunk reads from the file. */
const CHUNK_SIZE = 64 * 1024;

const ALLOW = "GET, HEAD";

/** Content types by lower-cased extension; anything else is `application/octet-stream`. */
const CONTENT_TYPES: Readonly<Record<string, string>> = {
  html: "text/html; charset=utf-8",
  htm: "text/html; charset=utf-8",
  css: "text/css; charset=utf-8",
  js: "text/javascript; charset=utf-8",
  mjs: "text/javascript; charset=utf-8",
  json: "application/json",
  txt: "text/plain; charset=utf-8",
  svg: "image/svg+xml",
  png: "image/png",
  jpg: "image/jpeg",
  jpeg: "image/jpeg",
  gif: "image/gif",
  webp: "image/webp",
  ico: "image/vnd.microsoft.icon",
  wasm: "application/wasm",
  pdf: "application/pdf",
  xml: "application/xml",
  map: "application/json",
  woff: "font/woff",
  woff2: "font/woff2",
};

function contentType(name: string): string {
  const dot = name.lastIndexOf(".");
  if (dot <= 0) return "application/octet-stream";
  return CONTENT_TYPES[name.slice(dot + 1).toLowerCase()] ?? "application/octet-stream";
}

const encoder = new TextEncoder();

/** A short plain-text answer from the middleware itself. */
function plain(
  startResponse: StartResponse,
  status: string,
  extra: readonly Header[] = [],
): Body {
  const body = encoder.encode(`${status}\n`);
  startResponse(status, [
    ["Content-Type", "text/plain; charset=utf-8"],
    ["Content-Length", String(body.length)],
    ...extra,
  ]);
  return [body];
}

/**
 * A file wrapper's body that lacks `close()` (which PEP 3333 says must close
 * the file): give it one, so the file is closed all the same.
 */
function closingFile(body: Body, file: Deno.FsFile): Body {
  let open = true;
  const close = () => {
    if (open) {
      open = false;
      file.close();
    }
  };
  if (Symbol.asyncIterator in body) {
    return { [Symbol.asyncIterator]: () => body[Symbol.asyncIterator](), close };
  }
  return { [Symbol.iterator]: () => (body as Iterable<Uint8Array>)[Symbol.iterator](), close };
}

/** Strong entity tag from size and modification time (as nginx makes them). */
function entityTag(size: number, mtime: Date | null): string | null {
  if (mtime === null) return null;
  return `"${size.toString(16)}-${mtime.getTime().toString(16)}"`;
}

/** Whether an `If-None-Match` list matches `etag` (weak comparison, RFC 9110 section 13.1.2). */
function noneMatch(header: string, etag: string): boolean {
  const opaque = etag.startsWith("W/") ? etag.slice(2) : etag;
  for (const candidate of header.split(",")) {
    const tag = candidate.trim();
    if (tag === "*") return true;
    if ((tag.startsWith("W/") ? tag.slice(2) : tag) === opaque) return true;
  }
  return false;
}

/** An HTTP-date as milliseconds, or `NaN` when it does not parse. */
function parseHttpDate(value: string): number {
  // IMF-fixdate, the obsolete RFC 850 form, and asctime: all have letters and
  // a four- or two-digit year; Date.parse reads each, and rejects nonsense.
  if (!/^[A-Za-z]{3}/.test(value.trim())) return NaN;
  return Date.parse(value);
}

/** `Last-Modified` granularity is one second. */
function seconds(date: Date): number {
  return Math.floor(date.getTime() / 1000);
}

type RangeResult =
  | { readonly kind: "none" }
  | { readonly kind: "unsatisfiable" }
  | { readonly kind: "range"; readonly start: number; readonly end: number };

/**
 * Reads a `Range` header (RFC 9110 section 14.2) for a file of `size` bytes:
 * one `bytes=a-b`, `bytes=a-` or `bytes=-n`. Several ranges, another unit,
 * or invalid syntax give `"none"` (serve the whole file); a valid range
 * wholly past the end gives `"unsatisfiable"`.
 */
function parseRange(header: string, size: number): RangeResult {
  const m = /^bytes=(.*)$/i.exec(header.trim());
  if (m === null) return { kind: "none" };
  const specs = m[1]!.split(",");
  if (specs.length !== 1) return { kind: "none" };
  const spec = /^\s*(\d*)-(\d*)\s*$/.exec(specs[0]!);
  if (spec === null) return { kind: "none" };
  const [, first, last] = spec as unknown as [string, string, string];
  if (first === "") {
    if (last === "") return { kind: "none" };
    const suffix = Number(last);
    if (suffix === 0 || size === 0) return { kind: "unsatisfiable" };
    return { kind: "range", start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(first);
  const end = last === "" ? Infinity : Number(last);
  if (end < start) return { kind: "none" };
  if (start >= size) return { kind: "unsatisfiable" };
  return { kind: "range", start, end: Math.min(end, size - 1) };
}

function isNotFound(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory;
}

/** Whether `path` is `root` or inside it; both are real paths. */
function isInside(path: string, root: string): boolean {
  return path === root || path.startsWith(root.endsWith(sep) ? root : root + sep);
}

/**
 * Serves the files under `root` for `GET` and `HEAD` requests whose
 * `PATH_INFO` is under `prefix`; every other request goes to `app`.
 *
 * Under the prefix:
 *
 * - A path that names no file, or a directory when `index` is `null`, goes
 *   to `app` too (as with whitenoise), so the application can still answer
 *   there (its own 404, or generated files).
 * - A regular file is answered `200` with `Content-Type` (from the
 *   extension; `application/octet-stream` when unknown), `Content-Length`,
 *   `ETag` (strong, from size and modification time), `Last-Modified`,
 *   `Accept-Ranges: bytes` and, with `maxAgeSeconds`, `Cache-Control`. The
 *   body streams from the file in 64 KiB chunks; the file is closed when the
 *   body ends or when the server calls `close()`. If the environ offers
 *   `wsgi.file_wrapper`, a whole-file body comes from
 *   `environ["wsgi.file_wrapper"](file, 65536)` instead (PEP 3333), and
 *   closing that body must close the file.
 * - `If-None-Match` (or, without it, `If-Modified-Since`) that still matches
 *   gives `304 Not Modified`.
 * - A `GET` with `Range: bytes=a-b`, `bytes=a-` or `bytes=-n` gives `206`
 *   with `Content-Range`, or `416` (its `Content-Range` gives only the size)
 *   when the range starts past the end. Several ranges in one header, or an
 *   `If-Range` that does not match, give the whole file with `200` (no
 *   multipart responses).
 * - Another method on an existing file gives `405` with `Allow: GET, HEAD`.
 *
 * Security: the path can never leave `root`. `PATH_INFO` is decoded as
 * UTF-8 (invalid UTF-8 is a `400`); a segment that is `.` or `..`, or that
 * contains `\` or NUL, is a `400`; so is an encoded slash (`%2F`) or an
 * encoded `..` (`%2E%2E`) in `REQUEST_URI`, since the server has already
 * decoded them in `PATH_INFO`. Empty segments are skipped, so `//etc/passwd`
 * is looked up as `root/etc/passwd`. Last, the path is resolved with
 * `Deno.realPath` and must stay inside the real `root`: a symbolic link
 * that points outside gives `404`. Only regular files are served (never a
 * FIFO or a device). Dotfiles are served like any other file: keep secrets
 * out of `root`.
 *
 * Needs `--allow-read` for `root`.
 *
 * @param app The application that answers everything the files do not.
 * @param options Where the files are, and the URL prefix they are served under.
 * @returns The wrapped application.
 * @throws {TypeError} If `root` is missing, or an option has the wrong type.
 * @throws {RangeError} If `prefix` is not `"/"` or a path like `"/static"`,
 * `index` is not a file name, or `maxAgeSeconds` is not a whole number.
 *
 * @example Serve ./public under /static, the app for the rest
 * ```ts ignore
 * import { serve, staticFiles } from "./mod.ts";
 * import { app } from "./app.ts";
 *
 * serve(staticFiles(app, { root: new URL("./public/", import.meta.url), maxAgeSeconds: 3600 }));
 * ```
 */
export function staticFiles(app: Application, options: StaticFilesOptions): Application {
  const root = options?.root;
  if (typeof root !== "string" && !(root instanceof URL)) {
    throw optionError(TypeError, "root", "a path or a file URL", root);
  }
  const prefixText = checkPathPrefix("prefix", options.prefix ?? "/static", ["/"]);
  const prefix = prefixText === "/" ? "" : textToNative(prefixText);
  const index = options.index ?? null;
  if (index !== null) {
    if (typeof index !== "string") throw optionError(TypeError, "index", "a file name", index);
    if (index === "" || index === "." || index === ".." || /[/\\\0]/.test(index)) {
      throw optionError(RangeError, "index", "a file name", index);
    }
  }
  const maxAge = options.maxAgeSeconds;
  if (maxAge !== undefined) {
    if (typeof maxAge !== "number") {
      throw optionError(TypeError, "maxAgeSeconds", "a whole number of seconds", maxAge);
    }
    if (!(Number.isSafeInteger(maxAge) && maxAge >= 0)) {
      throw optionError(RangeError, "maxAgeSeconds", "a whole number of seconds", maxAge);
    }
  }
  const cacheControl = maxAge === undefined ? null : `public, max-age=${maxAge}`;

  let realRoot: string | null = null;
  async function resolveRoot(): Promise<string> {
    // Cached once it succeeds; a missing root is an error on every request
    // (a 500 with the reason in the log) until it exists.
    realRoot ??= await Deno.realPath(root);
    return realRoot;
  }

  /** The real path of `segments` under the root; `null` if missing, `"outside"` if it escapes. */
  async function resolve(segments: readonly string[]): Promise<string | null | "outside"> {
    const base = await resolveRoot();
    const joined = segments.length === 0 ? base : base + sep + segments.join(sep);
    let real: string;
    try {
      real = await Deno.realPath(joined);
    } catch (error) {
      if (isNotFound(error)) return null;
      throw error;
    }
    return isInside(real, base) ? real : "outside";
  }

  const prefixSlash = `${prefix}/`;

  return async function staticFiles(environ, startResponse) {
    const pathInfo = environ.PATH_INFO;
    // Under the prefix: the prefix itself, or it and a "/" (any absolute path when it is "").
    if (pathInfo !== prefix && !pathInfo.startsWith(prefixSlash)) {
      return app(environ, startResponse);
    }

    let rest: string;
    try {
      rest = nativeToText(pathInfo.slice(prefix.length), true);
    } catch {
      return plain(startResponse, "400 Bad Request");
    }
    const segments = rest.split("/").filter((s) => s !== "");
    for (const segment of segments) {
      if (segment === "." || segment === ".." || segment.includes("\\") || segment.includes("\0")) {
        return plain(startResponse, "400 Bad Request");
      }
    }
    if (typeof environ.REQUEST_URI === "string") {
      const target = environ.REQUEST_URI.split("?", 1)[0]!.toLowerCase();
      if (target.includes("%2f") || target.includes("%2e%2e")) {
        return plain(startResponse, "400 Bad Request");
      }
    }

    let real = await resolve(segments);
    if (real === null) return app(environ, startResponse);
    if (real === "outside") return plain(startResponse, "404 Not Found");
    let info = await Deno.stat(real);
    // PATH_INFO equal to the prefix ("/static") has no trailing slash; under
    // the "/" prefix, an empty PATH_INFO is the mount point itself.
    const trailingSlash = rest.endsWith("/") || (rest === "" && prefix === "");
    if (info.isDirectory) {
      if (index === null) return app(environ, startResponse);
      if (!trailingSlash) {
        // Relative to the request URL, so it holds behind any proxy or mount.
        const last = segments[segments.length - 1] ??
          prefixText.slice(prefixText.lastIndexOf("/") + 1);
        const query = environ.QUERY_STRING ? `?${environ.QUERY_STRING}` : "";
        return plain(startResponse, "301 Moved Permanently", [
          ["Location", `${encodeURIComponent(last)}/${query}`],
        ]);
      }
      real = await resolve([...segments, index]);
      if (real === null) return app(environ, startResponse);
      if (real === "outside") return plain(startResponse, "404 Not Found");
      info = await Deno.stat(real);
    } else if (trailingSlash) {
      // "file.txt/" names a directory that does not exist.
      return app(environ, startResponse);
    }
    if (!info.isFile) return app(environ, startResponse);

    const method = environ.REQUEST_METHOD;
    if (method !== "GET" && method !== "HEAD") {
      return plain(startResponse, "405 Method Not Allowed", [["Allow", ALLOW]]);
    }
    return await serveFile(environ, startResponse, real);
  };

  async function serveFile(
    environ: Environ,
    startResponse: StartResponse,
    path: string,
  ): Promise<Body> {
    let file: Deno.FsFile | null;
    try {
      file = await Deno.open(path, { read: true });
    } catch (error) {
      // The operating system refused (file mode); Deno's own permission
      // errors (NotCapable) are a deployment mistake and stay errors.
      if (error instanceof Deno.errors.PermissionDenied) {
        return plain(startResponse, "403 Forbidden");
      }
      throw error;
    }
    try {
      // The open file's own metadata: the path may have changed since stat().
      const info = await file.stat();
      if (!info.isFile) {
        return plain(startResponse, "404 Not Found");
      }
      const size = info.size;
      const mtime = info.mtime;
      const etag = entityTag(size, mtime);
      const validators: Header[] = [];
      if (etag !== null) validators.push(["ETag", etag]);
      if (mtime !== null) validators.push(["Last-Modified", mtime.toUTCString()]);
      if (cacheControl !== null) validators.push(["Cache-Control", cacheControl]);

      // Conditional requests (RFC 9110 section 13.2.2): If-None-Match wins
      // over If-Modified-Since when both are sent.
      const inm = environ.HTTP_IF_NONE_MATCH;
      const ims = environ.HTTP_IF_MODIFIED_SINCE;
      let notModified = false;
      if (typeof inm === "string") {
        notModified = etag !== null && noneMatch(inm, etag);
      } else if (typeof ims === "string" && mtime !== null) {
        const since = parseHttpDate(ims);
        notModified = !Number.isNaN(since) && seconds(mtime) <= Math.floor(since / 1000);
      }
      if (notModified) {
        startResponse("304 Not Modified", validators);
        return [];
      }

      const headers: Header[] = [
        ["Content-Type", contentType(path)],
        ...validators,
        ["Accept-Ranges", "bytes"],
      ];
      let start = 0;
      let length = size;
      let status = "200 OK";
      const rangeHeader = environ.HTTP_RANGE;
      if (
        environ.REQUEST_METHOD === "GET" && typeof rangeHeader === "string" &&
        ifRangeHolds(environ.HTTP_IF_RANGE, etag, mtime)
      ) {
        const range = parseRange(rangeHeader, size);
        if (range.kind === "unsatisfiable") {
          return plain(startResponse, "416 Range Not Satisfiable", [
            ["Content-Range", `bytes */${size}`],
          ]);
        }
        if (range.kind === "range") {
          start = range.start;
          length = range.end - range.start + 1;
          status = "206 Partial Content";
          headers.push(["Content-Range", `bytes ${range.start}-${range.end}/${size}`]);
        }
      }
      headers.push(["Content-Length", String(length)]);
      startResponse(status, headers);
      if (environ.REQUEST_METHOD === "HEAD" || length === 0) return [];

      const wrapper = environ["wsgi.file_wrapper"];
      let body: Body;
      if (typeof wrapper === "function" && start === 0 && length === size) {
        body = wrapper(file, CHUNK_SIZE);
        if (typeof body?.close !== "function") body = closingFile(body, file);
      } else {
        if (start > 0) await file.seek(start, Deno.SeekMode.Start);
        body = fileBody(file, CHUNK_SIZE, length);
      }
      file = null; // the body owns it now
      return body;
    } finally {
      file?.close();
    }
  }
}

/**
 * Whether a `Range` may be honoured given `If-Range` (RFC 9110 section
 * 13.1.5): it must be absent, or equal the strong `ETag`, or equal the
 * `Last-Modified` date exactly.
 */
function ifRangeHolds(ifRange: unknown, etag: string | null, mtime: Date | null): boolean {
  if (typeof ifRange !== "string") return true;
  const value = ifRange.trim();
  if (value.startsWith('"') || value.startsWith("W/")) return etag !== null && value === etag;
  if (mtime === null) return false;
  const date = parseHttpDate(value);
  return !Number.isNaN(date) && Math.floor(date / 1000) === seconds(mtime);
}
