/**
 * Turns for large response writes across all of a server's connections, so
 * that one connection's large body, or many slow readers' bodies, cannot
 * hold the event loop while other clients wait. Part of the I/O shell
 * (`server.ts`); it touches no socket, only the clock and one timer.
 *
 * @module
 */

/**
 * How long large writes may run between two turns of the event loop: long
 * enough that a lone large download keeps most of its speed, short enough
 * that other clients wait about this long at most.
 */
export const WRITE_SLICE_MS = 10;

/**
 * The slice once at least {@linkcode CROWD} connections have written in it:
 * many connections streaming at once (slow readers filling their socket
 * buffers, say) take the event loop in short turns, so that the others are
 * served between them.
 */
export const CROWDED_WRITE_SLICE_MS = 1;

/** Connections writing in one slice that make it a crowded one. */
export const CROWD = 8;

/**
 * A pause this long in large writes, while none of them is unfinished,
 * left the event loop to the others: a new slice starts without a turn.
 */
export const WRITE_PAUSE_MS = 10;

/** A connection as {@linkcode WriteScheduler} counts it: the last slice it wrote in. */
export interface Writer {
  writeSlice: number;
}

/**
 * Takes turns for large writes, one write per turn.
 *
 * Deno issues a write at once: when the socket has room, the call copies the
 * bytes before it returns; when it has none, Deno completes the write later,
 * inside its event loop. Either way the event loop does not go idle, and
 * Deno reads the sockets of other connections mostly when it does. Unchecked,
 * a connection streaming a large body to a fast reader kept other clients
 * waiting 200 ms, and two hundred slow readers filling their socket buffers
 * kept them waiting for a second.
 *
 * So large writes run in slices. Once writes have been issued for a slice,
 * every writer waits for a timer, and the event loop, with no new write to
 * do meanwhile, serves everyone else; then the writers take a turn each, in
 * order of arrival. A slice ends only at such a turn of the event loop, or
 * after a pause in large writes while none of them is unfinished. A pause
 * while some are unfinished is not a turn: Deno may spend it completing
 * them. (Two hundred slow readers, whose writes wait for room most of the
 * time, kept other clients waiting 200 ms through pauses like that.) A turn
 * that wakes the loop at once, a microtask, `setImmediate` or a thread-pool
 * job, was measured not to let the others in; Deno's `setTimeout(0)` fires
 * after about 2 ms.
 *
 * A writer holds its turn only while its write is issued, never while the
 * write waits for room in its socket. nginx bounds a single `sendfile()`
 * call by `sendfile_max_chunk` for the same reason.
 *
 * @example One write's turn
 * ```ts
 * import { WriteScheduler } from "./write_scheduler.ts";
 *
 * using scheduler = new WriteScheduler();
 * const writer = { writeSlice: -1 };
 * const write = async (conn: { write(bytes: Uint8Array): Promise<number> }, bytes: Uint8Array) => {
 *   await scheduler.begin();
 *   let written;
 *   try {
 *     written = conn.write(bytes);
 *   } finally {
 *     scheduler.issued(writer);
 *   }
 *   try {
 *     return await written;
 *   } finally {
 *     scheduler.finished();
 *   }
 * };
 * await write({ write: (bytes) => Promise.resolve(bytes.length) }, new Uint8Array(65536));
 * ```
 */
export class WriteScheduler implements Disposable {
  readonly #now: () => number;
  /** Writers waiting for their turn, first come first served (one per connection at most). */
  readonly #queue: (() => void)[] = [];
  /** Whether a writer has the turn, or the event loop has it. */
  #busy = false;
  /** The current slice: its number, when it began, and how many connections wrote in it. */
  #slice = 0;
  #sliceStart: number;
  #writers = 0;
  /** Writes issued and not yet complete, and when one was last issued or completed. */
  #unfinished = 0;
  #lastActivity = -Infinity;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** `now` is the clock in milliseconds (`performance.now()`; tests pass their own). */
  constructor(now: () => number = () => performance.now()) {
    this.#now = now;
    this.#sliceStart = now();
  }

  /**
   * Resolves when the caller may issue its write (`undefined`: at once).
   * The caller then calls {@linkcode WriteScheduler.issued} as soon as the
   * write is issued, and {@linkcode WriteScheduler.finished} once it
   * completes or fails.
   */
  begin(): Promise<void> | undefined {
    if (this.#busy || this.#queue.length > 0) {
      return new Promise((resolve) => this.#queue.push(resolve));
    }
    const now = this.#now();
    if (this.#unfinished === 0 && now - this.#lastActivity >= WRITE_PAUSE_MS) this.#newSlice(now);
    if (this.#sliceOver(now)) {
      const turn = new Promise<void>((resolve) => this.#queue.push(resolve));
      this.#yield();
      return turn;
    }
    this.#busy = true;
    return undefined;
  }

  /** Ends `writer`'s turn, its write issued: passes the turn on, or gives the event loop its turn. */
  issued(writer: Writer): void {
    const now = this.#now();
    this.#unfinished++;
    this.#lastActivity = now;
    if (writer.writeSlice !== this.#slice) {
      writer.writeSlice = this.#slice;
      this.#writers++;
    }
    if (this.#queue.length === 0) {
      this.#busy = false;
    } else if (!this.#sliceOver(now)) {
      this.#queue.shift()!();
    } else {
      this.#yield();
    }
  }

  /** Records that a write issued in a turn has completed or failed. */
  finished(): void {
    this.#unfinished--;
    this.#lastActivity = this.#now();
  }

  #newSlice(now: number): void {
    this.#slice++;
    this.#sliceStart = now;
    this.#writers = 0;
  }

  #sliceOver(now: number): boolean {
    const length = this.#writers >= CROWD ? CROWDED_WRITE_SLICE_MS : WRITE_SLICE_MS;
    return now - this.#sliceStart >= length;
  }

  #yield(): void {
    this.#busy = true;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      this.#newSlice(this.#now());
      const next = this.#queue.shift();
      if (next === undefined) this.#busy = false;
      else next();
    }, 0);
  }

  /** Lets every waiting writer go (their connections are closed) and cancels the timer. */
  [Symbol.dispose](): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    for (const next of this.#queue.splice(0)) next();
    this.#busy = false;
  }
}
