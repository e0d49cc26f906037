/**
 * The command line as a user runs it: `deno run server.ts [OPTIONS]
 * [MODULE[:EXPORT]]` and `deno run app.ts`, as child processes, with
 * applications written the way the README says (importing `mod.ts`).
 *
 * Every child is bounded by a watchdog (`tests/_child.ts`), so a CLI that
 * hangs fails its test instead of hanging the suite.
 */

import { deepEqual, equal, match, ok } from "node:assert/strict";
import { OPTIONS } from "../options.ts";
import { Child, freePort, run, tempDir } from "./_child.ts";
import { parseCommandLine, splitArguments, VERSION } from "../cli.ts";
import { deadline, TEST_DEADLINE_MS } from "./_helpers.ts";

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
const APP_TS = new URL("../app.ts", import.meta.url).pathname;
const MOD_URL = new URL("../mod.ts", import.meta.url).href;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;
const decoder = new TextDecoder();

/**
 * A user's application: it imports values (not only types) from `mod.ts`,
 * which re-exports `serve` from `server.ts`, the very module that loads it.
 */
const USER_APP = `
import { mount, nativeToBytes, validator } from "${MOD_URL}";

const hello = (environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [nativeToBytes("user app: " + environ.SCRIPT_NAME + " " + environ.PATH_INFO + "\\n")];
};
export const app = validator(mount({ "/api": hello }, hello));
`;

/** Writes the user's application into a new temp dir, removed on disposal. */
async function writeUserApp(): Promise<{ module: string } & AsyncDisposable> {
  const temp = await tempDir("wsgi_cli_");
  const module = `${temp.path}/my_app.ts`;
  await Deno.writeTextFile(module, USER_APP);
  return { module, [Symbol.asyncDispose]: () => temp[Symbol.asyncDispose]() };
}

/** Starts `deno run <flags> <program> <args>` and waits for the line that says where it listens. */
async function startCli(flags: string[], program: string, args: string[]): Promise<{
  child: Child;
  port: number;
}> {
  const child = new Child(Deno.execPath(), ["run", ...flags, program, ...args], {
    cwd: PROJECT_DIR,
  });
  const line = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:\d+\/$/);
  if (line === null) {
    await child[Symbol.asyncDispose]();
    throw new Error(`The CLI exited without saying where it listens.\n${child.output()}`);
  }
  return { child, port: Number(/:(\d+)\/$/.exec(line)![1]) };
}

/** GETs `path` and returns the body, failing after the test deadline. */
async function get(port: number, path: string): Promise<string> {
  const response = await deadline(
    TEST_DEADLINE_MS,
    fetch(`http://127.0.0.1:${port}${path}`),
    `GET ${path}`,
  );
  equal(response.status, 200);
  return await response.text();
}

/** Sends SIGTERM and checks the graceful exit: code 0, no signal. */
async function stopGracefully(child: Child): Promise<void> {
  child.kill("SIGTERM");
  const status = await child.status();
  equal(status.signal, null, child.output());
  equal(status.code, 0, child.output());
}

Deno.test("the CLI serves an application that imports mod.ts, and exits 0 on SIGTERM", async () => {
  await using user = await writeUserApp();
  const cli = await startCli(["--allow-net", "--allow-read"], SERVER_TS, [
    "--port",
    "0",
    "--no-access-log",
    `${user.module}:app`,
  ]);
  await using child = cli.child;
  equal(await get(cli.port, "/api/users"), "user app: /api /users\n");
  equal(await get(cli.port, "/other"), "user app:  /other\n");
  await stopGracefully(child);
});

Deno.test("the CLI with --workers 2 serves an application that imports mod.ts", async () => {
  await using user = await writeUserApp();
  const cli = await startCli(["--allow-net", "--allow-read", "--allow-run"], SERVER_TS, [
    "--port",
    "0",
    "--no-access-log",
    "--workers",
    "2",
    user.module,
  ]);
  await using child = cli.child;
  equal(await get(cli.port, "/api/x"), "user app: /api /x\n");
  ok(await child.stderr.waitForCount(/^Worker \d \(pid \d+\) listening on /, 2), child.output());
  await stopGracefully(child);
});

Deno.test("app.ts run as a program serves the sample application with the CLI's flags", async () => {
  const cli = await startCli(["--allow-net"], APP_TS, ["--port", "0"]);
  await using child = cli.child;
  equal(await get(cli.port, "/hello"), "Hello, specific page!\n");
  // The access log is on, as with server.ts.
  ok(await child.stdout.waitFor(/"GET \/hello HTTP\/1\.1" 200 22$/), child.output());
  await stopGracefully(child);
});

Deno.test("the CLI prints a usage line for every flag of the options table for --help", async () => {
  const result = await run(Deno.execPath(), ["run", SERVER_TS, "--help"], { cwd: PROJECT_DIR });
  equal(result.code, 0, result.stderr);
  const usage = decoder.decode(result.stdout);
  match(usage, /^Usage: deno run --allow-net \[--allow-read\] server\.ts /);
  for (const option of OPTIONS) {
    if (option.flag === null) continue;
    const syntax = option.flag === "help"
      ? "-h, --help"
      : option.type === "boolean"
      ? `--${option.flag}`
      : `--${option.flag} ${option.arg}`;
    ok(usage.includes(`  ${syntax}`), `--help lacks ${syntax}:\n${usage}`);
    if (option.negatable) {
      ok(usage.includes(`  --no-${option.flag} `), `--help lacks --no-${option.flag}`);
    }
    ok(usage.includes(option.help), `--help lacks "${option.help}"`);
  }
});

/** A command line and what the CLI must say about it on standard error. */
interface UsageCase {
  readonly args: string[];
  readonly env?: Record<string, string>;
  readonly error: RegExp;
}

Deno.test("the CLI answers every usage error with one line naming the flag, then exit code 2", async () => {
  await using temp = await tempDir("wsgi_cli_");
  const pem = `${temp.path}/cert.pem`;
  await Deno.writeTextFile(pem, "not really a certificate\n");
  // The shapes a PEM check looks at, not working keys.
  const certPem = `${temp.path}/good_cert.pem`;
  const keyPem = `${temp.path}/good_key.pem`;
  await Deno.writeTextFile(
    certPem,
    "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
  );
  await Deno.writeTextFile(
    keyPem,
    "-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n",
  );
  const cases: UsageCase[] = [
    { args: ["--port", "abc"], error: /^--port must be an integer from 0 to 65535, got "abc"$/ },
    {
      args: ["--port", "99999"],
      error: /^--port must be an integer from 0 to 65535, got "99999"$/,
    },
    { args: ["--port=-1"], error: /^--port must be an integer from 0 to 65535, got "-1"$/ },
    { args: ["--port", "-1"], error: /^Option .--port. argument is ambiguous\. /m },
    {
      args: ["--workers", "two"],
      error: /^--workers must be an integer from 1 to 1024, got "two"$/,
    },
    { args: ["--workers", "0"], error: /^--workers must be an integer from 1 to 1024, got "0"$/ },
    {
      args: ["--header-timeout", "0"],
      error: /^--header-timeout must be a positive integer, got "0"$/,
    },
    {
      args: ["--max-body-bytes", "1e9"],
      error: /^--max-body-bytes must be a positive integer, got "1e9"$/,
    },
    {
      args: ["--script-name", "api"],
      error:
        /^--script-name must be "" or a path like "\/app" \(it must start with \/\), got "api"$/,
    },
    {
      args: ["--script-name", "/api/"],
      error: /^--script-name must be .* \(it must not end with \/\), got "\/api\/"$/,
    },
    { args: ["--cert", pem], error: /^--cert and --key: give both or neither$/ },
    { args: ["--cert", `${temp.path}/missing.pem`, "--key", pem], error: /^Cannot read --cert / },
    {
      args: ["--cert", keyPem, "--key", certPem],
      error: new RegExp(
        `^--cert ${keyPem} holds a private key, not a certificate: are --cert and --key swapped\\?$`,
      ),
    },
    {
      args: ["--cert", certPem, "--key", certPem],
      error: new RegExp(
        `^--key ${certPem} holds a certificate, not a private key: are --cert and --key swapped\\?$`,
      ),
    },
    {
      args: ["--cert", pem, "--key", keyPem],
      error: new RegExp(`^--cert ${pem} holds no PEM certificate$`),
    },
    {
      args: ["--forwarded-allow-ips", "1.2.3.999"],
      error: /^--forwarded-allow-ips: .*1\.2\.3\.999/,
    },
    {
      args: ["--workers", "2", "--unix", `${temp.path}/s.sock`],
      error: /^--workers cannot be used with --unix/,
    },
    { args: ["--bogus"], error: /^Unknown option '--bogus'/ },
    { args: ["--forwarded-header"], error: /^--forwarded-header needs --forwarded-allow-ips/ },
    {
      args: ["--max-requests", "100", "--unix", `${temp.path}/s.sock`],
      error: /^--max-requests cannot be used with --unix/,
    },
    { args: ["--port"], error: /^Option '--port <value>' argument missing/ },
    { args: ["a.ts", "b.ts"], error: /^Expected at most one MODULE\[:EXPORT\], got 2/ },
    {
      args: [],
      env: { PORT: "http" },
      error: /^PORT must be an integer from 0 to 65535, got "http"$/,
    },
    {
      args: [],
      env: { WEB_CONCURRENCY: "0" },
      error: /^WEB_CONCURRENCY must be an integer from 1 to 1024, got "0"$/,
    },
    {
      args: [],
      env: { DENO_WSGI_ARGS: "--port 'x" },
      error: /^DENO_WSGI_ARGS has an unterminated ' quote$/,
    },
    { args: [], env: { DENO_WSGI_ARGS: "--nope" }, error: /^Unknown option '--nope'/ },
    {
      args: ["--access-log-format", "xml"],
      error: /^--access-log-format must be one of common, combined, json, got "xml"$/,
    },
  ];
  const results = await Promise.all(
    cases.map((c) =>
      run(Deno.execPath(), ["run", "--allow-read", "--allow-env", SERVER_TS, ...c.args], {
        cwd: PROJECT_DIR,
        env: c.env ?? {},
      })
    ),
  );
  cases.forEach((c, i) => {
    const result = results[i]!;
    const what = `${JSON.stringify(c.env ?? {})} server.ts ${c.args.join(" ")}`;
    equal(result.code, 2, `${what}: exit code\n${result.stderr}`);
    const lines = result.stderr.trimEnd().split("\n");
    deepEqual(lines.length, 2, `${what}: expected two lines\n${result.stderr}`);
    const [first, second] = lines as [string, string];
    ok(first.startsWith("server.ts: "), `${what}: ${first}`);
    match(first.slice("server.ts: ".length), c.error, what);
    equal(second, "Try 'server.ts --help'.", what);
    equal(decoder.decode(result.stdout), "", `${what}: nothing on standard output`);
  });
});

Deno.test("the CLI serves a module's default export when MODULE comes without :EXPORT and has no app", async () => {
  await using temp = await tempDir("wsgi_cli_");
  const module = `${temp.path}/default_app.ts`;
  await Deno.writeTextFile(
    module,
    `export default (environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [new TextEncoder().encode("default export\\n")];
};
`,
  );
  const cli = await startCli(["--allow-net", "--allow-read"], SERVER_TS, [
    "--port",
    "0",
    "--no-access-log",
    module,
  ]);
  await using child = cli.child;
  equal(await get(cli.port, "/"), "default export\n");
  await stopGracefully(child);
});

Deno.test("the CLI says which --allow-run its workers need when it is not granted", async () => {
  const port = String(freePort());
  for (
    const allowRun of ["--allow-run=/bin/true", "--allow-run=deno-link-that-is-not-the-binary"]
  ) {
    const result = await run(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      allowRun,
      SERVER_TS,
      "--port",
      port,
      "--workers",
      "2",
    ], { cwd: PROJECT_DIR });
    equal(result.code, 1, result.stderr);
    ok(
      result.stderr.includes(
        `Cannot start worker 1: it needs --allow-run=${Deno.execPath()} (the Deno binary itself`,
      ),
      result.stderr,
    );
  }
});

Deno.test("the CLI exits 1 with one line naming the module and the place when the application cannot be served", async () => {
  await using temp = await tempDir("wsgi_cli_");
  const dir = temp.path;
  const modules: Record<string, string> = {
    "throws.ts": 'const a = 1;\nthrow new Error("boom at import");\n',
    "syntax.ts": "export const app = (;\n",
    "imports_missing.ts": 'import "./nope.ts";\nexport const app = () => [];\n',
    "exports.ts": "export const other = 1;\nexport function handler() {}\n",
    "default_only.ts": "export default () => [];\n",
  };
  for (const [name, source] of Object.entries(modules)) {
    await Deno.writeTextFile(`${dir}/${name}`, source);
  }
  const cases: [module: string, message: string][] = [
    [
      `${dir}/throws.ts`,
      `Cannot load ${dir}/throws.ts: Error: boom at import (at ${dir}/throws.ts:2:7)`,
    ],
    [`${dir}/syntax.ts`, `Syntax error in ${dir}/syntax.ts:1:21: Expression expected`],
    [
      `${dir}/imports_missing.ts`,
      `Cannot load ${dir}/imports_missing.ts: it imports ${dir}/nope.ts, which does not exist (at ${dir}/imports_missing.ts:1:8)`,
    ],
    [`${dir}/absent.ts`, `Cannot load ${dir}/absent.ts: no such module`],
    [
      `${dir}/exports.ts`,
      `Cannot serve ${dir}/exports.ts: it has no export "app" and no default export that is a function; its exports: handler, other`,
    ],
    [
      `${dir}/default_only.ts:app`,
      `Cannot serve ${dir}/default_only.ts: it has no export "app"; its exports: default`,
    ],
    [
      `${dir}/exports.ts:other`,
      `Cannot serve ${dir}/exports.ts: its export "other" is a number, not an application (a function); its exports: handler, other`,
    ],
  ];
  const results = await Promise.all(cases.map(([module]) =>
    run(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      SERVER_TS,
      "--port",
      "0",
      module,
    ], { cwd: PROJECT_DIR })
  ));
  cases.forEach(([module, expected], i) => {
    const result = results[i]!;
    equal(result.code, 1, `${module}: ${result.stderr}`);
    equal(result.stderr, `${expected}\n`, module);
  });
});

Deno.test("the CLI names the address it cannot listen on, and exits 1", async () => {
  const taken = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  try {
    const { port } = taken.addr as Deno.NetAddr;
    const result = await run(Deno.execPath(), [
      "run",
      "--allow-net",
      SERVER_TS,
      "--port",
      String(port),
    ], {
      cwd: PROJECT_DIR,
    });
    equal(result.code, 1, result.stderr);
    equal(result.stderr, `Cannot listen on 127.0.0.1:${port}: address already in use\n`);
  } finally {
    taken.close();
  }
});

Deno.test("the CLI prints its version for --version", async () => {
  const result = await run(Deno.execPath(), ["run", SERVER_TS, "--version"], { cwd: PROJECT_DIR });
  equal(result.code, 0, result.stderr);
  const config = JSON.parse(await Deno.readTextFile(new URL("../deno.json", import.meta.url)));
  equal(VERSION, config.version, "cli.ts's VERSION is deno.json's version");
  equal(decoder.decode(result.stdout), `deno-wsgi ${config.version} (Deno ${Deno.version.deno})\n`);
});

Deno.test("parseCommandLine() takes PORT, HOST, WEB_CONCURRENCY and DENO_WSGI_ARGS where no flag says otherwise", async () => {
  const port = await parseCommandLine(["--no-access-log"], undefined, { PORT: "9002" });
  equal(port.options.port, 9002);
  equal(port.options.hostname, "0.0.0.0", "a PORT alone listens on every interface, as gunicorn");
  const host = await parseCommandLine([], undefined, { PORT: "9002", HOST: "127.0.0.9" });
  equal(host.options.hostname, "127.0.0.9");
  const flags = await parseCommandLine(
    ["--port", "9003", "--host", "::1", "--workers", "3"],
    undefined,
    {
      PORT: "9002",
      HOST: "127.0.0.9",
      WEB_CONCURRENCY: "4",
    },
  );
  equal(flags.options.port, 9003);
  equal(flags.options.hostname, "::1");
  equal(flags.workers, 3);
  equal((await parseCommandLine([], undefined, { WEB_CONCURRENCY: "4" })).workers, 4);
  const extra = await parseCommandLine(["--port", "9005"], undefined, {
    DENO_WSGI_ARGS: "--port 9004 --script-name '/my app' --max-headers=50",
  });
  equal(extra.options.port, 9005, "the command line wins over DENO_WSGI_ARGS");
  equal(extra.options.scriptName, "/my app");
  equal(extra.options.maxHeaders, 50);
});

Deno.test("splitArguments() splits DENO_WSGI_ARGS as a shell splits a simple command line", () => {
  deepEqual(splitArguments(""), []);
  deepEqual(splitArguments("  --port   80 "), ["--port", "80"]);
  deepEqual(splitArguments(`--a 'x y' "p \\"q\\" r" s\\ t ''`), [
    "--a",
    "x y",
    'p "q" r',
    "s t",
    "",
  ]);
});

Deno.test("the CLI listens where PORT says when it may read the environment", async () => {
  const port = freePort();
  const child = new Child(Deno.execPath(), ["run", "--allow-net", "--allow-env", SERVER_TS], {
    cwd: PROJECT_DIR,
    env: { PORT: String(port), HOST: "127.0.0.1", DENO_WSGI_ARGS: "--no-access-log" },
  });
  await using _child = child;
  ok(
    await child.stdout.waitFor(new RegExp(`^Listening on http://127\\.0\\.0\\.1:${port}/$`)),
    child.output(),
  );
  equal(await get(port, "/hello"), "Hello, specific page!\n");
  await stopGracefully(child);
});

// ---------------------------------------------------------------------------
// --forwarded-allow-ips: proxyFix applied for the named proxies only
// ---------------------------------------------------------------------------

async function infoThroughCli(
  allow: string,
  headers: Record<string, string> = {
    "X-Forwarded-For": "203.0.113.9",
    "X-Forwarded-Proto": "https",
  },
  extra: string[] = [],
): Promise<string> {
  const cli = await startCli(["--quiet", "--allow-net=127.0.0.1"], SERVER_TS, [
    "--port",
    "0",
    "--no-access-log",
    "--forwarded-allow-ips",
    allow,
    ...extra,
  ]);
  await using child = cli.child;
  const response = await deadline(
    TEST_DEADLINE_MS,
    fetch(`http://127.0.0.1:${cli.port}/info`, { headers }),
    "GET /info",
  );
  equal(response.status, 200);
  const text = await response.text();
  await stopGracefully(child);
  return text;
}

Deno.test("the CLI applies X-Forwarded-* from a proxy named in --forwarded-allow-ips", async () => {
  const info = await infoThroughCli("127.0.0.1, ::1");
  match(info, /^REMOTE_ADDR: 203\.0\.113\.9$/m);
  match(info, /^wsgi\.url_scheme: https$/m);
});

Deno.test("the CLI ignores X-Forwarded-* from a peer not in --forwarded-allow-ips", async () => {
  const info = await infoThroughCli("10.0.0.0/8");
  match(info, /^REMOTE_ADDR: 127\.0\.0\.1$/m);
  match(info, /^wsgi\.url_scheme: http$/m);
});

Deno.test("the CLI keeps serving after a stray promise rejection and a throw in a timer, logging both with their stack, in one process and in workers", async (t) => {
  await using temp = await tempDir("wsgi_cli_");
  const module = `${temp.path}/careless.ts`;
  await Deno.writeTextFile(
    module,
    `export const app = (environ, startResponse) => {
  if (environ.PATH_INFO === "/careless") {
    Promise.reject(new Error("stray rejection"));
    setTimeout(() => { throw new Error("thrown in a timer"); }, 0);
  }
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [new TextEncoder().encode("fine\\n")];
};
`,
  );
  const setups = [
    { name: "one process", flags: ["--allow-net", "--allow-read"], args: ["--port", "0"] },
    {
      name: "--workers 2",
      flags: ["--allow-net", "--allow-read", "--allow-run", "--allow-env"],
      args: ["--port", String(freePort()), "--workers", "2"],
    },
  ];
  for (const setup of setups) {
    await t.step(setup.name, async () => {
      const cli = await startCli(setup.flags, SERVER_TS, [
        ...setup.args,
        "--no-access-log",
        module,
      ]);
      await using child = cli.child;
      equal(await get(cli.port, "/careless"), "fine\n");
      ok(await child.stderr.waitFor(/thrown in a timer/), child.output());
      ok(await child.stderr.waitFor(/stray rejection/), child.output());
      // Every worker still answers: a few requests reach both.
      for (let i = 0; i < 8; i++) equal(await get(cli.port, "/again"), "fine\n");
      const log = child.stderr.lines.join("\n");
      match(log, /Unhandled promise rejection in application code:[\s\S]*at .*careless\.ts:3/);
      match(log, /Uncaught exception in application code:[\s\S]*at .*careless\.ts:4/);
      await stopGracefully(child);
    });
  }
});

Deno.test("the CLI believes a Forwarded header only with --forwarded-header", async () => {
  const forged = { Forwarded: "for=198.51.100.7;proto=https" };
  const ignored = await infoThroughCli("127.0.0.1", forged);
  match(ignored, /^REMOTE_ADDR: 127\.0\.0\.1$/m);
  match(ignored, /^wsgi\.url_scheme: http$/m);
  const believed = await infoThroughCli("127.0.0.1", forged, ["--forwarded-header"]);
  match(believed, /^REMOTE_ADDR: 198\.51\.100\.7$/m);
  match(believed, /^wsgi\.url_scheme: https$/m);
});
