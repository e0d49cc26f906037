/**
 * Same bytes everywhere: the sample app answers the same status, headers
 * and body whether it runs (a) under this package's server, (b) under
 * Deno.serve through toFetchHandler(), or (c) through toFetchHandler() with
 * no socket at all.
 *
 * What differs by nature is left out: `Date`, `Server`, `Connection`,
 * `Keep-Alive` and the framing (`Transfer-Encoding`, and `Content-Length`
 * where only one side computed it). `/info` lists the environ, which
 * differs per connection, so only its status, headers and first line are
 * compared. The raw-socket client sends no `Accept-Encoding`, so Deno.serve
 * does not compress.
 */

import { deepEqual, equal } from "node:assert/strict";
import { app } from "../app.ts";
import { toFetchHandler } from "../tooling/fetch.ts";
import { exchange, latin1Bytes, latin1String, parseResponses, startServer } from "./_helpers.ts";

/** One request of the comparison; `body` is a latin-1 (byte) string. */
interface Case {
  method: string;
  path: string;
  headers?: [string, string][];
  body?: string;
  /** Compare only status, headers and this many body lines. */
  firstLines?: number;
}

/** What is compared of a response. */
interface Answer {
  status: number;
  reason: string;
  /** Lower-cased names, sorted, without the fields that differ by nature. */
  headers: [string, string][];
  contentLength: string | null;
  /** The body as a latin-1 (byte) string. */
  body: string;
}

const BY_NATURE = new Set([
  "date",
  "server",
  "connection",
  "keep-alive",
  "transfer-encoding",
  "content-length",
]);

function answer(
  status: number,
  reason: string,
  headers: Iterable<[string, string]>,
  body: string,
): Answer {
  const kept: [string, string][] = [];
  let contentLength: string | null = null;
  for (const [name, value] of headers) {
    const lower = name.toLowerCase();
    if (lower === "content-length") contentLength = value;
    if (!BY_NATURE.has(lower)) kept.push([lower, value]);
  }
  kept.sort(([a, x], [b, y]) => a < b ? -1 : a > b ? 1 : x < y ? -1 : x > y ? 1 : 0);
  return { status, reason, headers: kept, contentLength, body };
}

/** Sends `c` over a raw socket (`Connection: close`) and parses the answer. */
async function overSocket(port: number, c: Case): Promise<Answer> {
  let request =
    `${c.method} ${c.path} HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nConnection: close\r\n`;
  for (const [name, value] of c.headers ?? []) request += `${name}: ${value}\r\n`;
  if (c.body !== undefined) request += `Content-Length: ${c.body.length}\r\n`;
  request += `\r\n${c.body ?? ""}`;
  const text = await exchange(port, request);
  const responses = parseResponses(text, c.method === "HEAD" ? [0] : []);
  equal(responses.length, 1, `${c.method} ${c.path}: one response`);
  const r = responses[0]!;
  return answer(r.status, r.reason, r.rawHeaders, r.body);
}

/** Calls the fetch handler with a `Request` made in code. */
async function withoutSocket(c: Case): Promise<Answer> {
  const headers = new Headers(c.headers ?? []);
  if (c.body !== undefined) headers.set("content-length", String(c.body.length));
  const handler = toFetchHandler(app);
  const response = await handler(
    new Request(`http://127.0.0.1:8000${c.path}`, {
      method: c.method,
      headers,
      ...(c.body === undefined ? {} : { body: latin1Bytes(c.body) as Uint8Array<ArrayBuffer> }),
    }),
    { remoteAddr: { hostname: "127.0.0.1", port: 1 } },
  );
  const body = latin1String(new Uint8Array(await response.arrayBuffer()));
  return answer(response.status, response.statusText, response.headers, body);
}

function firstLines(text: string, n: number): string {
  return text.split("\n").slice(0, n).join("\n");
}

function assertSame(expected: Answer, actual: Answer, c: Case, label: string): void {
  const what = `${c.method} ${c.path} (${label})`;
  equal(actual.status, expected.status, `${what}: status`);
  equal(actual.reason, expected.reason, `${what}: reason`);
  deepEqual(actual.headers, expected.headers, `${what}: headers`);
  if (c.firstLines !== undefined) {
    equal(
      firstLines(actual.body, c.firstLines),
      firstLines(expected.body, c.firstLines),
      `${what}: first body lines`,
    );
    return;
  }
  equal(actual.body, expected.body, `${what}: body`);
  if (actual.contentLength !== null && expected.contentLength !== null) {
    equal(actual.contentLength, expected.contentLength, `${what}: Content-Length`);
  }
}

const CASES: Case[] = [
  { method: "GET", path: "/" },
  { method: "GET", path: "/hello" },
  { method: "GET", path: "/nonexistent_page" },
  { method: "GET", path: "/stream" },
  { method: "GET", path: "/stream?n=3" },
  {
    method: "POST",
    path: "/echo",
    headers: [["Content-Type", "application/octet-stream"]],
    body: "echo: caf\xc3\xa9 \x00\xff bytes\n",
  },
  { method: "GET", path: "/write" },
  { method: "GET", path: "/info?a=1", firstLines: 1 },
  { method: "HEAD", path: "/" },
  { method: "POST", path: "/hello", body: "" },
];

Deno.test("the sample app gives the same answers under serve(), Deno.serve and no socket", async (t) => {
  await using ours = startServer(app);
  const denoServe = Deno.serve(
    { port: 0, hostname: "127.0.0.1", onListen() {} },
    toFetchHandler(app),
  );
  try {
    for (const c of CASES) {
      await t.step(`${c.method} ${c.path}`, async () => {
        const a = await overSocket(ours.port, c);
        const b = await overSocket(denoServe.addr.port, c);
        const cc = await withoutSocket(c);
        assertSame(a, b, c, "Deno.serve + toFetchHandler");
        assertSame(a, cc, c, "toFetchHandler without a socket");
      });
    }
  } finally {
    await denoServe.shutdown();
  }
  deepEqual(ours.errors, []);
});

Deno.test("the comparison sees the framing each path chose", async () => {
  await using ours = startServer(app);
  const stream = await overSocket(ours.port, { method: "GET", path: "/stream" });
  equal(stream.contentLength, null, "a generator body is chunked by our server");
  const list = await overSocket(ours.port, { method: "GET", path: "/hello" });
  equal(list.contentLength, "22");
  const fetched = await withoutSocket({ method: "GET", path: "/hello" });
  equal(fetched.contentLength, "22", "toFetchHandler computes it for a list body too");
});
