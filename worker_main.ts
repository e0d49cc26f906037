/**
 * The program each worker process runs (`workers.ts` spawns it by URL): it
 * reads its configuration as one JSON line on standard input, loads the
 * application, and serves it with `SO_REUSEPORT` beside its siblings until
 * SIGTERM, SIGINT or the end of its standard input (the supervisor is
 * gone), then drains and exits. Any of those while it still loads the
 * application ends it at once: nothing is in flight.
 *
 * What it tells the supervisor, on standard error: that it listens; a
 * heartbeat byte from a timer, which stops when the event loop is blocked;
 * and that it served its maximum of requests, when it has (it serves on
 * until its successor listens and the supervisor stops it).
 *
 * A watchdog thread (a Web Worker) watches standard input as well, for the
 * case the event loop cannot: once the supervisor is gone, it ends the
 * process (SIGKILL to itself) at once if the application was not yet
 * served, or when the drain has overrun its bound. It costs about 6 MB of
 * private memory per worker.
 *
 * A program, not a library module: nothing imports it.
 *
 * @module
 */

import type { Application } from "./types.ts";
import { printError } from "./_gateway/error_stream.ts";
import { AppLoadError, loadApplication } from "./cli.ts";
import { listenUrl, resolveOptions } from "./options.ts";
import { serve, type Server } from "./server.ts";
import { catchUncaughtErrors, listenForStop } from "./signals.ts";
import {
  HEARTBEAT,
  listeningLine,
  maxRequestsLine,
  REPLACE_SIGNAL,
  REPLACED_IDLE_GRACE_MS,
  SHUTDOWN_GRACE_MS,
  type WorkerConfig,
} from "./workers.ts";

/** Reads a byte stream as lines. */
async function* readLines(stream: ReadableStream<Uint8Array>): AsyncGenerator<string> {
  let buffer = "";
  for await (const text of stream.pipeThrough(new TextDecoderStream())) {
    buffer += text;
    let newline;
    while ((newline = buffer.indexOf("\n")) >= 0) {
      yield buffer.slice(0, newline);
      buffer = buffer.slice(newline + 1);
    }
  }
  if (buffer !== "") yield buffer;
}

/**
 * Writes to standard error, ignoring a broken pipe: once the supervisor is
 * gone (killed), nobody reads the worker's standard error, and a failed log
 * line must not stop a graceful shutdown.
 */
function logSafely(...data: unknown[]): void {
  try {
    console.error(...data);
  } catch {
    // Nobody is listening.
  }
}

/** What the main thread tells the watchdog thread once it serves. */
interface WatchdogMessage {
  /** How long a drain may last after the supervisor is gone before the process is killed. */
  readonly boundMs: number;
}

/**
 * The watchdog thread's code. It runs in a Web Worker made from this
 * function's source text (a `blob:` URL loads without any permission,
 * where a module file would need `--allow-read`), so it must use nothing
 * from outside its own body. It waits for the end of standard input (the
 * supervisor is gone); then, if the main thread never said it serves, the
 * process has nothing in flight and is killed at once; if it did, the main
 * thread drains, and the process is killed if it still runs `boundMs`
 * later. Either way the main thread exits first if its event loop runs:
 * the watchdog matters when it is blocked, which no signal handler and no
 * read of standard input can interrupt.
 */
function watchdog(): void {
  let boundMs: number | null = null;
  globalThis.addEventListener("message", (event) => {
    boundMs = ((event as MessageEvent).data as WatchdogMessage).boundMs;
  });
  (async () => {
    const buffer = new Uint8Array(64);
    try {
      while (await Deno.stdin.read(buffer) !== null) {
        // Nothing is sent after the configuration: wait for the end.
      }
    } catch {
      // A broken pipe is an end too.
    }
    const kill = () => Deno.kill(Deno.pid, "SIGKILL");
    if (boundMs === null) kill();
    else setTimeout(kill, boundMs);
  })();
}

/** Starts the watchdog thread; returns how to tell it that the server is up. */
function startWatchdog(): (message: WatchdogMessage) => void {
  const source = new Blob([`(${watchdog})();`], { type: "text/javascript" });
  const url = URL.createObjectURL(source);
  const thread = new Worker(url, { type: "module", name: "watchdog" });
  return (message) => thread.postMessage(message);
}

/** Writes the heartbeat every `intervalMs`, from now on, from this event loop. */
function startHeartbeat(intervalMs: number): void {
  const beat = new TextEncoder().encode(HEARTBEAT);
  const send = () => {
    try {
      Deno.stderr.writeSync(beat);
    } catch {
      // The supervisor is gone; standard input's end stops this worker.
    }
  };
  send();
  setInterval(send, intervalMs);
}

/**
 * `app`, counting the requests it is called for: at the `maximum`th it
 * calls `onMaximum` with the count, and again each time the count doubles,
 * in case the supervisor could not replace the worker (its successor
 * failed to start) or was still busy replacing it.
 */
function countRequests(
  app: Application,
  maximum: number,
  onMaximum: (count: number) => void,
): Application {
  let count = 0;
  let next = maximum;
  return (environ, startResponse) => {
    if (++count === next) {
      next *= 2;
      onMaximum(count);
    }
    return app(environ, startResponse);
  };
}

/** A worker's life: config from stdin, serve until SIGTERM/SIGINT or stdin's EOF; the exit code. */
async function runWorker(): Promise<number> {
  const lines = readLines(Deno.stdin.readable);
  const first = await lines.next();
  if (first.done) {
    logSafely("worker_main.ts: expected a worker configuration on standard input");
    return 2;
  }
  const config = JSON.parse(first.value) as WorkerConfig;
  const who = `Worker ${config.index} (pid ${Deno.pid})`;
  const tellWatchdog = startWatchdog();
  // The first beat goes out now, before the application loads: from then
  // on, the supervisor counts silence.
  if (config.heartbeatIntervalMs > 0) startHeartbeat(config.heartbeatIntervalMs);
  let server: Server | null = null;
  let stopping = false;
  // The supervisor escalates (SIGKILL) if it must; a repeated signal here
  // (systemd signalling the whole group as well) changes nothing.
  const stop = (idleGraceMs = 0) => {
    if (server === null) {
      logSafely(`${who} stopped while loading the application: exiting`);
      Deno.exit(0);
    }
    if (stopping) return;
    stopping = true;
    logSafely(`${who} shutting down: finishing in-flight requests`);
    server.shutdown({ idleGraceMs });
  };
  using _signals = listenForStop(() => stop(), () => stop());
  // Replaced: the successor serves on the same port, so idle clients get a
  // moment to send their next request (see workers.ts).
  const replaced = () => stop(REPLACED_IDLE_GRACE_MS);
  Deno.addSignalListener(REPLACE_SIGNAL, replaced);
  // Error lines as the single-process server writes them (printError), but
  // never throwing once the supervisor's end of standard error is gone.
  const onError = (message: string, error?: unknown) => {
    try {
      printError(message, error);
    } catch {
      // Nobody is listening.
    }
  };
  using _uncaught = catchUncaughtErrors(onError);
  // The supervisor holds our stdin open; its end means the supervisor is gone.
  (async () => {
    try {
      for await (const _ of lines) {
        // Nothing more is sent; wait for the end.
      }
    } catch {
      // A broken pipe is an end too.
    }
    stop();
  })();
  let app;
  try {
    app = await loadApplication(config.app, config.proxyFix);
  } catch (error) {
    // A load error is one line that says where (cli.ts describes it).
    logSafely(`${who}: ${error instanceof AppLoadError ? error.message : error}`);
    return 1;
  }
  if (config.maxRequests > 0) {
    app = countRequests(
      app,
      config.maxRequests,
      (count) => logSafely(maxRequestsLine(config.index, Deno.pid, count)),
    );
  }
  const tls = config.options.cert !== undefined;
  const drainBoundMs = resolveOptions(config.options).shutdownTimeoutMs + SHUTDOWN_GRACE_MS;
  server = serve(app, {
    ...config.options,
    reusePort: true,
    multiprocess: config.multiprocess,
    onListen: (addr) => {
      tellWatchdog({ boundMs: drainBoundMs });
      logSafely(listeningLine(config.index, Deno.pid, listenUrl(addr, tls)));
    },
    onError,
  });
  await server.finished;
  Deno.removeSignalListener(REPLACE_SIGNAL, replaced);
  return 0;
}

if (import.meta.main) {
  // Exit explicitly: the reads of standard input above are still pending.
  runWorker().then((code) => Deno.exit(code));
}
