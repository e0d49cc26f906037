/**
 * Helpers for the tests of worker groups (`tests/workers_test.ts`,
 * `tests/supervisor_test.ts`): the CLI supervisor as a child process, which
 * worker answers a request, and whether a worker process is gone.
 *
 * A worker is a grandchild of the test: nothing here waits on its exit
 * directly. The workers write to the supervisor's standard output, which
 * is the test's pipe, so {@linkcode Child.status} (which waits for that
 * pipe's end) resolves only once every worker has exited too.
 */

import { equal, notEqual, ok } from "node:assert/strict";
import { deadline, exchange, parseResponses, TEST_DEADLINE_MS } from "./_helpers.ts";
import { Child, LineReader, run } from "./_child.ts";

export const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
export const PROJECT_DIR = new URL("..", import.meta.url).pathname;

/** The line of a worker that listens: its slot, pid and port. */
export const LISTENING = /^Worker (\d+) \(pid (\d+)\) listening on http:\/\/127\.0\.0\.1:(\d+)\/$/;
/** The line the supervisor writes as it starts a worker: its slot and pid. */
export const BOOTING = /^Worker (\d+) \(pid (\d+)\) booting$/;

/** The pids in the lines that match `pattern` (its second group), in order. */
function pidsOf(lines: readonly string[], pattern: RegExp): number[] {
  return lines.flatMap((l) => {
    const m = pattern.exec(l);
    return m === null ? [] : [Number(m[2])];
  });
}

/** The pids of every worker a supervisor started, from its log lines (`booting`), in order. */
export function bootedPids(lines: readonly string[]): number[] {
  return pidsOf(lines, BOOTING);
}

/**
 * The CLI's arguments for two workers on a free port without an access
 * log, serving `module`, with `extra` flags.
 */
export function twoWorkersArgs(module: string, extra: readonly string[] = []): string[] {
  return ["--workers", "2", "--port", "0", "--no-access-log", ...extra, module];
}

/**
 * The CLI serving `module` from two workers (with `extra` flags), once
 * both listen (see {@linkcode Supervisor.started}). Use with `await using`:
 * disposal ends the process tree.
 */
export async function twoWorkers(
  module: string,
  extra: readonly string[] = [],
): Promise<Supervisor> {
  const supervisor = new Supervisor(twoWorkersArgs(module, extra));
  try {
    await supervisor.started();
  } catch (error) {
    await supervisor[Symbol.asyncDispose]();
    throw error;
  }
  return supervisor;
}

/**
 * A `log` option for `serveWorkers()` and `startWorkers()` whose lines can
 * be awaited as a child's output can ({@linkcode LineReader}); `close()`
 * ends it, once the group has finished.
 */
export interface AwaitableLog {
  readonly log: (line: string) => void;
  readonly lines: LineReader;
  close(): void;
}

export function awaitableLog(): AwaitableLog {
  const encoder = new TextEncoder();
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  let open = true;
  const lines = new LineReader(new ReadableStream({ start: (c) => controller = c }));
  return {
    log: (line) => {
      if (open) controller.enqueue(encoder.encode(`${line}\n`));
    },
    lines,
    close: () => {
      if (open) controller.close();
      open = false;
    },
  };
}

/** The CLI supervisor with its workers. */
export class Supervisor implements AsyncDisposable {
  readonly child: Child;
  port = 0;

  constructor(args: string[], flags = ["--allow-net", "--allow-read", "--allow-run"]) {
    this.child = new Child(Deno.execPath(), ["run", ...flags, SERVER_TS, ...args], {
      cwd: PROJECT_DIR,
    });
  }

  /**
   * Waits for the `Listening on` line (stdout) and the `workers` workers'
   * `listening` lines (stderr, which is read separately and may lag), and
   * reads the port.
   */
  async started(workers = 2): Promise<void> {
    const line = await this.child.stdout.waitFor(/^Listening on /);
    notEqual(line, null, `the supervisor did not start\n${this.child.output()}`);
    const port = /^Listening on http:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line!)?.[1];
    ok(port !== undefined, line!);
    this.port = Number(port);
    ok(await this.child.stderr.waitForCount(LISTENING, workers), this.child.output());
  }

  /** The pids of the `listening` lines so far, in order. */
  listeningPids(): number[] {
    return pidsOf(this.child.stderr.lines, LISTENING);
  }

  /** The pids of every worker started so far (the `booting` lines), in order. */
  bootedPids(): number[] {
    return bootedPids(this.child.stderr.lines);
  }

  /**
   * Ends the process tree: the supervisor (SIGKILL), then any worker that
   * outlived it (a failed test's), so that no process outlives the test.
   * The workers hold the supervisor's standard output open, so its end is
   * awaited last, and within a deadline.
   */
  async [Symbol.asyncDispose](): Promise<void> {
    this.child.kill("SIGKILL");
    await this.child.process.status;
    // The supervisor's own stderr ends with it: every "booting" line is in.
    await this.child.stderr.done;
    await killLeftWorkers(this.bootedPids());
    await deadline(TEST_DEADLINE_MS, this.child.status(), "The end of the workers' output");
  }
}

/** Whether process `pid` still runs: it exists and is not a zombie (dead, not yet reaped). */
export async function isRunning(pid: number): Promise<boolean> {
  const { stdout } = await run("ps", ["-o", "stat=", "-p", String(pid)]);
  const state = new TextDecoder().decode(stdout).trim();
  return state !== "" && !state.startsWith("Z");
}

/** The worker pids among `pids` whose process still runs. */
export async function runningWorkers(pids: readonly number[]): Promise<number[]> {
  const running = await Promise.all(pids.map(isRunning));
  return pids.filter((_, i) => running[i]);
}

/**
 * Kills (SIGKILL) those of `pids` that still run worker_main.ts: a pid is
 * checked before it is killed, in case it went and was reused.
 */
export async function killLeftWorkers(pids: readonly number[]): Promise<void> {
  for (const pid of await runningWorkers(pids)) {
    const { stdout } = await run("ps", ["-o", "args=", "-p", String(pid)]);
    if (!new TextDecoder().decode(stdout).includes("worker_main.ts")) continue;
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Gone in between.
    }
  }
}

/** Asks for `/` on a new connection; returns the answering worker's pid and its `wsgi.multiprocess`. */
export async function whoAnswers(port: number): Promise<{ pid: number; multiprocess: string }> {
  const text = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const [response] = parseResponses(text);
  equal(response?.status, 200, text);
  const [pid, multiprocess] = response!.body.trim().split(" ");
  return { pid: Number(pid), multiprocess: multiprocess! };
}

/**
 * New connections until every pid in `wanted` has answered (the kernel
 * hashes each connection to a listener; 200 tries miss a worker with
 * probability 2^-199). Returns every pid seen.
 */
export async function pidsAnswering(port: number, wanted: readonly number[]): Promise<Set<number>> {
  const seen = new Set<number>();
  for (let i = 0; i < 200 && !wanted.every((p) => seen.has(p)); i++) {
    seen.add((await whoAnswers(port)).pid);
  }
  return seen;
}

/**
 * Whether nothing accepts connections on `port` any more, within
 * `withinMs`: a closed listener's socket goes away a turn of its event
 * loop later, and a loaded machine may take a while to give it that turn.
 */
export async function refused(port: number, withinMs = 2_000): Promise<boolean> {
  const end = performance.now() + withinMs;
  for (;;) {
    try {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      conn.close();
    } catch (error) {
      return error instanceof Deno.errors.ConnectionRefused;
    }
    if (performance.now() >= end) return false;
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}
