/**
 * What the benchmark scripts share: finding commands, pinning processes to
 * a core with taskset, starting a server in a child process and reading the
 * port from its "Listening on" line, and reading a process's RSS.
 */

/** Whether `name` is on the PATH. */
export async function hasCommand(name: string): Promise<boolean> {
  try {
    const { success } = await new Deno.Command("sh", {
      args: ["-c", `command -v ${name}`],
      stdout: "null",
    }).output();
    return success;
  } catch {
    return false;
  }
}

/** Whether processes can be pinned to cores (util-linux's taskset). */
export const CAN_PIN: boolean = await hasCommand("taskset");

/** `[command, args]` that run `command args` on `core` when taskset exists, else as they are. */
export function onCore(core: number, command: string, args: string[]): [string, string[]] {
  return CAN_PIN ? ["taskset", ["-c", String(core), command, ...args]] : [command, args];
}

/** The checkout's root, where `server.ts` is. */
export const ROOT: URL = new URL("..", import.meta.url);

/**
 * `deno run` arguments for this checkout's `server.ts` on a free port
 * without an access log, with `extra` server arguments (limits, an app
 * module) after them.
 */
export function wsgiServerArgs(...extra: string[]): string[] {
  return [
    "run",
    "--allow-net",
    "--allow-read",
    new URL("server.ts", ROOT).pathname,
    "--port",
    "0",
    "--no-access-log",
    ...extra,
  ];
}

/** A server running in a child process. */
export interface ChildServer {
  readonly child: Deno.ChildProcess;
  readonly port: number;
  /** Sends SIGTERM and waits for the child and its output to end. */
  stop(): Promise<void>;
}

/**
 * Runs `deno <denoArgs>` on `core`, waits for its `Listening on
 * http://127.0.0.1:PORT/` line, and keeps draining its standard output so
 * that it never blocks on a full pipe. (With taskset the child's pid is the
 * server's: taskset execs it.)
 */
export async function startChildServer(denoArgs: string[], core = 0): Promise<ChildServer> {
  const [command, args] = onCore(core, Deno.execPath(), denoArgs);
  const child = new Deno.Command(command, { args, stdout: "piped", stderr: "inherit" }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let seen = "";
  let port = 0;
  while (port === 0) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`deno ${denoArgs.join(" ")} exited before listening`);
    seen += value;
    port = Number(/Listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(seen)?.[1] ?? 0);
  }
  const drained = (async () => {
    while (!(await reader.read()).done);
  })();
  return {
    child,
    port,
    async stop() {
      try {
        child.kill("SIGTERM");
      } catch {
        // Already gone.
      }
      await child.status;
      await drained;
    },
  };
}

/** A process's resident set size, in KiB. */
export async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)![1]);
}

/**
 * The deno arguments of `args` with every path inside this checkout moved to
 * the same path inside `baseline`: another checkout of this repository (a
 * git worktree at an older commit, say). The scripts' `--baseline PATH`
 * option runs it as one more server in the same interleaved run, so that a
 * change is measured before and after alike.
 */
export function inBaseline(args: readonly string[], baseline: string): string[] {
  const from = ROOT.pathname;
  const to = baseline.endsWith("/") ? baseline : `${baseline}/`;
  return args.map((arg) => arg.startsWith(from) ? to + arg.slice(from.length) : arg);
}
