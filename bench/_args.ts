/**
 * The command line of the benchmark scripts: `--name value` flags, each
 * with its meaning and default, `--help` that lists them, and a clear
 * error (exit code 2) for an unknown flag or a bad value instead of a run
 * with `NaN` in it.
 */

import { parseArgs } from "node:util";

/** One `--name value` flag. */
export interface Flag {
  /** What it sets, for `--help`. */
  readonly help: string;
  /** Its value when not given; without one the flag is optional. */
  readonly default?: string;
  /**
   * What it takes: `"count"`, a positive integer (the default kind);
   * `"path"`, any string; or the list of the values it accepts.
   */
  readonly takes?: "count" | "path" | readonly string[];
}

/** `--reps`, as the scripts that interleave repetitions take it. */
export const REPS_FLAG: Flag = {
  help: "interleaved repetitions; the median is reported",
  default: "3",
};

/** `--baseline`, as the scripts that compare with another checkout take it. */
export const BASELINE_FLAG: Flag = {
  help: "another checkout (a git worktree) whose server joins the run",
  takes: "path",
};

/** The flags as read, by name. */
export interface Flags {
  /** A `"count"` flag's value. */
  count(name: string): number;
  /** A `"path"` or choice flag's value, `undefined` when it was not given and has no default. */
  text(name: string): string | undefined;
}

function placeholder(flag: Flag): string {
  const takes = flag.takes ?? "count";
  return takes === "count" ? "N" : takes === "path" ? "PATH" : takes.join("|");
}

/** The `--help` text of `script` (a path like `bench/load.ts`). */
export function usage(script: string, flags: Record<string, Flag>): string {
  const lefts = Object.entries(flags).map(([name, flag]) => `  --${name} ${placeholder(flag)}`);
  const width = Math.max(...lefts.map((left) => left.length)) + 2;
  const lines = Object.values(flags).map((flag, i) => {
    const fallback = flag.default === undefined ? "" : ` (default ${flag.default})`;
    return `${lefts[i]!.padEnd(width)}${flag.help}${fallback}`;
  });
  return [`Usage: deno run -A ${script} [flags]`, "", ...lines].join("\n");
}

/**
 * Reads `args` against `flags`: the value of each (or its default), checked
 * against what it takes. Returns `"help"` for `--help`; throws a
 * `TypeError` naming the problem for an unknown flag or a bad value.
 */
export function parseFlags(flags: Record<string, Flag>, args: string[]): Flags | "help" {
  const options: Record<string, { type: "string" | "boolean" }> = { help: { type: "boolean" } };
  for (const name of Object.keys(flags)) options[name] = { type: "string" };
  const { values } = parseArgs({ args, options });
  if (values.help) return "help";
  const read: Record<string, string | undefined> = {};
  for (const [name, flag] of Object.entries(flags)) {
    const value = (values[name] as string | undefined) ?? flag.default;
    const takes = flag.takes ?? "count";
    if (value !== undefined && takes === "count" && !/^[1-9]\d*$/.test(value)) {
      throw new TypeError(`--${name} takes a positive integer, got ${JSON.stringify(value)}`);
    }
    if (value !== undefined && Array.isArray(takes) && !takes.includes(value)) {
      throw new TypeError(
        `--${name} takes one of ${takes.join(", ")}, got ${JSON.stringify(value)}`,
      );
    }
    read[name] = value;
  }
  return {
    count: (name) => Number(read[name]),
    text: (name) => read[name],
  };
}

/**
 * {@linkcode parseFlags} for a script's own command line: `--help` prints
 * the usage and exits 0; a problem is printed with the usage, exit code 2.
 */
export function readFlags(script: string, flags: Record<string, Flag>): Flags {
  let parsed: Flags | "help";
  try {
    parsed = parseFlags(flags, Deno.args);
  } catch (error) {
    console.error(`${script}: ${error instanceof Error ? error.message : error}\n`);
    console.error(usage(script, flags));
    Deno.exit(2);
  }
  if (parsed === "help") {
    console.log(usage(script, flags));
    Deno.exit(0);
  }
  return parsed;
}
