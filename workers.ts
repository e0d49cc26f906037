/**
 * Several worker processes serving one application on one port, under a
 * supervisor: `server.ts --workers N` on the command line,
 * {@linkcode serveWorkers} in code.
 *
 * ```text
 * supervisor (no socket, no application code)
 *   |-- deno run --unstable-net worker_main.ts   <- config on stdin
 *   |     serve(app, { reusePort: true, multiprocess: true })
 *   |-- ... N in all, each its own event loop on its own core
 *   `-- restarts a worker that dies or stops sending heartbeats, replaces
 *       one that served its maximum of requests; SIGTERM/SIGINT: drains
 *       them all, exits 0
 * ```
 *
 * Each worker is a separate Deno process that opens its own listener on the
 * same address with `SO_REUSEPORT` (`Deno.listen({ reusePort: true })`,
 * which needs `--unstable-net`; the supervisor passes it). The Linux kernel
 * then spreads incoming connections over the workers' listeners, so no
 * process hands sockets to another. Processes rather than Web Workers in one
 * process: a worker that crashes, runs out of memory or blocks its event
 * loop takes down only itself, and the supervisor, which runs no
 * application code, restarts it (gunicorn's model).
 *
 * The pipes between them:
 *
 * - A worker gets its configuration as one JSON line on its standard input
 *   and keeps that pipe open: its end-of-file means that the supervisor is
 *   gone (even by SIGKILL). A worker still loading the application then
 *   exits at once; a serving one drains as on SIGTERM. A worker whose event
 *   loop is blocked cannot read anything, so a watchdog thread in each
 *   worker watches the pipe too and ends the process (SIGKILL to itself) if
 *   it is still there {@linkcode SHUTDOWN_GRACE_MS} after its shutdown
 *   timeout, or at once if it was not yet serving.
 * - A worker writes its messages to standard error, which the supervisor
 *   forwards line by line: among them the line that says it listens, and
 *   the one that says it served its maximum of requests. A heartbeat byte
 *   ({@linkcode HEARTBEAT}), sent from a timer of the worker's event loop,
 *   travels on the same pipe and is taken out of the log: a worker silent
 *   for `timeoutMs` has a blocked event loop, and is killed and replaced
 *   (gunicorn's `--timeout`).
 * - The workers' standard output (the access log) is the supervisor's own.
 * - Signals: SIGTERM (or SIGINT) asks a worker to drain and exit. A worker
 *   being replaced gets SIGUSR2 instead, once its successor listens: it
 *   drains too, but gives its idle keep-alive connections
 *   {@linkcode REPLACED_IDLE_GRACE_MS} to send one more request, answered
 *   with `Connection: close`, so that a busy client learns of the close
 *   from a response rather than by a reset while its next request is on
 *   the way (the service goes on, on the successor).
 *
 * Workers run in their own session (process group), so a terminal's Ctrl-C
 * reaches only the supervisor, which then stops them in order. What the
 * supervisor guarantees on its way out: after SIGTERM (or `shutdown()`),
 * every worker is gone within `shutdownTimeoutMs` +
 * {@linkcode SHUTDOWN_GRACE_MS} (SIGKILL for the late ones; a worker that
 * has not started serving gets {@linkcode LOADING_STOP_GRACE_MS}), and the
 * group's `finished` settles right after.
 *
 * Linux only in practice: elsewhere `reusePort` is ignored and the second
 * worker cannot bind. A Unix socket cannot be shared this way either.
 *
 * @module
 */

import type { ProxyFixOptions } from "./middleware/proxy_fix.ts";
import {
  type AccessLogOptions,
  checkInteger,
  hostPort,
  listenUrl,
  optionSpec,
  resolveOptions,
  type ServerOptions,
} from "./options.ts";

export type { ProxyFixOptions, ServerOptions };

/** A worker that dies is restarted after this delay, doubled for each quick death in a row. */
export const RESTART_DELAY_MIN_MS = 100;
/** The longest delay before a restart. */
export const RESTART_DELAY_MAX_MS = 10_000;
/** A worker that stayed up this long before it died is restarted without backoff. */
export const STABLE_UPTIME_MS = 10_000;
/**
 * Quick deaths in a row (each within {@linkcode STABLE_UPTIME_MS} of its
 * start) after which the supervisor gives up: it stops every worker and
 * fails, so that a crash loop surfaces (to systemd's `Restart=`, say)
 * instead of spinning forever.
 */
export const MAX_QUICK_RESTARTS = 5;
/**
 * How long a worker may take to start listening (loading the application
 * included); one that has not by then is killed with SIGKILL. At the
 * group's start, that fails the start.
 */
export const STARTUP_TIMEOUT_MS = 60_000;
/**
 * After a shutdown, a worker still running this long after its own
 * `shutdownTimeoutMs` is killed with SIGKILL. As long as a worker's own
 * shutdown may take beyond its timeout: the last access-log lines get up
 * to 5 s to reach a slow destination (see `server.ts`).
 */
export const SHUTDOWN_GRACE_MS = 5_000;

/** The signal that tells a worker its successor listens: drain, gently (see {@linkcode REPLACED_IDLE_GRACE_MS}). */
export const REPLACE_SIGNAL: Deno.Signal = "SIGUSR2";

/**
 * How long a replaced worker's idle keep-alive connections may still send
 * a request (the `idleGraceMs` of its server's shutdown).
 */
export const REPLACED_IDLE_GRACE_MS = 1_000;
/**
 * After a shutdown, a worker that has not yet said it listens is killed with
 * SIGKILL if it is still running this long after SIGTERM. It holds no
 * request, and SIGTERM ends it at once while it loads the application
 * (`worker_main.ts`); one still there is stuck in synchronous code that no
 * signal handler can interrupt.
 */
export const LOADING_STOP_GRACE_MS = 1_000;
/**
 * The default of `timeoutMs`: a worker that sends no heartbeat for this
 * long is killed and replaced (gunicorn's `--timeout` default, 30 s).
 */
export const DEFAULT_TIMEOUT_MS = 30_000;
/**
 * The longest interval between two heartbeats of a worker (and between two
 * checks by the supervisor); shorter timeouts beat four times per timeout.
 */
export const HEARTBEAT_INTERVAL_MAX_MS = 1_000;
/**
 * The heartbeat a worker writes to its standard error: one ASCII ACK byte,
 * which the supervisor takes out of the worker's output wherever it falls
 * (a byte below 0x80 never occurs inside a UTF-8 sequence, so removing it
 * leaves the text around it intact).
 */
export const HEARTBEAT = "\x06";

/**
 * How often a worker beats, and the supervisor checks, for a given
 * `timeoutMs` (not 0): never more often than every 10 ms, so that an absurd
 * timeout does not turn the timers into a busy loop.
 */
function heartbeatIntervalMs(timeoutMs: number): number {
  return Math.max(10, Math.min(HEARTBEAT_INTERVAL_MAX_MS, timeoutMs / 4));
}

const encoder = new TextEncoder();

/**
 * Options of {@linkcode serveWorkers}: the server options every worker gets
 * (they travel to the workers as JSON, so they must be plain data), and the
 * supervisor's own.
 */
export interface WorkersOptions extends
  Omit<
    ServerOptions,
    "path" | "signal" | "onListen" | "onError" | "accessLog" | "multiprocess" | "reusePort"
  > {
  /**
   * How many worker processes to run. With more than one, each worker's
   * `wsgi.multiprocess` is `true`.
   * @default {1}
   */
  workers?: number;
  /**
   * The access log of every worker, as `serve()`'s option but plain data:
   * `true` for the Common Log Format on standard output (the supervisor's),
   * or `{ format, path }` (each worker appends to the file). Workers write
   * at most 4096 bytes of whole lines at a time, which the kernel keeps
   * whole, so their lines never interleave.
   * @default {false}
   */
  accessLog?: boolean | AccessLogOptions;
  /**
   * Wrap the application in each worker with `proxyFix(app, proxyFix)`
   * (what the CLI's `--forwarded-allow-ips` does).
   */
  proxyFix?: ProxyFixOptions;
  /**
   * How long, in milliseconds, a worker may go without a heartbeat before
   * the supervisor kills it (SIGKILL) and starts another: a worker's event
   * loop sends one every quarter of this (every second at most), so only a
   * loop blocked in synchronous code (an endless loop in a request handler,
   * or in the application's top-level code) falls silent. Awaiting does not
   * block the loop: a slow request, or an application that awaits a
   * database at import, keeps beating (how long a worker may take to start
   * listening is {@linkcode STARTUP_TIMEOUT_MS}). 0 turns the check off.
   * gunicorn's `--timeout`; the command line's `--timeout` is in seconds.
   * @default {30000}
   */
  timeoutMs?: number;
  /**
   * After this many requests (plus `maxRequestsJitter`), a worker is
   * replaced: a new worker starts and, once it listens, the old one drains
   * as on shutdown, so the group serves at full strength throughout; what
   * clients may notice is what a reload costs (see `WorkerGroup.reload()`).
   * A guard against slow leaks, as gunicorn's `--max-requests`. 0 never
   * replaces a worker for this.
   * @default {0}
   */
  maxRequests?: number;
  /**
   * Each worker's maximum is `maxRequests` plus a random whole number from
   * 0 to this, so that workers started together are not all replaced at
   * once (gunicorn's `--max-requests-jitter`).
   * @default {0}
   */
  maxRequestsJitter?: number;
  /**
   * Aborting this signal shuts every worker down gracefully, as `shutdown()`
   * does; while the workers are still starting, `serveWorkers()` then
   * rejects once they have stopped.
   */
  signal?: AbortSignal;
  /**
   * Called once, when every worker listens. By default it prints
   * `Listening on URL`, as `serve()` does.
   */
  onListen?: (addr: Deno.NetAddr) => void;
  /**
   * Where the supervisor's messages (a worker listening, exiting, being
   * restarted) and every line that the workers write to standard error go,
   * one line per call. By default, standard error.
   */
  log?: (line: string) => void;
  /**
   * The Deno flags of each worker process (`deno run FLAGS workers.ts`),
   * replacing the derived ones (see {@linkcode workerFlags}); `--unstable-net`
   * is always added.
   */
  denoFlags?: string[];
}

/** A running group of workers, as {@linkcode serveWorkers} returns it. */
export interface WorkerGroup extends AsyncDisposable {
  /** The address every worker listens on (with the real port when `port` was 0). */
  readonly addr: Deno.NetAddr;
  /** The process ids of the workers running now (a restarted worker has a new one). */
  readonly pids: readonly number[];
  /**
   * Resolves once the group has shut down and every worker has exited.
   * Rejects if the supervisor gave up on a worker that kept dying
   * ({@linkcode MAX_QUICK_RESTARTS}); the other workers are stopped first.
   */
  readonly finished: Promise<void>;
  /**
   * Shuts every worker down gracefully: SIGTERM to each, which stops
   * accepting and lets in-flight requests finish (up to `shutdownTimeoutMs`,
   * then {@linkcode SHUTDOWN_GRACE_MS} more before SIGKILL; a worker that
   * is not yet serving gets {@linkcode LOADING_STOP_GRACE_MS}). No worker is
   * restarted from then on. Returns `finished`; calling it again returns the
   * same promise.
   */
  shutdown(): Promise<void>;
  /** Sends `signal` to every running worker at once (SIGKILL: stop now). */
  kill(signal?: Deno.Signal): void;
  /**
   * Replaces every worker with a new process, one at a time, as gunicorn
   * does on SIGHUP: a new worker starts (importing the application afresh,
   * so changed code takes effect), and once it listens beside the old one,
   * the old one drains as on shutdown and exits. Resolves when every worker
   * is new and every old one has exited. If a new worker exits (or does not
   * listen within {@linkcode STARTUP_TIMEOUT_MS}) before it listens, its old
   * worker serves on, the workers not yet replaced too, and the promise
   * rejects. Calling it during a reload returns the same promise; calling
   * it while the workers are still starting rejects.
   *
   * Connections that the kernel queued for an old worker's listener in the
   * instant it closes are reset, unless the sysctl
   * `net.ipv4.tcp_migrate_req` is 1 (Linux 5.14+).
   */
  reload(): Promise<void>;
}

/** An application module: its URL, and the export that is the application. */
export interface AppSpec {
  /** The module's URL (`file:` for a path). */
  readonly url: string;
  /** The exported name of the application. */
  readonly exportName: string;
  /**
   * Whether the module's default export serves when it has no
   * `exportName`: set when `MODULE` came without `:EXPORT`.
   */
  readonly orDefault?: boolean;
}

/**
 * Parses `MODULE[:EXPORT]`, as the CLI takes it: MODULE is a URL or a path
 * (relative to the working directory), EXPORT defaults to `app`, or to the
 * module's default export when it has no `app`.
 *
 * @example
 * ```ts
 * import { resolveAppSpec } from "./workers.ts";
 * import { deepEqual } from "node:assert/strict";
 *
 * deepEqual(resolveAppSpec("https://example.com/app.ts:handler"), {
 *   url: "https://example.com/app.ts",
 *   exportName: "handler",
 * });
 * deepEqual(resolveAppSpec("/srv/site/main.ts"), {
 *   url: "file:///srv/site/main.ts",
 *   exportName: "app",
 *   orDefault: true,
 * });
 * ```
 */
export function resolveAppSpec(spec: string | URL): AppSpec {
  if (spec instanceof URL) return { url: spec.href, exportName: "app" };
  // "MODULE:EXPORT", where MODULE may itself be a URL with a colon.
  const match = /^(.*?)(?::([A-Za-z_$][\w$]*))?$/.exec(spec)!;
  const module = match[1]!;
  const exportName = match[2] ?? "app";
  if (module === "") throw new TypeError(`Invalid application "${spec}": expected MODULE[:EXPORT]`);
  const isUrl = /^[a-z][a-z0-9+.-]*:/i.test(module) && !/^[a-z]:[\\/]/i.test(module);
  const url = isUrl
    ? new URL(module).href
    : new URL(module, module.startsWith("/") ? "file:///" : `file://${Deno.cwd()}/`).href;
  return match[2] === undefined ? { url, exportName, orDefault: true } : { url, exportName };
}

/** What a worker process reads from its standard input: one JSON line. */
export interface WorkerConfig {
  /** The application's module and export. */
  readonly app: AppSpec;
  /** 1-based slot number, for messages. */
  readonly index: number;
  /** Whether other workers serve the same application. */
  readonly multiprocess: boolean;
  /** `serve()` options (plain data only). */
  readonly options: ServerOptions;
  readonly proxyFix: ProxyFixOptions | null;
  /** How often to write {@linkcode HEARTBEAT} to standard error, in milliseconds; 0: never. */
  readonly heartbeatIntervalMs: number;
  /**
   * After how many requests to ask for a replacement (`maxRequests` with
   * this worker's jitter added; see {@linkcode maxRequestsLine}); 0: never.
   */
  readonly maxRequests: number;
}

/** The line a worker writes to standard error once it listens; see {@linkcode listeningLine}. */
const LISTENING_LINE = /^Worker \d+ \(pid \d+\) listening on /;

/** What worker `index` says on standard error once it listens on `url`: the supervisor waits for it. */
export function listeningLine(index: number, pid: number, url: string): string {
  return `Worker ${index} (pid ${pid}) listening on ${url}`;
}

/** The line a worker writes once it has served its maximum; see {@linkcode maxRequestsLine}. */
const MAX_REQUESTS_LINE = /^Worker \d+ \(pid \d+\) has served \d+ requests, its maximum/;

/**
 * What worker `index` says on standard error when it starts its `count`th
 * request, its maximum: the supervisor then starts its successor and,
 * once that one listens, stops it. It serves on until then.
 */
export function maxRequestsLine(index: number, pid: number, count: number): string {
  return `Worker ${index} (pid ${pid}) has served ${count} requests, its maximum: replacing it`;
}

/** The program each worker process runs: it reads a {@linkcode WorkerConfig} on standard input. */
const WORKER_PROGRAM = new URL("./worker_main.ts", import.meta.url).href;

/** The sample application, served when `serveWorkers()` is given no module. */
const SAMPLE_APP: AppSpec = { url: new URL("./app.ts", import.meta.url).href, exportName: "app" };

function isGranted(descriptor: { name: string; host?: string; path?: string }): boolean {
  return Deno.permissions.querySync(descriptor as Deno.PermissionDescriptor).state === "granted";
}

/**
 * The Deno flags a worker needs, derived from the supervisor's own
 * permissions: every permission granted whole is passed on as it is
 * (`--allow-net`, `--allow-read`, ...). A program cannot list partial grants,
 * so of those only what a worker needs to start is passed on, when the
 * supervisor has it: the listening address (`--allow-net=HOST:PORT`), read
 * access to a local application module, and import access to the hosts of
 * remote modules. Anything narrower, or other runtime flags, go in
 * `denoFlags`. `DENO_V8_FLAGS` and the rest of the environment are
 * inherited.
 */
export function workerFlags(hostname: string, port: number, modules: readonly string[]): string[] {
  const flags: string[] = [];
  for (const name of ["net", "read", "write", "env", "sys", "run", "ffi", "import"]) {
    if (isGranted({ name })) flags.push(`--allow-${name}`);
  }
  const host = hostPort(hostname, port);
  if (!isGranted({ name: "net" }) && isGranted({ name: "net", host })) {
    flags.push(`--allow-net=${host}`);
  }
  const files = modules.filter((m) => m.startsWith("file:")).map((m) => new URL(m).pathname);
  const readable = files.filter((path) => isGranted({ name: "read", path }));
  if (!isGranted({ name: "read" }) && readable.length > 0) {
    flags.push(`--allow-read=${readable.join(",")}`);
  }
  const hosts = [
    ...new Set(modules.filter((m) => /^https?:/.test(m)).map((m) => new URL(m).host)),
  ];
  const importable = hosts.filter((h) => isGranted({ name: "import", host: h }));
  if (!isGranted({ name: "import" }) && importable.length > 0) {
    flags.push(`--allow-import=${importable.join(",")}`);
  }
  return flags;
}

/** Throws a TypeError naming the first option that cannot travel to a worker as JSON. */
function checkPlainData(options: Record<string, unknown>): void {
  const local = new Set(["workers", "signal", "onListen", "log", "denoFlags"]);
  for (const [name, value] of Object.entries(options)) {
    if (local.has(name) || value === undefined) continue;
    if (typeof value === "function" || typeof value === "symbol" || typeof value === "bigint") {
      throw new TypeError(
        `Invalid option "${name}": a ${typeof value} cannot be sent to worker processes`,
      );
    }
  }
}

function describeExit(status: Deno.CommandStatus): string {
  return status.signal !== null
    ? `was killed by ${status.signal}`
    : `exited with code ${status.code}`;
}

/** `30 s`, `1.5 s`: a timeout in milliseconds as the log says it. */
function inSeconds(ms: number): string {
  return `${ms / 1000} s`;
}

/** One worker process, and what the supervisor knows of it. */
interface Worker {
  readonly process: Deno.ChildProcess;
  readonly stdin: WritableStreamDefaultWriter<Uint8Array>;
  readonly startedAt: number;
  /**
   * When it last sent a heartbeat (`performance.now()`); null before its
   * first, which it sends as soon as it runs (before it loads the
   * application): until then, only {@linkcode STARTUP_TIMEOUT_MS} bounds it.
   */
  lastBeat: number | null;
  /** Whether it has said that it listens. */
  listening: boolean;
  /** Whether it has exited. */
  exited: boolean;
  /** Whether the supervisor has sent it SIGKILL (it is not killed, or reported, twice). */
  killed: boolean;
}

/** A replacement under way: the old worker, serving until its successor (the slot's worker) listens. */
interface Replacing {
  readonly worker: Worker;
  /** How its successor was started, for messages: `"by a reload"`. */
  readonly reason: string;
  settle(error?: Error): void;
}

/** One worker position: the worker in it now, and its restart history. */
interface Slot {
  readonly index: number;
  /** The worker serving in this position; null while a dead one waits for its restart. */
  worker: Worker | null;
  /** Quick deaths in a row. */
  failures: number;
  restartTimer: ReturnType<typeof setTimeout> | undefined;
  /** Resolves when the last worker started here has exited and its stderr is read to the end. */
  done: Promise<void>;
  /** During a replacement (a reload, a worker's maximum of requests), the old worker. */
  replacing: Replacing | null;
  /** The replacement under way, settled once the old worker has exited. */
  replacement: Promise<void> | null;
  /** Old workers draining after their successors listen. */
  readonly retiring: Set<Worker>;
}

/** What a {@linkcode Supervisor} runs, and its limits. */
interface SupervisorSettings {
  /** The worker's command line: `deno run ... worker_main.ts`. */
  readonly command: readonly string[];
  /** What every worker gets, but for its slot number and its maximum of requests. */
  readonly config: Omit<WorkerConfig, "index" | "maxRequests">;
  readonly workers: number;
  readonly addr: Deno.NetAddr;
  readonly log: (line: string) => void;
  readonly shutdownTimeoutMs: number;
  readonly timeoutMs: number;
  readonly maxRequests: number;
  readonly maxRequestsJitter: number;
}

/** A group as {@linkcode startWorkers} returns it: started, but its workers may not all listen yet. */
export interface StartingWorkerGroup extends WorkerGroup {
  /**
   * Resolves with the group once every worker listens (`onListen` has been
   * called); rejects as `serveWorkers()` does, once every worker has
   * stopped, and also when the group is shut down before that.
   */
  readonly ready: Promise<WorkerGroup>;
}

class Supervisor implements StartingWorkerGroup {
  readonly addr: Deno.NetAddr;
  readonly finished: Promise<void>;
  ready!: Promise<WorkerGroup>;

  readonly #slots: Slot[] = [];
  readonly #settings: SupervisorSettings;
  readonly #log: (line: string) => void;
  #closing = false;
  #failure: Error | null = null;
  /** The shutdown's timers: SIGKILL for workers still loading, then for every worker. */
  #stopTimers: ReturnType<typeof setTimeout>[] = [];
  /** Checks heartbeats and startup deadlines. */
  #watchTimer: ReturnType<typeof setInterval> | undefined;
  #startup: {
    resolve: () => void;
    reject: (error: Error) => void;
    /** Why the start failed, once it has. */
    error: Error | null;
  } | null = null;
  #resolveFinished!: () => void;
  #rejectFinished!: (error: Error) => void;
  #reloading: Promise<void> | null = null;
  /**
   * Replacements of workers that served their maximum, one after the other
   * (see {@linkcode Supervisor.#onMaxRequests}); the slots waiting their turn.
   */
  #rolling: Promise<void> = Promise.resolve();
  readonly #waitingTurn = new Set<Slot>();

  constructor(settings: SupervisorSettings) {
    this.#settings = settings;
    this.addr = settings.addr;
    this.#log = settings.log;
    this.finished = new Promise<void>((resolve, reject) => {
      this.#resolveFinished = resolve;
      this.#rejectFinished = reject;
    });
    // Whoever does not await `finished` must not crash on its rejection.
    this.finished.catch(() => {});
    for (let index = 1; index <= settings.workers; index++) {
      this.#slots.push({
        index,
        worker: null,
        failures: 0,
        restartTimer: undefined,
        done: Promise.resolve(),
        replacing: null,
        replacement: null,
        retiring: new Set(),
      });
    }
  }

  get pids(): readonly number[] {
    return this.#slots.flatMap((s) => s.worker === null ? [] : [s.worker.process.pid]);
  }

  /** Every worker process still running, with its slot: serving, starting, replaced or draining. */
  *#running(): Generator<[Slot, Worker]> {
    for (const slot of this.#slots) {
      for (const worker of [slot.worker, slot.replacing?.worker, ...slot.retiring]) {
        if (worker != null && !worker.exited) yield [slot, worker];
      }
    }
  }

  /**
   * Starts every worker; `ready` resolves (after `onReady`) when all listen,
   * and rejects, once they have stopped, if one cannot start or the group is
   * shut down first.
   */
  start(onReady: () => void): void {
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#startup = { resolve, reject, error: null };
    this.ready = promise.then(() => {
      onReady();
      return this;
    });
    const { timeoutMs } = this.#settings;
    this.#watchTimer = setInterval(
      () => this.#watch(),
      timeoutMs > 0 ? heartbeatIntervalMs(timeoutMs) : HEARTBEAT_INTERVAL_MAX_MS,
    );
    for (const slot of this.#slots) {
      if (!this.#spawn(slot)) break;
    }
  }

  #startupFailed(error: Error): void {
    if (this.#startup === null) return;
    this.#startup.error = error;
    this.shutdown();
  }

  /** Starts a worker in `slot`; false (and the group failing) if the process cannot be started. */
  #spawn(slot: Slot): boolean {
    let process: Deno.ChildProcess;
    try {
      process = new Deno.Command(this.#settings.command[0]!, {
        args: this.#settings.command.slice(1),
        stdin: "piped",
        stdout: "inherit",
        stderr: "piped",
        detached: true,
      }).spawn();
    } catch (error) {
      const failure = new Error(
        `Cannot start worker ${slot.index}: ${
          error instanceof Deno.errors.NotCapable || error instanceof Deno.errors.PermissionDenied
            ? `it needs --allow-run=${Deno.execPath()} (the Deno binary itself: a link to it, ` +
              "such as the one npm installs, does not count)"
            : error
        }`,
        { cause: error },
      );
      if (this.#startup !== null) {
        this.#startupFailed(failure);
      } else {
        this.#failure = failure;
        this.#log(failure.message);
        this.shutdown();
      }
      return false;
    }
    const startedAt = performance.now();
    const worker: Worker = {
      process,
      stdin: process.stdin.getWriter(),
      startedAt,
      lastBeat: null,
      listening: false,
      exited: false,
      killed: false,
    };
    slot.worker = worker;
    // gunicorn says "Booting worker with pid": the pid of a worker that
    // never comes up (stuck loading the application) is in the log too.
    this.#log(`Worker ${slot.index} (pid ${process.pid}) booting`);
    const { maxRequests, maxRequestsJitter } = this.#settings;
    const config: WorkerConfig = {
      ...this.#settings.config,
      index: slot.index,
      maxRequests: maxRequests === 0
        ? 0
        : maxRequests + Math.floor(Math.random() * (maxRequestsJitter + 1)),
    };
    worker.stdin.write(encoder.encode(JSON.stringify(config) + "\n")).catch(() => {
      // The worker died before reading it; its exit is handled below.
    });
    const pumped = this.#pumpStderr(slot, worker);
    slot.done = Promise.all([process.status, pumped]).then(([status]) =>
      this.#onExit(slot, worker, status)
    );
    return true;
  }

  /**
   * Forwards a worker's standard error line by line, taking the heartbeats
   * out, and noticing the lines that say it listens or served its maximum.
   */
  async #pumpStderr(slot: Slot, worker: Worker): Promise<void> {
    let buffer = "";
    const onLine = (line: string) => {
      this.#log(line);
      if (!worker.listening && LISTENING_LINE.test(line)) {
        worker.listening = true;
        this.#onListening(slot, worker);
      } else if (MAX_REQUESTS_LINE.test(line)) {
        this.#onMaxRequests(slot, worker);
      }
    };
    try {
      for await (let text of worker.process.stderr.pipeThrough(new TextDecoderStream())) {
        if (text.includes(HEARTBEAT)) {
          worker.lastBeat = performance.now();
          text = text.replaceAll(HEARTBEAT, "");
        }
        buffer += text;
        let newline;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          onLine(buffer.slice(0, newline));
          buffer = buffer.slice(newline + 1);
        }
      }
    } catch {
      // A broken pipe ends the stream like EOF.
    }
    if (buffer !== "") onLine(buffer);
  }

  /**
   * Every heartbeat interval: kills (SIGKILL) a worker silent for
   * `timeoutMs`, whose event loop is blocked, and one that has not listened
   * {@linkcode STARTUP_TIMEOUT_MS} after its start. Its exit then goes the
   * way of any death: a restart, or the start failing.
   */
  #watch(): void {
    const now = performance.now();
    const { timeoutMs } = this.#settings;
    for (const [slot, worker] of this.#running()) {
      const who = `Worker ${slot.index} (pid ${worker.process.pid})`;
      if (timeoutMs > 0 && worker.lastBeat !== null && now - worker.lastBeat >= timeoutMs) {
        this.#sigkill(worker, `${who} sent no heartbeat for ${inSeconds(timeoutMs)}: SIGKILL`);
      } else if (!worker.listening && now - worker.startedAt >= STARTUP_TIMEOUT_MS) {
        this.#sigkill(worker, `${who} did not listen within ${STARTUP_TIMEOUT_MS} ms: SIGKILL`);
      }
    }
  }

  /** Kills one worker with SIGKILL, saying why (once). */
  #sigkill(worker: Worker, why: string): void {
    if (worker.exited || worker.killed) return;
    worker.killed = true;
    this.#log(why);
    try {
      worker.process.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }

  #onListening(slot: Slot, worker: Worker): void {
    const replaced = slot.replacing;
    if (replaced !== null && slot.worker === worker) {
      // A successor listens: its predecessor can go.
      slot.replacing = null;
      if (!replaced.worker.exited) slot.retiring.add(replaced.worker);
      replaced.settle();
    }
    const startup = this.#startup;
    if (startup === null || !this.#slots.every((s) => s.worker?.listening)) return;
    this.#startup = null;
    startup.resolve();
  }

  /**
   * A worker served its maximum of requests: it is replaced, unless it is
   * already going, once the replacements asked for before it are over. One
   * at a time, as a rolling restart: the group never drains two workers at
   * once, and no listener closes while the clients of a draining worker
   * reconnect, which would reset those the kernel queued for it (Linux
   * does so on a closing `SO_REUSEPORT` socket unless
   * `net.ipv4.tcp_migrate_req` is 1).
   */
  #onMaxRequests(slot: Slot, worker: Worker): void {
    // During the start, or a replacement, it asks again when its count
    // has doubled (worker_main.ts).
    if (this.#closing || this.#startup !== null) return;
    if (slot.worker !== worker || slot.replacement !== null || this.#waitingTurn.has(slot)) return;
    this.#waitingTurn.add(slot);
    this.#rolling = this.#rolling.then(async () => {
      this.#waitingTurn.delete(slot);
      if (this.#closing || slot.worker !== worker || slot.replacement !== null) return;
      const reason = `to replace pid ${worker.process.pid}, which served its maximum of requests`;
      await this.#replaceSlot(slot, reason).catch(
        (error: Error) => this.#log(`Worker ${slot.index} not replaced: ${error.message}`),
      );
    });
  }

  #onExit(slot: Slot, worker: Worker, status: Deno.CommandStatus): void {
    worker.exited = true;
    worker.stdin.close().catch(() => {});
    if (slot.retiring.delete(worker)) {
      // An old worker that a successor replaced has drained.
      const who = `Worker ${slot.index} (pid ${worker.process.pid})`;
      this.#log(
        status.code === 0 && status.signal === null
          ? `${who} has drained and exited`
          : `${who} ${describeExit(status)} while draining`,
      );
      this.#maybeFinish();
      return;
    }
    // Not the slot's worker: an old one that died while its successor starts.
    if (slot.worker !== worker) return;
    const uptime = performance.now() - worker.startedAt;
    slot.worker = null;
    const who = `Worker ${slot.index} (pid ${worker.process.pid})`;
    const replaced = slot.replacing;
    if (replaced !== null) {
      // A successor died before it listened.
      slot.replacing = null;
      const error = new Error(
        `${who}, started ${replaced.reason}, ${describeExit(status)} before it was listening`,
      );
      const old = replaced.worker;
      if (!this.#closing && !old.exited) {
        // The old worker never stopped serving: it takes its slot back.
        slot.worker = old;
        replaced.settle(
          new Error(`${error.message}; worker ${slot.index} (pid ${old.process.pid}) serves on`),
        );
        return;
      }
      if (!old.exited) slot.retiring.add(old);
      replaced.settle(error);
    }
    if (this.#closing) {
      if (status.code !== 0 || status.signal !== null) this.#log(`${who} ${describeExit(status)}`);
      this.#maybeFinish();
      return;
    }
    if (this.#startup !== null) {
      this.#startupFailed(new Error(`${who} ${describeExit(status)} before it was listening`));
      return;
    }
    if (worker.listening && uptime >= STABLE_UPTIME_MS) slot.failures = 0;
    slot.failures++;
    if (slot.failures > MAX_QUICK_RESTARTS) {
      this.#failure = new Error(
        `${who} ${describeExit(status)}; it died ${slot.failures} times in a row within ` +
          `${STABLE_UPTIME_MS} ms of starting, so the supervisor gives up`,
      );
      this.#log(this.#failure.message);
      this.shutdown();
      return;
    }
    const delay = Math.min(
      RESTART_DELAY_MAX_MS,
      RESTART_DELAY_MIN_MS * 2 ** (slot.failures - 1),
    );
    this.#log(`${who} ${describeExit(status)}; restarting it in ${delay} ms`);
    slot.restartTimer = setTimeout(() => {
      slot.restartTimer = undefined;
      if (!this.#closing) this.#spawn(slot);
    }, delay);
  }

  #maybeFinish(): void {
    const running = (s: Slot) => s.worker !== null || s.replacing !== null || s.retiring.size > 0;
    if (!this.#closing || this.#slots.some(running)) return;
    for (const timer of this.#stopTimers) clearTimeout(timer);
    clearInterval(this.#watchTimer);
    // Every process has exited; wait for the last stderr lines too.
    Promise.all(this.#slots.map((s) => s.done)).then(() => {
      if (this.#failure !== null) this.#rejectFinished(this.#failure);
      else this.#resolveFinished();
    });
  }

  shutdown(): Promise<void> {
    if (this.#closing) return this.finished;
    this.#closing = true;
    for (const slot of this.#slots) {
      clearTimeout(slot.restartTimer);
      slot.restartTimer = undefined;
    }
    const startup = this.#startup;
    if (startup !== null) {
      // Stopped while starting (a failure, a signal): `ready` rejects once
      // every worker has stopped.
      this.#startup = null;
      const fail = () =>
        startup.reject(
          startup.error ?? new Error("The workers were shut down before they all listened"),
        );
      this.finished.then(fail, fail);
    }
    this.kill("SIGTERM");
    this.#stopTimers.push(
      setTimeout(() => {
        for (const [slot, worker] of this.#running()) {
          if (worker.listening) continue;
          this.#sigkill(
            worker,
            `Worker ${slot.index} (pid ${worker.process.pid}) was not serving and still ` +
              `running ${LOADING_STOP_GRACE_MS} ms after SIGTERM: SIGKILL`,
          );
        }
      }, LOADING_STOP_GRACE_MS),
      setTimeout(() => {
        this.#log(
          `Workers still running ${SHUTDOWN_GRACE_MS} ms past the shutdown timeout: SIGKILL`,
        );
        this.kill("SIGKILL");
      }, this.#settings.shutdownTimeoutMs + SHUTDOWN_GRACE_MS),
    );
    this.#maybeFinish();
    return this.finished;
  }

  kill(signal: Deno.Signal = "SIGTERM"): void {
    for (const [, worker] of this.#running()) {
      if (signal === "SIGKILL") worker.killed = true;
      try {
        worker.process.kill(signal);
      } catch {
        // Already gone.
      }
    }
  }

  reload(): Promise<void> {
    if (this.#closing) {
      return Promise.reject(new Error("Cannot reload: the workers are shutting down"));
    }
    if (this.#startup !== null) {
      return Promise.reject(new Error("Cannot reload: the workers are still starting"));
    }
    this.#reloading ??= this.#reloadAll().finally(() => this.#reloading = null);
    return this.#reloading;
  }

  async #reloadAll(): Promise<void> {
    const began = performance.now();
    for (const slot of this.#slots) {
      // A replacement under way (its worker served its maximum) may have
      // started its successor before the reload: let it end, then replace
      // that successor too.
      await slot.replacement?.catch(() => {});
      if (this.#closing) throw new Error("The reload stopped: the workers are shutting down");
      // A slot waiting to restart a dead worker starts the new code anyway.
      const worker = slot.worker;
      if (worker === null || !worker.listening || worker.startedAt >= began) continue;
      await this.#replaceSlot(slot, "by a reload");
    }
  }

  /** Replaces the worker in `slot`, unless a replacement is under way: then that one's promise. */
  #replaceSlot(slot: Slot, reason: string): Promise<void> {
    slot.replacement ??= this.#replace(slot, reason).finally(() => slot.replacement = null);
    return slot.replacement;
  }

  /**
   * Starts a successor in `slot`; once it listens, stops the old worker and
   * waits for it to exit (SIGKILL if it outlives its shutdown timeout by
   * {@linkcode SHUTDOWN_GRACE_MS}). Starting the successor first keeps the
   * group at full strength, and the old listener open until another one is.
   */
  async #replace(slot: Slot, reason: string): Promise<void> {
    const old = slot.worker!;
    const { promise: listening, resolve, reject } = Promise.withResolvers<void>();
    slot.replacing = {
      worker: old,
      reason,
      settle: (error) => error === undefined ? resolve() : reject(error),
    };
    const done = slot.done;
    if (!this.#spawn(slot)) {
      slot.replacing = null;
      throw new Error(`Worker ${slot.index}: its successor could not be started`);
    }
    const successor = slot.worker!;
    // The successor is bounded by STARTUP_TIMEOUT_MS (#watch), and its exit
    // settles `listening`.
    await listening;
    slot.failures = 0;
    const who = `Worker ${slot.index} (pid ${old.process.pid})`;
    this.#log(`${who} replaced by pid ${successor.process.pid}: stopping it`);
    try {
      old.process.kill(REPLACE_SIGNAL);
    } catch {
      // Already gone.
    }
    const timer = setTimeout(
      () =>
        this.#sigkill(
          old,
          `${who} still running ${SHUTDOWN_GRACE_MS} ms past the shutdown timeout: SIGKILL`,
        ),
      this.#settings.shutdownTimeoutMs + SHUTDOWN_GRACE_MS,
    );
    try {
      await done;
    } finally {
      clearTimeout(timer);
    }
  }

  [Symbol.asyncDispose](): Promise<void> {
    return this.shutdown().catch(() => {});
  }
}

/**
 * Serves an application module from `workers` processes that share one
 * TCP port (`SO_REUSEPORT`), under a supervisor that restarts a worker that
 * dies. Resolves once every worker listens.
 *
 * The application is named by module, not passed as a function: each worker
 * imports it itself. Needs `--allow-run` (to start `deno`) besides what the
 * workers need, which they inherit (see {@linkcode workerFlags}).
 *
 * @example Two workers on a free port
 * ```ts ignore
 * import { serveWorkers } from "./workers.ts";
 *
 * const group = await serveWorkers("./my_app.ts:app", { workers: 2, port: 8000 });
 * console.log(group.pids); // two process ids
 * Deno.addSignalListener("SIGTERM", () => group.shutdown());
 * await group.finished;
 * ```
 *
 * @param app The application: `MODULE[:EXPORT]` (a path or URL; EXPORT
 * defaults to `app`), a module URL, or a module and export as
 * {@linkcode resolveAppSpec} gives them; `null` serves the sample app.
 * @param options Server options for every worker, and the supervisor's own.
 * @returns The running {@linkcode WorkerGroup}.
 * @throws {TypeError | RangeError} If an option is invalid or cannot be sent to a worker.
 * @throws {Deno.errors.AddrInUse} If the address is taken.
 * @throws {Error} If a worker exits before it listens (the others are stopped).
 */
export async function serveWorkers(
  app: string | URL | AppSpec | null,
  options: WorkersOptions = {},
): Promise<WorkerGroup> {
  return await startWorkers(app, options).ready;
}

/**
 * Starts a group as {@linkcode serveWorkers} does, but returns it at once,
 * before its workers listen, so that it can be shut down (or killed) while
 * they start; `ready` settles as `serveWorkers()` would. What the command
 * line uses: a signal during a slow start must reach the workers.
 *
 * @throws {TypeError | RangeError} If an option is invalid or cannot be sent to a worker.
 * @throws {Deno.errors.AddrInUse} If the address is taken.
 */
export function startWorkers(
  app: string | URL | AppSpec | null,
  options: WorkersOptions = {},
): StartingWorkerGroup {
  const workers = checkInteger(optionSpec("workers"), options.workers ?? 1);
  const timeoutMs = checkInteger(optionSpec("timeoutMs"), options.timeoutMs ?? DEFAULT_TIMEOUT_MS);
  const maxRequests = checkInteger(optionSpec("maxRequests"), options.maxRequests ?? 0);
  const maxRequestsJitter = checkInteger(
    optionSpec("maxRequestsJitter"),
    options.maxRequestsJitter ?? 0,
  );
  if ("path" in options && (options as ServerOptions).path !== undefined) {
    throw new TypeError(
      `Invalid option "path": worker processes cannot share a Unix socket; ` +
        `run one server per socket path instead`,
    );
  }
  checkPlainData(options as Record<string, unknown>);
  const {
    workers: _workers,
    timeoutMs: _timeoutMs,
    maxRequests: _maxRequests,
    maxRequestsJitter: _maxRequestsJitter,
    proxyFix,
    signal,
    onListen,
    log = (line: string) => console.error(line),
    denoFlags,
    ...serverOptions
  } = options;
  const spec = app === null
    ? SAMPLE_APP
    : typeof app === "string" || app instanceof URL
    ? resolveAppSpec(app)
    : app;
  // Invalid options fail here, once, rather than in every worker.
  const resolved = resolveOptions(serverOptions);
  const hostname = resolved.hostname;
  // Bind once without SO_REUSEPORT: fails if anyone holds the address (even
  // another group of workers, which would otherwise silently share it), and
  // turns port 0 into a real port that every worker then uses.
  const probe = Deno.listen({ hostname, port: resolved.port });
  const { port } = probe.addr as Deno.NetAddr;
  probe.close();
  const modules = [WORKER_PROGRAM, spec.url];
  const command = [
    Deno.execPath(),
    "run",
    "--unstable-net",
    "--no-prompt",
    ...(denoFlags ?? workerFlags(hostname, port, modules)),
    WORKER_PROGRAM,
  ];
  const addr: Deno.NetAddr = { transport: "tcp", hostname, port };
  const supervisor = new Supervisor({
    command,
    config: {
      app: spec,
      multiprocess: workers > 1,
      options: { ...serverOptions, port },
      proxyFix: proxyFix ?? null,
      heartbeatIntervalMs: timeoutMs > 0 ? heartbeatIntervalMs(timeoutMs) : 0,
    },
    workers,
    addr,
    log,
    shutdownTimeoutMs: resolved.shutdownTimeoutMs,
    timeoutMs,
    maxRequests,
    maxRequestsJitter,
  });
  const tls = serverOptions.cert !== undefined;
  supervisor.start(() =>
    (onListen ?? ((a) => console.log(`Listening on ${listenUrl(a, tls)}`)))(addr)
  );
  if (signal !== undefined) {
    if (signal.aborted) supervisor.shutdown();
    else signal.addEventListener("abort", () => supervisor.shutdown(), { once: true });
  }
  return supervisor;
}
