/**
 * The package's layers, read from its source: what may import what. The
 * rules (see `docs/architecture.md`):
 *
 * - the static imports form no cycle, type-only imports included;
 * - `types.ts` (the contract) imports nothing and holds only types;
 * - no module of the package imports `mod.ts` (the public facade), except
 *   the sample application, which is written as a user writes an app;
 * - `_h1/` (sans-IO HTTP/1.1) imports only `_h1/`; `_gateway/` only
 *   `types.ts`, `_h1/` and `_gateway/`; neither touches `Deno.*`;
 * - no library module has a top-level await or a main block: only the
 *   programs (`server.ts`, `app.ts`, `worker_main.ts`) have one, which
 *   starts the command line without awaiting at the top level;
 * - dynamic `import()` appears only where a program loads the command line
 *   or the command line loads the application it serves.
 */

import { deepEqual, equal, ok } from "node:assert/strict";

const ROOT = new URL("../", import.meta.url);

/** The programs: modules with a main block. */
const PROGRAMS = new Set(["server.ts", "app.ts", "worker_main.ts"]);

/** Where a dynamic import may appear, and of what. */
const DYNAMIC_IMPORTS: Record<string, readonly string[]> = {
  "server.ts": ['"./cli.ts"'],
  "app.ts": ['"./cli.ts"'],
  "cli.ts": ['"./app.ts"', "spec.url"],
};

interface Module {
  /** Path from the package root: `_h1/parser.ts`. */
  readonly path: string;
  readonly source: string;
  /** Statically imported (or re-exported) modules, as paths from the root. */
  readonly imports: readonly string[];
}

/** The source with comments blanked out, so that examples in JSDoc do not count as code. */
function withoutComments(source: string): string {
  return source.replace(
    /\/\*[\s\S]*?\*\/|\/\/[^\n]*/g,
    (comment) => comment.replace(/[^\n]/g, " "),
  );
}

async function readModules(): Promise<Map<string, Module>> {
  const modules = new Map<string, Module>();
  async function walk(dir: URL, prefix: string): Promise<void> {
    for await (const entry of Deno.readDir(dir)) {
      if (entry.name.startsWith(".") || ["tests", "bench", "docs"].includes(entry.name)) continue;
      if (entry.isDirectory) {
        await walk(new URL(`${entry.name}/`, dir), `${prefix}${entry.name}/`);
      } else if (entry.name.endsWith(".ts")) {
        const path = `${prefix}${entry.name}`;
        const source = withoutComments(await Deno.readTextFile(new URL(path, ROOT)));
        const imports = [...source.matchAll(/^(?:import|export)\b[^;]*?\bfrom\s+"(\.[^"]+)"/gm)]
          .map((m) => new URL(m[1]!, new URL(path, ROOT)).href.slice(ROOT.href.length));
        modules.set(path, { path, source, imports });
      }
    }
  }
  await walk(ROOT, "");
  return modules;
}

const modules = await readModules();

Deno.test("the package's static imports form no cycle", () => {
  const done = new Set<string>();
  const onPath: string[] = [];
  const cycles: string[] = [];
  const visit = (path: string) => {
    if (onPath.includes(path)) {
      cycles.push([...onPath.slice(onPath.indexOf(path)), path].join(" -> "));
      return;
    }
    if (done.has(path)) return;
    onPath.push(path);
    for (const next of modules.get(path)?.imports ?? []) visit(next);
    onPath.pop();
    done.add(path);
  };
  for (const path of modules.keys()) visit(path);
  deepEqual(cycles, []);
  ok(modules.size > 20, `only ${modules.size} modules found`);
});

Deno.test("types.ts imports nothing and declares only types", () => {
  const types = modules.get("types.ts")!;
  deepEqual(types.imports, []);
  const exports = [...types.source.matchAll(/^export\s+(\w+)/gm)].map((m) => m[1]);
  ok(exports.length >= 10, "types.ts exports the contract");
  deepEqual(exports.filter((kind) => kind !== "type" && kind !== "interface"), []);
});

Deno.test("no module of the package imports mod.ts but the sample application", () => {
  const importers = [...modules.values()].filter((m) => m.imports.includes("mod.ts"));
  deepEqual(importers.map((m) => m.path), ["app.ts"]);
  const appImporters = [...modules.values()].filter((m) => m.imports.includes("app.ts"));
  deepEqual(appImporters.map((m) => m.path), []);
});

Deno.test("_h1/ and _gateway/ import only the layers below them and never touch Deno's I/O", () => {
  for (const module of modules.values()) {
    const layer = module.path.split("/")[0];
    if (layer !== "_h1" && layer !== "_gateway") continue;
    const allowed = layer === "_h1"
      ? (path: string) => path.startsWith("_h1/")
      : (path: string) =>
        path === "types.ts" || path.startsWith("_h1/") || path.startsWith("_gateway/");
    deepEqual(module.imports.filter((path) => !allowed(path)), [], `${module.path} imports`);
    ok(!/\bDeno\./.test(module.source), `${module.path} uses Deno.*`);
  }
});

Deno.test("only the programs have a main block, and no module awaits at its top level", () => {
  for (const module of modules.values()) {
    equal(
      /\bimport\.meta\.main\b/.test(module.source),
      PROGRAMS.has(module.path),
      `${module.path}: a main block ${
        PROGRAMS.has(module.path) ? "expected" : "in a library module"
      }`,
    );
    // deno fmt puts top-level statements at column 0, and nothing else there.
    const topLevelAwait =
      /^(?:for\s+await\b|await\b|(?:export\s+)?(?:const|let|var)\s[^\n]*?=\s*await\b|[\w.$]+\s*=\s*await\b)/m;
    ok(!topLevelAwait.test(module.source), `${module.path} awaits at its top level`);
  }
});

Deno.test("dynamic imports appear only where a program loads the CLI or the CLI loads the application", () => {
  for (const module of modules.values()) {
    const found = [...module.source.matchAll(/\bimport\(\s*([^)]*?)\s*\)/g)].map((m) => m[1]);
    deepEqual(found, [...(DYNAMIC_IMPORTS[module.path] ?? [])], `${module.path}: dynamic imports`);
  }
});
