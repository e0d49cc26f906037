/**
 * Stopping a server from the outside: SIGINT (Ctrl-C) and SIGTERM (systemd,
 * Docker, Kubernetes) drain it gracefully; a second signal ends the process
 * at once, as gunicorn and uvicorn do.
 *
 * @module
 */

import { printError } from "./_gateway/error_stream.ts";

/** What {@linkcode shutdownOnSignals} stops: a `Server`, a `WorkerGroup`, or anything shaped like them. */
export interface Stoppable {
  /** Starts a graceful shutdown; resolves when it is over. */
  shutdown(): Promise<unknown>;
  /** Settles once the server has stopped. */
  readonly finished: Promise<unknown>;
  /** Ends everything at once (a worker group kills its processes); called on a second signal. */
  kill?(signal: Deno.Signal): void;
}

/** Options of {@linkcode shutdownOnSignals}. */
export interface ShutdownOnSignalsOptions {
  /**
   * Called on the first signal, before the shutdown starts. By default it
   * prints one line to standard error.
   */
  onSignal?: (signal: Deno.Signal) => void;
}

/** The signals that ask a server to stop. */
const STOP_SIGNALS: readonly Deno.Signal[] = ["SIGINT", "SIGTERM"];

/** Exit code after a second signal: 128 + SIGINT, what a shell reports for Ctrl-C. */
const FORCED_EXIT_CODE = 130;

/**
 * How long a second signal waits for the processes it killed to be gone:
 * SIGKILL is delivered at once, but a process takes a moment to end.
 */
const KILLED_WAIT_MS = 2_000;

/**
 * What a second signal does: kills a worker group's processes (SIGKILL),
 * waits until they are gone (at most {@linkcode KILLED_WAIT_MS}), so that
 * none outlives this process, then exits with {@linkcode FORCED_EXIT_CODE}.
 * A single server has nothing to kill: the exit is at once.
 */
export function forceStop(server: Stoppable | null): void {
  if (server?.kill === undefined) Deno.exit(FORCED_EXIT_CODE);
  server.kill("SIGKILL");
  const exit = () => Deno.exit(FORCED_EXIT_CODE);
  setTimeout(exit, KILLED_WAIT_MS);
  server.finished.then(exit, exit);
}

/** What {@linkcode listenForStop} returns: dispose of it to stop listening. */
export interface StopSignals extends Disposable {
  /** Whether SIGINT or SIGTERM has come yet. */
  readonly received: boolean;
}

/**
 * Listens for SIGINT and SIGTERM: the first calls `stop` with the signal, a
 * second one `force`. Install it before a server announces that it listens:
 * a supervisor may signal as soon as it reads that line, and a signal with
 * no listener yet kills the process at once. One that comes before the
 * server exists is remembered in `received`, so the caller can shut the
 * server down as soon as it is up. The listeners keep the process alive
 * until disposed of (disposing twice is harmless).
 */
export function listenForStop(
  stop: (signal: Deno.Signal) => void,
  force: (signal: Deno.Signal) => void,
): StopSignals {
  let count = 0;
  let listening = true;
  const listeners = STOP_SIGNALS.map((signal) => {
    const listener = () => ++count > 1 ? force(signal) : stop(signal);
    Deno.addSignalListener(signal, listener);
    return [signal, listener] as const;
  });
  return {
    get received() {
      return count > 0;
    },
    [Symbol.dispose]() {
      if (!listening) return;
      listening = false;
      for (const [signal, listener] of listeners) Deno.removeSignalListener(signal, listener);
    },
  };
}

/**
 * Shuts `server` down gracefully on the first SIGINT or SIGTERM: it stops
 * accepting, lets in-flight requests finish and closes idle connections. A
 * second signal ends the process at once (exit code 130), killing a worker
 * group's processes first (and waiting, at most 2 s, until they are gone).
 * The listeners are removed once `server.finished`
 * settles, so the process exits when the server is done; dispose of the
 * result to remove them earlier.
 *
 * @example Serve until Ctrl-C, then drain
 * ```ts ignore
 * import { serve, shutdownOnSignals } from "./mod.ts";
 * import { app } from "./app.ts";
 *
 * const server = serve(app, { port: 8000 });
 * shutdownOnSignals(server);
 * await server.finished;
 * ```
 *
 * @param server The server (or worker group) to stop.
 * @param options What to say on the first signal.
 * @returns A disposable that stops listening.
 */
export function shutdownOnSignals(
  server: Stoppable,
  options: ShutdownOnSignalsOptions = {},
): Disposable {
  const onSignal = options.onSignal ??
    ((signal: Deno.Signal) =>
      console.error(`${signal}: shutting down, finishing in-flight requests`));
  const signals = listenForStop(
    (signal) => {
      onSignal(signal);
      server.shutdown().catch(() => {
        // A group that failed reports why through `finished`.
      });
    },
    () => forceStop(server),
  );
  server.finished.then(() => signals[Symbol.dispose](), () => signals[Symbol.dispose]());
  return signals;
}

/**
 * Keeps a server process serving when application code leaves a promise
 * rejection unhandled or throws inside a timer callback: by default Deno
 * ends the process for either, dropping every connection. Each such error
 * goes to `onError` with its stack instead. The command line and every
 * worker process install this; a program of your own that calls `serve()`
 * can too. Dispose of the result to restore Deno's default.
 *
 * @example
 * ```ts ignore
 * import { catchUncaughtErrors, serve, shutdownOnSignals } from "./mod.ts";
 * import { app } from "./app.ts";
 *
 * catchUncaughtErrors();
 * shutdownOnSignals(serve(app));
 * ```
 *
 * @param onError Where the errors go; by default standard error, as the
 * server's own error log writes them (a resource error such as EMFILE on
 * one line, without the stack that could fail to format).
 * @returns A disposable that removes the handlers.
 */
export function catchUncaughtErrors(
  onError: (message: string, error?: unknown) => void = printError,
): Disposable {
  const onRejection = (event: PromiseRejectionEvent) => {
    event.preventDefault();
    onError("Unhandled promise rejection in application code", event.reason);
  };
  const onUncaught = (event: ErrorEvent) => {
    event.preventDefault();
    onError("Uncaught exception in application code", event.error ?? event.message);
  };
  globalThis.addEventListener("unhandledrejection", onRejection);
  globalThis.addEventListener("error", onUncaught);
  return {
    [Symbol.dispose]() {
      globalThis.removeEventListener("unhandledrejection", onRejection);
      globalThis.removeEventListener("error", onUncaught);
    },
  };
}
