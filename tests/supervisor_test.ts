/**
 * What the supervisor of `--workers` guarantees when workers misbehave:
 * a worker that hangs at import (a top-level await that never resolves),
 * one whose event loop is blocked (an endless loop at import or in a
 * request), one whose application listens for SIGTERM itself. Whatever
 * they do, SIGTERM ends the group within the shutdown timeout plus
 * {@linkcode SHUTDOWN_GRACE_MS}, a second signal at once, and no worker
 * outlives its supervisor, even one killed with SIGKILL. Then the
 * heartbeat (`--timeout`), the maximum of requests (`--max-requests`), and
 * signals while the application loads.
 *
 * Black box with the CLI where possible. No sleeps: tests wait on lines
 * (the fixtures say when they load or block), exits and EOF; the CLI's
 * standard output is shared with its workers, so its end means every
 * worker has exited. Every child has a watchdog, and every worker started
 * is checked gone (and killed if a failing test left it) at the end.
 */

import { deepEqual, equal, match, notEqual, ok, rejects } from "node:assert/strict";
import { parseCommandLine } from "../cli.ts";
import {
  LOADING_STOP_GRACE_MS,
  SHUTDOWN_GRACE_MS,
  STARTUP_TIMEOUT_MS,
  startWorkers,
  type WorkersOptions,
} from "../workers.ts";
import { deadline, encoder, exchange, parseResponses, TEST_DEADLINE_MS } from "./_helpers.ts";
import { type ChildStatus, findExecutable, run, tempDir } from "./_child.ts";
import {
  type AwaitableLog,
  awaitableLog,
  bootedPids,
  killLeftWorkers,
  LISTENING,
  pidsAnswering,
  PROJECT_DIR,
  runningWorkers,
  SERVER_TS,
  Supervisor,
  twoWorkers,
  twoWorkersArgs,
} from "./_workers.ts";

const WRK = findExecutable("wrk");
if (WRK === null) {
  console.warn(
    "!!! supervisor_test.ts: wrk NOT FOUND on PATH: SKIPPING the --max-requests load test !!!",
  );
}

/** The shutdown timeout of these tests' groups, in ms: short, so that the bounds are too. */
const SHUTDOWN_TIMEOUT_MS = 1000;
/**
 * Slack on top of a bound, for the processes to exit and the test to see
 * it (a SIGKILL is sent at the bound itself), on a loaded machine.
 */
const EXIT_SLACK_MS = 1500;

/** The application modules of these tests, by file name. */
const MODULES = {
  /** Answers `PID`; `/block` says so on standard error, then blocks the event loop for good. */
  "pid_app.js": `
export const app = (environ, startResponse) => {
  if (environ.PATH_INFO === "/block") {
    console.error(\`blocking \${Deno.pid}\`);
    for (;;) {}
  }
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [new TextEncoder().encode(\`\${Deno.pid}\\n\`)];
};
`,
  /**
   * Hangs at import: a top-level await that never resolves. Its timer
   * says the event loop still turns (and keeps Deno from reporting an
   * await that can never resolve).
   */
  "hang_import.js": `
console.error(\`loading \${Deno.pid}\`);
await new Promise(() => setInterval(() => console.error(\`still loading \${Deno.pid}\`), 250));
export { app } from "./pid_app.js";
`,
  /** Blocks its event loop at import. */
  "busy_import.js": `
console.error(\`loading \${Deno.pid}\`);
for (;;) {}
export { app } from "./pid_app.js";
`,
  /** Listens for SIGTERM and does nothing with it. */
  "ignore_term.js": `
Deno.addSignalListener("SIGTERM", () => {});
export { app } from "./pid_app.js";
`,
  /** Listens for SIGTERM and does nothing with it, then hangs at import. */
  "ignore_term_loading.js": `
Deno.addSignalListener("SIGTERM", () => {});
console.error(\`loading \${Deno.pid}\`);
await new Promise(() => setInterval(() => {}, 1000));
export { app } from "./pid_app.js";
`,
} as const;

type ModuleName = keyof typeof MODULES;

/** The modules written to a new temp dir, removed on disposal. */
interface Apps extends AsyncDisposable {
  path(name: ModuleName): string;
}

async function writeApps(): Promise<Apps> {
  const temp = await tempDir("wsgi_supervisor_");
  for (const [name, source] of Object.entries(MODULES)) {
    await Deno.writeTextFile(`${temp.path}/${name}`, source);
  }
  return {
    path: (name) => `${temp.path}/${name}`,
    [Symbol.asyncDispose]: () => temp[Symbol.asyncDispose](),
  };
}

/** How a case's workers misbehave, and what state to wait for before the signal. */
interface Case {
  readonly name: string;
  readonly module: ModuleName;
  /** `loading`: both workers said they load; `listening`: both listen; `blocked`: one request blocks a worker too. */
  readonly state: "loading" | "listening" | "blocked";
  /** How long SIGTERM may take to end the group, before slack. */
  readonly sigtermBoundMs: number;
  /** How long the workers may outlive a supervisor killed with SIGKILL, before slack. */
  readonly sigkillBoundMs: number;
}

/** The guarantee: the shutdown timeout plus the grace, after which the supervisor sends SIGKILL. */
const GROUP_BOUND_MS = SHUTDOWN_TIMEOUT_MS + SHUTDOWN_GRACE_MS;
/** A worker that has not started serving goes at once (or at LOADING_STOP_GRACE_MS if blocked). */
const LOADING_BOUND_MS = LOADING_STOP_GRACE_MS;

const CASES: readonly Case[] = [
  {
    name: "workers that hang at import",
    module: "hang_import.js",
    state: "loading",
    sigtermBoundMs: LOADING_BOUND_MS,
    sigkillBoundMs: LOADING_BOUND_MS,
  },
  {
    name: "workers that block their event loop at import",
    module: "busy_import.js",
    state: "loading",
    sigtermBoundMs: LOADING_BOUND_MS,
    sigkillBoundMs: LOADING_BOUND_MS,
  },
  {
    name: "a worker that blocks its event loop in a request",
    module: "pid_app.js",
    state: "blocked",
    sigtermBoundMs: GROUP_BOUND_MS,
    sigkillBoundMs: GROUP_BOUND_MS,
  },
  {
    name: "workers whose application ignores SIGTERM",
    module: "ignore_term.js",
    state: "listening",
    sigtermBoundMs: GROUP_BOUND_MS,
    sigkillBoundMs: GROUP_BOUND_MS,
  },
  {
    name: "workers whose application ignores SIGTERM and hangs at import",
    module: "ignore_term_loading.js",
    state: "loading",
    sigtermBoundMs: LOADING_BOUND_MS,
    sigkillBoundMs: LOADING_BOUND_MS,
  },
];

/** A group of two workers under the CLI, brought to `state`, and the connection that blocks one. */
interface Running extends AsyncDisposable {
  readonly supervisor: Supervisor;
}

async function startCase(apps: Apps, c: Case, extraArgs: string[] = []): Promise<Running> {
  const supervisor = new Supervisor(
    twoWorkersArgs(apps.path(c.module), [
      "--shutdown-timeout",
      String(SHUTDOWN_TIMEOUT_MS),
      ...extraArgs,
    ]),
  );
  let blocker: Deno.Conn | null = null;
  const running: Running = {
    supervisor,
    async [Symbol.asyncDispose]() {
      blocker?.close();
      await supervisor[Symbol.asyncDispose]();
    },
  };
  try {
    const stderr = supervisor.child.stderr;
    if (c.state === "loading") {
      ok(await stderr.waitForCount(/^loading \d+$/, 2), supervisor.child.output());
    } else {
      await supervisor.started();
    }
    if (c.state === "blocked") {
      blocker = await Deno.connect({ hostname: "127.0.0.1", port: supervisor.port });
      await blocker.write(encoder.encode("GET /block HTTP/1.1\r\nHost: x\r\n\r\n"));
      notEqual(await stderr.waitFor(/^blocking \d+$/), null, supervisor.child.output());
    }
  } catch (error) {
    await running[Symbol.asyncDispose]();
    throw error;
  }
  return running;
}

/**
 * Sends `signal` to the CLI and waits for it and every worker to exit;
 * checks how it ended and that it took at most `boundMs` (plus slack).
 */
async function exitAfter(
  supervisor: Supervisor,
  signal: Deno.Signal,
  expected: ChildStatus,
  boundMs: number,
): Promise<void> {
  const sent = performance.now();
  supervisor.child.kill(signal);
  const status = await deadline(
    GROUP_BOUND_MS + TEST_DEADLINE_MS,
    supervisor.child.status(),
    "The exit of the CLI and its workers",
  );
  const elapsedMs = Math.round(performance.now() - sent);
  const output = supervisor.child.output();
  deepEqual(status, expected, output);
  ok(elapsedMs <= boundMs + EXIT_SLACK_MS, `${signal}: ${elapsedMs} ms > ${boundMs} ms\n${output}`);
}

/** Fails unless every worker the supervisor started has exited. */
async function assertAllGone(supervisor: Supervisor): Promise<void> {
  const pids = supervisor.bootedPids();
  ok(pids.length >= 2, supervisor.child.output());
  // A killed process takes a moment to end (its memory is torn down), a
  // while longer on a loaded machine: gone within 2 s.
  let running = await runningWorkers(pids);
  for (const end = performance.now() + 2_000; running.length > 0 && performance.now() < end;) {
    await new Promise((resolve) => setTimeout(resolve, 20));
    running = await runningWorkers(pids);
  }
  deepEqual(running, [], `workers still running\n${supervisor.child.output()}`);
}

for (const c of CASES) {
  Deno.test(`SIGTERM ends the supervisor and ${c.name} in time`, async () => {
    await using apps = await writeApps();
    await using running = await startCase(apps, c);
    const { supervisor } = running;
    await exitAfter(supervisor, "SIGTERM", { code: 0, signal: null }, c.sigtermBoundMs);
    await assertAllGone(supervisor);
  });
}

for (const c of CASES.filter((c) => c.module !== "ignore_term_loading.js")) {
  Deno.test(`no worker outlives a supervisor killed with SIGKILL: ${c.name}`, async () => {
    await using apps = await writeApps();
    await using running = await startCase(apps, c);
    const { supervisor } = running;
    // The CLI's standard output ends when the last worker has exited.
    await exitAfter(supervisor, "SIGKILL", { code: 137, signal: "SIGKILL" }, c.sigkillBoundMs);
    await assertAllGone(supervisor);
  });
}

Deno.test("a second SIGTERM kills every worker (SIGKILL) at once, then the CLI exits 130", async () => {
  await using apps = await writeApps();
  // The default shutdown timeout (30 s): only the second signal can end
  // the blocked worker soon.
  const c = CASES.find((c) => c.state === "blocked")!;
  await using running = await startCase(apps, c, ["--shutdown-timeout", "30000"]);
  const { supervisor } = running;
  supervisor.child.kill("SIGTERM");
  const stopping = await supervisor.child.stderr.waitFor(/^Shutting down/);
  notEqual(stopping, null, supervisor.child.output());
  await exitAfter(supervisor, "SIGTERM", { code: 130, signal: null }, 0);
  await assertAllGone(supervisor);
});

/**
 * `startWorkers()` of `module` on a free port, its log awaitable;
 * disposal shuts it down and kills any worker a failed test left.
 */
function loggedGroup(module: string, options: WorkersOptions) {
  const logs = awaitableLog();
  const group = startWorkers(module, { port: 0, onListen() {}, log: logs.log, ...options });
  const booted = () => bootedPids(logs.lines.lines);
  return {
    group,
    logs,
    booted,
    /** The log so far, for a failure message. */
    output: () => logs.lines.lines.join("\n"),
    async [Symbol.asyncDispose]() {
      await group[Symbol.asyncDispose]();
      logs.close();
      await logs.lines.done;
      await killLeftWorkers(booted());
    },
  };
}

/** Waits (within the test deadline) until `count` lines of the log match `pattern`. */
async function waitForLines(logs: AwaitableLog, pattern: RegExp, count: number): Promise<void> {
  ok(
    await deadline(
      TEST_DEADLINE_MS,
      logs.lines.waitForCount(pattern, count),
      `${pattern} x${count}`,
    ),
    logs.lines.lines.join("\n"),
  );
}

Deno.test("startWorkers(): a group still loading can be killed, and an abort stops its start", async () => {
  await using apps = await writeApps();
  for (const how of ["kill", "abort"] as const) {
    const controller = new AbortController();
    await using started = loggedGroup(
      apps.path(how === "kill" ? "busy_import.js" : "hang_import.js"),
      { workers: 2, signal: controller.signal },
    );
    const { group, logs } = started;
    equal(group.pids.length, 2);
    // Both workers load the application (the line comes from its top-level code).
    await waitForLines(logs, /^loading \d+$/, 2);
    const sent = performance.now();
    if (how === "kill") group.kill("SIGKILL");
    else controller.abort();
    await rejects(
      deadline(TEST_DEADLINE_MS, group.ready, "The end of the start"),
      how === "kill"
        ? /Worker \d \(pid \d+\) was killed by SIGKILL before it was listening/
        : /The workers were shut down before they all listened/,
    );
    await group.finished;
    ok(performance.now() - sent <= LOADING_BOUND_MS + EXIT_SLACK_MS, started.output());
    deepEqual(await runningWorkers(started.booted()), [], started.output());
  }
});

// ---------------------------------------------------------------------------
// --timeout: the heartbeat
// ---------------------------------------------------------------------------

Deno.test("--timeout: a worker whose event loop blocks is killed (SIGKILL) and replaced", async () => {
  await using apps = await writeApps();
  await using supervisor = await twoWorkers(apps.path("pid_app.js"), ["--timeout", "2"]);
  const stderr = supervisor.child.stderr;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: supervisor.port });
  let blocked = 0;
  try {
    await conn.write(encoder.encode("GET /block HTTP/1.1\r\nHost: x\r\n\r\n"));
    const blocking = await stderr.waitFor(/^blocking \d+$/);
    notEqual(blocking, null, supervisor.child.output());
    blocked = Number(blocking!.split(" ")[1]);
    const since = performance.now();
    const killed = await stderr.waitFor(
      new RegExp(`^Worker \\d \\(pid ${blocked}\\) sent no heartbeat for 2 s: SIGKILL$`),
    );
    notEqual(killed, null, supervisor.child.output());
    const silentMs = performance.now() - since;
    // Not early: its last beat came at most a quarter of the timeout
    // before it blocked (less the lag of the lines through two pipes).
    ok(silentMs >= 1000 && silentMs <= 2000 * 3, `killed after ${Math.round(silentMs)} ms`);
    notEqual(
      await stderr.waitFor(
        new RegExp(`^Worker \\d \\(pid ${blocked}\\) was killed by SIGKILL; restarting it in`),
      ),
      null,
      supervisor.child.output(),
    );
    ok(await stderr.waitForCount(LISTENING, 3), supervisor.child.output());
  } finally {
    conn.close();
  }
  const [one, two, replacement] = supervisor.listeningPids() as [number, number, number];
  const survivor = one === blocked ? two : one;
  deepEqual(
    await pidsAnswering(supervisor.port, [survivor, replacement]),
    new Set([survivor, replacement]),
    "the blocked worker's pid never answers",
  );
  ok(!stderr.lines.some((l) => l.includes("\x06")), "no heartbeat byte reaches the log");
  await exitAfter(supervisor, "SIGTERM", { code: 0, signal: null }, GROUP_BOUND_MS);
  await assertAllGone(supervisor);
});

Deno.test("timeoutMs: a worker blocked at import fails the start; one awaiting at import beats on", async () => {
  await using apps = await writeApps();
  for (const module of ["busy_import.js", "hang_import.js"] as const) {
    await using started = loggedGroup(apps.path(module), { workers: 1, timeoutMs: 1000 });
    const { group, logs } = started;
    if (module === "busy_import.js") {
      // Failed in about a second, not after the startup timeout.
      await rejects(
        deadline(STARTUP_TIMEOUT_MS / 4, group.ready, "The failed start"),
        /Worker 1 \(pid \d+\) was killed by SIGKILL before it was listening/,
      );
      ok(logs.lines.count(/sent no heartbeat for 1 s: SIGKILL$/) === 1, started.output());
    } else {
      // Its timer runs during the top-level await: three times the
      // timeout of "still loading" lines, and never a missed heartbeat.
      await waitForLines(logs, /^still loading /, 12);
      equal(logs.lines.count(/no heartbeat/), 0, started.output());
      group.shutdown();
      await rejects(group.ready, /shut down before they all listened/);
    }
    await group.finished;
    deepEqual(await runningWorkers(started.booted()), [], started.output());
  }
});

// ---------------------------------------------------------------------------
// --max-requests
// ---------------------------------------------------------------------------

const REPLACED = /^Worker \d \(pid (\d+)\) replaced by pid (\d+): stopping it$/;

Deno.test("--max-requests: a worker that served its maximum is replaced, its successor first", async () => {
  await using apps = await writeApps();
  await using supervisor = await twoWorkers(apps.path("pid_app.js"), ["--max-requests", "3"]);
  const first = supervisor.listeningPids();
  const stderr = supervisor.child.stderr;
  // Requests on new connections until two replacements are over. A
  // connection that the kernel queued for a listener as it closed is reset
  // before any answer (the reload gap, see WorkerGroup.reload()); a client
  // may retry such a GET (RFC 9112 section 9.3.1), so this one does, at
  // most once per replacement. Every answer is a 200.
  let requests = 0;
  let retries = 0;
  for (; requests < 2000 && stderr.count(REPLACED) < 2; requests++) {
    let text = "";
    try {
      text = await exchange(
        supervisor.port,
        "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
      );
    } catch {
      // Reset before any answer: text stays empty.
    }
    if (text === "") {
      ok(++retries <= stderr.count(/its maximum/), supervisor.child.output());
      continue;
    }
    equal(parseResponses(text)[0]?.status, 200, text);
  }
  ok(stderr.count(REPLACED) >= 2, `${requests} requests\n${supervisor.child.output()}`);
  const now = supervisor.listeningPids().slice(-2);
  ok(!first.every((pid) => now.includes(pid)), `${first} -> ${now}`);
  match(
    stderr.lines.find((l) => /its maximum/.test(l)) ?? "",
    /^Worker \d \(pid \d+\) has served 3 requests, its maximum: replacing it$/,
  );
  // Each successor listened before its predecessor was told to stop.
  for (const line of stderr.lines.filter((l) => REPLACED.test(l))) {
    const [, old, successor] = REPLACED.exec(line)!;
    ok(supervisor.listeningPids().includes(Number(old)), line);
    const listened = stderr.lines.findIndex((l) => l.includes(`(pid ${successor}) listening`));
    ok(listened >= 0 && listened < stderr.lines.indexOf(line), supervisor.child.output());
  }
  await exitAfter(supervisor, "SIGTERM", { code: 0, signal: null }, GROUP_BOUND_MS);
  await assertAllGone(supervisor);
});

Deno.test({
  name:
    "--max-requests under wrk load: many replacements, one at a time, and not one failed request or socket error",
  ignore: WRK === null,
  async fn() {
    await using apps = await writeApps();
    await using supervisor = await twoWorkers(apps.path("pid_app.js"), [
      "--max-requests",
      "2000",
      "--max-requests-jitter",
      "200",
    ]);
    const connections = 20;
    const result = await run(WRK!, [
      "-t1",
      `-c${connections}`,
      "-d3s",
      "--timeout",
      "5s",
      `http://127.0.0.1:${supervisor.port}/`,
    ]);
    const report = new TextDecoder().decode(result.stdout);
    equal(result.code, 0, `${report}\n${result.stderr}`);
    const stderr = supervisor.child.stderr;
    const replacements = stderr.count(REPLACED);
    const requests = Number(/(\d+) requests in /.exec(report)?.[1] ?? 0);
    console.log(`wrk: ${requests} requests, ${replacements} replacements\n${report}`);
    ok(replacements >= 3, `${replacements} replacements\n${report}`);
    equal(/Non-2xx/.test(report), false, `failed requests:\n${report}`);
    const errors = /Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)/.exec(
      report,
    );
    // A replaced worker closes its listener before any response says
    // Connection: close, and gives idle keep-alive clients a second to
    // send their next request: no client sees a reset (workers.ts).
    equal(errors, null, `socket errors over ${replacements} replacements:\n${report}`);
    // One replacement at a time: each old worker is told to stop only
    // after the one before it has exited.
    const lines = stderr.lines;
    let draining: string | null = null;
    for (const line of lines) {
      const stopping = REPLACED.exec(line);
      if (stopping !== null) {
        equal(draining, null, `${line} while pid ${draining} still drains`);
        draining = stopping[1]!;
      } else if (draining !== null && line.includes(`(pid ${draining}) has drained and exited`)) {
        draining = null;
      }
    }
    await exitAfter(supervisor, "SIGTERM", { code: 0, signal: null }, GROUP_BOUND_MS);
    await assertAllGone(supervisor);
  },
});

// ---------------------------------------------------------------------------
// Signals while the application loads
// ---------------------------------------------------------------------------

for (const signal of ["SIGTERM", "SIGINT"] as const) {
  Deno.test(`${signal} while the application loads ends one process at once (exit 0)`, async () => {
    await using apps = await writeApps();
    await using supervisor = new Supervisor(["--port", "0", apps.path("hang_import.js")]);
    ok(await supervisor.child.stderr.waitFor(/^loading \d+$/), supervisor.child.output());
    await exitAfter(supervisor, signal, { code: 0, signal: null }, 0);
    notEqual(
      await supervisor.child.stderr.waitFor(/^Shutting down: the application was still loading$/),
      null,
      supervisor.child.output(),
    );
  });
}

// ---------------------------------------------------------------------------
// The flags
// ---------------------------------------------------------------------------

Deno.test("--timeout is in seconds, --max-requests and its jitter are counts; all refuse non-integers", async () => {
  const invocation = await parseCommandLine([
    "--timeout",
    "2",
    "--max-requests",
    "1000",
    "--max-requests-jitter",
    "50",
  ]);
  const options = invocation.options as Record<string, unknown>;
  deepEqual(
    [options.timeoutMs, options.maxRequests, options.maxRequestsJitter],
    [2000, 1000, 50],
  );
  const cases: [string[], RegExp][] = [
    [["--timeout", "1.5"], /^server\.ts: --timeout must be an integer of at least 0, got "1\.5"$/m],
    [
      ["--max-requests=-1"],
      /^server\.ts: --max-requests must be an integer of at least 0, got "-1"$/m,
    ],
    [["--max-requests-jitter", "x"], /^server\.ts: --max-requests-jitter must be .*, got "x"$/m],
  ];
  for (const [args, error] of cases) {
    const result = await run(Deno.execPath(), ["run", "--allow-read", SERVER_TS, ...args], {
      cwd: PROJECT_DIR,
    });
    equal(result.code, 2, result.stderr);
    match(result.stderr, error);
  }
  for (
    const [options, kind] of [
      [{ timeoutMs: -1 }, RangeError],
      [{ maxRequests: 1.5 }, RangeError],
      [{ maxRequestsJitter: "10" }, TypeError],
    ] as const
  ) {
    let thrown: unknown = null;
    try {
      // Refused before any worker starts (were it not, it is shut down).
      await startWorkers(null, { port: 0, ...options } as Record<string, unknown>).shutdown();
    } catch (error) {
      thrown = error;
    }
    ok(thrown instanceof kind, `${JSON.stringify(options)}: ${thrown}`);
  }
});
