/**
 * The byte-level grammar of HTTP/1.1 (RFC 9110, RFC 9112), as lookup tables.
 *
 * Each table maps a byte (0-255) to 1 when the byte belongs to the class. The
 * parser and the response writer both check bytes against these tables, so
 * the grammar lives in one place. The ABNF each table implements is quoted
 * above it.
 *
 * @module
 */

function table(predicate: (byte: number) => boolean): Uint8Array {
  const t = new Uint8Array(256);
  for (let b = 0; b < 256; b++) t[b] = predicate(b) ? 1 : 0;
  return t;
}

const TCHAR_PUNCTUATION = "!#$%&'*+-.^_`|~";

/**
 * `tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
 *          "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA` (RFC 9110 section 5.6.2).
 * A `token` (method, header name) is `1*tchar`.
 */
export const TCHAR: Uint8Array = table((b) =>
  (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) ||
  TCHAR_PUNCTUATION.includes(String.fromCharCode(b))
);

/**
 * Bytes allowed inside a field value: `field-vchar = VCHAR / obs-text`, plus
 * SP and HTAB between them (RFC 9110 section 5.5). CR, LF, NUL and every other
 * control byte are excluded: a field carrying one is rejected, never cleaned.
 */
export const FIELD_VALUE_CHAR: Uint8Array = table((b) => b === 0x09 || (b >= 0x20 && b !== 0x7f));

/**
 * Bytes allowed in a request-target: printable US-ASCII (RFC 9112 section
 * 3.2 builds every target form from RFC 3986, whose URIs are ASCII; a
 * client percent-encodes anything else) but `#`, which starts a fragment,
 * and a fragment is never sent (RFC 9110 section 7.1).
 *
 * The few other printable characters that RFC 3986 leaves out (`"`, `<`,
 * `>`, `\`, `^`, the backtick, `{`, `|`, `}`) are let through: browsers
 * send several of them unencoded (the WHATWG URL Standard encodes none of
 * `{`, `|`, `}` and `^` in a query), and none changes how the target splits
 * into path and query.
 */
export const TARGET_CHAR: Uint8Array = table((b) => b > 0x20 && b < 0x7f && b !== 0x23);

/**
 * Bytes allowed in a `Host` value: `uri-host [ ":" port ]` with
 * `uri-host = IP-literal / IPv4address / reg-name` (RFC 3986 section 3.2.2):
 * unreserved, pct-encoded, sub-delims, and ":" "[" "]" for IP literals.
 */
export const HOST_CHAR: Uint8Array = table((b) =>
  (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5a) || (b >= 0x61 && b <= 0x7a) ||
  "-._~%!$&'()*+,;=:[]".includes(String.fromCharCode(b))
);

/** `HEXDIG` values: the digit's value, or -1 when the byte is not a hex digit. */
export const HEX_VALUE: Int8Array = (() => {
  const t = new Int8Array(256).fill(-1);
  for (let b = 0x30; b <= 0x39; b++) t[b] = b - 0x30;
  for (let b = 0x41; b <= 0x46; b++) t[b] = b - 0x41 + 10;
  for (let b = 0x61; b <= 0x66; b++) t[b] = b - 0x61 + 10;
  return t;
})();

/** Whether every character of `s` is a `tchar` (so `s` is a non-empty token). */
export function isToken(s: string): boolean {
  if (s.length === 0) return false;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || TCHAR[c] === 0) return false;
  }
  return true;
}

/**
 * Whether `s` can go on the wire as a field value: latin-1 only, no control
 * characters but HTAB (so no CR, LF or NUL), no leading or trailing space.
 */
export function isFieldValue(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c > 0xff || FIELD_VALUE_CHAR[c] === 0) return false;
  }
  return true;
}

/**
 * Decodes `bytes[start, end)` as latin-1 (ISO-8859-1): one UTF-16 code unit
 * per byte, byte-exact. `TextDecoder("latin1")` is windows-1252 and would
 * change bytes 0x80-0x9F, so it is not used.
 */
export function latin1(bytes: Uint8Array, start: number, end: number): string {
  const n = end - start;
  if (n <= 16) {
    let s = "";
    for (let i = start; i < end; i++) s += String.fromCharCode(bytes[i]!);
    return s;
  }
  if (n <= 4096) {
    return String.fromCharCode.apply(null, bytes.subarray(start, end) as unknown as number[]);
  }
  let s = "";
  for (let i = start; i < end; i += 4096) {
    s += String.fromCharCode.apply(
      null,
      bytes.subarray(i, Math.min(i + 4096, end)) as unknown as number[],
    );
  }
  return s;
}

/**
 * Whether `s` equals `lower` (given in lower case) ignoring ASCII case, without
 * allocating: how header names are matched on the hot path.
 */
export function equalsLower(s: string, lower: string): boolean {
  const n = s.length;
  if (n !== lower.length) return false;
  for (let i = 0; i < n; i++) {
    const c = s.charCodeAt(i);
    const t = lower.charCodeAt(i);
    if (c !== t && !(c >= 0x41 && c <= 0x5a && (c | 0x20) === t)) return false;
  }
  return true;
}

/**
 * ASCII lower-casing of `s`: only A-Z change. (`String.prototype.toLowerCase`
 * also maps latin-1 letters such as "À", which header-name matching must not.)
 */
export function asciiLower(s: string): string {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c >= 0x41 && c <= 0x5a) return s.replace(/[A-Z]+/g, (m) => m.toLowerCase());
  }
  return s;
}
