/**
 * `wsgi.file_wrapper` (PEP 3333, "Optional Platform-Specific File
 * Handling"): a response body that reads a file-like object in blocks and
 * closes it when the server is done with the body.
 *
 * @module
 */

import type { Body, FileLike } from "../mod.ts";

/** The block size when the application gives none. */
const DEFAULT_BLOCK_SIZE = 64 * 1024;

/**
 * The body {@linkcode fileWrapper} returns: the file's bytes from its
 * current position to its end, `blockSize` at a time. The file is closed
 * once: by `close()` (which the server always calls), or after the last
 * block, or when iteration stops early, whichever comes first.
 */
class FileWrapperBody implements AsyncIterable<Uint8Array> {
  #file: FileLike | null;
  readonly #blockSize: number;

  constructor(file: FileLike, blockSize: number) {
    this.#file = file;
    this.#blockSize = blockSize;
  }

  async *[Symbol.asyncIterator](): AsyncGenerator<Uint8Array> {
    try {
      for (;;) {
        const file = this.#file;
        if (file === null) return;
        // A fresh buffer per block: the server may still hold the previous one.
        const buf = new Uint8Array(this.#blockSize);
        const n = await file.read(buf);
        if (n === null) return;
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
  return new FileWrapperBody(file, blockSize);
}
