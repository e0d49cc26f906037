/**
 * `wsgi.file_wrapper` (PEP 3333, "Optional Platform-Specific File
 * Handling"), and the file body behind it: a response body that reads a
 * file-like object in blocks and closes it when the server is done with the
 * body.
 *
 * @module
 */

import type { Body, FileLike } from "../types.ts";

/** The block size when the application gives none. */
const DEFAULT_BLOCK_SIZE = 64 * 1024;

/**
 * An open file as a response body: at most `length` bytes (all of them by
 * default) from its current position, read `blockSize` at a time as the
 * server asks for them. The file is closed once: by `close()` (which the
 * server always calls), after the last block, or when iteration stops
 * early, whichever comes first. A file that ends sooner ends the body
 * sooner (with a `Content-Length` announced, the server then closes the
 * connection, so the client sees the truncation).
 */
class FileBody implements AsyncIterable<Uint8Array> {
  #file: FileLike | null;
  readonly #blockSize: number;
  readonly #length: number;

  constructor(file: FileLike, blockSize: number, length: number) {
    this.#file = file;
    this.#blockSize = blockSize;
    this.#length = length;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      let remaining = this.#length;
      while (remaining > 0) {
        const file = this.#file;
        if (file === null) return;
        // A fresh buffer per block: the server may still hold the previous one.
        const buf = new Uint8Array(Math.min(this.#blockSize, remaining));
        const n = await file.read(buf);
        if (n === null) return;
        remaining -= n;
        if (n > 0) yield n === buf.length ? buf : buf.subarray(0, n);
      }
    } finally {
      this.close();
    }
  }

  close(): void {
    const file = this.#file;
    this.#file = null;
    file?.close?.();
  }
}

/**
 * `length` bytes of `file` from its current position (all the rest when
 * `length` is omitted) as a response body, read in blocks of `blockSize`;
 * the file is closed when the body is done. `staticFiles` sends ranges
 * with it; {@linkcode fileWrapper} is it with checked arguments.
 */
export function fileBody(file: FileLike, blockSize: number, length = Infinity): Body {
  return new FileBody(file, blockSize, length);
}

/**
 * The server's `wsgi.file_wrapper`: wraps `file` (anything that reads into
 * a buffer, as an open `FsFile` does) as a response body that sends the
 * rest of the file, read in blocks of `blockSize` bytes, and closes the
 * file when the server calls the body's `close()`.
 *
 * @throws {TypeError} If `file` has no `read()` method.
 * @throws {RangeError} If `blockSize` is not a positive integer.
 */
export function fileWrapper(file: FileLike, blockSize: number = DEFAULT_BLOCK_SIZE): Body {
  if (typeof (file as Partial<FileLike> | null)?.read !== "function") {
    throw new TypeError("wsgi.file_wrapper: expected a file-like object with a read() method");
  }
  if (!Number.isInteger(blockSize) || blockSize <= 0) {
    throw new RangeError(
      `wsgi.file_wrapper: the block size must be a positive integer, got ${blockSize}`,
    );
  }
  return fileBody(file, blockSize);
}
