/**
 * Building the WSGI `environ` from a request: a pure function of its inputs
 * (waitress's `get_environment`, wsgiref's `setup_environ`). It takes a
 * {@linkcode RequestDescription}, which the parser's request head is as it
 * stands and which the fetch bridge builds from a `Request`.
 *
 * @module
 */

import type { Environ, ErrorStream, InputStream } from "../types.ts";
import { fileWrapper } from "./file_wrapper.ts";
import { percentDecodeToNative } from "./native.ts";

/**
 * What {@linkcode buildEnviron} needs to know about a request: its request
 * line and its header fields, every string a native (latin-1) string. How
 * the request arrived (parsed from a socket, or a fetch `Request`) is not
 * its business.
 */
export interface RequestDescription {
  /** The method, case preserved: `REQUEST_METHOD`. */
  readonly method: string;
  /** The request-target as sent: `REQUEST_URI`. */
  readonly target: string;
  /** The path, still percent-encoded; `"*"` for `OPTIONS *`. */
  readonly path: string;
  /** The query without the `?`, still encoded: `QUERY_STRING` (`""` when there is none). */
  readonly query: string;
  /** `SERVER_PROTOCOL`. */
  readonly version: "HTTP/1.1" | "HTTP/1.0";
  /**
   * Where the request was addressed (RFC 9112 section 3.2): the authority of
   * an absolute-form target, else the `Host` field, else `null`; it gives
   * `SERVER_NAME` and `SERVER_PORT`.
   */
  readonly authority: string | null;
  /** The header fields in the order they came, repeated names included. */
  readonly headers: readonly (readonly [name: string, value: string])[];
  /**
   * Whether the body is chunked. A `Content-Length` beside chunked framing
   * says nothing about the body (RFC 9112 section 6.3), so it is not passed
   * on as `CONTENT_LENGTH`.
   */
  readonly chunked: boolean;
}

/** What the connection knows that the request head does not say. */
export interface ConnectionInfo {
  /** `"http"` or `"https"`. */
  readonly urlScheme: string;
  /** The listening address's host name, used when the request has no `Host`. */
  readonly serverName: string;
  /** The listening port, used when the request has no `Host`. */
  readonly serverPort: string;
  /** The peer's address, if the transport has one. */
  readonly remoteAddr?: string;
  /** The peer's port, if the transport has one. */
  readonly remotePort?: string;
  /** Where the application is mounted: the `SCRIPT_NAME` prefix (`""` for the root). */
  readonly scriptName: string;
  /** Whether other processes serve the same application. */
  readonly multiprocess: boolean;
  /** `SERVER_SOFTWARE`, if the server names itself. */
  readonly serverSoftware?: string;
}

const WSGI_VERSION = Object.freeze([1, 0] as const);

/**
 * Header name to environ key, cached: `Content-Type` -> `CONTENT_TYPE`,
 * `X-Thing` -> `HTTP_X_THING`, and `null` for names with `_`, which are
 * dropped because `X_Thing` would otherwise pose as `X-Thing` (waitress,
 * gunicorn and nginx drop them too).
 */
const keyCache = new Map<string, string | null>();
const KEY_CACHE_LIMIT = 1000;

function environKey(name: string): string | null {
  let key = keyCache.get(name);
  if (key !== undefined) return key;
  if (name.includes("_")) {
    key = null;
  } else {
    const upper = name.toUpperCase().replaceAll("-", "_");
    key = upper === "CONTENT_TYPE" || upper === "CONTENT_LENGTH" ? upper : `HTTP_${upper}`;
  }
  if (keyCache.size < KEY_CACHE_LIMIT) keyCache.set(name, key);
  return key;
}

let lastAuthority = "";
let lastSplit: [string, string | null] = ["", null];

/** Splits `host[:port]` (with IPv6 literals in brackets) into name and port; remembers the last one. */
function splitHost(authority: string): [string, string | null] {
  if (authority === lastAuthority) return lastSplit;
  const colon = authority.lastIndexOf(":");
  const split: [string, string | null] = colon < 0 || authority.indexOf("]", colon) >= 0
    ? [authority, null]
    : [authority.slice(0, colon), authority.slice(colon + 1)];
  lastAuthority = authority;
  lastSplit = split;
  return split;
}

/**
 * Builds a fresh environ for one request (PEP 3333, "environ Variables").
 *
 * `PATH_INFO` is the percent-decoded path as a native string; when
 * `conn.scriptName` is a prefix of it, that prefix becomes `SCRIPT_NAME`.
 * `SERVER_NAME` and `SERVER_PORT` come from `request.authority`, else from
 * `conn`. Each header field becomes an `HTTP_*` key (`CONTENT_TYPE` and
 * `CONTENT_LENGTH` without the prefix), repeated fields joined with `", "`
 * (`"; "` for `Cookie`); names with `_` are dropped.
 *
 * @param request The request line and header fields.
 * @param conn What the connection knows: scheme, listening address, peer, mount point.
 * @param input `wsgi.input`.
 * @param errors `wsgi.errors`.
 * @returns A new environ; nothing of it is shared with another request.
 */
export function buildEnviron(
  request: RequestDescription,
  conn: ConnectionInfo,
  input: InputStream,
  errors: ErrorStream,
): Environ {
  let pathInfo = request.path === "*" ? "*" : percentDecodeToNative(request.path);
  let scriptName = "";
  const prefix = conn.scriptName;
  if (prefix !== "" && (pathInfo === prefix || pathInfo.startsWith(prefix + "/"))) {
    scriptName = prefix;
    pathInfo = pathInfo.slice(prefix.length);
  }
  let serverName = conn.serverName;
  let serverPort = conn.serverPort;
  if (request.authority !== null && request.authority !== "") {
    const [name, port] = splitHost(request.authority);
    serverName = name;
    serverPort = port || (conn.urlScheme === "https" ? "443" : "80");
  }
  const environ: Environ = {
    REQUEST_METHOD: request.method,
    SCRIPT_NAME: scriptName,
    PATH_INFO: pathInfo,
    QUERY_STRING: request.query,
    REQUEST_URI: request.target,
    SERVER_NAME: serverName,
    SERVER_PORT: serverPort,
    SERVER_PROTOCOL: request.version,
    "wsgi.version": WSGI_VERSION,
    "wsgi.url_scheme": conn.urlScheme,
    "wsgi.input": input,
    "wsgi.errors": errors,
    "wsgi.multithread": true,
    "wsgi.multiprocess": conn.multiprocess,
    "wsgi.run_once": false,
    "wsgi.input_terminated": true,
    "wsgi.file_wrapper": fileWrapper,
  };
  if (conn.serverSoftware !== undefined) environ.SERVER_SOFTWARE = conn.serverSoftware;
  if (conn.remoteAddr !== undefined) environ.REMOTE_ADDR = conn.remoteAddr;
  if (conn.remotePort !== undefined) environ.REMOTE_PORT = conn.remotePort;
  for (const [name, value] of request.headers) {
    const key = environKey(name);
    if (key === null) continue;
    if (key === "CONTENT_LENGTH" && request.chunked) continue;
    const previous = environ[key];
    if (previous === undefined) {
      environ[key] = value;
    } else {
      environ[key] = `${previous}${key === "HTTP_COOKIE" ? "; " : ", "}${value}`;
    }
  }
  return environ;
}
