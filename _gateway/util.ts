/**
 * URL helpers in the spirit of Python's `wsgiref.util`: rebuilding URLs from
 * an environ, and moving path segments from `PATH_INFO` to `SCRIPT_NAME`.
 *
 * @module
 */

import type { Environ } from "../types.ts";

/** Characters that stay as they are in a path (RFC 3986 `pchar` and "/"), as bytes. */
const PATH_SAFE = new Uint8Array(256);
for (
  const c of "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-._~!$&'()*+,;=:@/"
) {
  PATH_SAFE[c.charCodeAt(0)] = 1;
}

/** Percent-encodes a native string for use as a URL path: bytes outside `pchar` and "/" become `%XX`. */
function quotePath(native: string): string {
  let out = "";
  for (let i = 0; i < native.length; i++) {
    const c = native.charCodeAt(i);
    out += c < 256 && PATH_SAFE[c] === 1
      ? native[i]
      : "%" + (c & 0xff).toString(16).toUpperCase().padStart(2, "0");
  }
  return out;
}

/** `scheme://host[:port]` from `HTTP_HOST`, else `SERVER_NAME` and `SERVER_PORT` (PEP 3333, "URL Reconstruction"). */
function hostUrl(environ: Environ): string {
  const scheme = environ["wsgi.url_scheme"];
  let url = `${scheme}://`;
  const host = environ.HTTP_HOST;
  if (host) {
    url += host;
  } else {
    url += environ.SERVER_NAME;
    const port = environ.SERVER_PORT;
    if ((scheme === "https" && port !== "443") || (scheme === "http" && port !== "80")) {
      url += `:${port}`;
    }
  }
  return url;
}

/**
 * The URL of the application's root: scheme, host and `SCRIPT_NAME` (or
 * `"/"`), as `wsgiref.util.application_uri`.
 *
 * @example
 * ```ts
 * import { applicationUri } from "./util.ts";
 * import type { Environ } from "../types.ts";
 * import { equal } from "node:assert/strict";
 * const environ = { "wsgi.url_scheme": "http", HTTP_HOST: "example.com", SCRIPT_NAME: "/app" };
 * equal(applicationUri(environ as unknown as Environ), "http://example.com/app");
 * ```
 */
export function applicationUri(environ: Environ): string {
  return hostUrl(environ) + (quotePath(environ.SCRIPT_NAME) || "/");
}

/**
 * The full URL of the request, rebuilt from the environ as
 * `wsgiref.util.request_uri` does: `SCRIPT_NAME` and `PATH_INFO` are
 * percent-encoded again, and the query string is appended unless
 * `includeQuery` is false.
 *
 * @example
 * ```ts
 * import { requestUri } from "./util.ts";
 * import type { Environ } from "../types.ts";
 * import { equal } from "node:assert/strict";
 * const environ = {
 *   "wsgi.url_scheme": "http", HTTP_HOST: "example.com",
 *   SCRIPT_NAME: "", PATH_INFO: "/a b", QUERY_STRING: "x=1",
 * };
 * equal(requestUri(environ as unknown as Environ), "http://example.com/a%20b?x=1");
 * ```
 */
export function requestUri(environ: Environ, includeQuery = true): string {
  let url = hostUrl(environ) + quotePath(environ.SCRIPT_NAME);
  url += environ.PATH_INFO ? quotePath(environ.PATH_INFO) : (environ.SCRIPT_NAME ? "" : "/");
  if (includeQuery && environ.QUERY_STRING) url += `?${environ.QUERY_STRING}`;
  return url;
}

/**
 * Moves one path segment from `PATH_INFO` to the end of `SCRIPT_NAME` and
 * returns it, as `wsgiref.util.shift_path_info`: how a dispatcher hands the
 * rest of the path to a sub-application. Returns `null` (changing nothing)
 * when `PATH_INFO` has no segments left. Empty segments from repeated
 * slashes are skipped; a trailing slash yields `""` once.
 *
 * @example
 * ```ts
 * import { shiftPathInfo } from "./util.ts";
 * import type { Environ } from "../types.ts";
 * import { equal } from "node:assert/strict";
 * const environ = { SCRIPT_NAME: "/app", PATH_INFO: "/api/users/7" } as unknown as Environ;
 * equal(shiftPathInfo(environ), "api");
 * equal(environ.SCRIPT_NAME, "/app/api");
 * equal(environ.PATH_INFO, "/users/7");
 * ```
 */
export function shiftPathInfo(environ: Environ): string | null {
  const pathInfo = environ.PATH_INFO;
  if (!pathInfo) return null;
  const split = pathInfo.split("/");
  const parts = split.length === 1 ? ["", split[0]!] : split;
  // Collapse empty and "." segments between the first and the last.
  const middle = parts.slice(1, -1).filter((p) => p !== "" && p !== ".");
  const rest = [parts[0]!, ...middle, parts[parts.length - 1]!];
  const name = rest[1]!;
  rest.splice(1, 1);
  let scriptName = normalizePath(`${environ.SCRIPT_NAME}/${name}`);
  if (scriptName.endsWith("/")) scriptName = scriptName.slice(0, -1);
  if (name === "" && !scriptName.endsWith("/")) scriptName += "/";
  environ.SCRIPT_NAME = scriptName;
  environ.PATH_INFO = rest.join("/");
  return name === "." ? null : name;
}

/** Resolves "." and ".." segments and repeated slashes, as POSIX `normpath`. */
function normalizePath(path: string): string {
  const absolute = path.startsWith("/");
  const out: string[] = [];
  for (const segment of path.split("/")) {
    if (segment === "" || segment === ".") continue;
    if (segment === "..") {
      if (out.length > 0 && out[out.length - 1] !== "..") out.pop();
      else if (!absolute) out.push("..");
      continue;
    }
    out.push(segment);
  }
  const joined = (absolute ? "/" : "") + out.join("/");
  return joined === "" ? "." : joined;
}
