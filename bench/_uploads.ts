/**
 * Chunked uploads for the benchmarks that read request bodies
 * (`micro_bench.ts`, `hardening.ts`).
 *
 * @module
 */

/**
 * A chunked `POST /upload` of `count` chunks of `size` bytes each, with
 * `extraHeaders` (whole lines, each ending in CRLF) after the framing.
 */
export function chunkedUpload(count: number, size: number, extraHeaders = ""): Uint8Array {
  const encoder = new TextEncoder();
  const chunk = encoder.encode(`${size.toString(16)}\r\n${"a".repeat(size)}\r\n`);
  const head = encoder.encode(
    `POST /upload HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n${extraHeaders}\r\n`,
  );
  const last = encoder.encode("0\r\n\r\n");
  const upload = new Uint8Array(head.length + count * chunk.length + last.length);
  upload.set(head);
  for (let i = 0; i < count; i++) upload.set(chunk, head.length + i * chunk.length);
  upload.set(last, upload.length - last.length);
  return upload;
}
