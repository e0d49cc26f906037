/**
 * `wsgi.errors`: a line-buffered text stream into the server's error log.
 *
 * @module
 */

import type { ErrorStream } from "../types.ts";

/**
 * `errno` names of errors that say the process is out of a resource (file
 * descriptors, kernel buffers, memory) rather than that something is wrong
 * with one request: they pass once the load does.
 */
const RESOURCE_ERROR_CODES: ReadonlySet<string> = new Set([
  "EMFILE",
  "ENFILE",
  "ENOBUFS",
  "ENOMEM",
]);

/** The `errno` name a Deno error carries (`"EMFILE"`), or `undefined`. */
export function errorCode(error: unknown): string | undefined {
  const code = (error as { code?: unknown } | null)?.code;
  return typeof code === "string" ? code : undefined;
}

/** Whether `error` says the process ran out of descriptors, buffers or memory. */
export function isResourceError(error: unknown): boolean {
  const code = errorCode(error);
  return code !== undefined && RESOURCE_ERROR_CODES.has(code);
}

/**
 * The default error log: `message` (and `error`, with its stack) on standard
 * error.
 *
 * A resource error goes on one line, without its stack: the stack says
 * nothing (it is always the call that failed), and formatting it can fail
 * in turn. Deno 2.9 measures the thread's stack the first time it formats
 * one, by reading `/proc/self/maps`; with no descriptor left that read fails
 * and Deno panics. (`serve()` formats one stack at startup, so that the
 * measurement is made while descriptors are free.)
 */
export function printError(message: string, error?: unknown): void {
  if (error === undefined) {
    console.error(message);
  } else if (isResourceError(error)) {
    const { name, message: reason } = error as Error;
    console.error(`${message}: ${name}: ${reason}`);
  } else {
    console.error(`${message}:`, error);
  }
}

/**
 * An {@linkcode ErrorStream} that hands complete lines to `log` (without
 * their newline), and any unterminated rest on `flush()`.
 *
 * @example
 * ```ts
 * import { LogErrorStream } from "./error_stream.ts";
 * import { deepEqual } from "node:assert/strict";
 * const lines: string[] = [];
 * const errors = new LogErrorStream((line) => lines.push(line));
 * errors.write("one\ntw");
 * errors.writelines(["o\n", "three"]);
 * errors.flush();
 * deepEqual(lines, ["one", "two", "three"]);
 * ```
 */
export class LogErrorStream implements ErrorStream {
  readonly #log: (line: string) => void;
  #pending = "";

  constructor(log: (line: string) => void) {
    this.#log = log;
  }

  /** Buffers `text` and logs every line it completes. */
  write(text: string): void {
    if (typeof text !== "string") {
      throw new TypeError(`Cannot write to wsgi.errors: expected a string, got ${typeof text}`);
    }
    let pending = this.#pending + text;
    let nl = pending.indexOf("\n");
    while (nl >= 0) {
      this.#log(pending.slice(0, nl));
      pending = pending.slice(nl + 1);
      nl = pending.indexOf("\n");
    }
    this.#pending = pending;
  }

  /** Writes each string in turn. */
  writelines(lines: Iterable<string>): void {
    for (const line of lines) this.write(line);
  }

  /** Logs the unterminated rest, if any. */
  flush(): void {
    if (this.#pending !== "") {
      this.#log(this.#pending);
      this.#pending = "";
    }
  }
}
