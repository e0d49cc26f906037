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

const MONTHS = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];

function pad2(n: number): string {
  return n < 10 ? `0${n}` : String(n);
}

/** The time strings of one second, computed once per second: lines of the same second share them. */
let cachedSecond = -1;
let cachedClf = "";
let cachedIso = "";
let cachedClfBytes = new Uint8Array(0);
let cachedIsoBytes = new Uint8Array(0);

function second(time: number): void {
  const s = Math.floor(time / 1000);
  if (s === cachedSecond) return;
  const date = new Date(s * 1000);
  cachedSecond = s;
  cachedClf = `[${pad2(date.getUTCDate())}/${MONTHS[date.getUTCMonth()]}/` +
    `${date.getUTCFullYear()}:${pad2(date.getUTCHours())}:${pad2(date.getUTCMinutes())}:` +
    `${pad2(date.getUTCSeconds())} +0000]`;
  cachedIso = date.toISOString().slice(0, 20); // "2026-11-30T21:16:46."
  cachedClfBytes = asciiBytes(cachedClf);
  cachedIsoBytes = asciiBytes(cachedIso);
}

/** The bytes of `text` (printable ASCII). */
function asciiBytes(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(text.length);
  for (let i = 0; i < text.length; i++) bytes[i] = text.charCodeAt(i);
  return bytes;
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

const HEX = "0123456789abcdef";

/** Writes `c` as `\xNN` (or, for JSON and beyond Latin-1, `\uNNNN`) at `at`; returns where it ends. */
function hexEscape(bytes: Uint8Array, at: number, c: number, json: boolean): number {
  bytes[at++] = 0x5c;
  if (c <= 0xff && !json) {
    bytes[at++] = 0x78; // x
  } else {
    bytes[at++] = 0x75; // u
    bytes[at++] = HEX.charCodeAt((c >> 12) & 15);
    bytes[at++] = HEX.charCodeAt((c >> 8) & 15);
  }
  bytes[at++] = HEX.charCodeAt((c >> 4) & 15);
  bytes[at++] = HEX.charCodeAt(c & 15);
  return at;
}

/**
 * One log line, written as bytes into a reused buffer: no string is built
 * per line, which is most of what a line would otherwise cost. Everything a
 * client sent goes through {@linkcode LineBytes.quoted} or
 * {@linkcode LineBytes.json}, which escape it.
 */
class LineBytes {
  bytes = new Uint8Array(1024);
  length = 0;

  #room(more: number): void {
    if (this.length + more <= this.bytes.length) return;
    const grown = new Uint8Array(Math.max(this.bytes.length * 2, this.length + more));
    grown.set(this.bytes.subarray(0, this.length));
    this.bytes = grown;
  }

  /** Text this module made (printable ASCII), as it is. */
  ascii(s: string): void {
    this.#room(s.length);
    const bytes = this.bytes;
    let at = this.length;
    for (let i = 0; i < s.length; i++) bytes[at++] = s.charCodeAt(i);
    this.length = at;
  }

  /** Bytes made once (a constant piece of a line, this second's time). */
  raw(piece: Uint8Array): void {
    this.#room(piece.length);
    const bytes = this.bytes;
    let at = this.length;
    for (let i = 0; i < piece.length; i++) bytes[at++] = piece[i]!;
    this.length = at;
  }

  /** A whole number, 0 or more (written digit by digit: no string per number). */
  int(n: number): void {
    if (n < 10) {
      this.#room(1);
      this.bytes[this.length++] = 0x30 + n;
      return;
    }
    if (!Number.isSafeInteger(n)) {
      this.ascii(String(n));
      return;
    }
    let digits = 1;
    for (let rest = n; rest >= 10; rest = Math.floor(rest / 10)) digits++;
    this.#room(digits);
    let at = this.length + digits;
    this.length = at;
    for (let rest = n; digits-- > 0; rest = Math.floor(rest / 10)) {
      this.bytes[--at] = 0x30 + rest % 10;
    }
  }

  /** Exactly three digits: `007`. */
  digits3(n: number): void {
    this.#room(3);
    const bytes = this.bytes;
    bytes[this.length++] = 0x30 + Math.floor(n / 100);
    bytes[this.length++] = 0x30 + Math.floor(n / 10) % 10;
    bytes[this.length++] = 0x30 + n % 10;
  }

  /** Milliseconds to the microsecond: `12.500`. */
  millis(ms: number): void {
    const micros = Math.round(Math.max(0, ms) * 1000);
    this.int(Math.floor(micros / 1000));
    this.ascii(".");
    this.digits3(micros % 1000);
  }

  /**
   * What a client sent, escaped as {@linkcode escapeForLog} escapes it (or,
   * for `json`, as a JSON string's contents): a client can neither end a
   * field nor start a line.
   */
  escaped(s: string, json = false): void {
    this.#room(s.length * 6);
    const bytes = this.bytes;
    let at = this.length;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x20 && c <= 0x7e && c !== 0x22 && c !== 0x5c) {
        bytes[at++] = c;
      } else if (c === 0x22 || c === 0x5c) {
        bytes[at++] = 0x5c;
        bytes[at++] = c;
      } else {
        at = hexEscape(bytes, at, c, json);
      }
    }
    this.length = at;
  }
}

/** The constant pieces of the formats, as bytes (`IDENTITY_FIELDS` are CLF's `%l %u`, unknown). */
const SPACE = asciiBytes(" ");
const IDENTITY_FIELDS = asciiBytes(" - - ");
const DASH = asciiBytes("-");
const OPEN_QUOTE = asciiBytes(' "');
const QUOTE_SPACE_QUOTE = asciiBytes('" "');
const CLOSE_QUOTE = asciiBytes('" ');

/** A json key as bytes, with what opens its value: `,"method":"` for a string, `,"method":null` for none. */
interface JsonKey {
  readonly string: Uint8Array;
  readonly null: Uint8Array;
}

function jsonKey(name: string): JsonKey {
  return { string: asciiBytes(`,"${name}":"`), null: asciiBytes(`,"${name}":null`) };
}

const TIME_KEY = asciiBytes('{"time":"');
const ZULU = asciiBytes('Z"');
const REMOTE_ADDR_KEY = jsonKey("remote_addr");
const METHOD_KEY = jsonKey("method");
const TARGET_KEY = jsonKey("target");
const PROTOCOL_KEY = jsonKey("protocol");
const STATUS_KEY = asciiBytes(',"status":');
const BYTES_KEY = asciiBytes(',"bytes":');
const DURATION_KEY = asciiBytes(',"duration_ms":');
const REFERER_KEY = jsonKey("referer");
const USER_AGENT_KEY = jsonKey("user_agent");
const QUOTE = asciiBytes('"');
const CLOSE_BRACE = asciiBytes("}");

/** Writes `,"key":"s"` (`s` escaped as a JSON string's contents), or `,"key":null`. */
function writeJsonField(line: LineBytes, key: JsonKey, s: string | null): void {
  if (s === null) {
    line.raw(key.null);
    return;
  }
  line.raw(key.string);
  line.escaped(s, true);
  line.raw(QUOTE);
}

/** Writes the Common Log Format fields of `entry`. */
function writeCommon(line: LineBytes, entry: AccessLogEntry): void {
  line.ascii(entry.remoteAddr ?? "-");
  line.raw(IDENTITY_FIELDS);
  second(entry.time);
  line.raw(cachedClfBytes);
  line.raw(OPEN_QUOTE);
  if (entry.method === null) {
    line.raw(DASH);
  } else {
    line.escaped(entry.method);
    line.raw(SPACE);
    line.escaped(entry.target ?? "-");
    line.raw(SPACE);
    line.escaped(entry.protocol ?? "-");
  }
  line.raw(CLOSE_QUOTE);
  line.int(entry.status);
  line.raw(SPACE);
  if (entry.bytes === 0) line.raw(DASH);
  else line.int(entry.bytes);
}

/** Writes `entry` as one line of `format`, without the line break. */
function writeEntry(line: LineBytes, format: AccessLogFormat, entry: AccessLogEntry): void {
  switch (format) {
    case "common":
      writeCommon(line, entry);
      return;
    case "combined":
      writeCommon(line, entry);
      line.raw(OPEN_QUOTE);
      line.escaped(entry.referer ?? "-");
      line.raw(QUOTE_SPACE_QUOTE);
      line.escaped(entry.userAgent ?? "-");
      line.raw(CLOSE_QUOTE);
      line.millis(entry.durationMs);
      return;
    case "json":
      line.raw(TIME_KEY);
      second(entry.time); // "2026-11-30T21:16:46."
      line.raw(cachedIsoBytes);
      line.digits3(Math.floor(entry.time) % 1000);
      line.raw(ZULU);
      writeJsonField(line, REMOTE_ADDR_KEY, entry.remoteAddr);
      writeJsonField(line, METHOD_KEY, entry.method);
      writeJsonField(line, TARGET_KEY, entry.target);
      writeJsonField(line, PROTOCOL_KEY, entry.protocol);
      line.raw(STATUS_KEY);
      line.int(entry.status);
      line.raw(BYTES_KEY);
      line.int(entry.bytes);
      line.raw(DURATION_KEY);
      line.millis(entry.durationMs);
      writeJsonField(line, REFERER_KEY, entry.referer);
      writeJsonField(line, USER_AGENT_KEY, entry.userAgent);
      line.raw(CLOSE_BRACE);
      return;
  }
}

/** The line every formatting reuses. */
const scratch = new LineBytes();
const decoder = new TextDecoder();

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
  scratch.length = 0;
  writeEntry(scratch, format, entry);
  return decoder.decode(scratch.bytes.subarray(0, scratch.length));
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
   * Adds one line of this module's own (ASCII; its line break is added);
   * starts a write once `flushBytes` are buffered.
   */
  add(line: string): void {
    scratch.length = 0;
    scratch.ascii(line);
    this.#addLine(scratch.bytes, scratch.length);
  }

  /** Adds `entry`, formatted as one line of `format` (see {@linkcode formatEntry}). */
  addEntry(format: AccessLogFormat, entry: AccessLogEntry): void {
    scratch.length = 0;
    writeEntry(scratch, format, entry);
    this.#addLine(scratch.bytes, scratch.length);
  }

  /**
   * Copies the first `length` bytes of `line` and a line break into the
   * block. A line longer than a block is cut to fit, so that it stays one
   * write.
   */
  #addLine(line: Uint8Array, length: number): void {
    let cut = false;
    if (length + 1 > this.#blockBytes) {
      length = this.#blockBytes - 4;
      cut = true;
    }
    const size = length + (cut ? 4 : 1);
    if (this.#failed || this.#pending + size > this.#maxPendingBytes) {
      this.#dropped++;
      return;
    }
    if (this.#used + size > this.#blockBytes) this.#seal();
    const block = this.#block;
    let at = this.#used;
    block.set(length === line.length ? line : line.subarray(0, length), at);
    at += length;
    if (cut) {
      block[at++] = 0x2e;
      block[at++] = 0x2e;
      block[at++] = 0x2e;
    }
    block[at++] = 0x0a;
    this.#used = at;
    this.#pending += size;
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
