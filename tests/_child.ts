/**
 * Helpers for tests that run other programs (curl, openssl, nginx, wrk, the
 * CLI server): find an executable, run one to completion, and drive a
 * long-running child whose output is read line by line as it comes.
 *
 * No sleeps: every wait ends on an event (a line, EOF, an exit). Every child
 * is bounded by a watchdog that kills it, which ends its output streams, so a
 * wait for a line that never comes ends in a test failure instead of a hang.
 */

const decoder = new TextDecoder();

/** Seconds a single client process (curl, openssl) may take before it gives up. */
export const CLIENT_TIMEOUT_S = 20;
/** Milliseconds a long-running child may live before its watchdog kills it. */
export const CHILD_WATCHDOG_MS = 40_000;

/** The first executable called `name` on PATH (or in `extraDirs`), or null. */
export function findExecutable(name: string, extraDirs: string[] = []): string | null {
  let path: string | undefined;
  try {
    path = Deno.env.get("PATH");
  } catch {
    path = undefined;
  }
  const dirs = [...(path ?? "/usr/local/bin:/usr/bin:/bin").split(":"), ...extraDirs];
  for (const dir of dirs) {
    if (dir === "") continue;
    const candidate = `${dir}/${name}`;
    try {
      const info = Deno.statSync(candidate);
      if (info.isFile && info.mode !== null && (info.mode & 0o111) !== 0) return candidate;
    } catch {
      // Not here.
    }
  }
  return null;
}

/** `command args` with stdin closed, both output streams piped, colours off. */
function childCommand(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string> },
): Deno.Command {
  return new Deno.Command(command, {
    args,
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1", ...options.env },
    ...(options.cwd !== undefined ? { cwd: options.cwd } : {}),
  });
}

/** What a finished process left behind. */
export interface RunResult {
  code: number;
  signal: Deno.Signal | null;
  stdout: Uint8Array;
  stderr: string;
}

/**
 * Runs a command to completion, both streams captured, stdin closed. A
 * command still running after `watchdogMs` (default
 * {@linkcode CHILD_WATCHDOG_MS}) is killed, so a hang fails the test.
 */
export async function run(
  command: string,
  args: string[],
  options: { cwd?: string; env?: Record<string, string>; watchdogMs?: number } = {},
): Promise<RunResult> {
  const child = childCommand(command, args, options).spawn();
  const watchdog = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  }, options.watchdogMs ?? CHILD_WATCHDOG_MS);
  try {
    const output = await child.output();
    return {
      code: output.code,
      signal: output.signal,
      stdout: output.stdout,
      stderr: decoder.decode(output.stderr),
    };
  } finally {
    clearTimeout(watchdog);
  }
}

/**
 * Runs `curl` with no proxy, no config file and a time limit, plus `args`.
 * Does not check the exit code: the caller does, with the stderr in the message.
 */
export function curl(curlPath: string, ...args: string[]): Promise<RunResult> {
  return run(curlPath, [
    "-q",
    "--silent",
    "--show-error",
    "--noproxy",
    "*",
    "--max-time",
    String(CLIENT_TIMEOUT_S),
    ...args,
  ]);
}

/**
 * A process's resident memory in bytes, from `/proc/PID/status` (Linux).
 * Read with `cat`: Deno lets only `--allow-all` read `/proc` itself.
 */
export async function residentBytes(pid: number): Promise<number> {
  const result = await run("cat", [`/proc/${pid}/status`]);
  const kib = /^VmRSS:\s+(\d+) kB/m.exec(decoder.decode(result.stdout));
  if (kib === null) throw new Error(`No VmRSS for pid ${pid}: ${result.stderr}`);
  return Number(kib[1]) * 1024;
}

/** A new temp dir, removed with everything in it on disposal (`await using`), which fails if a file in it is still open. */
export interface TempDir extends AsyncDisposable {
  readonly path: string;
}

/**
 * The files under `dir` that this process holds open, as listed in
 * `/proc/PID/fd` (on Linux; elsewhere none are reported). Deno's resource
 * sanitizer does not count open files, so tests that must close them check
 * with this. Deno lets only `--allow-all` read `/proc` itself, so GNU find
 * reads it (with `--allow-run`).
 */
export function openFilesUnder(dir: string): string[] {
  if (Deno.build.os !== "linux") return [];
  const prefix = `${Deno.realPathSync(dir)}/`;
  const { stdout } = new Deno.Command("find", {
    args: [`/proc/${Deno.pid}/fd`, "-lname", `${prefix}*`, "-printf", "%l\\n"],
    stdout: "piped",
    stderr: "null",
  }).outputSync();
  return new TextDecoder().decode(stdout).split("\n").filter((line) => line !== "");
}

/**
 * Removes `dir` with everything in it, then fails if a file in it was still
 * open: a test's temp dir doubles as a check that it closed its files.
 */
export async function removeClosedDir(dir: string): Promise<void> {
  const open = openFilesUnder(dir);
  await Deno.remove(dir, { recursive: true });
  if (open.length > 0) throw new Error(`Files left open: ${open.join(", ")}`);
}

/** Makes a temp dir named with `prefix`; use it with `await using`. */
export async function tempDir(prefix: string): Promise<TempDir> {
  const path = await Deno.makeTempDir({ prefix });
  return { path, [Symbol.asyncDispose]: () => removeClosedDir(path) };
}

/** A throwaway certificate and its key, as files (in a temp dir that disposal removes) and as PEM text. */
export interface Certificate extends AsyncDisposable {
  readonly dir: string;
  readonly certFile: string;
  readonly keyFile: string;
  readonly cert: string;
  readonly key: string;
}

/**
 * Makes a self-signed P-256 certificate for `localhost` and `127.0.0.1`,
 * valid for one day, with `openssl`, in a new temp dir. Use it with
 * `await using`.
 */
export async function makeCertificate(openssl: string): Promise<Certificate> {
  const temp = await tempDir("wsgi_tls_");
  const dir = temp.path;
  const certFile = `${dir}/cert.pem`;
  const keyFile = `${dir}/key.pem`;
  const result = await run(openssl, [
    "req",
    "-x509",
    "-newkey",
    "ec",
    "-pkeyopt",
    "ec_paramgen_curve:prime256v1",
    "-nodes",
    "-days",
    "1",
    "-subj",
    "/CN=localhost",
    "-addext",
    "subjectAltName=DNS:localhost,IP:127.0.0.1",
    // An end-entity certificate (not a CA), so that rustls clients accept
    // it as a trusted certificate of its own.
    "-addext",
    "basicConstraints=critical,CA:FALSE",
    "-keyout",
    keyFile,
    "-out",
    certFile,
  ]);
  if (result.code !== 0) {
    await temp[Symbol.asyncDispose]();
    throw new Error(`openssl exited ${result.code}:\n${result.stderr}`);
  }
  return {
    dir,
    certFile,
    keyFile,
    cert: await Deno.readTextFile(certFile),
    key: await Deno.readTextFile(keyFile),
    [Symbol.asyncDispose]: () => temp[Symbol.asyncDispose](),
  };
}

/**
 * A free TCP port on 127.0.0.1 for programs that cannot be told to bind
 * port 0 and report it (nginx): bound, read, and released at once.
 */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const { port } = listener.addr as Deno.NetAddr;
  listener.close();
  return port;
}

/**
 * Reads a byte stream as lines in the background, from the moment it is
 * made, so that a child writing a lot (an access log under load) never
 * blocks on a full pipe. Tests wait for lines with {@linkcode waitFor}.
 */
export class LineReader {
  /** Every complete line read so far (without the line break). */
  readonly lines: string[] = [];
  /** Resolves at EOF (or a read error), after the last line is in `lines`. */
  readonly done: Promise<void>;
  #waiters: { test: (lines: string[]) => boolean; resolve: (ok: boolean) => void }[] = [];
  #eof = false;

  constructor(stream: ReadableStream<Uint8Array>) {
    this.done = this.#pump(stream);
  }

  async #pump(stream: ReadableStream<Uint8Array>): Promise<void> {
    const reader = stream.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let newline;
        let added = false;
        while ((newline = buffer.indexOf("\n")) >= 0) {
          this.lines.push(buffer.slice(0, newline).replace(/\r$/, ""));
          buffer = buffer.slice(newline + 1);
          added = true;
        }
        if (added) this.#notify();
      }
    } catch {
      // The stream broke: treat it as EOF.
    } finally {
      reader.releaseLock();
    }
    if (buffer !== "") this.lines.push(buffer);
    this.#eof = true;
    this.#notify();
  }

  #notify(): void {
    this.#waiters = this.#waiters.filter((waiter) => {
      if (waiter.test(this.lines)) {
        waiter.resolve(true);
        return false;
      }
      if (this.#eof) {
        waiter.resolve(false);
        return false;
      }
      return true;
    });
  }

  #until(test: (lines: string[]) => boolean): Promise<boolean> {
    if (test(this.lines)) return Promise.resolve(true);
    if (this.#eof) return Promise.resolve(false);
    return new Promise((resolve) => this.#waiters.push({ test, resolve }));
  }

  /** The first line (already read or still to come) that matches, or null at EOF. */
  async waitFor(pattern: RegExp): Promise<string | null> {
    const ok = await this.#until((lines) => lines.some((l) => pattern.test(l)));
    return ok ? this.lines.find((l) => pattern.test(l))! : null;
  }

  /** Waits until `count` lines match; false if EOF comes first. */
  waitForCount(pattern: RegExp, count: number): Promise<boolean> {
    return this.#until((lines) => this.count(pattern, lines) >= count);
  }

  /** How many lines read so far match. */
  count(pattern: RegExp, lines: string[] = this.lines): number {
    let n = 0;
    for (const line of lines) if (pattern.test(line)) n++;
    return n;
  }
}

/** How a child ended. */
export interface ChildStatus {
  code: number;
  signal: Deno.Signal | null;
}

/**
 * A long-running child process with both output streams read as lines.
 * Use with `await using`: disposal kills it if it is still running and
 * waits for it and its streams, so no resource outlives the test.
 */
export class Child implements AsyncDisposable {
  readonly process: Deno.ChildProcess;
  readonly stdout: LineReader;
  readonly stderr: LineReader;
  readonly #watchdog: ReturnType<typeof setTimeout>;
  readonly #status: Promise<ChildStatus>;
  #exited = false;

  constructor(
    command: string,
    args: string[],
    options: { cwd?: string; env?: Record<string, string>; watchdogMs?: number } = {},
  ) {
    const process = childCommand(command, args, options).spawn();
    this.process = process;
    this.stdout = new LineReader(process.stdout);
    this.stderr = new LineReader(process.stderr);
    this.#watchdog = setTimeout(
      () => this.kill("SIGKILL"),
      options.watchdogMs ?? CHILD_WATCHDOG_MS,
    );
    this.#status = this.#wait();
  }

  async #wait(): Promise<ChildStatus> {
    const status = await this.process.status;
    this.#exited = true;
    clearTimeout(this.#watchdog);
    await Promise.all([this.stdout.done, this.stderr.done]);
    return { code: status.code, signal: status.signal };
  }

  /** The process id. */
  get pid(): number {
    return this.process.pid;
  }

  /** Whether the process has exited. */
  get exited(): boolean {
    return this.#exited;
  }

  /** Sends `signal` unless the process is gone already. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#exited) return;
    try {
      this.process.kill(signal);
    } catch {
      // Already gone.
    }
  }

  /** Resolves once the process has exited and both streams are read to the end. */
  status(): Promise<ChildStatus> {
    return this.#status;
  }

  /** Both streams, for a failure message. */
  output(): string {
    return `stdout:\n${this.stdout.lines.join("\n")}\nstderr:\n${this.stderr.lines.join("\n")}`;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.kill("SIGKILL");
    await this.#status;
  }
}
