/**
 * Load benchmark: in ONE run, starts the servers that give the same answer
 * to `GET /` (the sample app's homepage) and measures them with wrk:
 *
 * - `deno-wsgi`: `server.ts` serving `app.ts` as users start it, the access
 *   log on (Common Log Format, appended to a file);
 * - `deno-wsgi json log`: the same with `--access-log-format json`;
 * - `deno-wsgi no log`: the same with `--no-access-log`;
 * - `Deno.serve`: Deno's built-in server (hyper, in Rust);
 * - `raw`: a `Deno.listen` server writing a canned response per request head.
 *
 * Servers run pinned to core 0 and wrk to core 1 (taskset), so they do not
 * compete; repetitions are interleaved so drift affects all three alike.
 * Prints a Markdown table of median req/s and p50/p99 latency with ratios.
 *
 * Usage: deno run -A bench/load.ts [--duration 5] [--reps 3] [--baseline PATH]
 *
 * `--baseline PATH` adds the `server.ts` of another checkout (a git worktree
 * at an older commit) as `baseline`, to measure a change before and after;
 * it runs with `--no-access-log`, which every version of the CLI takes, so
 * compare it with the `no log` row. The log files are emptied after every
 * wrk run and removed at the end.
 * Needs wrk (Debian: apt-get install wrk) and taskset (util-linux).
 */

import { BASELINE_FLAG, readFlags, REPS_FLAG } from "./_args.ts";
import {
  CAN_PIN,
  type ChildServer,
  hasCommand,
  inBaseline,
  onCore,
  startChildServer,
  wsgiServerArgs,
} from "./_servers.ts";

const flags = readFlags("bench/load.ts", {
  duration: { help: "seconds of each wrk run", default: "5" },
  reps: REPS_FLAG,
  baseline: BASELINE_FLAG,
});
const duration = flags.count("duration");
const reps = flags.count("reps");
const baseline = flags.text("baseline");
const here = new URL(".", import.meta.url);

interface Target {
  name: string;
  args: string[];
}

const logDir = await Deno.makeTempDir({ prefix: "wsgi_bench_log_" });
const logFiles: string[] = [];

/** `server.ts` with the access log appended to a new file in `logDir`, in `format`. */
function loggedServer(format: string): string[] {
  const path = `${logDir}/${format}.log`;
  logFiles.push(path);
  return wsgiServerArgs("--access-log", path, "--access-log-format", format)
    .filter((arg) => arg !== "--no-access-log");
}

const targets: Target[] = [
  { name: "deno-wsgi", args: ["run", "--allow-write", ...loggedServer("common").slice(1)] },
  {
    name: "deno-wsgi json log",
    args: ["run", "--allow-write", ...loggedServer("json").slice(1)],
  },
  { name: "deno-wsgi no log", args: wsgiServerArgs() },
  {
    name: "Deno.serve",
    args: ["run", "--allow-net", new URL("deno_serve.ts", here).pathname, "0"],
  },
  { name: "raw", args: ["run", "--allow-net", new URL("raw_server.ts", here).pathname, "0"] },
];
if (baseline !== undefined) {
  targets.splice(3, 0, {
    name: "baseline no log",
    args: inBaseline(wsgiServerArgs(), baseline),
  });
}

interface Scenario {
  name: string;
  connections: number;
  pipeline: boolean;
}

if (!await hasCommand("wrk")) {
  console.error("wrk is missing: apt-get install wrk");
  Deno.exit(2);
}

interface Running extends ChildServer {
  target: Target;
}

const scenarios: Scenario[] = [
  { name: "1 connection", connections: 1, pipeline: false },
  { name: "50 connections", connections: 50, pipeline: false },
  { name: "50 conns, 16-deep pipeline", connections: 50, pipeline: true },
];

interface Result {
  rps: number;
  p50: number;
  p99: number;
}

function parseLatency(text: string, label: string): number {
  const match = new RegExp(`^\\s*${label}\\s+([\\d.]+)(us|ms|s)`, "m").exec(text);
  if (!match) return NaN;
  const value = Number(match[1]);
  return match[2] === "us" ? value / 1000 : match[2] === "s" ? value * 1000 : value;
}

async function wrk(port: number, scenario: Scenario): Promise<Result> {
  const wrkArgs = [
    "-t1",
    `-c${scenario.connections}`,
    `-d${duration}s`,
    "--latency",
    ...(scenario.pipeline ? ["-s", new URL("pipeline.lua", here).pathname] : []),
    `http://127.0.0.1:${port}/`,
  ];
  const [cmd, args] = onCore(1, "wrk", wrkArgs);
  const { stdout, success } = await new Deno.Command(cmd, { args, stdout: "piped" }).output();
  const text = new TextDecoder().decode(stdout);
  if (!success) throw new Error(`wrk failed: ${text}`);
  if (/Non-2xx|Socket errors/.test(text)) console.error(`warning (${scenario.name}):\n${text}`);
  const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(text)?.[1]);
  return { rps, p50: parseLatency(text, "50%"), p99: parseLatency(text, "99%") };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

const running: Running[] = [];
try {
  for (const target of targets) {
    running.push({ target, ...await startChildServer(target.args) });
  }
  const results = new Map<string, Result[]>();
  for (let rep = 0; rep < reps; rep++) {
    for (const scenario of scenarios) {
      for (const server of running) {
        // Warm up once per server and scenario, on the first repetition.
        if (rep === 0) await wrk(server.port, { ...scenario });
        const key = `${scenario.name}|${server.target.name}`;
        const list = results.get(key) ?? [];
        list.push(await wrk(server.port, scenario));
        results.set(key, list);
        // Keep the disk from filling: a run logs tens of megabytes.
        for (const file of logFiles) await Deno.truncate(file);
      }
    }
  }
  console.log(
    `\n${reps} interleaved runs of ${duration} s each, medians; servers on core 0, wrk on core 1${
      CAN_PIN ? "" : " (taskset missing: NOT pinned)"
    }.\n`,
  );
  console.log("| scenario | server | req/s | p50 ms | p99 ms | vs Deno.serve | vs raw |");
  console.log("| --- | --- | ---: | ---: | ---: | ---: | ---: |");
  for (const scenario of scenarios) {
    const med = (name: string) => {
      const list = results.get(`${scenario.name}|${name}`)!;
      return {
        rps: median(list.map((r) => r.rps)),
        p50: median(list.map((r) => r.p50)),
        p99: median(list.map((r) => r.p99)),
      };
    };
    const serve = med("Deno.serve").rps;
    const raw = med("raw").rps;
    for (const target of targets) {
      const m = med(target.name);
      // wrk prints a 99th percentile of 0 when its pipelining script is used.
      const p99 = m.p99 >= m.p50 ? m.p99.toFixed(2) : "n/a";
      console.log(
        `| ${scenario.name} | ${target.name} | ${Math.round(m.rps)} | ${
          m.p50.toFixed(2)
        } | ${p99} | ${(m.rps / serve).toFixed(2)} | ${(m.rps / raw).toFixed(2)} |`,
      );
    }
  }
} finally {
  for (const server of running) await server.stop();
  await Deno.remove(logDir, { recursive: true });
}
