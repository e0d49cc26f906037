/**
 * Fuzzes the request parser from the command line (`deno task fuzz`):
 *
 * ```sh
 * deno run bench/fuzz.ts --cases 1000000 --seed 7
 * ```
 *
 * Prints the speed, the outcomes (accepted cases, each error status) and
 * every broken invariant with its input as hex; exits with 1 if any case
 * broke one. The cases and invariants are those of `tests/_fuzz.ts`; the
 * test suite runs 100,000 of them with a fixed seed.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatFailure, fuzzParser } from "../tests/_fuzz.ts";

const USAGE = `Usage: deno run bench/fuzz.ts [--cases N] [--seed N] [--max-failures N]

  --cases N         how many cases (default 1000000)
  --seed N          PRNG seed (default 1); the same seed gives the same cases
  --max-failures N  failures printed in full (default 20)`;

function integer(flag: string, value: string | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!/^\d+$/.test(value)) throw new TypeError(`--${flag} expects a non-negative integer`);
  return Number(value);
}

function main(args: string[]): number {
  let cases: number, seed: number, maxFailures: number;
  try {
    const { values } = parseArgs({
      args,
      options: {
        cases: { type: "string" },
        seed: { type: "string" },
        "max-failures": { type: "string" },
        help: { type: "boolean", short: "h" },
      },
    });
    if (values.help) {
      console.log(USAGE);
      return 0;
    }
    cases = integer("cases", values.cases, 1_000_000);
    seed = integer("seed", values.seed, 1);
    maxFailures = integer("max-failures", values["max-failures"], 20);
  } catch (error) {
    console.error(`${(error as Error).message}\n\n${USAGE}`);
    return 2;
  }

  console.log(`Fuzzing the request parser: ${cases} cases, seed ${seed}`);
  const report = fuzzParser({
    seed,
    cases,
    maxFailures,
    onProgress: (done) => console.log(`  ${done} cases...`),
  });
  const seconds = report.elapsedMs / 1000;
  const percent = (n: number) => `${(100 * n / cases).toFixed(2)}%`;
  console.log(
    `${cases} cases in ${seconds.toFixed(1)} s: ${Math.round(cases / seconds)} cases/s`,
  );
  console.log("Outcomes (per case):");
  const row = (label: string, count: number) =>
    console.log(`  ${label.padEnd(32)}${String(count).padStart(9)}  ${percent(count)}`);
  row("accepted (clean end of stream)", report.accepted);
  for (const [status, count] of Object.entries(report.statuses)) row(`answered ${status}`, count);
  row("failed an invariant", report.failureCount);
  console.log(`Request heads accepted and round-tripped: ${report.heads}`);
  console.log(`Cases whose bytes ended inside a request: ${report.incomplete}`);
  for (const failure of report.failures) console.log(formatFailure(failure, seed));
  if (report.failureCount > 0) {
    console.log(`FAILED: ${report.failureCount} cases broke an invariant`);
    return 1;
  }
  console.log("ok: no invariant broken");
  return 0;
}

if (import.meta.main) {
  Deno.exitCode = main(Deno.args);
}
