/**
 * Building the WSGI `environ` from a parsed request head: a pure function of
 * its inputs (waitress's `get_environment`, wsgiref's `setup_environ`).
 *
 * @module
 */

import type { Environ, ErrorStream, InputStream } from "../types.ts";
import type { RequestHead } from "../_h1/parser.ts";
import { fileWrapper } from "./file_wrapper.ts";
import { percentDecodeToNative } from "./native.ts";

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
 * Builds a fresh environ for one request.
 *
 * `PATH_INFO` is the percent-decoded path as a native string; when
 * `conn.scriptName` is a prefix of it, that prefix becomes `SCRIPT_NAME`.
 */
export function buildEnviron(
  head: RequestHead,
  conn: ConnectionInfo,
  input: InputStream,
  errors: ErrorStream,
): Environ {
  let pathInfo = head.path === "*" ? "*" : percentDecodeToNative(head.path);
  let scriptName = "";
  const prefix = conn.scriptName;
  if (prefix !== "" && (pathInfo === prefix || pathInfo.startsWith(prefix + "/"))) {
    scriptName = prefix;
    pathInfo = pathInfo.slice(prefix.length);
  }
  let serverName = conn.serverName;
  let serverPort = conn.serverPort;
  if (head.authority !== null && head.authority !== "") {
    const [name, port] = splitHost(head.authority);
    serverName = name;
    serverPort = port || (conn.urlScheme === "https" ? "443" : "80");
  }
  const environ: Environ = {
    REQUEST_METHOD: head.method,
    SCRIPT_NAME: scriptName,
    PATH_INFO: pathInfo,
    QUERY_STRING: head.query,
    REQUEST_URI: head.target,
    SERVER_NAME: serverName,
    SERVER_PORT: serverPort,
    SERVER_PROTOCOL: head.version,
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
  for (const [name, value] of head.headers) {
    const key = environKey(name);
    if (key === null) continue;
    if (key === "CONTENT_LENGTH" && head.chunked) continue;
    const previous = environ[key];
    if (previous === undefined) {
      environ[key] = value;
    } else {
      environ[key] = `${previous}${key === "HTTP_COOKIE" ? "; " : ", "}${value}`;
    }
  }
  return environ;
}
