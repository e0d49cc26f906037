/**
 * Server configuration: one options object, every default documented where it
 * is declared, validated once by {@linkcode resolveOptions}. The CLI reads
 * its flags from {@linkcode LIMIT_OPTIONS}, so code, CLI and docs cannot drift
 * apart.
 *
 * @module
 */

import { DEFAULT_PARSER_LIMITS } from "./_h1/parser.ts";

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
  /** Listen on this Unix socket path instead of TCP. A stale socket file is replaced. */
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
   * Where access-log lines (Common Log Format, one per response) go: `true`
   * prints them to standard output, a function receives each line.
   * @default {false}
   */
  accessLog?: boolean | ((line: string) => void);
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
   * that flag the process exits with code 70 when it listens. `workers.ts`
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

/** The numeric limits and timeouts, with their defaults. */
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

/** One limit or timeout: its option name, CLI flag, default and meaning. */
export interface LimitOption {
  readonly name: keyof Limits;
  readonly flag: string;
  readonly defaultValue: number;
  readonly help: string;
}

/** Every limit and timeout, in the order the CLI's `--help` lists them. */
export const LIMIT_OPTIONS: readonly LimitOption[] = [
  {
    name: "maxRequestLineBytes",
    flag: "max-request-line",
    defaultValue: DEFAULT_PARSER_LIMITS.maxRequestLineBytes,
    help: "longest request line in bytes (414 beyond)",
  },
  {
    name: "maxHeaderBytes",
    flag: "max-header-bytes",
    defaultValue: DEFAULT_PARSER_LIMITS.maxHeaderBytes,
    help: "largest header section in bytes (431 beyond)",
  },
  {
    name: "maxHeaders",
    flag: "max-headers",
    defaultValue: DEFAULT_PARSER_LIMITS.maxHeaders,
    help: "most header fields (431 beyond)",
  },
  {
    name: "maxBodyBytes",
    flag: "max-body-bytes",
    defaultValue: DEFAULT_PARSER_LIMITS.maxBodyBytes,
    help: "largest request body in bytes (413 beyond)",
  },
  {
    name: "headerTimeoutMs",
    flag: "header-timeout",
    defaultValue: 30_000,
    help: "ms to receive a whole request head (408 beyond)",
  },
  {
    name: "keepAliveTimeoutMs",
    flag: "keep-alive-timeout",
    defaultValue: 120_000,
    help: "ms an idle keep-alive connection stays open",
  },
  {
    name: "bodyTimeoutMs",
    flag: "body-timeout",
    defaultValue: 60_000,
    help: "ms a request-body read may wait for bytes",
  },
  {
    name: "sendTimeoutMs",
    flag: "send-timeout",
    defaultValue: 60_000,
    help: "ms a response write may wait for the client to read",
  },
  {
    name: "maxConnections",
    flag: "max-connections",
    defaultValue: 1000,
    help: "most open connections (others wait in the backlog)",
  },
  {
    name: "shutdownTimeoutMs",
    flag: "shutdown-timeout",
    defaultValue: 30_000,
    help: "ms in-flight requests get on shutdown",
  },
];

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
}

/**
 * Applies defaults and validates. Throws `TypeError` for a wrong type and
 * `RangeError` for a value out of range, naming the option.
 */
export function resolveOptions(options: ServerOptions): ResolvedOptions {
  const limits = {} as Record<keyof Limits, number>;
  for (const { name, defaultValue } of LIMIT_OPTIONS) {
    const value = options[name] ?? defaultValue;
    if (typeof value !== "number" || Number.isNaN(value)) {
      throw new TypeError(`Invalid option "${name}": expected a number, got ${typeof value}`);
    }
    if (!(value > 0) || (!Number.isInteger(value) && value !== Infinity)) {
      throw new RangeError(`Invalid option "${name}": expected a positive integer, got ${value}`);
    }
    limits[name] = value;
  }
  const port = options.port ?? 8000;
  if (!Number.isInteger(port) || port < 0 || port > 65535) {
    throw new RangeError(`Invalid option "port": expected an integer from 0 to 65535, got ${port}`);
  }
  if (options.reusePort === true && options.path !== undefined) {
    throw new TypeError(`Invalid options "reusePort" and "path": a Unix socket cannot be shared`);
  }
  if ((options.cert === undefined) !== (options.key === undefined)) {
    throw new TypeError(`Invalid options "cert" and "key": give both or neither`);
  }
  const scriptName = checkScriptName(options.scriptName);
  const serverHeader = options.serverHeader === undefined ? "deno-wsgi" : options.serverHeader;
  if (serverHeader !== null && !/^[\x20-\x7e]+$/.test(serverHeader)) {
    throw new RangeError(`Invalid option "serverHeader": expected printable ASCII`);
  }
  return {
    ...limits,
    hostname: options.hostname ?? "127.0.0.1",
    port,
    path: options.path,
    tls: options.cert !== undefined && options.key !== undefined
      ? { cert: options.cert, key: options.key }
      : undefined,
    serverHeader,
    scriptName,
    multiprocess: options.multiprocess ?? false,
    reusePort: options.reusePort ?? false,
  };
}

/**
 * The `scriptName` option: `""` (the default) or a path like `/app`, with no
 * trailing `/`. Throws a `RangeError` otherwise.
 */
export function checkScriptName(scriptName: string | undefined): string {
  const value = scriptName ?? "";
  if (value !== "" && (!value.startsWith("/") || value.endsWith("/"))) {
    throw new RangeError(
      `Invalid option "scriptName": expected "" or a path like "/app", got "${value}"`,
    );
  }
  return value;
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
