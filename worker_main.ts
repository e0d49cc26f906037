/**
 * The program each worker process runs (`workers.ts` spawns it by URL): it
 * reads its configuration as one JSON line on standard input, loads the
 * application, and serves it with `SO_REUSEPORT` beside its siblings until
 * SIGTERM, SIGINT or the end of its standard input (the supervisor is
 * gone), then drains and exits.
 *
 * A program, not a library module: nothing imports it.
 *
 * @module
 */

import { AppLoadError, loadApplication } from "./cli.ts";
import { listenUrl } from "./options.ts";
import { serve, type Server } from "./server.ts";
import { catchUncaughtErrors, listenForStop } from "./signals.ts";
import { listeningLine, type WorkerConfig } from "./workers.ts";

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
  let server: Server | null = null;
  let stopping = false;
  // The supervisor escalates (SIGKILL) if it must; a repeated signal here
  // (systemd signalling the whole group as well) changes nothing.
  const stop = () => {
    if (stopping) return;
    stopping = true;
    logSafely(`${who} shutting down: finishing in-flight requests`);
    server?.shutdown();
  };
  using _signals = listenForStop(stop, stop);
  using _uncaught = catchUncaughtErrors(logSafely);
  let app;
  try {
    app = await loadApplication(config.app, config.proxyFix);
  } catch (error) {
    // A load error is one line that says where (cli.ts describes it).
    logSafely(`${who}: ${error instanceof AppLoadError ? error.message : error}`);
    return 1;
  }
  if (stopping) return 0;
  const tls = config.options.cert !== undefined;
  server = serve(app, {
    ...config.options,
    reusePort: true,
    multiprocess: config.multiprocess,
    onListen: (addr) => logSafely(listeningLine(config.index, Deno.pid, listenUrl(addr, tls))),
    onError: (message, error) =>
      error === undefined ? logSafely(message) : logSafely(`${message}:`, error),
  });
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
  await server.finished;
  return 0;
}

if (import.meta.main) {
  // Exit explicitly: the read of standard input above is still pending.
  runWorker().then((code) => Deno.exit(code));
}
