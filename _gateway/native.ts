/**
 * Native strings (PEP 3333, "A Note On String Types"): a request's bytes held
 * in a string, one character per byte (latin-1, code units 0-255). These
 * helpers convert between native strings, bytes and Unicode text, byte-exact.
 *
 * @module
 */

import { HEX_VALUE, latin1 } from "../_h1/grammar.ts";

const utf8Decoder = new TextDecoder("utf-8", { fatal: true });
/** Replaces invalid sequences with U+FFFD; keeps no state between calls (no `stream`). */
const utf8LenientDecoder = new TextDecoder();
const utf8Encoder = new TextEncoder();

/**
 * Converts bytes to a native string: one character per byte.
 *
 * @example
 * ```ts
 * import { bytesToNative } from "./native.ts";
 * import { equal } from "node:assert/strict";
 * equal(bytesToNative(new Uint8Array([0x63, 0x61, 0x66, 0xc3, 0xa9])), "caf\u00c3\u00a9");
 * ```
 */
export function bytesToNative(bytes: Uint8Array): string {
  return latin1(bytes, 0, bytes.length);
}

/**
 * Converts a native string back to its bytes.
 *
 * @throws {RangeError} If a character is above U+00FF (not a native string).
 */
export function nativeToBytes(native: string): Uint8Array {
  const bytes = new Uint8Array(native.length);
  for (let i = 0; i < native.length; i++) {
    const c = native.charCodeAt(i);
    if (c > 0xff) {
      throw new RangeError(
        `Cannot convert to bytes: character U+${
          c.toString(16).toUpperCase().padStart(4, "0")
        } at index ${i} is not latin-1`,
      );
    }
    bytes[i] = c;
  }
  return bytes;
}

/**
 * Decodes a native string as UTF-8 text: what to do with `PATH_INFO` or a
 * header value to get the characters the client meant.
 *
 * @param fatal When true, invalid UTF-8 throws a `TypeError`; otherwise it
 * becomes U+FFFD.
 *
 * @example
 * ```ts
 * import { nativeToText } from "./native.ts";
 * import { equal } from "node:assert/strict";
 * equal(nativeToText("caf\u00c3\u00a9"), "café");
 * ```
 */
export function nativeToText(native: string, fatal = false): string {
  const bytes = nativeToBytes(native);
  return fatal ? utf8Decoder.decode(bytes) : utf8LenientDecoder.decode(bytes);
}

/**
 * Encodes text as UTF-8 and returns it as a native string: the inverse of
 * {@linkcode nativeToText}, e.g. to compare `PATH_INFO` with a Unicode path.
 *
 * @example
 * ```ts
 * import { textToNative } from "./native.ts";
 * import { equal } from "node:assert/strict";
 * equal(textToNative("café"), "caf\u00c3\u00a9");
 * ```
 */
export function textToNative(text: string): string {
  return bytesToNative(utf8Encoder.encode(text));
}

/**
 * Percent-decodes a native string to a native string: `%XX` becomes the byte
 * 0xXX, one character. A `%` not followed by two hex digits stays as it is
 * (as Python's `unquote` does). `+` is not a space here: that is a rule of
 * form data, not of paths.
 *
 * @example
 * ```ts
 * import { percentDecodeToNative } from "./native.ts";
 * import { equal } from "node:assert/strict";
 * equal(percentDecodeToNative("/caf%C3%A9%2Fx%zz"), "/caf\u00c3\u00a9/x%zz");
 * ```
 */
export function percentDecodeToNative(s: string): string {
  let at = s.indexOf("%");
  if (at < 0) return s;
  let out = "";
  let from = 0;
  while (at >= 0) {
    const hi = HEX_VALUE[s.charCodeAt(at + 1)] ?? -1;
    const lo = HEX_VALUE[s.charCodeAt(at + 2)] ?? -1;
    if (hi >= 0 && lo >= 0) {
      out += s.slice(from, at) + String.fromCharCode(hi * 16 + lo);
      from = at + 3;
      at = s.indexOf("%", from);
    } else {
      at = s.indexOf("%", at + 1);
    }
  }
  return out + s.slice(from);
}
