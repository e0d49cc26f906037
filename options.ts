/**
 * Server configuration: one table of every option ({@linkcode OPTIONS}),
 * the `ServerOptions` type that code passes to `serve()`, and
 * {@linkcode resolveOptions}, which applies the defaults and validates once.
 *
 * The table is the single declaration of each option: its name in code, its
 * command-line flag, its type, default and help. The command line's flag
 * parser and `--help` text are derived from it, and a test checks that the
 * options table in `docs/options.md` says the same. To add an option: a
 * field in {@linkcode ServerOptions} (with its JSDoc), a row in
 * {@linkcode OPTIONS}, a line in {@linkcode resolveOptions} if it needs more
 * than a type and range check, and the row in `docs/options.md`.
 *
 * Errors follow one rule: a value of the wrong type is a `TypeError`, and so
 * are options that contradict each other; a value of the right type outside
 * what the option allows is a `RangeError`. Either way the error names the
 * option and says what it expected ({@linkcode OptionError}), so the command
 * line can say the same thing in terms of its flag.
 *
 * @module
 */

import { DEFAULT_PARSER_LIMITS, type ParserLimits } from "./_h1/parser.ts";
import {
  ACCESS_LOG_FORMATS,
  type AccessLogEntry,
  type AccessLogFormat,
} from "./_gateway/access_log.ts";

export type { AccessLogEntry, AccessLogFormat };

/** Where the access log goes and how its lines look (the `accessLog` option). */
export interface AccessLogOptions {
  /**
   * `"common"` (the Common Log Format), `"combined"` (plus referer, user
   * agent and the duration in milliseconds) or `"json"` (one object per
   * line).
   * @default {"common"}
   */
  format?: AccessLogFormat;
  /**
   * A file to append the lines to (created if missing), or `"-"` for
   * standard output.
   * @default {"-"}
   */
  path?: string;
}

/** Options of `serve()`. Every field is optional; each default is given below. */
export interface ServerOptions {
  /**
   * The interface to listen on. `"0.0.0.0"` or `"::"` listens on all
   * interfaces.
   * @default {"127.0.0.1"}
   */
  hostname?: string;
  /**
   * The TCP port to listen on; 0 picks a free one (read it from `addr`).
   * @default {8000}
   */
  port?: number;
  /** Listen on this Unix socket path instead of TCP. */
  path?: string;
  /** PEM certificate chain: with `key`, serve HTTPS (`wsgi.url_scheme` is `"https"`). */
  cert?: string;
  /** PEM private key for `cert`. */
  key?: string;
  /** Aborting this signal shuts the server down gracefully, as `shutdown()` does. */
  signal?: AbortSignal;
  /**
   * Called once the server listens. By default it prints the URL, as
   * `Deno.serve` does.
   */
  onListen?: (addr: Deno.Addr) => void;
  /**
   * Called with every application error and contract violation (the details
   * never reach the client). By default they are printed to standard error.
   */
  onError?: (message: string, error?: unknown) => void;
  /**
   * The access log: one line per response. `true` writes the Common Log
   * Format to standard output; `{ format, path }` chooses the format and the
   * destination ({@linkcode AccessLogOptions}); a function receives each
   * response as an {@linkcode AccessLogEntry}, to send anywhere. Lines are
   * gathered and written in large writes (when 64 KiB are buffered, when the
   * server goes idle, and at least once a second), never making a request
   * wait; a destination slower than the server (a full pipe) makes the
   * server drop lines beyond 4 MiB, and say how many once it catches up.
   * `shutdown()` writes out what is buffered before `finished` resolves.
   * @default {false}
   */
  accessLog?: boolean | ((entry: AccessLogEntry) => void) | AccessLogOptions;
  /**
   * The `Server` header added when the application sets none, and
   * `SERVER_SOFTWARE`; `null` sends no `Server` header.
   * @default {"deno-wsgi"}
   */
  serverHeader?: string | null;
  /**
   * Where the application is mounted: requests under this path prefix get it
   * as `SCRIPT_NAME` and the rest as `PATH_INFO` (no trailing slash).
   * @default {""}
   */
  scriptName?: string;
  /**
   * What `wsgi.multiprocess` says: whether other processes serve the same
   * application.
   * @default {false}
   */
  multiprocess?: boolean;
  /**
   * Listen with `SO_REUSEPORT`, so that several processes can listen on the
   * same address and port and the kernel spreads connections over them
   * (Linux; ignored elsewhere). Deno needs `--unstable-net` for it: without
   * that flag the process exits with code 70 when it listens. `serveWorkers`
   * sets it in every worker; set it yourself only to run such processes
   * some other way. Not with `path`.
   * @default {false}
   */
  reusePort?: boolean;
  /**
   * Longest request line (method, target and version), in bytes; longer gets
   * 414. Go, nginx and Node allow 8-16 KiB for the line or the whole head.
   * @default {8192}
   */
  maxRequestLineBytes?: number;
  /**
   * Largest header section (all field lines), in bytes; larger gets 431.
   * h11 and Node use 16 KiB.
   * @default {16384}
   */
  maxHeaderBytes?: number;
  /**
   * Most header fields in one request; more gets 431. hyper uses 100.
   * @default {100}
   */
  maxHeaders?: number;
  /**
   * Largest request body, in bytes; larger gets 413. The body is streamed,
   * so a large limit costs no memory. waitress uses 1 GiB.
   * @default {1073741824}
   */
  maxBodyBytes?: number;
  /**
   * How long a client may take to send a complete request head, from the
   * connection's start or the first byte of a later request; past it the
   * server answers 408 and closes (slowloris defence). hyper uses 30 s.
   * @default {30000}
   */
  headerTimeoutMs?: number;
  /**
   * How long an idle keep-alive connection waits for its next request
   * before it is closed. waitress uses 120 s.
   * @default {120000}
   */
  keepAliveTimeoutMs?: number;
  /**
   * How long a read of the request body may wait for bytes before the
   * connection is closed and `wsgi.input` rejects (a stalled upload).
   * @default {60000}
   */
  bodyTimeoutMs?: number;
  /**
   * How long a write of the response may wait for the client to take bytes
   * before the connection is closed: a client that stops reading cannot
   * hold a connection (and a response's memory) forever. The wait restarts
   * whenever bytes go out, as with nginx's `send_timeout` (60 s).
   * @default {60000}
   */
  sendTimeoutMs?: number;
  /**
   * Most connections open at once. Beyond it, new connections wait in the
   * kernel's listen backlog until one closes (as waitress does).
   * @default {1000}
   */
  maxConnections?: number;
  /**
   * How long `shutdown()` lets in-flight requests finish before it closes
   * their connections. gunicorn's graceful timeout is 30 s.
   * @default {30000}
   */
  shutdownTimeoutMs?: number;
}

/** The numeric limits and timeouts: every option that is a whole number of bytes, fields, connections or milliseconds. */
export type Limits = Required<
  Pick<
    ServerOptions,
    | "maxRequestLineBytes"
    | "maxHeaderBytes"
    | "maxHeaders"
    | "maxBodyBytes"
    | "headerTimeoutMs"
    | "keepAliveTimeoutMs"
    | "bodyTimeoutMs"
    | "sendTimeoutMs"
    | "maxConnections"
    | "shutdownTimeoutMs"
  >
>;

/** What kind of value an option takes: decides how the command line reads it and how it is checked. */
export type OptionType =
  /** A whole number; on the command line, decimal digits. */
  | "integer"
  /** A limit or timeout: a positive whole number, or `Infinity` in code for none. */
  | "limit"
  | "string"
  /** On the command line a file's path, whose contents are the option's value. */
  | "file"
  /** A flag on the command line; `--no-NAME` turns off what is on by default. */
  | "boolean"
  /** A comma-separated list on the command line. */
  | "list"
  /** Code only: a function, an `AbortSignal`. */
  | "object";

/** One option: its name in code, its command-line flag, its type, default and meaning. */
export interface OptionSpec {
  /**
   * The field of {@linkcode ServerOptions} (or of `serveWorkers()`'s
   * options, for `workers`, the supervisor's limits and the proxy
   * settings); `null` for a flag that only the command line has (`--help`).
   */
  readonly name: string | null;
  /** The command-line flag without its dashes; `null` for an option only code can set. */
  readonly flag: string | null;
  /** What stands for the flag's value in the usage text: `N`, `HOST`, `FILE`. */
  readonly arg?: string;
  readonly type: OptionType;
  /** The default in code, as the docs write it; absent when there is none. */
  readonly default?: string;
  /** The command line's default when it differs from the code's. */
  readonly cliDefault?: string;
  /**
   * For a flag in other units than the option in code: how many of the
   * code's units one of the flag's is (1000 for a flag in seconds whose
   * option is in milliseconds). `min` and `max` hold for both.
   */
  readonly flagScale?: number;
  /** For integers: the smallest value allowed. */
  readonly min?: number;
  /** For integers: the largest value allowed. */
  readonly max?: number;
  /** The numeric default, for integers and limits. */
  readonly value?: number;
  /** For strings: the only values allowed. */
  readonly choices?: readonly string[];
  /** Whether the command line also takes `--no-FLAG`, to turn off what is on by default. */
  readonly negatable?: boolean;
  /** One line: what the option does. */
  readonly help: string;
}

/** A limit's row: a positive whole number with its default. */
function limit(name: keyof Limits, flag: string, value: number, help: string): OptionSpec {
  return { name, flag, arg: "N", type: "limit", value, default: String(value), help };
}

/**
 * Every option, in the order `--help` and `docs/options.md` list them.
 * Code-only options have no flag; command-line-only flags have no name.
 */
export const OPTIONS: readonly OptionSpec[] = [
  {
    name: "hostname",
    flag: "host",
    arg: "HOST",
    type: "string",
    default: '"127.0.0.1"',
    help: "interface to listen on (0.0.0.0 or :: for all)",
  },
  {
    name: "port",
    flag: "port",
    arg: "N",
    type: "integer",
    min: 0,
    max: 65535,
    value: 8000,
    default: "8000",
    help: "TCP port; 0 picks a free one",
  },
  {
    name: "path",
    flag: "unix",
    arg: "PATH",
    type: "string",
    help: "listen on this Unix socket instead of TCP",
  },
  {
    name: "cert",
    flag: "cert",
    arg: "FILE",
    type: "file",
    help: "PEM certificate chain: serve HTTPS (with --key)",
  },
  { name: "key", flag: "key", arg: "FILE", type: "file", help: "PEM private key of --cert" },
  {
    name: "scriptName",
    flag: "script-name",
    arg: "PATH",
    type: "string",
    default: '""',
    help: "mount point: requests under it get it as SCRIPT_NAME",
  },
  {
    name: "accessLog",
    flag: "access-log",
    arg: "PATH",
    type: "string",
    negatable: true,
    default: "false",
    cliDefault: '"-"',
    help: "append the access log to PATH (- for standard output)",
  },
  {
    name: "accessLog.format",
    flag: "access-log-format",
    arg: "FORMAT",
    type: "string",
    choices: ACCESS_LOG_FORMATS,
    default: '"common"',
    help: "access-log lines: common, combined or json",
  },
  {
    name: "serverHeader",
    flag: null,
    type: "string",
    default: '"deno-wsgi"',
    help: "Server header unless the app sets one, and SERVER_SOFTWARE; null: none",
  },
  {
    name: "workers",
    flag: "workers",
    arg: "N",
    type: "integer",
    min: 1,
    max: 1024,
    value: 1,
    default: "1",
    help: "processes serving the app on one port (more needs --allow-run)",
  },
  {
    name: "timeoutMs",
    flag: "timeout",
    arg: "N",
    type: "integer",
    min: 0,
    value: 30_000,
    default: "30000",
    cliDefault: "30",
    flagScale: 1000,
    help: "s a worker's event loop may block before it is killed and replaced; 0: never",
  },
  {
    name: "maxRequests",
    flag: "max-requests",
    arg: "N",
    type: "integer",
    min: 0,
    value: 0,
    default: "0",
    help: "replace a worker after it served N requests; 0: never",
  },
  {
    name: "maxRequestsJitter",
    flag: "max-requests-jitter",
    arg: "N",
    type: "integer",
    min: 0,
    value: 0,
    default: "0",
    help: "add a random 0 to N to each worker's --max-requests",
  },
  {
    name: "proxyFix.trustedProxies",
    flag: "forwarded-allow-ips",
    arg: "LIST",
    type: "list",
    help: "proxies whose X-Forwarded-For/-Proto count: IPs, CIDRs, unix, * for any",
  },
  {
    name: "proxyFix.forwarded",
    flag: "forwarded-header",
    type: "boolean",
    default: "false",
    help: "also believe RFC 7239 Forwarded from those proxies",
  },
  limit(
    "maxRequestLineBytes",
    "max-request-line",
    DEFAULT_PARSER_LIMITS.maxRequestLineBytes,
    "longest request line in bytes (414 beyond)",
  ),
  limit(
    "maxHeaderBytes",
    "max-header-bytes",
    DEFAULT_PARSER_LIMITS.maxHeaderBytes,
    "largest header section in bytes (431 beyond)",
  ),
  limit(
    "maxHeaders",
    "max-headers",
    DEFAULT_PARSER_LIMITS.maxHeaders,
    "most header fields (431 beyond)",
  ),
  limit(
    "maxBodyBytes",
    "max-body-bytes",
    DEFAULT_PARSER_LIMITS.maxBodyBytes,
    "largest request body in bytes (413 beyond)",
  ),
  limit("headerTimeoutMs", "header-timeout", 30_000, "ms to receive a whole head (408 beyond)"),
  limit("keepAliveTimeoutMs", "keep-alive-timeout", 120_000, "ms an idle connection stays open"),
  limit("bodyTimeoutMs", "body-timeout", 60_000, "ms a request-body read may wait for bytes"),
  limit("sendTimeoutMs", "send-timeout", 60_000, "ms a response write may wait for the client"),
  limit("maxConnections", "max-connections", 1000, "most open connections (more wait)"),
  limit("shutdownTimeoutMs", "shutdown-timeout", 30_000, "ms in-flight requests get on shutdown"),
  {
    name: "multiprocess",
    flag: null,
    type: "boolean",
    default: "false",
    help: "what wsgi.multiprocess says (set by --workers)",
  },
  {
    name: "reusePort",
    flag: null,
    type: "boolean",
    default: "false",
    help: "listen with SO_REUSEPORT (needs --unstable-net; set by --workers)",
  },
  {
    name: "signal",
    flag: null,
    type: "object",
    help: "an AbortSignal: aborting it shuts the server down",
  },
  {
    name: "onListen",
    flag: null,
    type: "object",
    help: "called with the address once listening; prints the URL by default",
  },
  {
    name: "onError",
    flag: null,
    type: "object",
    help: "receives application errors and wsgi.errors lines; standard error by default",
  },
  { name: null, flag: "version", type: "boolean", help: "print the version and exit" },
  { name: null, flag: "help", type: "boolean", help: "show this help and exit" },
];

/** The rows of the limits and timeouts. */
export const LIMIT_OPTIONS: readonly (OptionSpec & { readonly name: keyof Limits })[] = OPTIONS
  .filter((o): o is OptionSpec & { readonly name: keyof Limits } => o.type === "limit");

/**
 * An invalid option: a `TypeError` or `RangeError` (see the module's rule)
 * that also says which option and what it expected, so that the command
 * line can report it in terms of its flag.
 */
export interface OptionError extends Error {
  /** The option's name in code: `"scriptName"`. */
  readonly option: string;
  /** What the option must be: `"an integer from 0 to 65535"`, or for a conflict, why. */
  readonly expected: string;
  /** For a conflict between two options, the other one. */
  readonly conflictsWith?: string;
}

/** Whether `error` is an {@linkcode OptionError}. */
export function isOptionError(error: unknown): error is OptionError {
  return error instanceof Error && typeof (error as Partial<OptionError>).option === "string" &&
    typeof (error as Partial<OptionError>).expected === "string";
}

/** `99999`, `"abc"`, `a function`: the value an error message quotes. */
function shown(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "number" || typeof value === "boolean" || value == null) {
    return String(value);
  }
  return /^[aeiou]/.test(typeof value) ? `an ${typeof value}` : `a ${typeof value}`;
}

/**
 * Makes the error for an invalid option value: `Invalid option "port":
 * expected an integer from 0 to 65535, got 99999`.
 */
export function optionError(
  kind: TypeErrorConstructor | RangeErrorConstructor,
  option: string,
  expected: string,
  value: unknown,
): OptionError {
  const error = new kind(`Invalid option "${option}": expected ${expected}, got ${shown(value)}`);
  return Object.assign(error, { option, expected });
}

/**
 * Makes the error for two options that cannot go together (a `TypeError`):
 * `Invalid options "cert" and "key": give both or neither`.
 */
export function conflictError(option: string, other: string, why: string): OptionError {
  const error = new TypeError(`Invalid options "${option}" and "${other}": ${why}`);
  return Object.assign(error, { option, expected: why, conflictsWith: other });
}

/** What an integer row allows, in words: `"an integer from 0 to 65535"`. */
export function integerRule(spec: OptionSpec): string {
  if (spec.type === "limit") return "a positive integer";
  return spec.max === undefined
    ? `an integer of at least ${spec.min ?? 0}`
    : `an integer from ${spec.min ?? 0} to ${spec.max}`;
}

/** Checks a number against its row: a TypeError for a non-number, a RangeError out of range. */
export function checkInteger(spec: OptionSpec, value: unknown): number {
  const name = spec.name!;
  const rule = integerRule(spec);
  if (typeof value !== "number" || Number.isNaN(value)) {
    throw optionError(TypeError, name, rule, value);
  }
  const whole = Number.isInteger(value) || (spec.type === "limit" && value === Infinity);
  const low = spec.type === "limit" ? 1 : spec.min ?? 0;
  if (!whole || value < low || (spec.max !== undefined && value > spec.max)) {
    throw optionError(RangeError, name, rule, value);
  }
  return value;
}

/** The row of option `name`. */
export function optionSpec(name: string): OptionSpec {
  const spec = OPTIONS.find((o) => o.name === name);
  if (spec === undefined) throw new Error(`No option "${name}" in the options table`);
  return spec;
}

/**
 * Whether `prefix` can be a path prefix (a mount point, a `SCRIPT_NAME`):
 * `/` followed by segments, none empty, `.` or `..`, no trailing `/`, no
 * `?`, `#`, backslash or control character. Returns what is wrong, or
 * `null` when it is fine. The one rule behind `scriptName`, `mount()`,
 * `staticFiles()`'s `prefix` and `proxyFix()`'s `X-Forwarded-Prefix`.
 */
export function pathPrefixProblem(prefix: string): string | null {
  if (!prefix.startsWith("/")) return "it must start with /";
  if (prefix.endsWith("/")) return "it must not end with /";
  for (let i = 0; i < prefix.length; i++) {
    const c = prefix.charCodeAt(i);
    if (c < 0x20 || c === 0x7f || c === 0x3f || c === 0x23 || c === 0x5c) {
      return "it must not contain ?, #, \\ or control characters";
    }
  }
  for (const segment of prefix.slice(1).split("/")) {
    if (segment === "" || segment === "." || segment === "..") {
      return "its segments must not be empty, . or ..";
    }
  }
  return null;
}

/**
 * Checks a path-prefix option: a `TypeError` if it is not a string, a
 * `RangeError` naming the problem if {@linkcode pathPrefixProblem} finds
 * one. `allow` lists the special values that are accepted as they are
 * (`""` for the root).
 */
export function checkPathPrefix(
  option: string,
  value: unknown,
  allow: readonly string[] = [],
): string {
  const expected = `${allow.map((a) => `${JSON.stringify(a)} or `).join("")}a path like "/app"`;
  if (typeof value !== "string") throw optionError(TypeError, option, expected, value);
  if (allow.includes(value)) return value;
  const problem = pathPrefixProblem(value);
  if (problem !== null) {
    throw optionError(RangeError, option, `${expected} (${problem})`, value);
  }
  return value;
}

/** Options after defaults and validation. */
export interface ResolvedOptions extends Limits {
  readonly hostname: string;
  readonly port: number;
  readonly path: string | undefined;
  readonly tls: { readonly cert: string; readonly key: string } | undefined;
  readonly serverHeader: string | null;
  readonly scriptName: string;
  readonly multiprocess: boolean;
  readonly reusePort: boolean;
  /** What the request parser enforces: the four size limits, and nothing else. */
  readonly parserLimits: Readonly<ParserLimits>;
  readonly signal: AbortSignal | undefined;
  readonly onListen: ((addr: Deno.Addr) => void) | undefined;
  readonly onError: ((message: string, error?: unknown) => void) | undefined;
  /** The access log: its format and destination, a function, or `null` for none. */
  readonly accessLog: Required<AccessLogOptions> | ((entry: AccessLogEntry) => void) | null;
}

/**
 * Frozen options objects already resolved: the command line validates its
 * options before it loads the application, then serves with the same
 * frozen object, which is not resolved again. (An object that is not
 * frozen may change between calls, so it is resolved each time.)
 */
const resolvedCache = new WeakMap<ServerOptions, ResolvedOptions>();

function checkString(option: string, value: unknown, fallback: string): string {
  if (value === undefined) return fallback;
  if (typeof value !== "string") throw optionError(TypeError, option, "a string", value);
  return value;
}

function checkBoolean(option: string, value: unknown): boolean {
  if (value === undefined) return false;
  if (typeof value !== "boolean") throw optionError(TypeError, option, "true or false", value);
  return value;
}

function checkFunction<T>(option: string, value: unknown): T | undefined {
  if (value !== undefined && typeof value !== "function") {
    throw optionError(TypeError, option, "a function", value);
  }
  return value as T | undefined;
}

/**
 * Applies the defaults and validates (once for a frozen options object:
 * asking again returns the same result). Throws an {@linkcode OptionError}: a
 * `TypeError` for a wrong type or contradicting options, a `RangeError` for
 * a value out of range.
 */
export function resolveOptions(options: ServerOptions): ResolvedOptions {
  const cached = resolvedCache.get(options);
  if (cached !== undefined) return cached;
  const limits = {} as Record<keyof Limits, number>;
  for (const spec of LIMIT_OPTIONS) {
    limits[spec.name] = checkInteger(spec, options[spec.name] ?? spec.value);
  }
  const port = checkInteger(optionSpec("port"), options.port ?? 8000);
  const path = options.path === undefined ? undefined : checkString("path", options.path, "");
  const reusePort = checkBoolean("reusePort", options.reusePort);
  if (reusePort && path !== undefined) {
    throw conflictError("reusePort", "path", "a Unix socket cannot be shared");
  }
  const cert = options.cert === undefined ? undefined : checkString("cert", options.cert, "");
  const key = options.key === undefined ? undefined : checkString("key", options.key, "");
  if ((cert === undefined) !== (key === undefined)) {
    throw conflictError("cert", "key", "give both or neither");
  }
  const serverHeader = options.serverHeader === undefined ? "deno-wsgi" : options.serverHeader;
  if (serverHeader !== null && typeof serverHeader !== "string") {
    throw optionError(TypeError, "serverHeader", "a string or null", serverHeader);
  }
  if (serverHeader !== null && !/^[\x20-\x7e]+$/.test(serverHeader)) {
    throw optionError(RangeError, "serverHeader", "printable ASCII", serverHeader);
  }
  const accessLog = checkAccessLog(options.accessLog);
  if (options.signal !== undefined && !(options.signal instanceof AbortSignal)) {
    throw optionError(TypeError, "signal", "an AbortSignal", options.signal);
  }
  const resolved: ResolvedOptions = Object.freeze({
    ...limits,
    hostname: checkString("hostname", options.hostname, "127.0.0.1"),
    port,
    path,
    tls: cert !== undefined && key !== undefined ? { cert, key } : undefined,
    serverHeader,
    scriptName: checkScriptName(options.scriptName),
    multiprocess: checkBoolean("multiprocess", options.multiprocess),
    reusePort,
    parserLimits: Object.freeze({
      maxRequestLineBytes: limits.maxRequestLineBytes,
      maxHeaderBytes: limits.maxHeaderBytes,
      maxHeaders: limits.maxHeaders,
      maxBodyBytes: limits.maxBodyBytes,
    }),
    signal: options.signal,
    onListen: checkFunction<(addr: Deno.Addr) => void>("onListen", options.onListen),
    onError: checkFunction<(message: string, error?: unknown) => void>("onError", options.onError),
    accessLog,
  });
  if (Object.isFrozen(options)) resolvedCache.set(options, resolved);
  return resolved;
}

/** The `accessLog` option, resolved: its format and destination, a function, or `null`. */
function checkAccessLog(value: ServerOptions["accessLog"]): ResolvedOptions["accessLog"] {
  if (value === undefined || value === false) return null;
  if (value === true) return { format: "common", path: "-" };
  if (typeof value === "function") return value;
  if (typeof value !== "object" || value === null) {
    throw optionError(TypeError, "accessLog", "true, false, a function or { format, path }", value);
  }
  const format = checkChoice(optionSpec("accessLog.format"), value.format ?? "common");
  const path = value.path ?? "-";
  if (typeof path !== "string" || path === "") {
    throw optionError(TypeError, "accessLog.path", 'a file path or "-"', path);
  }
  return { format: format as AccessLogFormat, path };
}

/** Checks a string against its row's choices: a TypeError for a non-string, a RangeError for another string. */
export function checkChoice(spec: OptionSpec, value: unknown): string {
  const expected = `one of ${spec.choices!.map((c) => JSON.stringify(c)).join(", ")}`;
  if (typeof value !== "string") throw optionError(TypeError, spec.name!, expected, value);
  if (!spec.choices!.includes(value)) throw optionError(RangeError, spec.name!, expected, value);
  return value;
}

/**
 * The `scriptName` option: `""` (the default) or a path prefix like `/app`
 * (see {@linkcode pathPrefixProblem}). Throws an {@linkcode OptionError}
 * otherwise.
 */
export function checkScriptName(scriptName: unknown): string {
  return checkPathPrefix("scriptName", scriptName ?? "", [""]);
}

/** `host:port`, with an IPv6 literal in brackets. */
export function hostPort(hostname: string, port: number): string {
  return `${hostname.includes(":") ? `[${hostname}]` : hostname}:${port}`;
}

/** What a server says it listens on: `http://host:port/`, `https://...`, or `unix:PATH`. */
export function listenUrl(addr: Deno.Addr, tls: boolean): string {
  if (addr.transport === "unix" || addr.transport === "unixpacket") return `unix:${addr.path}`;
  if (addr.transport !== "tcp") return String(addr.transport);
  return `${tls ? "https" : "http"}://${hostPort(addr.hostname, addr.port)}/`;
}
