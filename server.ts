/**
 * The HTTP/1.1 server: the I/O shell around the sans-IO parser and the
 * gateway. It owns the sockets and the clock, and nothing else:
 *
 * ```text
 * socket bytes -> RequestParser (_h1/parser.ts) -> buildEnviron (_gateway/environ.ts)
 *   -> app(environ, startResponse) -> runApplication (_gateway/h1_response.ts)
 *   -> OutputBuffer (_h1/writer.ts) -> socket
 * ```
 *
 * One {@linkcode Connection} per accepted socket runs one request at a time:
 * it reads until the parser yields a head, runs the application, drains what
 * the application left of the request body, and only then parses the next
 * (pipelined) request, so responses go out in order. A response is queued
 * and written in as few writes as possible; pipelined responses share a
 * write. Large writes take turns across connections (`WriteScheduler`), so
 * that no body holds the event loop while other clients wait.
 *
 * Timeouts are deadlines, not timers: each connection records when its
 * current wait must end, and one sweeper per server closes the connections
 * whose deadline has passed.
 *
 * Run as a program, it serves an application from the command line
 * (`cli.ts`); see `deno run server.ts --help`.
 *
 * @module
 */

import type { Application } from "./types.ts";
import { ProtocolError } from "./_h1/errors.ts";
import {
  type ParserEvent,
  type RequestHead,
  type RequestLine,
  RequestParser,
} from "./_h1/parser.ts";
import { statusLine } from "./_h1/status.ts";
import { CONTINUE_RESPONSE, OutputBuffer, writeSimpleResponse } from "./_h1/writer.ts";
import { buildEnviron, type ConnectionInfo } from "./_gateway/environ.ts";
import { errorCode, LogErrorStream, printError } from "./_gateway/error_stream.ts";
import { BodyReader, type BodySource } from "./_gateway/input.ts";
import {
  AccessLogBuffer,
  type AccessLogEntry,
  type AccessLogFormat,
  escapeForLog,
} from "./_gateway/access_log.ts";
import { ClientDisconnectedError, type ResponseOutcome } from "./_gateway/response.ts";
import { HIGH_WATER_MARK, type ResponseChannel, runApplication } from "./_gateway/h1_response.ts";
import { listenUrl, type ResolvedOptions, resolveOptions, type ServerOptions } from "./options.ts";
import { WriteScheduler } from "./write_scheduler.ts";

export type { ServerOptions } from "./options.ts";

/**
 * A running server, as {@linkcode serve} returns it. Shaped like the value of
 * `Deno.serve`.
 */
export interface Server extends AsyncDisposable {
  /** The address the server listens on (with the real port when `port` was 0). */
  readonly addr: Deno.Addr;
  /** Resolves once the server has shut down and every connection is closed. */
  readonly finished: Promise<void>;
  /**
   * Shuts down gracefully: stops accepting, closes idle connections, lets
   * in-flight requests finish (their responses say `Connection: close`), and
   * after `shutdownTimeoutMs` closes whatever is left. Resolves with
   * `finished`. Calling it again returns the same promise (and ignores its
   * options).
   *
   * @example A rolling restart: the new process listens first, the old one
   * gives its idle keep-alive clients a second to send their next request
   * ```ts ignore
   * await server.shutdown({ idleGraceMs: 1000 });
   * ```
   */
  shutdown(options?: ShutdownOptions): Promise<void>;
}

/** How {@linkcode Server.shutdown} treats idle keep-alive connections. */
export interface ShutdownOptions {
  /**
   * How long an idle keep-alive connection may still send one more request
   * (answered, with `Connection: close`) before it is closed. Closing an
   * idle connection races with a client that is sending its next request
   * on it just then: that client sees the connection reset, and only some
   * clients retry (RFC 9112 section 9.3.1). When other processes go on
   * serving on the same port (a rolling restart), a grace of about a second
   * lets busy clients learn of the close from a response instead.
   * Connections that send nothing are closed when it ends. With a grace,
   * responses say `Connection: close` from the next turn of the event
   * loop, once the listening socket is released, so that clients that
   * reconnect at once reach the other processes. The supervisor gives its
   * replaced workers 1000 ms.
   *
   * @default {0} (idle connections close at once)
   */
  idleGraceMs?: number;
}

/**
 * Unread request-body bytes the server reads and discards so that a
 * keep-alive connection can go on after a response (Go drains 256 KiB).
 * With more left, the response says `Connection: close` instead.
 */
export const MAX_DRAIN_BYTES = 256 * 1024;

/**
 * After a final response (an early 413, a 400, `Connection: close`), how
 * long the server keeps reading and discarding what the client still sends,
 * so that closing does not reset the connection before the client has read
 * the answer (RFC 9112 section 9.6). A client such as Python's urllib sends
 * its whole upload before it reads anything. Apache lingers 2 s.
 */
export const LINGER_MS = 2000;
/**
 * Most bytes read and discarded while lingering: enough for the uploads a
 * client sends before it reads (urllib's 10 MiB reach the 413), while one
 * connection's lingering stays a bounded cost. nginx bounds it by time alone.
 */
export const LINGER_BYTES = 64 * 1024 * 1024;

/**
 * Sockets are read straight into the parser's buffer, asking for this much
 * room: little while waiting for a new request (an idle connection costs
 * little memory, and one read still holds a typical head or a batch of
 * pipelined small ones), more inside a head, most inside a body.
 */
const READ_SIZES = { request: 2 * 1024, head: 4 * 1024, body: 64 * 1024 } as const;

/**
 * The most one write call hands the kernel. Deno issues a write at once, so
 * when the socket can take the bytes, the call copies them before it
 * returns; this bounds the time one call holds the event loop (about 0.3 ms
 * at worst, into the socket of a client with a tiny receive window).
 */
const MAX_WRITE_BYTES = 64 * 1024;

/**
 * The most one write call hands the kernel for a connection whose last
 * write found its socket full (it took longer than
 * {@linkcode FULL_SOCKET_MS}): Deno completes such a write later, inside its
 * event loop, where no scheduler can space it out, so it is kept small. Each
 * write that goes through at once doubles the size again, up to
 * {@linkcode MAX_WRITE_BYTES}.
 */
const FULL_SOCKET_WRITE_BYTES = 4 * 1024;

/** A write that takes longer than this waited for room in its socket. */
const FULL_SOCKET_MS = 1;

/**
 * Writes smaller than this skip {@linkcode WriteScheduler}: small responses
 * never wait behind large ones, and cost little.
 */
const SCHEDULED_WRITE_MIN_BYTES = 4 * 1024;

/** Where lingering reads put the bytes they discard; shared, never read. */
const DISCARD = new Uint8Array(4 * 1024);

/**
 * Accept errors that concern only the connection being accepted: its peer
 * reset or abandoned it while it waited in the listen queue. (Linux hands
 * such a connection out, and Deno then fails to read its peer address:
 * `NotConnected`.) The next connection in the queue is unaffected, so the
 * loop goes on at once, without a log line, as Go's `poll.FD.Accept` does
 * for ECONNABORTED.
 */
const ONE_CONNECTION_ERROR_CODES: ReadonlySet<string> = new Set([
  "ECONNABORTED",
  "ECONNRESET",
  "ENOTCONN",
  "EPROTO",
]);

function concernsOneConnection(error: unknown): boolean {
  if (
    error instanceof Deno.errors.NotConnected || error instanceof Deno.errors.ConnectionAborted ||
    error instanceof Deno.errors.ConnectionReset
  ) {
    return true;
  }
  const code = errorCode(error);
  return code !== undefined && ONE_CONNECTION_ERROR_CODES.has(code);
}

/**
 * Any other accept error (out of descriptors or memory, above all) backs
 * off from 5 ms, doubling up to 1 s, so that the loop does not spin while
 * the resource is short (Go's net/http, std's old server).
 */
const ACCEPT_BACKOFF_MIN_MS = 5;
const ACCEPT_BACKOFF_MAX_MS = 1000;

/**
 * Descriptors that `maxConnections` must leave to the rest of the process:
 * Deno holds about 20 of its own (standard streams, its event loop, V8's
 * threads), the listener one, and the application needs some for the files
 * and connections it opens. Half of a smaller limit.
 */
const DESCRIPTOR_RESERVE = 64;

/**
 * The process's soft limit on open descriptors (`ulimit -n`), as Linux's
 * `/proc/self/limits` gives it, or `null` when it cannot be read: another
 * system, no limit, or not the permission (Deno 2.9 lets only `--allow-all`
 * read `/proc/self`). The permission is queried first, so that an
 * interactive run is never prompted for it. Read once per process: a
 * program cannot change it from Deno.
 */
function descriptorLimit(): number | null {
  if (knownDescriptorLimit !== undefined) return knownDescriptorLimit;
  knownDescriptorLimit = null;
  if (Deno.build.os !== "linux") return null;
  const path = "/proc/self/limits";
  try {
    if (Deno.permissions.querySync({ name: "read", path }).state !== "granted") return null;
    const limit = /^Max open files\s+(\d+)\s/m.exec(Deno.readTextFileSync(path));
    if (limit !== null) knownDescriptorLimit = Number(limit[1]);
  } catch {
    // Unreadable: no limit is known.
  }
  return knownDescriptorLimit;
}
let knownDescriptorLimit: number | null | undefined;

/**
 * `options` with `maxConnections` lowered, if need be, to what the
 * descriptor limit leaves after {@linkcode DESCRIPTOR_RESERVE}, saying so in
 * one line of `log`. Each connection holds a descriptor; a server that runs
 * out cannot accept, open a file or even read its own configuration. (nginx
 * warns when `worker_connections` exceed the limit; this also acts on it.)
 */
function capConnections(
  options: ResolvedOptions,
  log: (message: string) => void,
): ResolvedOptions {
  const limit = descriptorLimit();
  if (limit === null) return options;
  const cap = Math.max(1, limit - Math.min(DESCRIPTOR_RESERVE, Math.floor(limit / 2)));
  if (options.maxConnections <= cap) return options;
  log(
    `maxConnections ${options.maxConnections} is more than the open-file limit allows ` +
      `(ulimit -n ${limit}): serving at most ${cap} connections at once`,
  );
  return { ...options, maxConnections: cap };
}

/** Whether this thread has formatted an error stack yet (see {@linkcode formatOneStack}). */
let stackFormatted = false;

/**
 * Formats one error stack, once. Deno 2.9 measures a thread's stack the
 * first time it formats one, by reading `/proc/self/maps`; should that first
 * time come when every descriptor is taken, the read fails and Deno panics
 * (exit 1). Done at startup, the measurement is made while descriptors are
 * free, and logging an error later cannot end the process.
 */
function formatOneStack(): void {
  if (stackFormatted) return;
  const { stack } = new Error("A stack formatted at startup");
  stackFormatted = stack !== undefined;
}

/** Now, as the `Date` header writes it, computed at most once a second. */
const clock = { second: -1, http: "" };

/** The IMF-fixdate of now. */
function httpDate(): string {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== clock.second) {
    clock.second = second;
    clock.http = new Date(now).toUTCString();
  }
  return clock.http;
}

/**
 * Writes of the access log when several processes share its destination:
 * the kernel keeps a write of at most `PIPE_BUF` bytes to a pipe whole
 * (POSIX), so lines of different workers never interleave.
 */
const PIPE_BUF = 4096;

/** How long a shutdown waits for the access log to reach a slow destination. */
const ACCESS_LOG_CLOSE_MS = 5000;

/**
 * The server's access log: entries go to the user's function, or are
 * formatted into an {@linkcode AccessLogBuffer} that writes to a file or
 * standard output. The server flushes it at every sweep (at least twice a
 * second) and once a turn of the event loop passes without a request.
 */
class AccessLog {
  /** Whether entries need the `Referer` and `User-Agent` headers. */
  readonly wantsHeaders: boolean;
  readonly #sink: ((entry: AccessLogEntry) => void) | null;
  readonly #format: AccessLogFormat;
  readonly #buffer: AccessLogBuffer | null;
  readonly #file: Deno.FsFile | null;
  readonly #onError: (message: string, error?: unknown) => void;
  #logged = 0;
  #idleCheck: ReturnType<typeof setTimeout> | undefined;
  #loggedAtCheck = 0;

  constructor(
    setting: NonNullable<ResolvedOptions["accessLog"]>,
    shared: boolean,
    onError: (message: string, error?: unknown) => void,
  ) {
    this.#onError = onError;
    if (typeof setting === "function") {
      this.#sink = (entry) => {
        try {
          setting(entry);
        } catch (error) {
          onError("The accessLog function failed", error);
        }
      };
      this.#format = "common";
      this.#buffer = null;
      this.#file = null;
      this.wantsHeaders = true;
      return;
    }
    this.#sink = null;
    this.#format = setting.format;
    this.wantsHeaders = setting.format !== "common";
    this.#file = setting.path === "-"
      ? null
      : Deno.openSync(setting.path, { write: true, append: true, create: true });
    const file = this.#file;
    this.#buffer = new AccessLogBuffer(
      file === null ? (bytes) => Deno.stdout.write(bytes) : (bytes) => file.write(bytes),
      shared ? { maxWriteBytes: PIPE_BUF } : {},
    );
  }

  /** Records one response. */
  log(entry: AccessLogEntry): void {
    if (this.#sink !== null) {
      this.#sink(entry);
      return;
    }
    this.#buffer!.addEntry(this.#format, entry);
    this.#logged++;
    // Write once the server goes idle: checked a turn of the event loop
    // later, and again while requests keep coming (then the 64 KiB and
    // the periodic flushes write).
    if (this.#idleCheck === undefined) this.#scheduleIdleCheck();
  }

  #scheduleIdleCheck(): void {
    this.#loggedAtCheck = this.#logged;
    this.#idleCheck = setTimeout(() => {
      if (this.#logged !== this.#loggedAtCheck) {
        this.#scheduleIdleCheck();
        return;
      }
      this.#idleCheck = undefined;
      this.#buffer!.flush();
    }, 0);
  }

  /** Starts writing what is buffered (the periodic flush). */
  flush(): void {
    this.#buffer?.flush();
  }

  /** Writes out what is buffered (waiting at most {@linkcode ACCESS_LOG_CLOSE_MS}), then closes the file. */
  async close(): Promise<void> {
    clearTimeout(this.#idleCheck);
    this.#idleCheck = undefined;
    if (this.#buffer !== null) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      await Promise.race([
        this.#buffer.drain(),
        new Promise<void>((resolve) => timer = setTimeout(resolve, ACCESS_LOG_CLOSE_MS)),
      ]);
      clearTimeout(timer);
      const left = this.#buffer.pendingBytes;
      if (left > 0) {
        this.#onError(
          `access log: ${left} bytes could not be written: the log destination took ` +
            `nothing for ${ACCESS_LOG_CLOSE_MS} ms`,
        );
      }
    }
    try {
      this.#file?.close();
    } catch {
      // A write still stuck on it holds it; the process is ending anyway.
    }
  }
}

/**
 * The sweeper ticks this many times in the shortest timeout, every 5 ms to
 * 250 ms: a wait ends at most two ticks after its timeout (see
 * {@linkcode HttpServer.now}), so at most 0.5 s late.
 */
const SWEEPS_PER_TIMEOUT = 8;
const SWEEP_MIN_MS = 5;
const SWEEP_MAX_MS = 250;

/** What a connection is waiting for, and so what its deadline means. */
type Wait =
  /** Nothing: no deadline. */
  | "none"
  /** The first byte of a request on a kept-alive connection: close quietly at the deadline. */
  | "idle"
  /** The rest of a request head: answer 408 at the deadline. */
  | "head"
  /** More request body: close at the deadline; `wsgi.input` rejects. */
  | "body"
  /** The peer's EOF after our last response: close at the deadline. */
  | "linger";

/** The server: listener, accept loop, connection set and the timeout sweeper. */
class HttpServer implements Server {
  readonly addr: Deno.Addr;
  readonly finished: Promise<void>;
  readonly app: Application;
  readonly options: ResolvedOptions;
  readonly onError: (message: string, error?: unknown) => void;
  readonly accessLog: AccessLog | null;
  /** What every connection's environ says about the listener (the peer is added per connection). */
  readonly info: ConnectionInfo;
  readonly connections = new Set<Connection>();
  /** Turns for response writes, across the connections. */
  readonly writeScheduler = new WriteScheduler();
  /**
   * A coarse clock, advanced by the sweeper: `performance.now()` and the
   * `Date` header value as of its last tick, so that a request reads no
   * clock. A deadline set from it would end a wait early by as much as the
   * clock lags, so it is stamped with {@linkcode HttpServer.sweeps} and the
   * next tick moves it to that tick's time (see
   * {@linkcode Connection.settleDeadlines}): a wait never ends before its
   * timeout, and at most two ticks after it.
   */
  now = performance.now();
  /** How many times the sweeper has ticked: the number of the current interval between ticks. */
  sweeps = 0;
  date = httpDate();
  closing = false;
  /**
   * Once {@linkcode HttpServer.closing}: when idle keep-alive connections
   * close (`performance.now()` time), at once or after the shutdown's
   * `idleGraceMs`.
   */
  idleCloseAt = Infinity;

  readonly #listener: Deno.Listener;
  /** Set by `shutdown()`, which then sets `closing` once the accept loop has ended. */
  #stopAccepting = false;
  #finishing = false;
  #sweeper: ReturnType<typeof setInterval>;
  #forceTimer: ReturnType<typeof setTimeout> | undefined;
  #backoffTimer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | null = null;
  #resolveFinished!: () => void;
  #acceptDone!: Promise<void>;

  constructor(
    app: Application,
    listener: Deno.Listener,
    resolved: ResolvedOptions,
  ) {
    this.app = app;
    this.onError = resolved.onError ?? printError;
    this.options = capConnections(resolved, this.onError);
    this.#listener = listener;
    this.addr = listener.addr;
    const urlScheme = resolved.tls ? "https" : "http";
    const tcp = this.addr.transport === "tcp";
    this.info = {
      urlScheme,
      serverName: tcp ? (this.addr as Deno.NetAddr).hostname : "localhost",
      serverPort: tcp
        ? String((this.addr as Deno.NetAddr).port)
        : urlScheme === "https"
        ? "443"
        : "80",
      scriptName: resolved.scriptName,
      multiprocess: resolved.multiprocess,
      ...(resolved.serverHeader !== null ? { serverSoftware: resolved.serverHeader } : {}),
    };
    this.accessLog = resolved.accessLog === null
      ? null
      : new AccessLog(resolved.accessLog, resolved.multiprocess, this.onError);
    this.finished = new Promise((resolve) => this.#resolveFinished = resolve);
    const tick = Math.min(
      SWEEP_MAX_MS,
      Math.max(
        SWEEP_MIN_MS,
        Math.floor(
          Math.min(
            resolved.headerTimeoutMs,
            resolved.keepAliveTimeoutMs,
            resolved.bodyTimeoutMs,
            resolved.sendTimeoutMs,
          ) / SWEEPS_PER_TIMEOUT,
        ),
      ),
    );
    this.#sweeper = setInterval(() => this.#sweep(), tick);
    this.#acceptDone = this.#acceptLoop();
    this.#acceptDone.then(() => this.#maybeFinish());
  }

  #sweep(): void {
    const now = performance.now();
    const interval = this.sweeps;
    const elapsed = now - this.now;
    this.now = now;
    this.sweeps++;
    this.date = httpDate();
    this.accessLog?.flush();
    for (const connection of this.connections) {
      connection.settleDeadlines(interval, elapsed);
      if (connection.deadline <= now) {
        connection.onDeadline();
      } else if (connection.writeDeadline <= now) {
        connection.onWriteDeadline();
      }
    }
  }

  async #acceptLoop(): Promise<void> {
    let backoff = 0;
    while (!this.#stopAccepting) {
      if (this.connections.size >= this.options.maxConnections) {
        await new Promise<void>((resolve) => this.#wake = resolve);
        this.#wake = null;
        continue;
      }
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
        backoff = 0;
      } catch (error) {
        if (this.#stopAccepting || error instanceof Deno.errors.BadResource) break;
        if (concernsOneConnection(error)) continue;
        backoff = Math.min(
          ACCEPT_BACKOFF_MAX_MS,
          backoff === 0 ? ACCEPT_BACKOFF_MIN_MS : backoff * 2,
        );
        this.onError(`Accept failed; retrying in ${backoff} ms`, error);
        await new Promise<void>((resolve) => {
          this.#wake = resolve;
          this.#backoffTimer = setTimeout(resolve, backoff);
        });
        clearTimeout(this.#backoffTimer);
        this.#wake = null;
        continue;
      }
      // One accepted as the listener closes is served as the others: its
      // request, likely on its way, is answered, or it is closed as idle.
      const connection = new Connection(this, conn);
      this.connections.add(connection);
      connection.run().finally(() => {
        this.connections.delete(connection);
        this.#wake?.();
        this.#maybeFinish();
      });
    }
  }

  #maybeFinish(): void {
    if (!this.closing || this.connections.size > 0) return;
    this.#acceptDone.then(async () => {
      if (this.connections.size > 0 || this.#finishing) return;
      this.#finishing = true;
      await this.accessLog?.close();
      clearInterval(this.#sweeper);
      clearTimeout(this.#forceTimer);
      this.writeScheduler[Symbol.dispose]();
      if (this.addr.transport === "unix" && this.options.path !== undefined) {
        try {
          Deno.removeSync(this.options.path);
        } catch {
          // Already gone.
        }
      }
      this.#resolveFinished();
    });
  }

  shutdown(options: ShutdownOptions = {}): Promise<void> {
    if (this.#stopAccepting) return this.finished;
    const grace = options.idleGraceMs ?? 0;
    if (!(grace >= 0)) {
      throw new RangeError(`idleGraceMs must be a number of milliseconds >= 0, got ${grace}`);
    }
    this.#stopAccepting = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    this.#wake?.();
    this.#forceTimer = setTimeout(() => {
      for (const connection of this.connections) connection.abort();
    }, this.options.shutdownTimeoutMs);
    const closeConnections = () => {
      this.closing = true;
      this.idleCloseAt = performance.now() + grace;
      for (const connection of this.connections) connection.closeIfIdle();
      this.#maybeFinish();
    };
    // With a grace, others serve on (a rolling restart), and responses say
    // `Connection: close` only once the socket is released, when the
    // pending accept has settled: a client that reconnects at once must
    // not land on this socket while it is still open, for a closing socket
    // resets what the kernel queued on it (Linux, with SO_REUSEPORT, unless
    // net.ipv4.tcp_migrate_req is 1).
    if (grace === 0) closeConnections();
    else this.#acceptDone.then(closeConnections);
    return this.finished;
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown();
  }
}

/** One accepted socket, serving its requests one after the other. */
class Connection implements ResponseChannel, BodySource {
  readonly out: OutputBuffer = new OutputBuffer();
  /** When the current wait ends (`performance.now()` time); `Infinity` when not waiting. */
  deadline = Infinity;
  /** The sweep interval `deadline` was set in (see {@linkcode Connection.settleDeadlines}). */
  deadlineSweep = -1;
  /** When the write in progress must have completed; `Infinity` when not writing. */
  writeDeadline = Infinity;
  /** The sweep interval `writeDeadline` was set in. */
  writeDeadlineSweep = -1;

  readonly #server: HttpServer;
  readonly #conn: Deno.Conn;
  readonly #parser: RequestParser;
  readonly #info: ConnectionInfo;
  #wait: Wait = "none";
  /** When the request head in progress must be complete; 0 before it starts. */
  #headDeadline: number;
  #headDeadlineSweep: number;
  #requests = 0;
  #closed = false;
  #timedOut = false;
  #flushing: Promise<boolean> | null = null;
  /** The last {@linkcode WriteScheduler} slice this connection wrote in. */
  writeSlice = -1;
  /** The most the next response write hands the kernel (see {@linkcode FULL_SOCKET_WRITE_BYTES}). */
  #writeSize = MAX_WRITE_BYTES;
  /** Why a write failed; once set, nothing more is written. */
  #writeError: unknown = undefined;

  // The request in flight.
  #head: RequestHead | null = null;
  /**
   * When its head was parsed (for the access log), by `Date.now()`: one
   * clock read per request, and one per write for the end. Durations have
   * the clock's millisecond resolution, as nginx's `$request_time`.
   */
  #requestTime = 0;
  /** Responses queued for the socket whose access-log entries wait for their last byte to go out. */
  readonly #unlogged: { -readonly [K in keyof AccessLogEntry]: AccessLogEntry[K] }[] = [];
  /** How many of `#unlogged` have all their bytes taken from `out` into a write. */
  #covered = 0;
  #continueSent = false;
  #headSent = false;
  #bodyPulled = false;

  constructor(server: HttpServer, conn: Deno.Conn) {
    this.#server = server;
    this.#conn = conn;
    const o = server.options;
    this.#parser = new RequestParser(o.parserLimits);
    this.#headDeadline = server.now + o.headerTimeoutMs;
    this.#headDeadlineSweep = server.sweeps;
    if (server.addr.transport === "tcp" && "setNoDelay" in conn) {
      (conn as Deno.TcpConn).setNoDelay(true);
    }
    const remote = conn.remoteAddr;
    this.#info = remote.transport === "tcp"
      ? { ...server.info, remoteAddr: remote.hostname, remotePort: String(remote.port) }
      : server.info;
  }

  get serverHeader(): string | null {
    return this.#server.options.serverHeader;
  }

  date(): string {
    return this.#server.date;
  }

  /** Reports an error of the request in flight, named by its method and target (escaped, as in the access log). */
  logError(message: string, error?: unknown): void {
    const head = this.#head;
    this.#server.onError(
      head === null ? message : `${head.method} ${escapeForLog(head.target)}: ${message}`,
      error,
    );
  }

  /** Serves requests until the connection must close, then closes it. */
  async run(): Promise<void> {
    try {
      await this.#serveRequests();
    } catch (error) {
      this.logError("Unexpected connection error", error);
    } finally {
      this.#close();
    }
  }

  async #serveRequests(): Promise<void> {
    for (;;) {
      let event;
      try {
        event = this.#parser.next();
      } catch (error) {
        if (error instanceof ProtocolError) {
          await this.#answerError(error.status, error.message);
          return;
        }
        throw error;
      }
      switch (event.type) {
        case "need-data": {
          // The loop's one write and one read per request, written out and
          // awaited in this frame: a helper's promise for each costs a tenth
          // of the JavaScript time of a small request.
          if (this.out.length > 0) {
            const block = this.#flushing === null && this.#writeError === undefined
              ? this.out.takeBlock()
              : null;
            if (block === null) {
              if (!await this.#send()) return;
            } else {
              // Every response queued so far is in this block.
              this.#covered = this.#unlogged.length;
              try {
                let at = await this.#write(block);
                while (at < block.length) at += await this.#write(block.subarray(at));
              } catch (error) {
                this.#writeError = error ?? new Error("The write failed");
                return;
              } finally {
                this.writeDeadline = Infinity;
                if (this.#covered > 0) this.#logSent(this.#covered);
              }
            }
          }
          if (this.#server.closing && !this.#parser.headStarted && !this.#inIdleGrace()) return;
          let n: number | null | undefined;
          try {
            n = await this.#startRead(
              !this.#parser.headStarted && this.#requests > 0 ? "idle" : "head",
            );
          } catch {
            n = undefined;
          }
          if (!this.#endRead(n)) return;
          continue;
        }
        case "head": {
          const served = this.#serveRequest(event);
          if (!(typeof served === "boolean" ? served : await served)) return;
          this.#parser.startNextCycle();
          continue;
        }
        case "closed":
          await this.#send();
          return;
        default:
          throw new Error(`Unexpected parser event "${event.type}" between requests`);
      }
    }
  }

  /**
   * Reads once from the socket into the parser, under the deadline of what
   * is awaited. Returns false when the connection is gone (closed by the
   * peer, an error or a deadline). EOF is passed to the parser and counts as
   * success: the parser decides what it means.
   */
  async #readMore(wait: Exclude<Wait, "none" | "linger">): Promise<boolean> {
    if (this.out.length > 0 && !await this.#send()) return false;
    let n: number | null | undefined;
    try {
      n = await this.#startRead(wait);
    } catch {
      n = undefined;
    }
    return this.#endRead(n);
  }

  /**
   * The first half of {@linkcode #readMore}: sets the deadline and starts
   * the read, into the parser or (for a direct body read) into `into`.
   */
  #startRead(wait: Exclude<Wait, "none" | "linger">, into?: Uint8Array): Promise<number | null> {
    if (wait === "idle" && this.#flushing === null) this.out.release();
    const server = this.#server;
    const o = server.options;
    if (wait === "idle") {
      this.deadline = server.now + o.keepAliveTimeoutMs;
      this.deadlineSweep = server.sweeps;
    } else if (wait === "head") {
      if (this.#headDeadline === 0) {
        this.#headDeadline = server.now + o.headerTimeoutMs;
        this.#headDeadlineSweep = server.sweeps;
      }
      this.deadline = this.#headDeadline;
      this.deadlineSweep = this.#headDeadlineSweep;
    } else {
      this.deadline = server.now + o.bodyTimeoutMs;
      this.deadlineSweep = server.sweeps;
    }
    // Shutting down, in the idle grace: no new request after it.
    if (wait !== "body" && !this.#parser.headStarted) this.#closeByIdleCloseAt();
    this.#wait = wait;
    const size = wait === "body"
      ? READ_SIZES.body
      : this.#parser.headStarted
      ? READ_SIZES.head
      : READ_SIZES.request;
    return this.#conn.read(into ?? this.#parser.space(size));
  }

  /**
   * The second half: clears the deadline and hands the parser what came,
   * `n` bytes or EOF (`null`); `undefined` means the read failed. `direct`
   * says the bytes went past the parser, into a body reader's buffer. Says
   * whether the connection goes on.
   */
  #endRead(n: number | null | undefined, direct = false): boolean {
    this.#wait = "none";
    this.deadline = Infinity;
    if (n === undefined || this.#closed) return false;
    if (n === null) {
      this.#parser.receiveEof();
    } else if (direct) {
      this.#parser.receiveBody(n);
    } else {
      this.#parser.commit(n);
    }
    return true;
  }

  /**
   * Called by the sweeper at each tick, before it compares deadlines, with
   * the number of the interval that just ended and its length. A deadline
   * set in that interval was set from the clock at its start, while its
   * wait started up to `elapsed` later; it moves to the interval's end, so
   * that it comes no earlier than the wait's timeout.
   */
  settleDeadlines(interval: number, elapsed: number): void {
    if (this.deadlineSweep === interval) this.deadline += elapsed;
    if (this.writeDeadlineSweep === interval) this.writeDeadline += elapsed;
    if (this.#headDeadlineSweep === interval) this.#headDeadline += elapsed;
  }

  /** Called by the sweeper when `deadline` has passed. */
  onDeadline(): void {
    const wait = this.#wait;
    this.deadline = Infinity;
    this.#timedOut = true;
    if (wait === "head" && this.#parser.headStarted) {
      // A partial head: tell the client why before closing (slowloris).
      this.#wait = "none";
      writeSimpleResponse(this.out, statusLine(408), "Request Timeout\n", this.#headOptions());
      this.#send().finally(() => this.#close());
      return;
    }
    this.#close();
  }

  /**
   * Called by the sweeper when a write has waited past `writeDeadline`: the
   * client stopped reading. Closing makes the write reject, and the request
   * ends as if the client had gone.
   */
  onWriteDeadline(): void {
    this.writeDeadline = Infinity;
    this.#close();
  }

  /**
   * At shutdown: closes the connection if it is waiting for a new request,
   * or, during the shutdown's idle grace, has it close when the grace ends.
   */
  closeIfIdle(): void {
    if (this.#wait === "idle" || (this.#wait === "head" && !this.#parser.headStarted)) {
      if (this.#inIdleGrace()) this.#closeByIdleCloseAt();
      else this.#close();
    }
  }

  /** Ends the current wait by the server's `idleCloseAt`, if it would end later. */
  #closeByIdleCloseAt(): void {
    if (this.deadline <= this.#server.idleCloseAt) return;
    this.deadline = this.#server.idleCloseAt;
    // An exact `performance.now()` time: no sweep moves it.
    this.deadlineSweep = -1;
  }

  /** Whether the server shuts down and still lets idle connections send a request. */
  #inIdleGrace(): boolean {
    return this.#server.closing && performance.now() < this.#server.idleCloseAt;
  }

  /** Closes the connection whatever it is doing (shutdown timeout). */
  abort(): void {
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.deadline = Infinity;
    if (this.#unlogged.length > 0) this.#logSent(this.#unlogged.length);
    this.#covered = 0;
    try {
      this.#conn.close();
    } catch {
      // Already closed.
    }
  }

  #headOptions() {
    return {
      date: this.#server.date,
      server: this.#server.options.serverHeader,
    };
  }

  /** Answers a protocol error with its status and `Connection: close`, then closes gracefully. */
  async #answerError(status: number, message: string): Promise<void> {
    const text = statusLine(status);
    writeSimpleResponse(this.out, text, `${text.slice(4)}: ${message}\n`, this.#headOptions());
    if (this.#server.accessLog !== null) {
      this.#requestTime = Date.now();
      this.#logLater(this.#parser.requestLine, status, 0);
    }
    if (await this.#send()) await this.#linger();
  }

  /**
   * After a final response on a connection whose peer may still be sending,
   * shut down our side and read until the peer's EOF (bounded in bytes and
   * time), so that closing does not reset the connection before the client
   * has read the response (RFC 9112 section 9.6).
   */
  async #linger(): Promise<void> {
    try {
      await this.#conn.closeWrite();
    } catch {
      return;
    }
    this.deadline = this.#server.now + LINGER_MS;
    this.deadlineSweep = this.#server.sweeps;
    this.#wait = "linger";
    let discarded = 0;
    try {
      while (discarded < LINGER_BYTES) {
        const n = await this.#conn.read(DISCARD);
        if (n === null) break;
        discarded += n;
      }
    } catch {
      // Closed by the deadline or the peer.
    } finally {
      this.#wait = "none";
      this.deadline = Infinity;
    }
  }

  /** Writes out what is queued; concurrent callers are served in order. */
  flush(): Promise<void> {
    return this.#send().then((sent) => {
      if (!sent) {
        throw new ClientDisconnectedError("The client disconnected while the response was sent", {
          cause: this.#writeError,
        });
      }
    });
  }

  /**
   * Writes out what is queued, after any write in progress; resolves to
   * whether it all reached the socket (false once the peer is gone). Never
   * rejects: the connection loop needs no error path for a gone peer.
   */
  #send(): Promise<boolean> {
    if (this.#flushing !== null) return this.#flushing.then(() => this.#send());
    if (this.#writeError !== undefined) {
      this.out.clear();
      return Promise.resolve(false);
    }
    if (this.out.length === 0) return Promise.resolve(true);
    this.#covered = this.#unlogged.length;
    const writing = this.#writeOut(this.out.take());
    this.#flushing = writing;
    return writing;
  }

  async #writeOut(pieces: Uint8Array[]): Promise<boolean> {
    try {
      for (const piece of pieces) {
        let at = 0;
        while (at < piece.length) {
          const end = Math.min(piece.length, at + this.#writeSize);
          at += await this.#scheduledWrite(
            at === 0 && end === piece.length ? piece : piece.subarray(at, end),
          );
        }
      }
      return true;
    } catch (error) {
      this.#writeError = error ?? new Error("The write failed");
      return false;
    } finally {
      this.writeDeadline = Infinity;
      this.#flushing = null;
      if (this.#covered > 0) this.#logSent(this.#covered);
    }
  }

  /**
   * One socket write of queued response bytes: a large one waits for its
   * turn (see {@linkcode WriteScheduler}), and how long it takes sets the
   * size of the next (see {@linkcode FULL_SOCKET_WRITE_BYTES}).
   */
  async #scheduledWrite(bytes: Uint8Array): Promise<number> {
    if (bytes.length < SCHEDULED_WRITE_MIN_BYTES) return await this.#write(bytes);
    const scheduler = this.#server.writeScheduler;
    const turn = scheduler.begin();
    if (turn !== undefined) await turn;
    const issued = performance.now();
    let written: Promise<number>;
    try {
      written = this.#write(bytes);
    } catch (error) {
      written = Promise.reject(error);
    } finally {
      scheduler.issued(this);
    }
    let n: number;
    try {
      n = await written;
    } finally {
      scheduler.finished();
    }
    this.#writeSize = performance.now() - issued > FULL_SOCKET_MS
      ? FULL_SOCKET_WRITE_BYTES
      : Math.min(MAX_WRITE_BYTES, this.#writeSize * 2);
    return n;
  }

  /** One socket write, which must complete within the send timeout. */
  #write(bytes: Uint8Array): Promise<number> {
    const server = this.#server;
    this.writeDeadline = server.now + server.options.sendTimeoutMs;
    this.writeDeadlineSweep = server.sweeps;
    return this.#conn.write(bytes);
  }

  commitHead(): boolean {
    this.#headSent = true;
    const head = this.#head!;
    if (this.#server.closing || !head.keepAlive) return false;
    const remaining = this.#parser.bodyRemaining;
    if (remaining === 0) return true;
    // A client waiting for 100 Continue may never send the body it announced.
    if (head.expectContinue && !this.#continueSent) return false;
    // An application that is reading the body (echoing it, say) is trusted
    // to finish it; one that has not touched it leaves at most what can be
    // drained. Should the drain still fail, the connection closes after a
    // complete response, which RFC 9112 section 9.3 allows at any time.
    return this.#bodyPulled || remaining <= MAX_DRAIN_BYTES;
  }

  /** `wsgi.input`'s source: the next decoded piece of the request body. */
  async pull(): Promise<Uint8Array | null> {
    await this.#startBody();
    for (;;) {
      const event = this.#parser.next();
      switch (event.type) {
        case "data":
          return this.#gatherBody(event.data);
        case "end":
        case "paused":
          return null;
        case "need-data":
          if (!await this.#readMore("body")) throw this.#bodyReadError();
          continue;
        default:
          throw new Error(`Unexpected parser event "${event.type}" in a request body`);
      }
    }
  }

  /**
   * `first` and the body bytes that the parser decodes after it from what
   * is already buffered, copied into one piece: a body sent in tiny chunks
   * then costs `wsgi.input` one piece per socket read, not one per chunk. A
   * framing error ends the piece; the parser raises it again on the next
   * pull, once the application has had the bytes before it.
   */
  #gatherBody(first: Uint8Array): Uint8Array {
    let event = this.#nextBodyEvent();
    if (event?.type !== "data") return first.slice();
    // What is still buffered bounds what can be decoded from it. The views
    // into the parser's buffer stay valid: nothing is received meanwhile.
    const piece = new Uint8Array(first.length + event.data.length + this.#parser.bufferedBytes);
    piece.set(first);
    let at = first.length;
    while (event?.type === "data") {
      const data = event.data;
      if (data.length === 1) {
        piece[at++] = data[0]!;
      } else {
        piece.set(data, at);
        at += data.length;
      }
      event = this.#nextBodyEvent();
    }
    return at === piece.length ? piece : piece.slice(0, at);
  }

  /** The parser's next event, or `null` if the body breaks its framing there. */
  #nextBodyEvent(): ParserEvent | null {
    try {
      return this.#parser.next();
    } catch (error) {
      if (error instanceof ProtocolError) return null;
      throw error;
    }
  }

  /** `wsgi.input`'s direct path: body bytes that can be read from the socket straight into the reader's buffer. */
  directBytes(): number {
    return this.#parser.directBodyBytes;
  }

  /** Reads body bytes from the socket straight into `dest`; resolves to how many (0: none may be). */
  async readInto(dest: Uint8Array): Promise<number> {
    await this.#startBody();
    const direct = this.#parser.directBodyBytes;
    if (direct === 0) return 0;
    let n: number | null | undefined;
    try {
      n = await this.#startRead("body", dest.subarray(0, Math.min(dest.length, direct)));
    } catch {
      n = undefined;
    }
    if (!this.#endRead(n, true)) throw this.#bodyReadError();
    // EOF inside the body: the parser raises its error.
    if (n === null) this.#parser.next();
    return n ?? 0;
  }

  /** Before the first body read: records it, and sends `100 Continue` if the client waits for it. */
  async #startBody(): Promise<void> {
    this.#bodyPulled = true;
    if (this.#head!.expectContinue && !this.#continueSent && !this.#headSent) {
      this.#continueSent = true;
      this.out.bytes(CONTINUE_RESPONSE);
      await this.flush();
    }
  }

  #bodyReadError(): ClientDisconnectedError {
    return new ClientDisconnectedError(
      this.#timedOut
        ? "Timed out waiting for the request body"
        : "The client disconnected while sending the request body",
    );
  }

  /**
   * Serves one request; says whether the connection goes on. A synchronous
   * application whose response needs no waiting (the common case) is served
   * without a turn of the event loop, so the answer is a plain boolean.
   */
  #serveRequest(head: RequestHead): boolean | Promise<boolean> {
    const server = this.#server;
    this.#requests++;
    this.#head = head;
    if (server.accessLog !== null) {
      this.#requestTime = Date.now();
    }
    this.#continueSent = false;
    this.#headSent = false;
    this.#bodyPulled = false;
    const errors = new LogErrorStream(server.onError);
    const input = new BodyReader(this);
    const environ = buildEnviron(head, this.#info, input, errors);
    const outcome = runApplication(server.app, environ, head, this);
    return outcome instanceof Promise
      ? outcome.then((settled) => this.#endRequest(head, errors, settled))
      : this.#endRequest(head, errors, outcome);
  }

  #endRequest(
    head: RequestHead,
    errors: LogErrorStream,
    outcome: ResponseOutcome,
  ): boolean | Promise<boolean> {
    errors.flush();
    this.#head = null;
    this.#headDeadline = 0;
    this.#headDeadlineSweep = -1;
    if (this.#server.accessLog !== null) this.#logLater(head, outcome.status, outcome.bodyBytes);
    if (outcome.aborted) {
      // Send what was meant before the failure (a truncated response tells
      // the client something went wrong); a gone client makes this a no-op.
      return this.#send().then(() => false);
    }
    if (!outcome.keepAlive || this.#server.closing) return this.#finishAndLinger();
    return this.#drain(MAX_DRAIN_BYTES);
  }

  /** Sends the last response of the connection, then lingers for the peer's EOF. */
  async #finishAndLinger(): Promise<boolean> {
    if (await this.#send() && !this.#parser.eof) await this.#linger();
    return false;
  }

  /**
   * Reads and discards what the application left of the request body (at
   * most `budget` more bytes) so that the connection can go on; says whether
   * it can. Synchronous when the body is already complete.
   */
  #drain(budget: number): boolean | Promise<boolean> {
    for (;;) {
      let event;
      try {
        event = this.#parser.next();
      } catch {
        return this.#send().then(() => false);
      }
      if (event.type === "paused") break;
      if (event.type === "data") {
        budget -= event.data.length;
        if (budget < 0) return this.#send().then(() => false);
      } else if (event.type === "need-data") {
        return this.#readMore("body").then((ok) => ok && this.#drain(budget));
      }
    }
    // A small response stays queued: the connection loop writes it before
    // its next read, together with the responses to requests that are
    // already buffered (pipelined).
    return this.out.length >= HIGH_WATER_MARK ? this.#send() : true;
  }

  /**
   * Records the response to `head` (a request line alone for a head that
   * was refused; null when not even that was parsed) for the access log, which gets it once its last byte is handed
   * to the socket: the write under way when it was queued may not hold it,
   * so it waits for the next one to start and end ({@linkcode #logSent}).
   */
  #logLater(head: RequestHead | RequestLine | null, status: number, bytes: number): void {
    let referer: string | null = null;
    let userAgent: string | null = null;
    if (head !== null && "headers" in head && this.#server.accessLog!.wantsHeaders) {
      for (const [name, value] of head.headers) {
        if (name.length === 7 && name.toLowerCase() === "referer") referer = value;
        else if (name.length === 10 && name.toLowerCase() === "user-agent") userAgent = value;
      }
    }
    this.#unlogged.push({
      time: this.#requestTime,
      remoteAddr: this.#info.remoteAddr ?? null,
      method: head?.method ?? null,
      target: head?.target ?? null,
      protocol: head?.version ?? null,
      status,
      bytes,
      durationMs: this.#requestTime,
      referer,
      userAgent,
    });
    if (this.out.length === 0) {
      // Its bytes have left the buffer already (streamed, or sent by
      // write()): they are in the write under way, or on the socket.
      this.#covered = this.#unlogged.length;
      if (this.#flushing === null) this.#logSent(this.#covered);
    }
  }

  /** Logs the first `count` waiting entries: their bytes were handed to the socket (or never will be). */
  #logSent(count: number): void {
    this.#covered -= count;
    const end = Date.now();
    const log = this.#server.accessLog!;
    const entries = this.#unlogged;
    for (let i = 0; i < count; i++) {
      const entry = entries[i]!;
      // Until now `durationMs` held the start time. (A wall clock set back
      // meanwhile must not make it negative.)
      entry.durationMs = Math.max(0, end - entry.durationMs);
      log.log(entry);
    }
    if (count === entries.length) entries.length = 0;
    else entries.splice(0, count);
  }
}

/**
 * Serves `app` over HTTP/1.1 on a raw TCP listener (or a Unix socket, or
 * TLS), until `shutdown()` or the abort of `options.signal`.
 *
 * @example Serve an application on a free port
 * ```ts
 * import { serve } from "./server.ts";
 * import { equal } from "node:assert/strict";
 *
 * const server = serve((_environ, startResponse) => {
 *   startResponse("200 OK", [["Content-Type", "text/plain"]]);
 *   return [new TextEncoder().encode("hello\n")];
 * }, { port: 0, onListen() {} });
 *
 * const { port } = server.addr as Deno.NetAddr;
 * const response = await fetch(`http://127.0.0.1:${port}/`);
 * equal(await response.text(), "hello\n");
 * await server.shutdown();
 * ```
 *
 * @param app The WSGI application.
 * @param options Where to listen, limits and timeouts, hooks.
 * @returns The running {@linkcode Server}.
 * @throws {TypeError | RangeError} If an option is invalid.
 * @throws {Deno.errors.AddrInUse} If the address is taken.
 */
export function serve(app: Application, options: ServerOptions = {}): Server {
  if (typeof app !== "function") {
    throw new TypeError(`Cannot serve: the application must be a function, got ${typeof app}`);
  }
  const resolved = resolveOptions(options);
  formatOneStack();
  let listener: Deno.Listener;
  if (resolved.path !== undefined) {
    listener = Deno.listen({ transport: "unix", path: resolved.path });
  } else if (resolved.tls !== undefined) {
    listener = Deno.listenTls({
      hostname: resolved.hostname,
      port: resolved.port,
      cert: resolved.tls.cert,
      key: resolved.tls.key,
      ...(resolved.reusePort ? { reusePort: true } : {}),
    });
  } else {
    listener = Deno.listen({
      hostname: resolved.hostname,
      port: resolved.port,
      ...(resolved.reusePort ? { reusePort: true } : {}),
    });
  }
  const server = new HttpServer(app, listener, resolved);
  const onListen = resolved.onListen ??
    ((addr: Deno.Addr) =>
      console.log(`Listening on ${listenUrl(addr, resolved.tls !== undefined)}`));
  onListen(server.addr);
  const signal = resolved.signal;
  if (signal !== undefined) {
    if (signal.aborted) {
      server.shutdown();
    } else {
      signal.addEventListener("abort", () => server.shutdown(), { once: true });
    }
  }
  return server;
}

if (import.meta.main) {
  // The command line lives in cli.ts, loaded only when this file is the
  // program: a library module must not wait (top-level await) on the
  // application it loads, which may import this very module through mod.ts.
  // Exit explicitly once the CLI is done: a write to a log nobody reads
  // (a full pipe) must not keep a stopped server's process alive.
  import("./cli.ts").then(({ main }) => main(Deno.args)).then((code) => Deno.exit(code));
}
