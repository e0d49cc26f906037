/**
 * A raw HTTP/1.1 client for tests: one connection, bytes written as given,
 * responses read as they arrive (Content-Length, chunked, or up to EOF) and
 * handed back parsed, with what follows them kept for the next read.
 */

import {
  concat,
  deadline,
  latin1Bytes,
  latin1String,
  TEST_DEADLINE_MS,
  writeAll,
} from "./_helpers.ts";

/** One response read from a {@linkcode Client}. Header names are lower-cased. */
export interface WireResponse {
  status: number;
  reason: string;
  headers: Map<string, string>;
  /** The head as sent, status line included, without the final CRLF CRLF. */
  head: string;
  /** The decoded body bytes. */
  body: Uint8Array;
  /** The body as a latin-1 string. */
  text: string;
}

/** CR LF, as bytes. */
export const CRLF: Uint8Array = latin1Bytes("\r\n");
const CRLFCRLF = latin1Bytes("\r\n\r\n");

export function indexOfBytes(haystack: Uint8Array, needle: Uint8Array, from = 0): number {
  const last = haystack.length - needle.length;
  outer: for (let i = from; i <= last; i++) {
    for (let j = 0; j < needle.length; j++) {
      if (haystack[i + j] !== needle[j]) continue outer;
    }
    return i;
  }
  return -1;
}

/**
 * Parses one response at the start of `buf`. Returns `null` when more bytes
 * are needed; a body without framing runs to EOF.
 */
function parseOne(
  buf: Uint8Array,
  isHead: boolean,
  eof: boolean,
): { response: WireResponse; consumed: number } | null {
  const end = indexOfBytes(buf, CRLFCRLF);
  if (end < 0) return null;
  const head = latin1String(buf.subarray(0, end));
  const lines = head.split("\r\n");
  const m = /^HTTP\/1\.1 (\d{3}) ?(.*)$/.exec(lines[0]!);
  if (m === null) throw new Error(`Bad status line: ${JSON.stringify(lines[0])}`);
  const status = Number(m[1]);
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon).toLowerCase();
    const value = line.slice(colon + 1).trim();
    headers.set(name, headers.has(name) ? `${headers.get(name)}, ${value}` : value);
  }
  let at = end + 4;
  let body: Uint8Array;
  if (isHead || status < 200 || status === 204 || status === 304) {
    body = new Uint8Array(0);
  } else if (headers.get("transfer-encoding") === "chunked") {
    const parts: Uint8Array[] = [];
    for (;;) {
      const lineEnd = indexOfBytes(buf, CRLF, at);
      if (lineEnd < 0) return null;
      const size = parseInt(latin1String(buf.subarray(at, lineEnd)).split(";")[0]!, 16);
      if (Number.isNaN(size)) throw new Error("Bad chunk size line");
      at = lineEnd + 2;
      if (size === 0) {
        // Trailer fields, then an empty line.
        for (;;) {
          const trailerEnd = indexOfBytes(buf, CRLF, at);
          if (trailerEnd < 0) return null;
          const empty = trailerEnd === at;
          at = trailerEnd + 2;
          if (empty) break;
        }
        break;
      }
      if (buf.length < at + size + 2) return null;
      parts.push(buf.subarray(at, at + size));
      at += size + 2;
    }
    body = concat(parts);
  } else if (headers.has("content-length")) {
    const n = Number(headers.get("content-length"));
    if (buf.length < at + n) return null;
    body = buf.slice(at, at + n);
    at += n;
  } else {
    if (!eof) return null;
    body = buf.slice(at);
    at = buf.length;
  }
  return {
    response: { status, reason: m[2]!, headers, head, body, text: latin1String(body) },
    consumed: at,
  };
}

/** A raw HTTP/1.1 client on one connection, reading responses as they arrive. */
export class Client implements Disposable {
  readonly conn: Deno.Conn;
  #buf: Uint8Array = new Uint8Array(0);
  #eof = false;
  #closed = false;

  private constructor(conn: Deno.Conn) {
    this.conn = conn;
  }

  static async open(port: number): Promise<Client> {
    return new Client(await Deno.connect({ hostname: "127.0.0.1", port }));
  }

  /** Bytes received and not yet consumed. */
  get buffered(): Uint8Array {
    return this.#buf;
  }

  async send(data: string | Uint8Array): Promise<void> {
    await writeAll(this.conn, typeof data === "string" ? latin1Bytes(data) : data);
  }

  /**
   * Reads once more; false at EOF (or a reset, which ends the stream too).
   * Fails, closing the connection, if nothing comes within
   * {@linkcode TEST_DEADLINE_MS}.
   */
  async fill(): Promise<boolean> {
    if (this.#eof) return false;
    const chunk = new Uint8Array(64 * 1024);
    let n: number | null;
    try {
      n = await deadline(TEST_DEADLINE_MS, this.conn.read(chunk), "A read", () => this.close());
    } catch (error) {
      if (error instanceof Deno.errors.ConnectionReset) n = null;
      else throw error;
    }
    if (n === null) {
      this.#eof = true;
      return false;
    }
    this.#buf = concat([this.#buf, chunk.subarray(0, n)]);
    return true;
  }

  /** Reads exactly `n` bytes; throws at EOF before that. */
  async readExact(n: number): Promise<Uint8Array> {
    while (this.#buf.length < n) {
      if (!await this.fill()) {
        throw new Error(
          `EOF after ${this.#buf.length} of ${n} bytes: ${JSON.stringify(latin1String(this.#buf))}`,
        );
      }
    }
    const out = this.#buf.slice(0, n);
    this.#buf = this.#buf.subarray(n);
    return out;
  }

  /** Reads until the received bytes contain `marker` (or EOF); returns whether they do. */
  async readUntil(marker: string): Promise<boolean> {
    const needle = latin1Bytes(marker);
    while (indexOfBytes(this.#buf, needle) < 0) {
      if (!await this.fill()) return false;
    }
    return true;
  }

  /** Reads one complete response; throws if the connection ends before it is complete. */
  async readResponse(options: { head?: boolean } = {}): Promise<WireResponse> {
    for (;;) {
      const parsed = parseOne(this.#buf, options.head ?? false, this.#eof);
      if (parsed !== null) {
        this.#buf = this.#buf.subarray(parsed.consumed);
        return parsed.response;
      }
      if (this.#eof) {
        throw new Error(
          `Connection ended inside a response: ${
            JSON.stringify(latin1String(this.#buf).slice(0, 400))
          }`,
        );
      }
      await this.fill();
    }
  }

  /** Reads until EOF and returns everything not yet consumed. */
  async readToEnd(): Promise<Uint8Array> {
    while (await this.fill());
    const out = this.#buf;
    this.#buf = new Uint8Array(0);
    return out;
  }

  /** Whether the server closes the connection without sending anything more. */
  async endsWithoutData(): Promise<boolean> {
    return (await this.readToEnd()).length === 0;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.conn.close();
    } catch {
      // Already closed.
    }
  }

  [Symbol.dispose](): void {
    this.close();
  }
}
