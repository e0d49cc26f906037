/** The benchmark scripts' flags (bench/_args.ts): defaults, counts, choices, paths, errors. */

import { equal, throws } from "node:assert/strict";
import { type Flag, parseFlags, usage } from "../bench/_args.ts";

const FLAGS: Record<string, Flag> = {
  reps: { help: "repetitions", default: "3" },
  server: { help: "which", default: "all", takes: ["a", "b", "all"] },
  baseline: { help: "a checkout", takes: "path" },
};

function parse(...args: string[]) {
  const flags = parseFlags(FLAGS, args);
  if (flags === "help") throw new Error("unexpected --help");
  return flags;
}

Deno.test("parseFlags() gives defaults, then the values given", () => {
  const defaults = parse();
  equal(defaults.count("reps"), 3);
  equal(defaults.text("server"), "all");
  equal(defaults.text("baseline"), undefined);
  const given = parse("--reps", "12", "--server", "b", "--baseline", "/tmp/old checkout");
  equal(given.count("reps"), 12);
  equal(given.text("server"), "b");
  equal(given.text("baseline"), "/tmp/old checkout");
  equal(parseFlags(FLAGS, ["--help"]), "help");
});

Deno.test("parseFlags() refuses unknown flags, counts that are not positive integers, and other choices", () => {
  throws(() => parse("--bogus", "1"), /bogus/);
  for (const bad of ["0", "-1", "1.5", "x", "", "1e3"]) {
    throws(() => parse(`--reps=${bad}`), /--reps takes a positive integer/, bad);
  }
  throws(() => parse("--server", "c"), /--server takes one of a, b, all/);
});

Deno.test("usage() lists every flag with what it takes and its default", () => {
  equal(
    usage("bench/x.ts", FLAGS),
    [
      "Usage: deno run -A bench/x.ts [flags]",
      "",
      "  --reps N          repetitions (default 3)",
      "  --server a|b|all  which (default all)",
      "  --baseline PATH   a checkout",
    ].join("\n"),
  );
});
