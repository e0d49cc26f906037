/**
 * Latin-1 text and bytes for tests: one character per byte, both ways. No
 * imports, so that the sans-IO tests (parser, fuzzer) can use it without the
 * server.
 */

/** The bytes of a string whose characters are all at most U+00FF; throws on any other. */
export function latin1Bytes(s: string): Uint8Array {
  const out = new Uint8Array(s.length);
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff) throw new RangeError(`Not a latin-1 character at ${i}: U+${c.toString(16)}`);
    out[i] = c;
  }
  return out;
}

/** A string with one character per byte. */
export function latin1String(b: Uint8Array): string {
  let s = "";
  // In slices: one string per 8 KiB, not one concatenation per byte.
  for (let i = 0; i < b.length; i += 8192) s += String.fromCharCode(...b.subarray(i, i + 8192));
  return s;
}
