/**
 * The access log, without the I/O: what one line records
 * ({@linkcode AccessLogEntry}), the three formats operators expect
 * (`common`, `combined`, `json`), and {@linkcode AccessLogBuffer}, which
 * gathers lines into large writes without ever making the server wait.
 *
 * The server decides when to flush (when the buffer is large, when it goes
 * idle, at least once a second) and where the bytes go (standard output, a
 * file); this module only formats and buffers.
 *
 * @module
 */

/** One response, as the access log records it. Request strings are native strings, as sent. */
export interface AccessLogEntry {
  /** When the request head was parsed (or the connection failed), in milliseconds since the epoch. */
  readonly time: number;
  /** The client's address; `null` on a Unix socket. */
  readonly remoteAddr: string | null;
  /** The request method; `null` when the request line could not be parsed. */
  readonly method: string | null;
  /** The request-target as sent; `null` when the request line could not be parsed. */
  readonly target: string | null;
  /** `"HTTP/1.1"` or `"HTTP/1.0"`; `null` when the request line could not be parsed. */
  readonly protocol: string | null;
  /** The status code sent (0 if nothing was sent). */
  readonly status: number;
  /** Body bytes sent (the head not counted). */
  readonly bytes: number;
  /** Milliseconds from the head parsed to the last byte of the response handed to the socket. */
  readonly durationMs: number;
  /** The `Referer` header; `null` when absent. */
  readonly referer: string | null;
  /** The `User-Agent` header; `null` when absent. */
  readonly userAgent: string | null;
}

/**
 * How a line is written:
 *
 * - `common`: the Common Log Format (Apache's `%h %l %u %t "%r" %>s %b`);
 * - `combined`: `common` plus `"Referer" "User-Agent"` and, as a final
 *   field, the request's duration in milliseconds;
 * - `json`: one JSON object per line with every field of
 *   {@linkcode AccessLogEntry} (`time` in ISO 8601).
 */
export type AccessLogFormat = "common" | "combined" | "json";

/** The formats, in the order the docs list them. */
export const ACCESS_LOG_FORMATS: readonly AccessLogFormat[] = ["common", "combined", "json"];

/** What a client may have sent that must not reach a log line raw: quotes, backslashes, controls, non-ASCII. */
const UNSAFE = /[^\x20-\x7e]|["\\]/;
const UNSAFE_ALL = /[^\x20-\x7e]|["\\]/g;

function hex(c: string, width: number): string {
  return c.charCodeAt(0).toString(16).padStart(width, "0");
}

/**
 * `s` with quotes and backslashes escaped and every control or non-ASCII
 * character written as `\xNN` (Apache's escaping): a client can neither end
 * a quoted field nor start a new line.
 */
export function escapeForLog(s: string): string {
  if (!UNSAFE.test(s)) return s;
  return s.replace(
    UNSAFE_ALL,
    (c) =>
      c === '"' || c === "\\"
        ? `\\${c}`
        : c.length === 1 && c <= "\xff"
        ? `\\x${hex(c, 2)}`
        : `\\u${hex(c, 4)}`,
  );
}

/** `s` as a JSON string literal of printable ASCII only (`\u00NN` for the rest). */
export function jsonString(s: string | null): string {
  if (s === null) return "null";
  if (!UNSAFE.test(s)) return `"${s}"`;
  return `"${
    s.replace(UNSAFE_ALL, (c) => c === '"' || c === "\\" ? `\\${c}` : `\\u${hex(c, 4)}`)
  }"`;
}

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** The time strings of one second, computed once per second: lines of the same second share them. */
let cachedSecond = -1;
let cachedClf = "";
let cachedIso = "";

function second(time: number): void {
  const s = Math.floor(time / 1000);
  if (s === cachedSecond) return;
  const date = new Date(s * 1000);
  cachedSecond = s;
  cachedClf = `[${pad2(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/` +
    `${date.getUTCFullYear()}:${pad2(date.getUTCHours())}:${pad2(date.getUTCMinutes())}:` +
    `${pad2(date.getUTCSeconds())} +0000]`;
  cachedIso = date.toISOString().slice(0, 20); // "2026-11-30T21:16:46."
}

/** `[30/Nov/2026:21:16:46 +0000]`: the Common Log Format's time. */
export function clfTime(time: number): string {
  second(time);
  return cachedClf;
}

/** `2026-11-30T21:16:46.123Z`. */
export function isoTime(time: number): string {
  second(time);
  const ms = Math.floor(time) % 1000;
  return `${cachedIso}${ms < 10 ? "00" : ms < 100 ? "0" : ""}${ms}Z`;
}

/** The request line as the log shows it: `GET / HTTP/1.1`, or `-` when it was not parsed. */
function requestLine(entry: AccessLogEntry): string {
  return entry.method === null ? "-" : `${entry.method} ${entry.target} ${entry.protocol}`;
}

/** The duration in milliseconds, to the microsecond. */
function duration(ms: number): string {
  return (Math.round(ms * 1000) / 1000).toFixed(3);
}

function commonLine(entry: AccessLogEntry): string {
  return `${entry.remoteAddr ?? "-"} - - ${clfTime(entry.time)} "${
    escapeForLog(requestLine(entry))
  }" ${entry.status} ${entry.bytes === 0 ? "-" : entry.bytes}`;
}

/**
 * Formats one entry as one line (without the line break). Whatever the
 * client sent is escaped, so an entry is always exactly one line, and every
 * `json` line parses.
 *
 * @example
 * ```ts
 * import { formatEntry } from "./access_log.ts";
 * import { equal, ok } from "node:assert/strict";
 *
 * const entry = {
 *   time: Date.UTC(2026, 10, 30, 21, 16, 46), remoteAddr: "127.0.0.1",
 *   method: "GET", target: "/a\"b", protocol: "HTTP/1.1", status: 200, bytes: 42,
 *   durationMs: 0.25, referer: null, userAgent: "curl/8.1",
 * };
 * equal(formatEntry("common", entry),
 *   '127.0.0.1 - - [30/Nov/2026:21:16:46 +0000] "GET /a\\"b HTTP/1.1" 200 42');
 * ok(formatEntry("combined", entry).endsWith(' 200 42 "-" "curl/8.1" 0.250'));
 * equal(JSON.parse(formatEntry("json", entry)).target, '/a"b');
 * ```
 */
export function formatEntry(format: AccessLogFormat, entry: AccessLogEntry): string {
  switch (format) {
    case "common":
      return commonLine(entry);
    case "combined":
      return `${commonLine(entry)} "${escapeForLog(entry.referer ?? "-")}" "${
        escapeForLog(entry.userAgent ?? "-")
      }" ${duration(entry.durationMs)}`;
    case "json":
      return `{"time":"${isoTime(entry.time)}","remote_addr":${jsonString(entry.remoteAddr)},` +
        `"method":${jsonString(entry.method)},"target":${jsonString(entry.target)},` +
        `"protocol":${jsonString(entry.protocol)},"status":${entry.status},` +
        `"bytes":${entry.bytes},"duration_ms":${duration(entry.durationMs)},` +
        `"referer":${jsonString(entry.referer)},"user_agent":${jsonString(entry.userAgent)}}`;
  }
}

/**
 * Writes as much of `bytes` as the destination takes, resolving to how many
 * (as `Deno.FsFile.write` does); rejects when the destination is gone.
 */
export type LogWrite = (bytes: Uint8Array) => Promise<number>;

/** Limits of an {@linkcode AccessLogBuffer}. */
export interface AccessLogBufferOptions {
  /** Buffered bytes that start a write at once. @default {65536} */
  readonly flushBytes?: number;
  /**
   * Largest single write; every write holds whole lines. Processes that
   * share a pipe write at most `PIPE_BUF` (4096) bytes at a time, which the
   * kernel keeps whole: lines of different workers never interleave.
   * @default {65536}
   */
  readonly maxWriteBytes?: number;
  /**
   * Bytes waiting for a slow destination beyond which new lines are dropped
   * (and counted) rather than held in memory.
   * @default {4194304}
   */
  readonly maxPendingBytes?: number;
}

const encoder = new TextEncoder();

/**
 * Lines gathered into reused blocks of bytes and written in order, one
 * write at a time, never awaited by the caller. When the destination is
 * slower than the lines come (a full pipe nobody reads), at most
 * `maxPendingBytes` wait; later lines are dropped and counted, and once the
 * destination has taken everything, one line says how many were lost.
 */
export class AccessLogBuffer {
  readonly #write: LogWrite;
  readonly #flushBytes: number;
  readonly #blockBytes: number;
  readonly #maxPendingBytes: number;
  /** Full blocks waiting for their write, oldest first. */
  readonly #queue: Uint8Array[] = [];
  /** Blocks written and ready for reuse. */
  readonly #spare: Uint8Array[] = [];
  #block: Uint8Array;
  #used = 0;
  #pending = 0;
  #writing: Promise<void> | null = null;
  /** A flush came while a write was under way: write what is buffered when it ends. */
  #flushAfterWrite = false;
  #dropped = 0;
  #reported = 0;
  #failed = false;

  constructor(write: LogWrite, options: AccessLogBufferOptions = {}) {
    this.#write = write;
    this.#flushBytes = options.flushBytes ?? 64 * 1024;
    this.#blockBytes = Math.min(this.#flushBytes, options.maxWriteBytes ?? 64 * 1024);
    this.#maxPendingBytes = options.maxPendingBytes ?? 4 * 1024 * 1024;
    this.#block = new Uint8Array(this.#blockBytes);
  }

  /** Lines dropped so far because the destination was too slow (or gone). */
  get dropped(): number {
    return this.#dropped;
  }

  /** Bytes buffered or being written. */
  get pendingBytes(): number {
    return this.#pending;
  }

  /**
   * Adds one line (its line break is added); starts a write once
   * `flushBytes` are buffered. `line` should be ASCII, as
   * {@linkcode formatEntry} makes it; a line longer than a block is cut to
   * fit, so that it stays one write.
   */
  add(line: string): void {
    let size = line.length + 1;
    if (size > this.#blockBytes) {
      line = `${line.slice(0, this.#blockBytes - 4)}...`;
      size = this.#blockBytes;
    }
    if (this.#failed || this.#pending + size > this.#maxPendingBytes) {
      this.#dropped++;
      return;
    }
    if (this.#used + size > this.#blockBytes) this.#seal();
    const { written } = encoder.encodeInto(line, this.#block.subarray(this.#used));
    this.#block[this.#used + written] = 0x0a;
    this.#used += written + 1;
    this.#pending += written + 1;
    if (this.#pending >= this.#flushBytes) this.flush();
  }

  /**
   * Starts writing everything buffered. While a write is under way, the
   * lines buffered since wait for it to end and then go in one write: a
   * block is never sealed half empty while another waits, so the memory
   * held stays what the lines need.
   */
  flush(): void {
    if (this.#writing !== null) {
      this.#flushAfterWrite = true;
      return;
    }
    if (this.#used > 0) this.#seal();
    if (this.#queue.length > 0) {
      this.#writing = this.#pump().finally(() => this.#writing = null);
    }
  }

  /** Writes out everything buffered; resolves when it is written (or the destination failed). */
  async drain(): Promise<void> {
    this.flush();
    while (this.#writing !== null) {
      await this.#writing;
      this.flush();
    }
  }

  /** Moves the current block to the write queue and takes a fresh (or spare) one. */
  #seal(): void {
    this.#queue.push(this.#block.subarray(0, this.#used));
    this.#block = this.#spare.pop() ?? new Uint8Array(this.#blockBytes);
    this.#used = 0;
  }

  async #pump(): Promise<void> {
    for (;;) {
      if (this.#queue.length === 0 && this.#flushAfterWrite && this.#used > 0) this.#seal();
      this.#flushAfterWrite = false;
      const block = this.#queue.shift();
      if (block === undefined) {
        if (this.#dropped === this.#reported || this.#failed) return;
        // The destination has caught up: say what it missed, once.
        const lost = this.#dropped - this.#reported;
        this.#reported = this.#dropped;
        this.add(
          `access log: ${lost} line${lost === 1 ? " was" : "s were"} dropped ` +
            "because the log destination did not keep up",
        );
        if (this.#used > 0) this.#seal();
        continue;
      }
      try {
        let at = 0;
        while (at < block.length) at += await this.#write(block.subarray(at));
      } catch {
        // The destination is gone (a closed pipe): count the lines that cannot be written.
        this.#failed = true;
        for (const lost of [block, ...this.#queue.splice(0)]) {
          for (const byte of lost) if (byte === 0x0a) this.#dropped++;
        }
        this.#pending = 0;
        return;
      }
      this.#pending -= block.length;
      if (block.buffer.byteLength === this.#blockBytes && this.#spare.length < 2) {
        this.#spare.push(new Uint8Array(block.buffer));
      }
    }
  }
}
