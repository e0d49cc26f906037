/**
 * `proxyFix()`: trust the `X-Forwarded-*` headers that a reverse proxy adds
 * (and, when asked, the standard `Forwarded` header), but only when the
 * request really comes from that proxy (werkzeug's `ProxyFix`, with an
 * allow-list of proxy addresses).
 *
 * @module
 */

import type { Application } from "../types.ts";
import { isToken } from "../_h1/grammar.ts";
import { percentDecodeToNative } from "../_gateway/native.ts";
import { pathPrefixProblem } from "../options.ts";

/** Options of {@linkcode proxyFix}. */
export interface ProxyFixOptions {
  /**
   * The proxies whose headers are believed: IPv4 or IPv6 addresses
   * (`"127.0.0.1"`, `"::1"`) or CIDR ranges (`"10.0.0.0/8"`, `"fd00::/8"`).
   * An IPv4-mapped IPv6 peer (`"::ffff:10.1.2.3"`) matches as its IPv4
   * address. The word `"unix"` trusts peers without a `REMOTE_ADDR` (a
   * Unix-socket listener, where only a local proxy can connect). Only the
   * direct peer (`REMOTE_ADDR`) is checked.
   */
  readonly trustedProxies: readonly string[];
  /**
   * How many proxies append to `X-Forwarded-For` (and `Forwarded: for=`,
   * with `forwarded`): the client address is that many entries from the
   * right. `0` ignores it.
   *
   * @default {1}
   */
  readonly forwardedFor?: number;
  /**
   * How many proxies set `X-Forwarded-Proto` (and `Forwarded: proto=`, with
   * `forwarded`). `0` ignores it.
   *
   * @default {1}
   */
  readonly forwardedProto?: number;
  /**
   * How many proxies set `X-Forwarded-Host` (and `Forwarded: host=`, with
   * `forwarded`). `0` ignores it: most proxies pass the client's `Host`
   * through already.
   *
   * @default {0}
   */
  readonly forwardedHost?: number;
  /**
   * How many proxies set `X-Forwarded-Prefix`, the path prefix a proxy
   * stripped before forwarding. `0` ignores it.
   *
   * @default {0}
   */
  readonly forwardedPrefix?: number;
  /**
   * Whether to honour the standard `Forwarded` header (RFC 7239). When it is
   * honoured and present, it is the only source of the client address,
   * scheme and host: `X-Forwarded-For`, `-Proto` and `-Host` are then
   * ignored.
   *
   * Turn it on only when your proxy sets `Forwarded` itself, replacing any
   * the client sent. Most proxies (nginx, for one) set `X-Forwarded-*` and
   * pass a client's `Forwarded` through untouched: honouring it there would
   * let any client choose its `REMOTE_ADDR` and `wsgi.url_scheme`.
   *
   * @default {false}
   */
  readonly forwarded?: boolean;
}

/** The environ values that {@linkcode proxyFix} may replace, as they were before. */
export interface ProxyFixOriginal {
  /** `REMOTE_ADDR` as the server set it: the proxy's address. */
  readonly REMOTE_ADDR: string | undefined;
  /** `wsgi.url_scheme` as the server set it. */
  readonly "wsgi.url_scheme": string;
  /** `HTTP_HOST` as the proxy sent it. */
  readonly HTTP_HOST: string | undefined;
  /** `SERVER_NAME` as the server set it. */
  readonly SERVER_NAME: string;
  /** `SERVER_PORT` as the server set it. */
  readonly SERVER_PORT: string;
  /** `SCRIPT_NAME` as the server set it. */
  readonly SCRIPT_NAME: string;
}

/** An address or a network: the first `bits` bits of `bytes` (4 or 16 bytes). */
interface Network {
  readonly bytes: Uint8Array;
  readonly bits: number;
}

/** Parses a dotted-quad IPv4 address (no leading zeros, which some read as octal), or `null`. */
function parseIPv4(s: string): Uint8Array | null {
  const parts = s.split(".");
  if (parts.length !== 4) return null;
  const out = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const p = parts[i]!;
    if (!/^(0|[1-9]\d{0,2})$/.test(p)) return null;
    const n = Number(p);
    if (n > 255) return null;
    out[i] = n;
  }
  return out;
}

/** Parses the 16-bit groups of one side of `::`, or `null`. */
function parseGroups(s: string, allowIPv4Tail: boolean): number[] | null {
  if (s === "") return [];
  const parts = s.split(":");
  const groups: number[] = [];
  for (let i = 0; i < parts.length; i++) {
    const p = parts[i]!;
    if (allowIPv4Tail && i === parts.length - 1 && p.includes(".")) {
      const v4 = parseIPv4(p);
      if (v4 === null) return null;
      groups.push((v4[0]! << 8) | v4[1]!, (v4[2]! << 8) | v4[3]!);
    } else {
      if (!/^[0-9A-Fa-f]{1,4}$/.test(p)) return null;
      groups.push(parseInt(p, 16));
    }
  }
  return groups;
}

/** Parses an IPv6 address (RFC 4291 text forms; a `%zone` is dropped), or `null`. */
function parseIPv6(s: string): Uint8Array | null {
  const zone = s.indexOf("%");
  if (zone >= 0) {
    if (!/^[A-Za-z0-9._~-]+$/.test(s.slice(zone + 1))) return null;
    s = s.slice(0, zone);
  }
  const gap = s.indexOf("::");
  let groups: number[];
  if (gap < 0) {
    const all = parseGroups(s, true);
    if (all === null || all.length !== 8) return null;
    groups = all;
  } else {
    if (s.indexOf("::", gap + 1) >= 0) return null;
    const head = parseGroups(s.slice(0, gap), false);
    const tail = parseGroups(s.slice(gap + 2), true);
    if (head === null || tail === null || head.length + tail.length > 7) return null;
    groups = [...head, ...new Array<number>(8 - head.length - tail.length).fill(0), ...tail];
  }
  const out = new Uint8Array(16);
  for (let i = 0; i < 8; i++) {
    out[2 * i] = groups[i]! >> 8;
    out[2 * i + 1] = groups[i]! & 0xff;
  }
  return out;
}

/** An IPv4-mapped IPv6 address (`::ffff:a.b.c.d`) becomes its IPv4 address. */
function unmap(bytes: Uint8Array): Uint8Array {
  if (bytes.length !== 16 || bytes[10] !== 0xff || bytes[11] !== 0xff) return bytes;
  for (let i = 0; i < 10; i++) if (bytes[i] !== 0) return bytes;
  return bytes.slice(12);
}

/** Parses an IPv4 or IPv6 address, or `null`. */
function parseIp(s: string): Uint8Array | null {
  return s.includes(":") ? parseIPv6(s) : parseIPv4(s);
}

/** Parses `"addr"` or `"addr/bits"`; throws a `TypeError` naming the bad entry. */
function parseNetwork(entry: string): Network {
  const slash = entry.indexOf("/");
  const addr = slash < 0 ? entry : entry.slice(0, slash);
  const raw = parseIp(addr);
  if (raw === null) {
    throw new TypeError(
      `Invalid trusted proxy ${JSON.stringify(entry)}: expected an IP address or a CIDR range`,
    );
  }
  const max = raw.length * 8;
  let bits = max;
  if (slash >= 0) {
    const suffix = entry.slice(slash + 1);
    bits = /^\d{1,3}$/.test(suffix) ? Number(suffix) : NaN;
    if (!(bits <= max)) {
      throw new TypeError(
        `Invalid trusted proxy ${JSON.stringify(entry)}: the prefix length must be 0 to ${max}`,
      );
    }
  }
  // "::ffff:10.0.0.0/104" is the IPv4 network 10.0.0.0/8.
  const bytes = unmap(raw);
  if (bytes.length === 4 && raw.length === 16) {
    if (bits < 96) return { bytes: raw, bits };
    bits -= 96;
  }
  return { bytes, bits };
}

function contains(network: Network, address: Uint8Array): boolean {
  if (network.bytes.length !== address.length) return false;
  const full = network.bits >> 3;
  for (let i = 0; i < full; i++) if (network.bytes[i] !== address[i]) return false;
  const rest = network.bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return (network.bytes[full]! & mask) === (address[full]! & mask);
}

/** The `n`-th value from the right of a comma-separated list header, or `null` if there are fewer. */
function fromRight(value: unknown, n: number): string | null {
  if (n <= 0 || typeof value !== "string" || value === "") return null;
  const values = value.split(",");
  if (values.length < n) return null;
  return values[values.length - n]!.trim();
}

const OBFUSCATED = /^_[A-Za-z0-9._-]+$/;

/**
 * The IP address of a `node` (RFC 7239 section 6): `IPv4`, `[IPv6]` or a bare
 * IPv6 address, with an optional `:port`. `null` for `unknown`, obfuscated
 * identifiers (`_hidden`) and anything malformed.
 */
function nodeAddress(node: string): string | null {
  let host = node;
  let port: string | null = null;
  if (node.startsWith("[")) {
    const close = node.indexOf("]");
    if (close < 0) return null;
    host = node.slice(1, close);
    const after = node.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) return null;
      port = after.slice(1);
    }
    if (!host.includes(":") || parseIPv6(host) === null) return null;
  } else if (parseIPv6(node) !== null) {
    return node; // bare IPv6, as X-Forwarded-For carries it
  } else {
    const colon = node.indexOf(":");
    if (colon >= 0) {
      host = node.slice(0, colon);
      port = node.slice(colon + 1);
    }
    if (parseIPv4(host) === null) return null;
  }
  if (port !== null && !/^\d{1,5}$/.test(port) && !OBFUSCATED.test(port)) return null;
  return host;
}

/** `host[:port]` as a `Host` header may carry it: a DNS name, IPv4 or `[IPv6]`, and a port. */
function splitHost(value: string): [name: string, port: string | null] | null {
  let name = value;
  let port: string | null = null;
  if (value.startsWith("[")) {
    const close = value.indexOf("]");
    if (close < 0 || parseIPv6(value.slice(1, close)) === null) return null;
    name = value.slice(0, close + 1);
    const after = value.slice(close + 1);
    if (after !== "") {
      if (!after.startsWith(":")) return null;
      port = after.slice(1);
    }
  } else {
    const colon = value.indexOf(":");
    if (colon >= 0) {
      name = value.slice(0, colon);
      port = value.slice(colon + 1);
    }
    if (!/^[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?\.?$/.test(name)) return null;
  }
  if (port !== null && !(/^\d{1,5}$/.test(port) && Number(port) <= 65535)) return null;
  return [name, port];
}

/** Whether `s` has a control character (C0 or DEL), HTAB excepted when `allowTab`. */
function hasControl(s: string, allowTab: boolean): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if ((c < 0x20 && !(allowTab && c === 0x09)) || c === 0x7f) return true;
  }
  return false;
}

/**
 * A `X-Forwarded-Prefix` value as a `SCRIPT_NAME` prefix: percent-decoded,
 * a trailing `/` dropped, then a path prefix by the same rule as the
 * `scriptName` option (`pathPrefixProblem`). `""` for `/`; `null` when
 * invalid.
 */
function parsePrefix(value: string): string | null {
  const decoded = percentDecodeToNative(value);
  const prefix = decoded.endsWith("/") ? decoded.slice(0, -1) : decoded;
  if (prefix === "" && decoded === "/") return "";
  return pathPrefixProblem(prefix) === null ? prefix : null;
}

/**
 * Parses a `Forwarded` header (RFC 7239 section 4) into its elements, one
 * map of lower-cased parameter names to values per proxy, in order. Returns
 * `null` when the header is malformed anywhere (a bad token, an unterminated
 * quoted string, a repeated parameter): then nothing in it is believed.
 */
function parseForwarded(header: string): Map<string, string>[] | null {
  const elements: Map<string, string>[] = [];
  let element = new Map<string, string>();
  let i = 0;
  const n = header.length;
  const skipSpace = () => {
    while (i < n && (header[i] === " " || header[i] === "\t")) i++;
  };
  for (;;) {
    skipSpace();
    if (i < n && header[i] !== "," && header[i] !== ";") {
      // forwarded-pair = token "=" value
      const eq = header.indexOf("=", i);
      if (eq < 0) return null;
      const name = header.slice(i, eq).toLowerCase();
      if (!isToken(name) || element.has(name)) return null;
      i = eq + 1;
      let value = "";
      if (header[i] === '"') {
        i++;
        for (;;) {
          if (i >= n) return null;
          const c = header[i]!;
          if (c === '"') break;
          if (c === "\\") {
            i++;
            if (i >= n) return null;
          }
          value += header[i];
          i++;
        }
        i++;
      } else {
        const start = i;
        while (i < n && !" \t,;".includes(header[i]!)) i++;
        value = header.slice(start, i);
        if (!isToken(value)) return null;
      }
      if (hasControl(value, true)) return null;
      element.set(name, value);
      skipSpace();
    }
    if (i >= n) break;
    if (header[i] === ",") {
      elements.push(element);
      element = new Map();
    } else if (header[i] !== ";") {
      return null;
    }
    i++;
  }
  elements.push(element);
  return elements;
}

/** The parameter `name` of the `hops`-th element from the right: `null` when absent or hops is 0. */
function forwardedValue(
  elements: readonly Map<string, string>[],
  name: string,
  hops: number,
): string | null {
  if (hops <= 0 || elements.length < hops) return null;
  return elements[elements.length - hops]!.get(name) ?? null;
}

function checkHops(name: string, value: number | undefined, fallback: number): number {
  if (value === undefined) return fallback;
  if (!Number.isSafeInteger(value) || value < 0) {
    throw new RangeError(
      `Invalid proxyFix() option ${name} ${
        JSON.stringify(value)
      }: expected a whole number of proxies, 0 or more`,
    );
  }
  return value;
}

/**
 * Makes an application behind reverse proxies see the client's request: when
 * the direct peer (`REMOTE_ADDR`) is one of `trustedProxies`, it takes
 *
 * - the client address from `X-Forwarded-For` into `REMOTE_ADDR`, counting
 *   `forwardedFor` entries from the right (each proxy appends the address it
 *   saw, so the entries further left were written by the client and cannot
 *   be trusted);
 * - the scheme from `X-Forwarded-Proto` into `wsgi.url_scheme` (`http` or
 *   `https` only);
 * - the host from `X-Forwarded-Host` into `HTTP_HOST`, `SERVER_NAME` and
 *   `SERVER_PORT` (the port defaults to the scheme's);
 * - the path prefix the proxy stripped from `X-Forwarded-Prefix`, prepended
 *   to `SCRIPT_NAME` (percent-decoded; must be an absolute path without `.`
 *   or `..` segments);
 * - only when `forwarded` is on and the request has one: `for=`, `proto=`
 *   and `host=` from the standard `Forwarded` header (RFC 7239) instead of
 *   the three `X-Forwarded-*` headers above, with the same hop counts counted
 *   in its comma-separated elements. Quoted values, `[IPv6]:port` nodes and
 *   ports are understood; `unknown` and obfuscated (`_name`) identifiers are
 *   ignored. It is off by default because a proxy that sets only
 *   `X-Forwarded-*` passes a client's `Forwarded` on as it came.
 *
 * By default, then, only `X-Forwarded-For` and `X-Forwarded-Proto` are
 * honoured (`-Host` and `-Prefix` too once their counts are set).
 *
 * A header with fewer entries than its hop count, or a value that does not
 * parse, is ignored: that field keeps the server's value. Nothing throws at
 * request time. The values replaced are saved first in `environ` under
 * `"proxy_fix.orig"` (a {@linkcode ProxyFixOriginal}). The environ is updated
 * in place, as werkzeug's `ProxyFix` does. When the peer is not trusted (or
 * has no `REMOTE_ADDR`, unless `"unix"` is trusted) the environ is left
 * untouched, headers included.
 *
 * `REMOTE_PORT` is not changed.
 *
 * @param app The application behind the proxies.
 * @param options Which proxies to trust, and how many of each header to believe.
 * @returns The wrapped application.
 * @throws {TypeError} If an entry of `trustedProxies` is not an address or range.
 * @throws {RangeError} If a hop count is not a whole number, 0 or more.
 *
 * @example One nginx in front, on the same machine
 * ```ts
 * import { type Application, proxyFix } from "../mod.ts";
 * import { equal } from "node:assert/strict";
 *
 * let seen = "";
 * const app: Application = (environ, startResponse) => {
 *   seen = `${environ["wsgi.url_scheme"]} ${environ.REMOTE_ADDR}`;
 *   startResponse("204 No Content", []);
 *   return [];
 * };
 * const wrapped = proxyFix(app, { trustedProxies: ["127.0.0.1", "::1"] });
 *
 * const environ = {
 *   REMOTE_ADDR: "127.0.0.1",
 *   HTTP_X_FORWARDED_FOR: "203.0.113.9",
 *   HTTP_X_FORWARDED_PROTO: "https",
 *   "wsgi.url_scheme": "http",
 * };
 * await wrapped(environ as never, () => async () => {});
 * equal(seen, "https 203.0.113.9");
 * ```
 */
export function proxyFix(app: Application, options: ProxyFixOptions): Application {
  if (!Array.isArray(options?.trustedProxies)) {
    throw new TypeError("Invalid proxyFix() options: trustedProxies must be an array of addresses");
  }
  let trustUnix = false;
  const networks: Network[] = [];
  for (const entry of options.trustedProxies) {
    if (typeof entry !== "string") {
      throw new TypeError(`Invalid trusted proxy ${String(entry)}: expected a string`);
    }
    if (entry === "unix") trustUnix = true;
    else networks.push(parseNetwork(entry.trim()));
  }
  const forHops = checkHops("forwardedFor", options.forwardedFor, 1);
  const protoHops = checkHops("forwardedProto", options.forwardedProto, 1);
  const hostHops = checkHops("forwardedHost", options.forwardedHost, 0);
  const prefixHops = checkHops("forwardedPrefix", options.forwardedPrefix, 0);
  const honourForwarded = options.forwarded ?? false;

  function isTrusted(remoteAddr: unknown): boolean {
    if (remoteAddr === undefined || remoteAddr === "") return trustUnix;
    if (typeof remoteAddr !== "string") return false;
    const raw = parseIp(remoteAddr);
    if (raw === null) return false;
    const address = unmap(raw);
    return networks.some((network) => contains(network, address) || contains(network, raw));
  }

  return function proxyFix(environ, startResponse) {
    if (!isTrusted(environ.REMOTE_ADDR)) return app(environ, startResponse);
    const orig: ProxyFixOriginal = {
      REMOTE_ADDR: environ.REMOTE_ADDR,
      "wsgi.url_scheme": environ["wsgi.url_scheme"],
      HTTP_HOST: environ.HTTP_HOST,
      SERVER_NAME: environ.SERVER_NAME,
      SERVER_PORT: environ.SERVER_PORT,
      SCRIPT_NAME: environ.SCRIPT_NAME,
    };
    environ["proxy_fix.orig"] = orig;

    let forValue: string | null;
    let protoValue: string | null;
    let hostValue: string | null;
    const forwardedHeader = honourForwarded ? environ.HTTP_FORWARDED : undefined;
    if (typeof forwardedHeader === "string" && forwardedHeader !== "") {
      const elements = parseForwarded(forwardedHeader) ?? [];
      forValue = forwardedValue(elements, "for", forHops);
      protoValue = forwardedValue(elements, "proto", protoHops);
      hostValue = forwardedValue(elements, "host", hostHops);
    } else {
      forValue = fromRight(environ.HTTP_X_FORWARDED_FOR, forHops);
      protoValue = fromRight(environ.HTTP_X_FORWARDED_PROTO, protoHops);
      hostValue = fromRight(environ.HTTP_X_FORWARDED_HOST, hostHops);
    }

    const address = forValue === null ? null : nodeAddress(forValue);
    if (address !== null) environ.REMOTE_ADDR = address;
    const scheme = protoValue?.toLowerCase();
    if (scheme === "http" || scheme === "https") environ["wsgi.url_scheme"] = scheme;
    const host = hostValue === null ? null : splitHost(hostValue);
    if (host !== null) {
      environ.HTTP_HOST = hostValue!;
      environ.SERVER_NAME = host[0];
      environ.SERVER_PORT = host[1] ?? (environ["wsgi.url_scheme"] === "https" ? "443" : "80");
    }
    const prefixValue = fromRight(environ.HTTP_X_FORWARDED_PREFIX, prefixHops);
    const prefix = prefixValue === null ? null : parsePrefix(prefixValue);
    if (prefix !== null) environ.SCRIPT_NAME = prefix + environ.SCRIPT_NAME;
    return app(environ, startResponse);
  };
}
