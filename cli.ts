/**
 * The command line: `deno run --allow-net server.ts [OPTIONS] [MODULE[:EXPORT]]`.
 *
 * It reads the flags (derived from the options table in `options.ts`),
 * loads the application module, and serves it in this process or, with
 * `--workers N`, from N worker processes under a supervisor
 * (`workers.ts`); SIGINT and SIGTERM drain it gracefully. `server.ts` and
 * `app.ts` call {@linkcode main} when they are run as programs; no library
 * module imports this one, so an application that imports `mod.ts` never
 * waits on the command line that loads it.
 *
 * Exit codes: 0 after a graceful shutdown, 1 when the server cannot run
 * (the application does not load, the address is taken), 2 for a usage
 * error (an unknown flag, an invalid value), 130 after a second signal.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { Application } from "./types.ts";
import { proxyFix, type ProxyFixOptions } from "./middleware/proxy_fix.ts";
import {
  type AccessLogFormat,
  type AccessLogOptions,
  checkInteger,
  hostPort,
  integerRule,
  isOptionError,
  OPTIONS,
  type OptionSpec,
  optionSpec,
  resolveOptions,
  type ServerOptions,
} from "./options.ts";
import { serve, type Server } from "./server.ts";
import { catchUncaughtErrors, forceStop, listenForStop } from "./signals.ts";
import {
  type AppSpec,
  resolveAppSpec,
  type StartingWorkerGroup,
  startWorkers,
  type WorkerGroup,
  type WorkersOptions,
} from "./workers.ts";

/** This package's version, as `deno.json` says (a test checks they agree). */
export const VERSION = "0.1.0";

/** Exit code of a usage error, as getopt-style tools use. */
export const USAGE_ERROR = 2;
/** Exit code when the server cannot start or stopped with a failure. */
export const FAILURE = 1;

/** How a program that runs the command line names itself and what it serves by default. */
export interface Program {
  /** The program's name in messages: `server.ts`, `app.ts`. */
  readonly name: string;
  /** The application served when no MODULE is given (a module URL; its export `app`). */
  readonly defaultApp: string;
}

/** The sample application's module. */
const SAMPLE_APP_URL = new URL("./app.ts", import.meta.url).href;

/** `server.ts`: serves `app.ts` unless told otherwise. */
const SERVER_PROGRAM: Program = { name: "server.ts", defaultApp: SAMPLE_APP_URL };

/** A problem with the command line itself: reported in one line, exit code 2. */
class UsageError extends Error {
  override readonly name = "UsageError";
}

/** `--port N`, `--help`: how a row appears in the usage text. */
function flagSyntax(spec: OptionSpec): string {
  if (spec.flag === "help") return "-h, --help";
  return spec.type === "boolean" ? `--${spec.flag}` : `--${spec.flag} ${spec.arg ?? "VALUE"}`;
}

/** One line of the usage text (two when the flag is long): the flag, then its help. */
function usageLine(syntax: string, help: string): string {
  return syntax.length < 24
    ? `  ${syntax.padEnd(24)}${help}`
    : `  ${syntax}\n  ${"".padEnd(24)}${help}`;
}

/** The `--help` text, with one line per flag of the options table. */
export function usage(program: Program = SERVER_PROGRAM): string {
  const lines = OPTIONS.filter((o) => o.flag !== null).flatMap((o) => {
    const value = o.cliDefault ?? o.default;
    // Defaults are written as code ("127.0.0.1"); a command line shows them bare.
    const fallback = o.type !== "boolean" && value !== undefined
      ? ` (default ${value === '""' ? value : value.replace(/^"(.*)"$/, "$1")})`
      : "";
    const line = usageLine(flagSyntax(o), `${o.help}${fallback}`);
    return o.negatable ? [line, usageLine(`--no-${o.flag}`, `turn it off`)] : [line];
  });
  return `Usage: deno run --allow-net [--allow-read] ${program.name} [OPTIONS] [MODULE[:EXPORT]]

Serves the WSGI application EXPORT (default "app", else the default export) of
MODULE (a path or URL; default: the sample application app.ts) over HTTP/1.1.

Options:
${lines.join("\n")}

Environment (read with --allow-env; flags win): PORT and HOST (a PORT alone
listens on 0.0.0.0, as gunicorn does), WEB_CONCURRENCY (--workers), and
DENO_WSGI_ARGS (more arguments, read before the command line's).

SIGINT or SIGTERM shuts down gracefully; a second one exits at once. With
--workers, SIGHUP replaces the workers one at a time (new code takes effect).`;
}

/** The `parseArgs` configuration: one entry per flag of the options table (two for a negatable one). */
function parseArgsOptions(): Record<string, { type: "string" | "boolean"; short?: string }> {
  return Object.fromEntries(
    OPTIONS.filter((o) => o.flag !== null).flatMap((o) => [
      [
        o.flag!,
        o.type === "boolean"
          ? { type: "boolean" as const, ...(o.flag === "help" ? { short: "h" } : {}) }
          : { type: "string" as const },
      ],
      ...(o.negatable ? [[`no-${o.flag}`, { type: "boolean" as const }]] : []),
    ]),
  );
}

/** What the command line asks for, once its flags are read and checked. */
export interface Invocation {
  /** `--help`: print the usage and exit. */
  readonly help: boolean;
  /** `--version`: print the version and exit. */
  readonly version: boolean;
  /** The application's module and export. */
  readonly app: AppSpec;
  /** The options of `serve()` (or of every worker), frozen: validated once. */
  readonly options: Readonly<ServerOptions>;
  readonly workers: number;
  /** `--forwarded-allow-ips`: wrap the application in `proxyFix` with these options. */
  readonly proxyFix: ProxyFixOptions | null;
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----/;
const PEM_PRIVATE_KEY = /-----BEGIN [A-Z ]*PRIVATE KEY-----/;

/**
 * Refuses a `--cert` file without a PEM certificate and a `--key` file
 * without a PEM private key, naming the file (TLS itself would say only
 * "No certificates found in certificate data"), and says when the two
 * look swapped.
 */
function checkPem(flag: "cert" | "key", path: string, text: string): void {
  const [wanted, other, what, otherWhat] = flag === "cert"
    ? [PEM_CERTIFICATE, PEM_PRIVATE_KEY, "certificate", "private key"]
    : [PEM_PRIVATE_KEY, PEM_CERTIFICATE, "private key", "certificate"];
  if (wanted.test(text)) return;
  throw new UsageError(
    other.test(text)
      ? `--${flag} ${path} holds a ${otherWhat}, not a ${what}: are --cert and --key swapped?`
      : `--${flag} ${path} holds no PEM ${what}`,
  );
}

/**
 * `--port must be an integer from 0 to 65535, got "abc"`: one wording per
 * rule, naming the flag (or the environment variable) and the value.
 */
function mustBe(
  spec: OptionSpec,
  expected: string,
  got: string,
  source = `--${spec.flag}`,
): UsageError {
  return new UsageError(`${source} must be ${expected}, got ${JSON.stringify(got)}`);
}

/** A flag's (or an environment variable's) text as the option's number. */
function integerFlag(spec: OptionSpec, text: string, source?: string): number {
  const rule = integerRule(spec);
  if (!/^\d{1,16}$/.test(text)) throw mustBe(spec, rule, text, source);
  try {
    return checkInteger(spec, Number(text));
  } catch {
    throw mustBe(spec, rule, text, source);
  }
}

/**
 * The environment variables the command line reads, as platforms set them
 * (gunicorn reads the same): `PORT` and `HOST` where `--port` and `--host`
 * are absent, `WEB_CONCURRENCY` where `--workers` is, and
 * `DENO_WSGI_ARGS`, more arguments read before the command line's own (so
 * the command line wins). As with gunicorn, a `PORT` without `HOST` or
 * `--host` listens on every interface (`0.0.0.0`): a platform routes
 * traffic to the port it chose.
 */
export const ENVIRONMENT_VARIABLES = ["PORT", "HOST", "WEB_CONCURRENCY", "DENO_WSGI_ARGS"] as const;

/** The values of {@linkcode ENVIRONMENT_VARIABLES} this process may read. */
export type Environment = Readonly<Partial<Record<typeof ENVIRONMENT_VARIABLES[number], string>>>;

/**
 * Reads the environment variables the command line uses, each only when
 * Deno grants reading it (`--allow-env`, or `--allow-env=PORT,...`): without
 * the permission they are not read, and no prompt interrupts a start.
 */
export function readEnvironment(): Environment {
  const environment: Partial<Record<typeof ENVIRONMENT_VARIABLES[number], string>> = {};
  for (const variable of ENVIRONMENT_VARIABLES) {
    if (Deno.permissions.querySync({ name: "env", variable }).state !== "granted") continue;
    const value = Deno.env.get(variable);
    if (value !== undefined && value !== "") environment[variable] = value;
  }
  return environment;
}

/**
 * Splits `DENO_WSGI_ARGS` into arguments as a shell would split a simple
 * command line: on whitespace, with `'...'` and `"..."` quoting and `\`
 * escapes (inside double quotes too).
 */
export function splitArguments(text: string): string[] {
  const args: string[] = [];
  let current: string | null = null;
  let quote: "'" | '"' | null = null;
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (quote === "'") {
      if (c === "'") quote = null;
      else current += c;
    } else if (c === "\\" && i + 1 < text.length && quote === null || c === "\\" && quote === '"') {
      current = (current ?? "") + (text[++i] ?? "");
    } else if (quote === '"') {
      if (c === '"') quote = null;
      else current += c;
    } else if (c === "'" || c === '"') {
      quote = c;
      current ??= "";
    } else if (/\s/.test(c)) {
      if (current !== null) args.push(current);
      current = null;
    } else {
      current = (current ?? "") + c;
    }
  }
  if (quote !== null) throw new UsageError(`DENO_WSGI_ARGS has an unterminated ${quote} quote`);
  if (current !== null) args.push(current);
  return args;
}

/**
 * `--access-log PATH` (default `-`, standard output) and
 * `--access-log-format FORMAT`; a file that cannot be opened for appending
 * is a usage error, found before anything listens.
 */
function accessLogFlags(
  values: Record<string, string | boolean | undefined>,
): Required<AccessLogOptions> {
  const formatSpec = optionSpec("accessLog.format");
  const format = (values["access-log-format"] as string | undefined) ?? "common";
  if (!formatSpec.choices!.includes(format)) {
    throw mustBe(formatSpec, `one of ${formatSpec.choices!.join(", ")}`, format);
  }
  const path = (values["access-log"] as string | undefined) ?? "-";
  if (path !== "-") {
    try {
      Deno.openSync(path, { write: true, append: true, create: true }).close();
    } catch (error) {
      throw new UsageError(`Cannot open --access-log ${path}: ${(error as Error).message}`);
    }
  }
  return { format: format as AccessLogFormat, path };
}

/**
 * Reads the command line: flags and at most one MODULE[:EXPORT]. Throws a
 * {@linkcode UsageError} naming the flag for anything wrong, including
 * values that `resolveOptions()` refuses, so that no usage error waits
 * until the application is loaded.
 */
export async function parseCommandLine(
  args: readonly string[],
  program: Program = SERVER_PROGRAM,
  environment: Environment = {},
): Promise<Invocation> {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...splitArguments(environment.DENO_WSGI_ARGS ?? ""), ...args],
      allowPositionals: true,
      strict: true,
      options: parseArgsOptions(),
    });
  } catch (error) {
    // parseArgs explains some errors over several lines: keep them on one.
    throw new UsageError((error as Error).message.replace(/\s*\n\s*/g, " "));
  }
  const values = parsed.values as Record<string, string | boolean | undefined>;
  if (values.help === true || values.version === true) {
    return {
      help: values.help === true,
      version: values.version === true && values.help !== true,
      app: resolveAppSpec(program.defaultApp),
      options: {},
      workers: 1,
      proxyFix: null,
    };
  }
  const positionals = parsed.positionals;
  if (positionals.length > 1) {
    throw new UsageError(
      `Expected at most one MODULE[:EXPORT], got ${positionals.length}: ${positionals.join(" ")}`,
    );
  }
  let app: AppSpec;
  try {
    app = positionals[0] === undefined
      ? resolveAppSpec(program.defaultApp)
      : resolveAppSpec(positionals[0]);
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const options: Record<string, unknown> = {};
  let workers = 1;
  let trusted: string[] | null = null;
  for (const spec of OPTIONS) {
    const value = spec.flag === null ? undefined : values[spec.flag];
    if (
      value === undefined || spec.name === null || spec.name.startsWith("accessLog") ||
      spec.name === "proxyFix.forwarded"
    ) continue;
    if (spec.name === "workers") {
      workers = integerFlag(spec, value as string);
    } else if (spec.name === "proxyFix.trustedProxies") {
      trusted = (value as string).split(",").map((s) => s.trim()).filter((s) => s !== "")
        .flatMap((s) => s === "*" ? ["0.0.0.0/0", "::/0", "unix"] : [s]);
    } else if (spec.type === "integer" || spec.type === "limit") {
      options[spec.name] = integerFlag(spec, value as string) * (spec.flagScale ?? 1);
    } else if (spec.type === "file") {
      try {
        options[spec.name] = await Deno.readTextFile(value as string);
      } catch (error) {
        throw new UsageError(`Cannot read --${spec.flag} ${value}: ${(error as Error).message}`);
      }
    } else {
      options[spec.name] = value;
    }
  }
  if (values.port === undefined && environment.PORT !== undefined) {
    options.port = integerFlag(optionSpec("port"), environment.PORT, "PORT");
    if (values.host === undefined && environment.HOST === undefined) options.hostname = "0.0.0.0";
  }
  if (values.host === undefined && environment.HOST !== undefined) {
    options.hostname = environment.HOST;
  }
  if (values.workers === undefined && environment.WEB_CONCURRENCY !== undefined) {
    workers = integerFlag(optionSpec("workers"), environment.WEB_CONCURRENCY, "WEB_CONCURRENCY");
  }
  options.accessLog = values["no-access-log"] === true ? false : accessLogFlags(values);
  const frozen = Object.freeze(options as ServerOptions);
  try {
    resolveOptions(frozen);
  } catch (error) {
    if (!isOptionError(error)) throw error;
    const spec = optionSpec(error.option);
    if (error.conflictsWith !== undefined) {
      const other = optionSpec(error.conflictsWith);
      throw new UsageError(`--${spec.flag} and --${other.flag}: ${error.expected}`);
    }
    throw mustBe(spec, error.expected, String(options[error.option]));
  }
  if (frozen.cert !== undefined && frozen.key !== undefined) {
    checkPem("cert", values.cert as string, frozen.cert);
    checkPem("key", values.key as string, frozen.key);
  }
  let proxyFixOptions: ProxyFixOptions | null = null;
  if (values["forwarded-header"] === true && trusted === null) {
    throw new UsageError(
      "--forwarded-header needs --forwarded-allow-ips: which proxies to believe",
    );
  }
  if (trusted !== null) {
    proxyFixOptions = { trustedProxies: trusted, forwarded: values["forwarded-header"] === true };
    try {
      proxyFix(() => [], proxyFixOptions);
    } catch (error) {
      throw new UsageError(`--forwarded-allow-ips: ${(error as Error).message}`);
    }
  }
  if (frozen.path !== undefined) {
    const flags = frozen as SupervisorFlags;
    const needing = workers > 1
      ? "--workers"
      : (flags.maxRequests ?? 0) > 0
      ? "--max-requests"
      : (flags.timeoutMs ?? 0) > 0
      ? "--timeout"
      : null;
    if (needing !== null) {
      throw new UsageError(
        `${needing} cannot be used with --unix: it needs worker processes, which cannot share ` +
          "a Unix socket; run one server per socket path and list each one in the proxy's upstream",
      );
    }
  }
  return {
    help: false,
    version: false,
    app,
    options: frozen,
    workers,
    proxyFix: proxyFixOptions,
  };
}

/** An application that cannot be served: its module does not load, or lacks the export. */
export class AppLoadError extends Error {
  override readonly name = "AppLoadError";
}

/** A module URL as a user wrote it: a path for local files. */
function shownModule(url: string): string {
  return url.startsWith("file:") ? new URL(url).pathname : url;
}

/** `text` without terminal colour codes (Deno colours the locations in some messages). */
function plain(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/\x1b\[[0-9;]*m/g, "");
}

/** `/a/b.ts:3:7`: the first `at URL:LINE:COLUMN` of an error's text; `null` if none. */
function location(text: string): string | null {
  const at = /\bat (?:async )?(?:[^\n(]*\()?((?:file|https?):\/\/[^\s)]+?):(\d+):(\d+)\)?$/m
    .exec(plain(text));
  return at === null ? null : `${shownModule(at[1]!)}:${at[2]}:${at[3]}`;
}

/**
 * One line that says why `spec` could not be imported, and where: a syntax
 * error with its file, line and column (Deno reports those as a "module
 * not found" `TypeError`), a missing module or import, or what the module
 * threw at its top level with the line that threw it.
 */
export function describeLoadError(spec: AppSpec, error: unknown): string {
  const module = shownModule(spec.url);
  const text = plain(error instanceof Error ? error.message : String(error));
  const firstLine = text.split("\n")[0]!.trim();
  const where = location(text) ?? location(error instanceof Error ? error.stack ?? "" : "");
  const syntax = /^SyntaxError: (.*)$/.exec(firstLine);
  if (syntax !== null) return `Syntax error in ${where ?? module}: ${syntax[1]}`;
  const notFound = /^Module not found "([^"]+)"/.exec(firstLine);
  if (notFound !== null) {
    return notFound[1] === spec.url
      ? `Cannot load ${module}: no such module`
      : `Cannot load ${module}: it imports ${shownModule(notFound[1]!)}, which does not exist` +
        (where === null ? "" : ` (at ${where})`);
  }
  const name = error instanceof Error ? error.name : "Error";
  return `Cannot load ${module}: ${name}: ${firstLine}${where === null ? "" : ` (at ${where})`}`;
}

/**
 * Imports the application that `spec` names, wrapped in `proxyFix` when
 * `proxyFixOptions` are given: how the command line and every worker
 * process load what they serve. Throws an {@linkcode AppLoadError} whose
 * message is one line naming the module, and the export or the place that
 * failed.
 */
export async function loadApplication(
  spec: AppSpec,
  proxyFixOptions: ProxyFixOptions | null,
): Promise<Application> {
  let exports: Record<string, unknown>;
  try {
    // The sample application by a literal specifier: part of the module
    // graph, it loads without --allow-read, as `deno task start` runs.
    exports = spec.url === SAMPLE_APP_URL ? await import("./app.ts") : await import(spec.url);
  } catch (error) {
    throw new AppLoadError(describeLoadError(spec, error), { cause: error });
  }
  let app = exports[spec.exportName];
  if (app === undefined && spec.orDefault && typeof exports.default === "function") {
    app = exports.default;
  }
  if (typeof app !== "function") {
    const module = shownModule(spec.url);
    const names = Object.keys(exports).sort();
    const listed = names.length === 0 ? "it exports nothing" : `its exports: ${names.join(", ")}`;
    throw new AppLoadError(
      app === undefined
        ? `Cannot serve ${module}: it has no export "${spec.exportName}"${
          spec.orDefault ? " and no default export that is a function" : ""
        }; ${listed}`
        : `Cannot serve ${module}: its export "${spec.exportName}" is ${
          app === null ? "null" : `a ${typeof app}`
        }, not an application (a function); ${listed}`,
    );
  }
  return proxyFixOptions === null
    ? app as Application
    : proxyFix(app as Application, proxyFixOptions);
}

/** Whether `error` is one that opening a listener raises: the address is taken, missing or forbidden. */
function isListenError(error: unknown): boolean {
  return error instanceof Deno.errors.AddrInUse || error instanceof Deno.errors.AddrNotAvailable ||
    error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable;
}

/**
 * One line for a listener that could not be opened, naming the address:
 * `Cannot listen on 127.0.0.1:8000: address already in use`.
 */
export function describeListenError(options: Readonly<ServerOptions>, error: unknown): string {
  const text = error instanceof Error ? error.message : String(error);
  if (text.startsWith("Cannot listen on ")) return text;
  const where = options.path !== undefined
    ? options.path
    : hostPort(options.hostname ?? "127.0.0.1", options.port ?? 8000);
  const reason = error instanceof Deno.errors.AddrInUse
    ? "address already in use"
    : error instanceof Deno.errors.AddrNotAvailable
    ? "address not available on this machine"
    : error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable
    ? `permission denied (${text.replace(/\s*\(os error \d+\)$/, "")})`
    : text.replace(/\s*\(os error \d+\)$/, "");
  return `Cannot listen on ${where}: ${reason}`;
}

/** Removes a Unix socket file left by a server that is gone, refusing to steal a live one. */
export async function removeStaleSocket(path: string): Promise<void> {
  let info: Deno.FileInfo;
  try {
    info = await Deno.lstat(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return;
    throw error;
  }
  if (!info.isSocket) {
    throw new Deno.errors.AlreadyExists(
      `Cannot listen on "${path}": it exists and is not a socket`,
    );
  }
  try {
    const probe = await Deno.connect({ transport: "unix", path });
    probe.close();
    throw new Deno.errors.AddrInUse(`Cannot listen on "${path}": another server is using it`);
  } catch (error) {
    if (error instanceof Deno.errors.AddrInUse) throw error;
    await Deno.remove(path);
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * Serves the application in this process until SIGINT or SIGTERM. A signal
 * that comes while the application is still loading ends the process at
 * once (exit code 0): nothing is in flight yet, and an application whose
 * top-level code waits forever must not hold the process.
 */
async function serveHere(invocation: Invocation): Promise<number> {
  let server: Server | null = null;
  // Listen for signals before saying "Listening on": a signal sent right
  // after that line must find the handler, not the default (fatal) action.
  using _signals = listenForStop(
    () => {
      if (server === null) {
        console.error("Shutting down: the application was still loading");
        Deno.exit(0);
      }
      console.error("Shutting down: finishing in-flight requests");
      server.shutdown();
    },
    () => forceStop(null),
  );
  // A stray rejection or a throw in a timer of the application must not
  // end the process with every connection.
  using _uncaught = catchUncaughtErrors();
  let app: Application;
  try {
    app = await loadApplication(invocation.app, invocation.proxyFix);
  } catch (error) {
    console.error(message(error));
    return FAILURE;
  }
  try {
    if (invocation.options.path !== undefined) await removeStaleSocket(invocation.options.path);
    server = serve(app, invocation.options);
  } catch (error) {
    console.error(describeListenError(invocation.options, error));
    return FAILURE;
  }
  await server.finished;
  return 0;
}

/** The options of {@linkcode startWorkers} that only a supervisor carries out, as the command line read them. */
type SupervisorFlags = Pick<WorkersOptions, "timeoutMs" | "maxRequests" | "maxRequestsJitter">;

/**
 * Whether the command line needs a supervisor: more than one worker, or a
 * limit that only a supervisor can enforce (`--max-requests` replaces a
 * worker, `--timeout` kills one), given even with one worker.
 */
function needsSupervisor(invocation: Invocation): boolean {
  const flags = invocation.options as SupervisorFlags;
  return invocation.workers > 1 || (flags.maxRequests ?? 0) > 0 || (flags.timeoutMs ?? 0) > 0;
}

/**
 * Serves the application from `invocation.workers` processes until SIGINT
 * or SIGTERM, then drains them; SIGHUP replaces them one at a time. The
 * signals reach the workers from the start, even while they load the
 * application: a first one shuts the group down (workers still loading
 * exit at once), a second kills every worker (SIGKILL) before exiting.
 */
async function serveFromWorkers(invocation: Invocation): Promise<number> {
  let group: StartingWorkerGroup | null = null;
  let running: WorkerGroup | null = null;
  using signals = listenForStop(
    () => {
      console.error("Shutting down: the workers finish their in-flight requests");
      group?.shutdown().catch(() => {});
    },
    () => forceStop(group),
  );
  // SIGHUP replaces the workers one at a time (gunicorn's reload). Listened
  // for from the start: with no listener, the signal would kill the supervisor.
  const onHangup = () => {
    if (running === null) return;
    const reloaded = running;
    console.error("Reloading: replacing the workers one at a time");
    reloaded.reload().then(
      () => console.error(`Reloaded: pids ${reloaded.pids.join(", ")}`),
      (error) => console.error(`Reload stopped: ${message(error)}`),
    );
  };
  Deno.addSignalListener("SIGHUP", onHangup);
  using _hangup = { [Symbol.dispose]: () => Deno.removeSignalListener("SIGHUP", onHangup) };
  const { accessLog, ...options } = invocation.options;
  try {
    group = startWorkers(invocation.app, {
      ...options,
      accessLog: typeof accessLog === "function" ? true : accessLog ?? false,
      workers: invocation.workers,
      ...(invocation.proxyFix !== null ? { proxyFix: invocation.proxyFix } : {}),
    });
  } catch (error) {
    console.error(
      isListenError(error) ? describeListenError(invocation.options, error) : message(error),
    );
    return FAILURE;
  }
  try {
    running = await group.ready;
  } catch (error) {
    // A signal during the start is a shutdown like any other.
    if (signals.received) return 0;
    console.error(
      isListenError(error) ? describeListenError(invocation.options, error) : message(error),
    );
    return FAILURE;
  }
  const count = invocation.workers;
  console.error(
    `Started ${count} worker${count === 1 ? "" : "s"}: pids ${running.pids.join(", ")}`,
  );
  try {
    await running.finished;
    return 0;
  } catch {
    // The supervisor has logged why it gave up.
    return FAILURE;
  }
}

/**
 * Runs the command line with `args` (without the program name); resolves
 * to the exit code. Usage errors are one line, then a pointer to `--help`.
 *
 * @example What server.ts does when it is the main module
 * ```ts ignore
 * import { main } from "./cli.ts";
 *
 * main(Deno.args).then((code) => Deno.exitCode = code);
 * ```
 */
export async function main(
  args: readonly string[],
  program: Program = SERVER_PROGRAM,
  environment: Environment = readEnvironment(),
): Promise<number> {
  let invocation: Invocation;
  try {
    invocation = await parseCommandLine(args, program, environment);
  } catch (error) {
    if (!(error instanceof UsageError)) throw error;
    console.error(`${program.name}: ${error.message}\nTry '${program.name} --help'.`);
    return USAGE_ERROR;
  }
  if (invocation.help) {
    console.log(usage(program));
    return 0;
  }
  if (invocation.version) {
    console.log(`deno-wsgi ${VERSION} (Deno ${Deno.version.deno})`);
    return 0;
  }
  return needsSupervisor(invocation)
    ? await serveFromWorkers(invocation)
    : await serveHere(invocation);
}
