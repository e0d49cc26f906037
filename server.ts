/**
 * The HTTP/1.1 server: the I/O shell around the sans-IO parser and the
 * gateway. It owns the sockets and the clock, and nothing else:
 *
 * ```text
 * socket bytes -> RequestParser (_h1/parser.ts) -> buildEnviron (_gateway/environ.ts)
 *   -> app(environ, startResponse) -> runApplication (_gateway/response.ts)
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
 * Run as a program, it serves an application from the command line; see
 * `deno run server.ts --help`.
 *
 * @module
 */

import type { Application } from "./types.ts";
import { ProtocolError } from "./_h1/errors.ts";
import { type ParserEvent, type RequestHead, RequestParser } from "./_h1/parser.ts";
import { statusLine } from "./_h1/status.ts";
import { CONTINUE_RESPONSE, OutputBuffer, writeSimpleResponse } from "./_h1/writer.ts";
import { buildEnviron, type ConnectionInfo } from "./_gateway/environ.ts";
import { errorCode, LogErrorStream, printError } from "./_gateway/error_stream.ts";
import { BodyReader, type BodySource } from "./_gateway/input.ts";
import {
  ClientDisconnectedError,
  HIGH_WATER_MARK,
  type ResponseChannel,
  type ResponseOutcome,
  runApplication,
} from "./_gateway/response.ts";
import {
  LIMIT_OPTIONS,
  listenUrl,
  type ResolvedOptions,
  resolveOptions,
  type ServerOptions,
} from "./options.ts";

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
   * `finished`. Calling it again returns the same promise.
   */
  shutdown(): Promise<void>;
}

/**
 * Unread request-body bytes the server reads and discards so that a
 * keep-alive connection can go on after a response (Go drains 256 KiB).
 * With more left, the response says `Connection: close` instead.
 */
export const MAX_DRAIN_BYTES = 256 * 1024;

/** After a `Connection: close` response, how long the server keeps reading (and discarding) so the client sees the response rather than a reset. */
export const LINGER_MS = 2000;
/** Most bytes read and discarded while lingering. */
export const LINGER_BYTES = 256 * 1024;

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

/**
 * How long large writes may run back to back before the event loop gets a
 * turn: long enough that a lone large download keeps most of its speed,
 * short enough that other clients wait at most this long.
 */
const WRITE_SLICE_MS = 10;

/**
 * The slice when at least {@linkcode CROWD} connections wait to write: many
 * connections streaming at once (slow readers filling their socket buffers
 * at connection time, say) take the event loop in short turns, so that the
 * others are served between them.
 */
const CROWDED_WRITE_SLICE_MS = 2;
const CROWD = 8;

/** A pause in large writes this long left the event loop to the others: a new slice starts. */
const WRITE_PAUSE_MS = 1;

/**
 * Takes turns for large response writes across all connections, so that one
 * connection's large body cannot hold the event loop while others wait.
 *
 * A write that the kernel takes at once completes without the event loop
 * going idle, and Deno serves the sockets of other connections mostly when
 * it does go idle. Unchecked, a connection streaming a large body to a fast
 * reader kept other clients waiting 200 ms, and two hundred slow readers
 * filling their socket buffers kept them waiting a second. Here writers
 * take a turn each, in order of arrival, one write each; once large writes
 * have run back to back for a slice, every writer waits for a timer, and
 * the event loop, idle meanwhile, serves everyone else. (A turn that wakes
 * the loop at once, a microtask, `setImmediate` or a thread-pool job, was
 * measured not to let the others in; Deno's `setTimeout(0)` fires after
 * about 2 ms.) A writer holds its turn only while its write is issued,
 * never while it waits for room in its socket. nginx bounds a single
 * `sendfile()` call by `sendfile_max_chunk` for the same reason.
 */
class WriteScheduler implements Disposable {
  /** Writers waiting for their turn, first come first served (one per connection at most). */
  readonly #queue: (() => void)[] = [];
  /** Whether a writer has the turn, or the event loop has it. */
  #busy = false;
  /** When the current slice of back-to-back writes began (`performance.now()`). */
  #sliceStart = 0;
  /** When the last write was issued. */
  #lastEnd = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Resolves when the caller may issue its write (`undefined`: at once).
   * The caller then calls {@linkcode WriteScheduler.end} as soon as the
   * write is issued.
   */
  begin(): Promise<void> | undefined {
    if (this.#busy || this.#queue.length > 0) {
      return new Promise((resolve) => this.#queue.push(resolve));
    }
    const now = performance.now();
    if (now - this.#lastEnd > WRITE_PAUSE_MS) this.#sliceStart = now;
    if (now - this.#sliceStart >= this.#slice()) {
      const turn = new Promise<void>((resolve) => this.#queue.push(resolve));
      this.#yield();
      return turn;
    }
    this.#busy = true;
    return undefined;
  }

  /** Ends the caller's turn: passes it on, or gives the event loop its turn. */
  end(): void {
    const now = performance.now();
    this.#lastEnd = now;
    if (this.#queue.length === 0) {
      this.#busy = false;
    } else if (now - this.#sliceStart < this.#slice()) {
      this.#queue.shift()!();
    } else {
      this.#yield();
    }
  }

  #slice(): number {
    return this.#queue.length >= CROWD ? CROWDED_WRITE_SLICE_MS : WRITE_SLICE_MS;
  }

  #yield(): void {
    this.#busy = true;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#sliceStart = performance.now();
      const next = this.#queue.shift();
      if (next === undefined) this.#busy = false;
      else next();
    }, 0);
  }

  /** Lets every waiting writer go (their connections are closed) and cancels the timer. */
  [Symbol.dispose](): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const next of this.#queue.splice(0)) next();
    this.#busy = false;
  }
}

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

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

/** `[25/Nov/2026:23:59:20 +0000]`: the time format of the Common Log Format. */
function clfTime(date: Date): string {
  const pad = (n: number) => String(n).padStart(2, "0");
  return `[${pad(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/${date.getUTCFullYear()}:` +
    `${pad(date.getUTCHours())}:${pad(date.getUTCMinutes())}:${pad(date.getUTCSeconds())} +0000]`;
}

/** Now, as the `Date` header and the access log write it, computed at most once a second. */
const clock = { second: -1, http: "", clf: "" };

function tickClock(): typeof clock {
  const now = Date.now();
  const second = Math.floor(now / 1000);
  if (second !== clock.second) {
    const date = new Date(now);
    clock.second = second;
    clock.http = date.toUTCString();
    clock.clf = clfTime(date);
  }
  return clock;
}

/** The IMF-fixdate of now. */
function httpDate(): string {
  return tickClock().http;
}

/** Escapes what must not go raw into a log line: quotes, backslashes, control and non-ASCII bytes. */
function logSafe(s: string): string {
  return s.replace(
    /[^\x20-\x7e]|["\\]/g,
    (c) =>
      c === '"' || c === "\\" ? `\\${c}` : `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/** Removes a Unix socket file left by a server that is gone, refusing to steal a live one. */
async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new Deno.errors.AlreadyExists(
      `Cannot listen on "${path}": it exists and is not a socket`,
    );
  }
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
    throw new Deno.errors.AddrInUse(`Cannot listen on "${path}": another server is using it`);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) throw error;
    await Deno.remove(path);
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
  readonly accessLog: ((line: string) => void) | null;
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

  readonly #listener: Deno.Listener;
  #sweeper: ReturnType<typeof setInterval>;
  #forceTimer: ReturnType<typeof setTimeout> | undefined;
  #backoffTimer: ReturnType<typeof setTimeout> | undefined;
  #wake: (() => void) | null = null;
  #resolveFinished!: () => void;
  #acceptDone!: Promise<void>;

  constructor(
    app: Application,
    listener: Deno.Listener,
    options: ServerOptions,
    resolved: ResolvedOptions,
  ) {
    this.app = app;
    this.onError = options.onError ?? printError;
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
    const accessLog = options.accessLog ?? false;
    this.accessLog = accessLog === true ? (line) => console.log(line) : accessLog || null;
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
    while (!this.closing) {
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
        if (this.closing || error instanceof Deno.errors.BadResource) break;
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
      if (this.closing) {
        conn.close();
        break;
      }
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
    this.#acceptDone.then(() => {
      if (this.connections.size > 0) return;
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

  shutdown(): Promise<void> {
    if (this.closing) return this.finished;
    this.closing = true;
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    this.#wake?.();
    for (const connection of this.connections) connection.closeIfIdle();
    this.#forceTimer = setTimeout(() => {
      for (const connection of this.connections) connection.abort();
    }, this.options.shutdownTimeoutMs);
    this.#maybeFinish();
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
  /** The most the next response write hands the kernel (see {@linkcode FULL_SOCKET_WRITE_BYTES}). */
  #writeSize = MAX_WRITE_BYTES;
  /** Why a write failed; once set, nothing more is written. */
  #writeError: unknown = undefined;

  // The request in flight.
  #head: RequestHead | null = null;
  #continueSent = false;
  #headSent = false;
  #bodyPulled = false;

  constructor(server: HttpServer, conn: Deno.Conn) {
    this.#server = server;
    this.#conn = conn;
    const o = server.options;
    this.#parser = new RequestParser(o);
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

  logError(message: string, error?: unknown): void {
    this.#server.onError(message, error);
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
              try {
                let at = await this.#write(block);
                while (at < block.length) at += await this.#write(block.subarray(at));
              } catch (error) {
                this.#writeError = error ?? new Error("The write failed");
                return;
              } finally {
                this.writeDeadline = Infinity;
              }
            }
          }
          if (this.#server.closing && !this.#parser.headStarted) return;
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

  /** Closes the connection if it is waiting for a new request (shutdown). */
  closeIfIdle(): void {
    if (this.#wait === "idle" || (this.#wait === "head" && !this.#parser.headStarted)) {
      this.#close();
    }
  }

  /** Closes the connection whatever it is doing (shutdown timeout). */
  abort(): void {
    this.#close();
  }

  #close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.deadline = Infinity;
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
    if (this.#server.accessLog !== null) this.#logAccess(null, status, 0);
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
    } finally {
      scheduler.end();
    }
    const n = await written;
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
    if (this.#server.accessLog !== null) {
      this.#logAccess(head, outcome.status, outcome.bodyBytes);
    }
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

  #logAccess(head: RequestHead | null, status: number, bytes: number): void {
    const requestLine = head === null ? "-" : `${head.method} ${head.target} ${head.version}`;
    this.#server.accessLog!(
      `${this.#info.remoteAddr ?? "-"} - - ${tickClock().clf} "${logSafe(requestLine)}" ${status} ${
        bytes === 0 ? "-" : bytes
      }`,
    );
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
  const server = new HttpServer(app, listener, options, resolved);
  const onListen = options.onListen ??
    ((addr: Deno.Addr) =>
      console.log(`Listening on ${listenUrl(addr, resolved.tls !== undefined)}`));
  onListen(server.addr);
  if (options.signal !== undefined) {
    if (options.signal.aborted) {
      server.shutdown();
    } else {
      options.signal.addEventListener("abort", () => server.shutdown(), { once: true });
    }
  }
  return server;
}

/**
 * As {@linkcode serve}, but first replaces a stale Unix socket file at
 * `options.path` (left by a crashed run); refuses one that a live server
 * holds.
 */
export async function serveReplacingSocket(
  app: Application,
  options: ServerOptions,
): Promise<Server> {
  if (options.path !== undefined) await removeStaleSocket(options.path);
  return serve(app, options);
}

// ---------------------------------------------------------------------------
// Command line
// ---------------------------------------------------------------------------

const USAGE = `Usage: deno run --allow-net [--allow-read] server.ts [OPTIONS] [MODULE[:EXPORT]]

Serves the WSGI application EXPORT (default "app") of MODULE (a path or URL;
default: the sample application app.ts) over HTTP/1.1.

Options:
  --host HOST             interface to listen on (default 127.0.0.1)
  --port PORT             TCP port (default 8000; 0 picks a free one)
  --unix PATH             listen on a Unix socket instead of TCP
  --cert FILE --key FILE  serve HTTPS with this PEM certificate and key
  --script-name PATH      mount point: SCRIPT_NAME prefix (default "")
  --no-access-log         do not print an access-log line per request
  --workers N             serve from N processes sharing the port (default 1;
                          more needs --allow-run; see README "Deployment")
  --forwarded-allow-ips LIST
                          comma-separated proxy addresses or CIDRs ("*": any)
                          whose X-Forwarded-* and Forwarded headers are applied
${
  LIMIT_OPTIONS.map((o) => `  --${`${o.flag} N`.padEnd(22)}${o.help} (default ${o.defaultValue})`)
    .join("\n")
}
  -h, --help              show this help

SIGINT or SIGTERM shuts down gracefully; a second one exits at once. With
--workers, SIGHUP replaces the workers one at a time (new code takes effect).`;

async function main(args: string[]): Promise<number> {
  const { parseArgs } = await import("node:util");
  const limitFlags = Object.fromEntries(
    LIMIT_OPTIONS.map((o) => [o.flag, { type: "string" as const }]),
  );
  let parsed;
  try {
    parsed = parseArgs({
      args,
      allowPositionals: true,
      options: {
        host: { type: "string" },
        port: { type: "string" },
        unix: { type: "string" },
        cert: { type: "string" },
        key: { type: "string" },
        "script-name": { type: "string" },
        "no-access-log": { type: "boolean" },
        workers: { type: "string" },
        "forwarded-allow-ips": { type: "string" },
        help: { type: "boolean", short: "h" },
        ...limitFlags,
      },
    });
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const { values, positionals } = parsed;
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  if (positionals.length > 1) {
    console.error(`Expected at most one MODULE, got ${positionals.length}\n\n${USAGE}`);
    return 2;
  }
  const options: ServerOptions = { accessLog: !values["no-access-log"] };
  let workers = 1;
  try {
    if (values.workers !== undefined) {
      workers = parseNumber("workers", values.workers);
      if (workers < 1) {
        throw new RangeError(`Invalid --workers "${values.workers}": expected 1 or more`);
      }
    }
    if (values.host !== undefined) options.hostname = values.host;
    if (values.port !== undefined) options.port = parseNumber("port", values.port);
    if (values.unix !== undefined) options.path = values.unix;
    if (values.cert !== undefined) options.cert = await Deno.readTextFile(values.cert);
    if (values.key !== undefined) options.key = await Deno.readTextFile(values.key);
    if (values["script-name"] !== undefined) options.scriptName = values["script-name"];
    for (const o of LIMIT_OPTIONS) {
      const value = (values as Record<string, unknown>)[o.flag];
      if (typeof value === "string") options[o.name] = parseNumber(o.flag, value);
    }
    resolveOptions(options);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }
  const trusted = values["forwarded-allow-ips"];
  const proxyFixOptions = trusted === undefined ? undefined : {
    trustedProxies: trusted.split(",").map((s) => s.trim()).filter((s) => s !== "")
      .flatMap((s) => s === "*" ? ["0.0.0.0/0", "::/0", "unix"] : [s]),
  };
  if (workers > 1) {
    // Each worker process loads the application itself.
    const { runWorkersCli } = await import("./workers.ts");
    return await runWorkersCli(
      positionals[0] ?? null,
      proxyFixOptions === undefined ? options : { ...options, proxyFix: proxyFixOptions },
      workers,
    );
  }
  const { loadApplication, resolveAppSpec, listenForStop } = await import("./workers.ts");
  // Listen for signals before saying "Listening on": a signal sent right
  // after that line must find the handler, not the default (fatal) action.
  let server: Server | null = null;
  using signals = listenForStop(
    () => {
      console.error("Shutting down: finishing in-flight requests");
      server?.shutdown();
    },
    () => Deno.exit(130),
  );
  let app: Application;
  try {
    const spec = positionals[0];
    app = await loadApplication(
      spec === undefined ? null : resolveAppSpec(spec),
      proxyFixOptions ?? null,
    );
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    return 1;
  }
  try {
    server = await serveReplacingSocket(app, options);
  } catch (error) {
    console.error(error instanceof Error ? error.message : error);
    return 1;
  }
  if (signals.received) server.shutdown();
  await server.finished;
  return 0;
}

function parseNumber(flag: string, value: string): number {
  if (!/^\d+$/.test(value)) {
    throw new TypeError(`Invalid --${flag} "${value}": expected a non-negative integer`);
  }
  return Number(value);
}

if (import.meta.main) {
  Deno.exitCode = await main(Deno.args);
}
