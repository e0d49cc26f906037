/**
 * The options table (`options.ts`), what `resolveOptions()` accepts and
 * refuses, and the agreement between the table, the JSDoc defaults of
 * `ServerOptions` and the table in `docs/options.md`.
 */

import { deepEqual, equal, notEqual, ok, throws } from "node:assert/strict";
import {
  checkPathPrefix,
  isOptionError,
  LIMIT_OPTIONS,
  OPTIONS,
  type OptionSpec,
  pathPrefixProblem,
  resolveOptions,
  type ServerOptions,
} from "../options.ts";

/** The cells a row of the options table in docs/options.md must have. */
function docRow(o: OptionSpec): string[] {
  const flag = o.flag === null
    ? ""
    : o.flag === "help"
    ? "`-h`, `--help`"
    : o.type === "boolean"
    ? `\`--${o.flag}\``
    : `\`--${o.flag} ${o.arg}\`${o.negatable ? `, \`--no-${o.flag}\`` : ""}`;
  const fallback = o.default === undefined
    ? ""
    : `\`${o.default}\`${o.cliDefault === undefined ? "" : ` (CLI: \`${o.cliDefault}\`)`}`;
  return [o.name === null ? "" : `\`${o.name}\``, flag, fallback, o.help];
}

Deno.test("docs/options.md lists every option of the table, as the table says", async () => {
  const doc = await Deno.readTextFile(new URL("../docs/options.md", import.meta.url));
  const section = doc.slice(doc.indexOf("## Every option"));
  const rows = section.split("\n")
    .filter((line) => line.startsWith("|"))
    .slice(2) // the header and the separator
    // Markdown escapes the stars that would otherwise mean emphasis.
    .map((line) => line.slice(1, -1).split("|").map((cell) => cell.trim().replaceAll("\\*", "*")));
  const expected = OPTIONS.map(docRow);
  const table = expected.map((r) => `| ${r.join(" | ")} |`).join("\n");
  deepEqual(rows.slice(0, expected.length), expected, `docs/options.md should have:\n${table}`);
  ok(rows.length === expected.length || rows[expected.length]!.length !== 4, "extra rows");
});

Deno.test("ServerOptions' JSDoc @default agrees with the options table", async () => {
  const source = await Deno.readTextFile(new URL("../options.ts", import.meta.url));
  const body = source.slice(source.indexOf("export interface ServerOptions"));
  const fields = body.slice(0, body.indexOf("\n}\n"));
  const documented = new Map<string, string>();
  for (const m of fields.matchAll(/\/\*\*((?:(?!\*\/)[\s\S])*)\*\/\s*(\w+)\?:/g)) {
    const fallback = /@default \{(.*)\}/.exec(m[1]!);
    if (fallback !== null) documented.set(m[2]!, fallback[1]!);
  }
  ok(documented.size >= 15, `found ${documented.size} @default tags`);
  for (const option of OPTIONS) {
    if (option.name === null || !documented.has(option.name)) continue;
    equal(documented.get(option.name), option.default, `@default of ${option.name}`);
    documented.delete(option.name);
  }
  deepEqual([...documented.keys()], [], "@default tags without a row in the table");
});

Deno.test("resolveOptions() applies every default of the table", () => {
  const resolved = resolveOptions({});
  for (const spec of LIMIT_OPTIONS) equal(resolved[spec.name], spec.value, spec.name);
  equal(resolved.hostname, "127.0.0.1");
  equal(resolved.port, 8000);
  equal(resolved.path, undefined);
  equal(resolved.tls, undefined);
  equal(resolved.serverHeader, "deno-wsgi");
  equal(resolved.scriptName, "");
  equal(resolved.multiprocess, false);
  equal(resolved.reusePort, false);
  equal(resolved.accessLog, null);
  deepEqual(resolveOptions({ accessLog: true }).accessLog, { format: "common", path: "-" });
  deepEqual(resolveOptions({ accessLog: { format: "json" } }).accessLog, {
    format: "json",
    path: "-",
  });
  deepEqual(resolved.parserLimits, {
    maxRequestLineBytes: 8192,
    maxHeaderBytes: 16384,
    maxHeaders: 100,
    maxBodyBytes: 1024 ** 3,
  });
});

Deno.test("resolveOptions() resolves a frozen options object once, and any other each time", () => {
  const frozen = Object.freeze({ port: 0 });
  equal(resolveOptions(frozen), resolveOptions(frozen));
  const plain: ServerOptions = { port: 0 };
  const first = resolveOptions(plain);
  plain.port = 1;
  notEqual(resolveOptions(plain), first);
  equal(resolveOptions(plain).port, 1);
});

/** Options that resolveOptions() refuses, the error class, and the message. */
const REFUSED: [options: Record<string, unknown>, kind: ErrorConstructor, message: string][] = [
  [
    { port: 99999 },
    RangeError,
    'Invalid option "port": expected an integer from 0 to 65535, got 99999',
  ],
  [{ port: -1 }, RangeError, 'Invalid option "port": expected an integer from 0 to 65535, got -1'],
  [
    { port: 1.5 },
    RangeError,
    'Invalid option "port": expected an integer from 0 to 65535, got 1.5',
  ],
  [
    { port: "80" },
    TypeError,
    'Invalid option "port": expected an integer from 0 to 65535, got "80"',
  ],
  [{ port: NaN }, TypeError, 'Invalid option "port": expected an integer from 0 to 65535, got NaN'],
  [
    { maxBodyBytes: 0 },
    RangeError,
    'Invalid option "maxBodyBytes": expected a positive integer, got 0',
  ],
  [
    { headerTimeoutMs: -5 },
    RangeError,
    'Invalid option "headerTimeoutMs": expected a positive integer, got -5',
  ],
  [
    { maxHeaders: 2.5 },
    RangeError,
    'Invalid option "maxHeaders": expected a positive integer, got 2.5',
  ],
  [
    { maxConnections: "10" },
    TypeError,
    'Invalid option "maxConnections": expected a positive integer, got "10"',
  ],
  [{ hostname: 127 }, TypeError, 'Invalid option "hostname": expected a string, got 127'],
  [{ path: 1 }, TypeError, 'Invalid option "path": expected a string, got 1'],
  [
    { path: "/tmp/s", reusePort: true },
    TypeError,
    'Invalid options "reusePort" and "path": a Unix socket cannot be shared',
  ],
  [
    { reusePort: "yes" },
    TypeError,
    'Invalid option "reusePort": expected true or false, got "yes"',
  ],
  [{ multiprocess: 1 }, TypeError, 'Invalid option "multiprocess": expected true or false, got 1'],
  [{ cert: "PEM" }, TypeError, 'Invalid options "cert" and "key": give both or neither'],
  [{ key: "PEM" }, TypeError, 'Invalid options "cert" and "key": give both or neither'],
  [
    { serverHeader: "bad\nvalue" },
    RangeError,
    'Invalid option "serverHeader": expected printable ASCII, got "bad\\nvalue"',
  ],
  [
    { serverHeader: 5 },
    TypeError,
    'Invalid option "serverHeader": expected a string or null, got 5',
  ],
  [
    { scriptName: "app" },
    RangeError,
    'Invalid option "scriptName": expected "" or a path like "/app" (it must start with /), got "app"',
  ],
  [
    { scriptName: "/app/" },
    RangeError,
    'Invalid option "scriptName": expected "" or a path like "/app" (it must not end with /), got "/app/"',
  ],
  [
    { scriptName: 7 },
    TypeError,
    'Invalid option "scriptName": expected "" or a path like "/app", got 7',
  ],
  [
    { accessLog: "yes" },
    TypeError,
    'Invalid option "accessLog": expected true, false, a function or { format, path }, got "yes"',
  ],
  [
    { accessLog: { format: "xml" } },
    RangeError,
    'Invalid option "accessLog.format": expected one of "common", "combined", "json", got "xml"',
  ],
  [
    { accessLog: { path: "" } },
    TypeError,
    'Invalid option "accessLog.path": expected a file path or "-", got ""',
  ],
  [{ signal: {} }, TypeError, 'Invalid option "signal": expected an AbortSignal, got an object'],
  [{ onListen: "print" }, TypeError, 'Invalid option "onListen": expected a function, got "print"'],
  [{ onError: 1 }, TypeError, 'Invalid option "onError": expected a function, got 1'],
];

Deno.test("resolveOptions() refuses each invalid option with the error class of the rule, naming it", () => {
  for (const [options, kind, message] of REFUSED) {
    throws(
      () => resolveOptions(options as ServerOptions),
      (error: unknown) => {
        ok(error instanceof kind, `${JSON.stringify(options)}: ${error}`);
        equal((error as Error).message, message);
        ok(isOptionError(error));
        return true;
      },
    );
  }
});

Deno.test("resolveOptions() accepts Infinity for a limit and 0 for the port", () => {
  const resolved = resolveOptions({
    maxBodyBytes: Infinity,
    keepAliveTimeoutMs: Infinity,
    port: 0,
  });
  equal(resolved.maxBodyBytes, Infinity);
  equal(resolved.parserLimits.maxBodyBytes, Infinity);
  equal(resolved.port, 0);
});

Deno.test("pathPrefixProblem() is the one rule for path prefixes", () => {
  for (const good of ["/a", "/app", "/a/b", "/caf\u00e9", "/a.b", "/a..b"]) {
    equal(pathPrefixProblem(good), null, good);
  }
  for (
    const bad of [
      "",
      "/",
      "a",
      "/a/",
      "//a",
      "/a//b",
      "/./a",
      "/a/..",
      "/a?b",
      "/a#b",
      "/a\\b",
      "/a\0",
      "/a\x7f",
    ]
  ) {
    notEqual(pathPrefixProblem(bad), null, JSON.stringify(bad));
  }
  equal(checkPathPrefix("prefix", "/", ["/"]), "/");
  throws(() => checkPathPrefix("prefix", "/"), RangeError);
  throws(() => checkPathPrefix("prefix", null), TypeError);
});
