/**
 * `wsgi.input`: a file-like reader over a request body that arrives in
 * pieces. It has no idea of sockets or framing: it pulls decoded body pieces
 * from a {@linkcode BodySource} only when the application asks for more than
 * it holds, so memory stays bounded by what the application requests.
 *
 * @module
 */

import type { InputStream } from "../types.ts";

/** Where a {@linkcode BodyReader} gets the body from. */
export interface BodySource {
  /**
   * Resolves to the next piece of the body, which the reader then owns, or
   * `null` once the body has ended. Rejects if the body cannot be read
   * (disconnect, timeout, framing error, body too large).
   */
  pull(): Promise<Uint8Array | null>;
  /**
   * Optional: how many body bytes {@linkcode BodySource.readInto} can
   * deliver right now, straight from the transport (0: none, use `pull`).
   */
  directBytes?(): number;
  /**
   * Optional: fills the start of `dest` with body bytes read straight from
   * the transport, at most `directBytes()` of them; resolves to how many.
   * Rejects as `pull` does.
   */
  readInto?(dest: Uint8Array): Promise<number>;
}

const EMPTY = new Uint8Array(0);
/**
 * Reads that would take at least this much straight from the transport skip
 * the pieces: the bytes go from the socket into the array the application
 * gets, with no copy in between.
 */
const DIRECT_READ_MIN = 16 * 1024;
/** The queue of pieces is compacted once at least this many, and half of it, are read. */
const COMPACT_MIN = 1024;
const LF = 0x0a;

/**
 * A {@linkcode InputStream} over a {@linkcode BodySource}.
 *
 * @example
 * ```ts
 * import { BodyReader } from "./input.ts";
 * import { deepEqual } from "node:assert/strict";
 * const pieces = [new TextEncoder().encode("a\nbc"), new TextEncoder().encode("\nd")];
 * const input = new BodyReader({ pull: () => Promise.resolve(pieces.shift() ?? null) });
 * const lines = await input.readlines();
 * deepEqual(lines.map((l) => new TextDecoder().decode(l)), ["a\n", "bc\n", "d"]);
 * ```
 */
export class BodyReader implements InputStream {
  readonly #source: BodySource;
  /**
   * Body pieces received and not yet read, as a queue: the unread ones are
   * `#chunks[#head]` onwards, the first of them read up to `#offset`. Taking
   * a piece moves `#head` instead of shifting the array (which moves every
   * element left), so a body of many tiny pieces costs time in proportion to
   * its pieces, not to their square.
   */
  #chunks: Uint8Array[] = [];
  #head = 0;
  #offset = 0;
  #available = 0;
  /**
   * How far the search for a line end has got: the first `#scanned`
   * available bytes hold no LF, and they end at byte `#scanAt` of
   * `#chunks[#scanChunk]`. A `#scanChunk` before `#head` means the search
   * starts afresh at the read position. A line that arrives in many pieces
   * is searched once.
   */
  #scanned = 0;
  #scanChunk = -1;
  #scanAt = 0;
  #ended = false;
  #busy = false;
  #bytesRead = 0;

  constructor(source: BodySource) {
    this.#source = source;
  }

  /** Bytes handed to the application so far. */
  get bytesRead(): number {
    return this.#bytesRead;
  }

  async #fill(): Promise<boolean> {
    if (this.#ended) return false;
    const piece = await this.#source.pull();
    if (piece === null) {
      this.#ended = true;
      return false;
    }
    if (piece.length > 0) {
      this.#chunks.push(piece);
      this.#available += piece.length;
    }
    return true;
  }

  /** Drops the first unread piece, once it is read to its end. */
  #dropHead(): void {
    const chunks = this.#chunks;
    // Let the piece's memory go now, not when the queue is next compacted.
    chunks[this.#head++] = EMPTY;
    this.#offset = 0;
    if (this.#head === chunks.length) {
      chunks.length = 0;
      this.#head = 0;
      this.#scanChunk = -1;
    } else if (this.#head >= COMPACT_MIN && this.#head * 2 >= chunks.length) {
      // Read pieces make up half the queue: copying the unread half away
      // costs at most as much as the pieces read since the last time.
      this.#chunks = chunks.slice(this.#head);
      this.#scanChunk -= this.#head;
      this.#head = 0;
    }
  }

  /** Removes and returns the first `n` available bytes. */
  #take(n: number): Uint8Array {
    if (n === 0) return EMPTY;
    this.#available -= n;
    this.#bytesRead += n;
    if (n <= this.#scanned) {
      this.#scanned -= n;
    } else {
      this.#scanned = 0;
      this.#scanChunk = -1;
    }
    const first = this.#chunks[this.#head]!;
    if (first.length - this.#offset >= n) {
      const out = first.subarray(this.#offset, this.#offset + n);
      this.#offset += n;
      if (this.#offset === first.length) this.#dropHead();
      return out;
    }
    const out = new Uint8Array(n);
    let at = 0;
    while (at < n) {
      const chunk = this.#chunks[this.#head]!;
      const part = Math.min(chunk.length - this.#offset, n - at);
      out.set(chunk.subarray(this.#offset, this.#offset + part), at);
      at += part;
      this.#offset += part;
      if (this.#offset === chunk.length) this.#dropHead();
    }
    return out;
  }

  /** Reads `total` bytes into one new array: what is held here, then the rest straight from the source. */
  async #readDirect(total: number): Promise<Uint8Array> {
    const out = new Uint8Array(total);
    const held = this.#available;
    if (held > 0) out.set(this.#take(held));
    let filled = held;
    while (filled < total) {
      const n = await this.#source.readInto!(out.subarray(filled));
      if (n === 0) break;
      filled += n;
      this.#bytesRead += n;
    }
    return filled === total ? out : out.subarray(0, filled);
  }

  /** The index (among available bytes) of the first LF, or -1; never searches a byte twice. */
  #indexOfLf(): number {
    const chunks = this.#chunks;
    if (this.#scanChunk < this.#head) {
      // The read position has caught up with the search: start afresh there.
      this.#scanChunk = this.#head;
      this.#scanAt = this.#offset;
      this.#scanned = 0;
    }
    for (let c = this.#scanChunk; c < chunks.length; c++) {
      const chunk = chunks[c]!;
      const from = c === this.#scanChunk ? this.#scanAt : 0;
      const i = chunk.indexOf(LF, from);
      this.#scanChunk = c;
      if (i >= 0) {
        this.#scanAt = i;
        this.#scanned += i - from;
        return this.#scanned;
      }
      this.#scanAt = chunk.length;
      this.#scanned += chunk.length - from;
    }
    return -1;
  }

  async #exclusive<T>(work: () => Promise<T>): Promise<T> {
    if (this.#busy) {
      throw new Error("Cannot read wsgi.input: another read has not finished");
    }
    this.#busy = true;
    try {
      return await work();
    } finally {
      this.#busy = false;
    }
  }

  /** Reads at most `size` bytes, or all that is left when `size` is omitted or negative. */
  read(size?: number): Promise<Uint8Array> {
    const want = size === undefined || size < 0 ? Infinity : size;
    return this.#exclusive(async () => {
      while (this.#available < want) {
        const direct = this.#source.directBytes?.() ?? 0;
        if (direct > 0) {
          const total = Math.min(want, this.#available + direct);
          if (total - this.#available >= DIRECT_READ_MIN) return await this.#readDirect(total);
        }
        if (!await this.#fill()) break;
      }
      return this.#take(Math.min(want, this.#available));
    });
  }

  /** Reads one line, including its `\n`, or at most `size` bytes of it. */
  readline(size?: number): Promise<Uint8Array> {
    return this.#exclusive(async () => {
      const limit = size === undefined || size < 0 ? Infinity : size;
      for (;;) {
        const lf = this.#indexOfLf();
        if (lf >= 0 && lf < limit) return this.#take(lf + 1);
        if (this.#available >= limit) return this.#take(limit);
        if (!await this.#fill()) return this.#take(this.#available);
      }
    });
  }

  /** Reads lines until the end, or until about `hint` bytes were read. */
  async readlines(hint?: number): Promise<Uint8Array[]> {
    const lines: Uint8Array[] = [];
    let total = 0;
    for (;;) {
      const line = await this.readline();
      if (line.length === 0) return lines;
      lines.push(line);
      total += line.length;
      if (hint !== undefined && hint > 0 && total >= hint) return lines;
    }
  }

  /** Yields the body line by line. */
  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const line = await this.readline();
      if (line.length === 0) return;
      yield line;
    }
  }
}
