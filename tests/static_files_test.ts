/**
 * staticFiles(): content types, validators and 304s, ranges, HEAD, 405,
 * fall-through to the application, index files, `wsgi.file_wrapper`, and
 * every way out of the root we could think of, both called directly and
 * through the real server with raw requests (so that no client normalises
 * the `..` away). Each test builds its own temporary directory and removes
 * it, and fails if a file in it is still open (Deno's resource sanitizer
 * does not count files).
 */

import { deepEqual, equal, match, ok, throws } from "node:assert/strict";
import type { Application, Body, Environ, Header } from "../mod.ts";
import { staticFiles, type StaticFilesOptions } from "../mod.ts";
import {
  bytes,
  concat,
  decoder,
  exchange,
  latin1String,
  parseResponses,
  startServer,
} from "./_helpers.ts";
import { removeClosedDir } from "./_child.ts";

const HELLO = "hello world\n";
const SECRET = "TOP SECRET\n";
const MTIME = new Date("2020-01-02T03:04:05Z");
const MTIME_TEXT = "Thu, 02 Jan 2020 03:04:05 GMT";

/** A temporary tree: `base/root` is served, `base/secret.txt` must never be. */
interface Fixture {
  base: string;
  root: string;
  big: Uint8Array;
  [Symbol.asyncDispose](): Promise<void>;
}

async function fixture(): Promise<Fixture> {
  const base = await Deno.makeTempDir({ prefix: "static_files_test_" });
  const root = `${base}/root`;
  await Deno.mkdir(`${root}/sub`, { recursive: true });
  await Deno.mkdir(`${root}/noindex`);
  const big = new Uint8Array(200 * 1024 + 17);
  for (let i = 0; i < big.length; i++) big[i] = (i * 7 + (i >> 8)) & 0xff;
  const files: [string, string | Uint8Array][] = [
    ["hello.txt", HELLO],
    ["empty.txt", ""],
    ["big.bin", big],
    ["sub/index.html", "<h1>sub</h1>\n"],
    ["sub/page.html", "<p>page</p>\n"],
    ["noindex/file.txt", "x"],
    ["caf\u00e9.txt", "unicode name\n"],
    ["README", "no extension\n"],
  ];
  for (const ext of ["html", "css", "js", "mjs", "json", "svg", "png", "jpg", "jpeg", "gif"]) {
    files.push([`file.${ext}`, ext]);
  }
  for (const ext of ["webp", "ico", "wasm", "pdf", "xml", "map", "woff", "woff2", "xyz", "PNG"]) {
    files.push([`file.${ext}`, ext]);
  }
  for (const [name, content] of files) {
    const path = `${root}/${name}`;
    if (typeof content === "string") await Deno.writeTextFile(path, content);
    else await Deno.writeFile(path, content);
    await Deno.utime(path, MTIME, MTIME);
  }
  await Deno.writeTextFile(`${base}/secret.txt`, SECRET);
  await Deno.mkdir(`${base}/outside`);
  await Deno.writeTextFile(`${base}/outside/index.html`, SECRET);
  await Deno.symlink(`${base}/secret.txt`, `${root}/link-out.txt`);
  await Deno.symlink("../secret.txt", `${root}/relative-out.txt`);
  await Deno.symlink(`${base}/outside`, `${root}/dir-out`);
  await Deno.symlink("hello.txt", `${root}/link-in.txt`);
  return {
    base,
    root,
    big,
    [Symbol.asyncDispose]: () => removeClosedDir(base),
  };
}

const FALLBACK_BODY = bytes("fallback\n");

/** The application behind the middleware: says who answered. */
const fallback: Application = (environ, startResponse) => {
  startResponse("200 OK", [
    ["Content-Type", "text/plain"],
    ["X-Fallback", `${environ.REQUEST_METHOD} ${environ.PATH_INFO}`],
  ]);
  return [FALLBACK_BODY];
};

function environ(pathInfo: string, extra: Record<string, unknown> = {}): Environ {
  return {
    REQUEST_METHOD: "GET",
    SCRIPT_NAME: "",
    PATH_INFO: pathInfo,
    QUERY_STRING: "",
    SERVER_NAME: "localhost",
    SERVER_PORT: "80",
    SERVER_PROTOCOL: "HTTP/1.1",
    "wsgi.url_scheme": "http",
    ...extra,
  } as unknown as Environ;
}

interface Result {
  status: number;
  headers: Map<string, string>;
  body: Uint8Array;
  text: string;
  chunks: Uint8Array[];
}

/** Calls `app` as a server would: iterates the body to the end and always calls close(). */
async function call(app: Application, env: Environ): Promise<Result> {
  let status = "";
  let headers: readonly Header[] = [];
  const body: Body = await app(env, (s, h) => {
    status = s;
    headers = h;
    return () => Promise.resolve();
  });
  const chunks: Uint8Array[] = [];
  try {
    if (Symbol.asyncIterator in body) {
      for await (const chunk of body) chunks.push(chunk);
    } else {
      for (const chunk of body) chunks.push(chunk);
    }
  } finally {
    await body.close?.();
  }
  const all = concat(chunks);
  return {
    status: Number(status.slice(0, 3)),
    headers: new Map(headers.map(([k, v]) => [k.toLowerCase(), v])),
    body: all,
    text: decoder.decode(all),
    chunks,
  };
}

function files(root: string, options: Partial<StaticFilesOptions> = {}): Application {
  return staticFiles(fallback, { root, ...options });
}

Deno.test("staticFiles() serves a file with its type, length and validators", async () => {
  await using fx = await fixture();
  const r = await call(files(fx.root), environ("/static/hello.txt"));
  equal(r.status, 200);
  equal(r.text, HELLO);
  equal(r.headers.get("content-type"), "text/plain; charset=utf-8");
  equal(r.headers.get("content-length"), String(HELLO.length));
  equal(r.headers.get("last-modified"), MTIME_TEXT);
  equal(r.headers.get("accept-ranges"), "bytes");
  match(r.headers.get("etag")!, /^"[0-9a-f]+-[0-9a-f]+"$/);
  equal(r.headers.get("cache-control"), undefined);
  equal(r.headers.get("x-fallback"), undefined);
});

Deno.test("staticFiles() picks the Content-Type from the extension", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const expected: [string, string][] = [
    ["file.html", "text/html; charset=utf-8"],
    ["file.css", "text/css; charset=utf-8"],
    ["file.js", "text/javascript; charset=utf-8"],
    ["file.mjs", "text/javascript; charset=utf-8"],
    ["file.json", "application/json"],
    ["hello.txt", "text/plain; charset=utf-8"],
    ["file.svg", "image/svg+xml"],
    ["file.png", "image/png"],
    ["file.PNG", "image/png"],
    ["file.jpg", "image/jpeg"],
    ["file.jpeg", "image/jpeg"],
    ["file.gif", "image/gif"],
    ["file.webp", "image/webp"],
    ["file.ico", "image/vnd.microsoft.icon"],
    ["file.wasm", "application/wasm"],
    ["file.pdf", "application/pdf"],
    ["file.xml", "application/xml"],
    ["file.map", "application/json"],
    ["file.woff", "font/woff"],
    ["file.woff2", "font/woff2"],
    ["file.xyz", "application/octet-stream"],
    ["README", "application/octet-stream"],
  ];
  for (const [name, type] of expected) {
    const r = await call(app, environ(`/static/${name}`));
    equal(r.status, 200, name);
    equal(r.headers.get("content-type"), type, name);
  }
});

Deno.test("staticFiles() falls through outside the prefix and for missing files", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  for (
    const path of [
      "/",
      "/hello.txt",
      "/staticky/hello.txt",
      "/static-hello.txt",
      "/static/missing.txt",
      "/static/sub/missing.html",
      "/static/hello.txt/",
      "/static/hello.txt/x",
      "/static/noindex",
      "/static/noindex/",
      "/static",
      "*",
    ]
  ) {
    const r = await call(app, environ(path));
    equal(r.headers.get("x-fallback"), `GET ${path}`, path);
    equal(r.text, "fallback\n", path);
  }
});

Deno.test("staticFiles() serves the index file of a directory, redirecting to the slash", async () => {
  await using fx = await fixture();
  const app = files(fx.root, { index: "index.html" });
  let r = await call(app, environ("/static/sub/"));
  equal(r.status, 200);
  equal(r.text, "<h1>sub</h1>\n");
  equal(r.headers.get("content-type"), "text/html; charset=utf-8");
  r = await call(app, environ("/static/sub", { QUERY_STRING: "a=1" }));
  equal(r.status, 301);
  equal(r.headers.get("location"), "sub/?a=1", "relative, so it holds behind proxies and mounts");
  r = await call(app, environ("/static"));
  equal(r.status, 301);
  equal(r.headers.get("location"), "static/");
  r = await call(app, environ("/static/noindex/"));
  equal(r.headers.get("x-fallback"), "GET /static/noindex/", "no index there: the app answers");
  r = await call(app, environ("/static/sub/page.html"));
  equal(r.text, "<p>page</p>\n");
});

Deno.test("staticFiles() with prefix '/' serves from the top", async () => {
  await using fx = await fixture();
  const app = files(fx.root, { prefix: "/", index: "index.html" });
  equal((await call(app, environ("/hello.txt"))).text, HELLO);
  equal((await call(app, environ("/sub/"))).text, "<h1>sub</h1>\n");
  equal((await call(app, environ("/nothing"))).text, "fallback\n");
  equal((await call(app, environ("*"))).text, "fallback\n");
});

Deno.test("staticFiles() answers 304 to a matching If-None-Match", async () => {
  await using fx = await fixture();
  const app = files(fx.root, { maxAgeSeconds: 60 });
  const first = await call(app, environ("/static/hello.txt"));
  const etag = first.headers.get("etag")!;
  for (const header of [etag, `W/${etag}`, `"other", ${etag}`, "*"]) {
    const r = await call(app, environ("/static/hello.txt", { HTTP_IF_NONE_MATCH: header }));
    equal(r.status, 304, header);
    equal(r.body.length, 0);
    equal(r.headers.get("etag"), etag);
    equal(r.headers.get("last-modified"), MTIME_TEXT);
    equal(r.headers.get("cache-control"), "public, max-age=60");
  }
  const r = await call(app, environ("/static/hello.txt", { HTTP_IF_NONE_MATCH: '"nope"' }));
  equal(r.status, 200);
  equal(r.text, HELLO);
});

Deno.test("staticFiles() gives a new ETag when the file changes", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const before = (await call(app, environ("/static/hello.txt"))).headers.get("etag");
  await Deno.writeTextFile(`${fx.root}/hello.txt`, "changed, longer content\n");
  const after = await call(app, environ("/static/hello.txt", { HTTP_IF_NONE_MATCH: before }));
  equal(after.status, 200);
  equal(after.text, "changed, longer content\n");
  ok(after.headers.get("etag") !== before);
});

Deno.test("staticFiles() answers 304 to If-Modified-Since at or after Last-Modified", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const at = (value: string, extra: Record<string, unknown> = {}) =>
    call(app, environ("/static/hello.txt", { HTTP_IF_MODIFIED_SINCE: value, ...extra }));
  equal((await at(MTIME_TEXT)).status, 304);
  equal((await at("Fri, 03 Jan 2020 00:00:00 GMT")).status, 304);
  equal((await at("Thursday, 02-Jan-20 03:04:05 GMT")).status, 304, "RFC 850 date");
  equal((await at("Thu Jan  2 03:04:05 2020")).status, 304, "asctime date");
  equal((await at("Thu, 02 Jan 2020 03:04:04 GMT")).status, 200, "one second earlier");
  equal((await at("yesterday")).status, 200, "malformed: ignored");
  equal((await at("12345")).status, 200, "malformed: ignored");
  equal(
    (await at(MTIME_TEXT, { HTTP_IF_NONE_MATCH: '"nope"' })).status,
    200,
    "If-None-Match wins over If-Modified-Since",
  );
});

Deno.test("staticFiles() serves single byte ranges with 206", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const cases: [string, string, string][] = [
    ["bytes=0-4", "hello", "bytes 0-4/12"],
    ["bytes=6-", "world\n", "bytes 6-11/12"],
    ["bytes=-6", "world\n", "bytes 6-11/12"],
    ["bytes=-100", HELLO, "bytes 0-11/12"],
    ["bytes=3-999", "lo world\n", "bytes 3-11/12"],
    ["bytes=11-11", "\n", "bytes 11-11/12"],
    ["BYTES=0-0", "h", "bytes 0-0/12"],
    [" bytes=0-1 ", "he", "bytes 0-1/12"],
  ];
  for (const [range, body, contentRange] of cases) {
    const r = await call(app, environ("/static/hello.txt", { HTTP_RANGE: range }));
    equal(r.status, 206, range);
    equal(r.text, body, range);
    equal(r.headers.get("content-range"), contentRange, range);
    equal(r.headers.get("content-length"), String(body.length), range);
  }
});

Deno.test("staticFiles() answers 416 to a range past the end", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  for (const range of ["bytes=12-", "bytes=100-200", "bytes=-0"]) {
    const r = await call(app, environ("/static/hello.txt", { HTTP_RANGE: range }));
    equal(r.status, 416, range);
    equal(r.headers.get("content-range"), "bytes */12", range);
  }
  const empty = await call(app, environ("/static/empty.txt", { HTTP_RANGE: "bytes=0-" }));
  equal(empty.status, 416);
  equal(empty.headers.get("content-range"), "bytes */0");
});

Deno.test("staticFiles() serves the whole file for multiple or invalid ranges", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  for (
    const range of ["bytes=0-1,3-4", "bytes=0-1,", "bytes=5-2", "bytes=-", "bytes=a-b", "items=0-1"]
  ) {
    const r = await call(app, environ("/static/hello.txt", { HTTP_RANGE: range }));
    equal(r.status, 200, range);
    equal(r.text, HELLO, range);
    equal(r.headers.get("content-range"), undefined, range);
  }
  const head = await call(
    app,
    environ("/static/hello.txt", { REQUEST_METHOD: "HEAD", HTTP_RANGE: "bytes=0-1" }),
  );
  equal(head.status, 200, "Range applies to GET only");
});

Deno.test("staticFiles() honours If-Range by ETag or date", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const etag = (await call(app, environ("/static/hello.txt"))).headers.get("etag")!;
  const ranged = (ifRange: string) =>
    call(app, environ("/static/hello.txt", { HTTP_RANGE: "bytes=0-4", HTTP_IF_RANGE: ifRange }));
  equal((await ranged(etag)).status, 206);
  equal((await ranged(MTIME_TEXT)).status, 206);
  equal((await ranged('"stale"')).status, 200);
  equal((await ranged(`W/${etag}`)).status, 200, "a weak tag never matches If-Range");
  equal((await ranged("Fri, 03 Jan 2020 00:00:00 GMT")).status, 200);
  equal((await ranged("garbage")).status, 200);
});

Deno.test("staticFiles() answers HEAD with the headers and no body", async () => {
  await using fx = await fixture();
  const r = await call(files(fx.root), environ("/static/big.bin", { REQUEST_METHOD: "HEAD" }));
  equal(r.status, 200);
  equal(r.headers.get("content-length"), String(fx.big.length));
  equal(r.body.length, 0);
});

Deno.test("staticFiles() answers 405 to other methods on an existing file", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  for (const method of ["POST", "PUT", "DELETE", "OPTIONS"]) {
    const r = await call(app, environ("/static/hello.txt", { REQUEST_METHOD: method }));
    equal(r.status, 405, method);
    equal(r.headers.get("allow"), "GET, HEAD");
  }
  const missing = await call(app, environ("/static/missing.txt", { REQUEST_METHOD: "POST" }));
  equal(missing.headers.get("x-fallback"), "POST /static/missing.txt");
});

Deno.test("staticFiles() serves an empty file", async () => {
  await using fx = await fixture();
  const r = await call(files(fx.root), environ("/static/empty.txt"));
  equal(r.status, 200);
  equal(r.headers.get("content-length"), "0");
  equal(r.body.length, 0);
});

Deno.test("staticFiles() streams a large file in 64 KiB chunks", async () => {
  await using fx = await fixture();
  const r = await call(files(fx.root), environ("/static/big.bin"));
  deepEqual(r.chunks.map((c) => c.length), [65536, 65536, 65536, 8209]);
  deepEqual(r.body, fx.big);
  const part = await call(
    files(fx.root),
    environ("/static/big.bin", { HTTP_RANGE: "bytes=65530-65545" }),
  );
  equal(part.status, 206);
  deepEqual(part.body, fx.big.subarray(65530, 65546));
});

Deno.test("staticFiles() closes the file when the body is closed early", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const noop = () => () => Promise.resolve();
  // Closed without being iterated at all.
  const untouched = await app(environ("/static/big.bin"), noop);
  await untouched.close?.();
  // Closed after one chunk.
  const partial = await app(environ("/static/big.bin"), noop);
  const it = (partial as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  equal((await it.next()).value?.length, 65536);
  await partial.close?.();
  await it.return?.();
  // Iteration stopped with break: the generator's finally closes it.
  const broken = await app(environ("/static/big.bin"), noop);
  for await (const _ of broken as AsyncIterable<Uint8Array>) break;
  await broken.close?.();
});

Deno.test("staticFiles() uses wsgi.file_wrapper for whole files only", async () => {
  await using fx = await fixture();
  const app = files(fx.root);
  const calls: number[] = [];
  const wrapper = (file: Deno.FsFile, blockSize: number): Body => {
    calls.push(blockSize);
    return {
      async *[Symbol.asyncIterator]() {
        const buf = new Uint8Array(blockSize);
        for (;;) {
          const n = await file.read(buf);
          if (n === null) return;
          yield buf.slice(0, n);
        }
      },
      close() {
        file.close();
      },
    };
  };
  const whole = await call(app, environ("/static/hello.txt", { "wsgi.file_wrapper": wrapper }));
  equal(whole.text, HELLO);
  deepEqual(calls, [65536]);
  const part = await call(
    app,
    environ("/static/hello.txt", { "wsgi.file_wrapper": wrapper, HTTP_RANGE: "bytes=0-4" }),
  );
  equal(part.text, "hello");
  deepEqual(calls, [65536], "a range is streamed by the middleware");
  // A wrapper whose result has no close(): the file is closed all the same.
  const bare = (file: Deno.FsFile): Body => [bytes(`size ${file.statSync().size}`)];
  const r = await call(app, environ("/static/hello.txt", { "wsgi.file_wrapper": bare }));
  equal(r.text, "size 12");
});

Deno.test("staticFiles() rejects traversal and ambiguous paths", async () => {
  await using fx = await fixture();
  const app = files(fx.root, { index: "index.html" });
  const bad: [string, Record<string, unknown>][] = [
    ["/static/../secret.txt", {}],
    ["/static/sub/../../secret.txt", {}],
    ["/static/sub/../hello.txt", {}],
    ["/static/./hello.txt", {}],
    ["/static/..", {}],
    ["/static/a\\..\\secret.txt", {}],
    ["/static/a\0b", {}],
    ["/static/hello.txt\0.png", {}],
    ["/static/\xff\xfe", {}],
    ["/static/caf\xe9.txt", {}], // latin-1 bytes, not UTF-8
    ["/static/../secret.txt", { REQUEST_URI: "/static/..%2fsecret.txt" }],
    ["/static/a/b", { REQUEST_URI: "/static/a%2Fb" }],
    ["/static/hello.txt", { REQUEST_URI: "/static/%2e%2E/static/hello.txt" }],
  ];
  for (const [path, extra] of bad) {
    const r = await call(app, environ(path, extra));
    equal(r.status, 400, JSON.stringify(path));
    ok(!r.text.includes("SECRET"));
  }
  for (const link of ["link-out.txt", "relative-out.txt", "dir-out/", "dir-out/index.html"]) {
    const r = await call(app, environ(`/static/${link}`));
    equal(r.status, 404, link);
    ok(!r.text.includes("SECRET"), link);
  }
  equal((await call(app, environ("/static/link-in.txt"))).text, HELLO, "links inside are fine");
  const absolute = await call(app, environ(`/static/${fx.base}/secret.txt`));
  equal(absolute.text, "fallback\n", "an absolute path is looked up under the root");
  const doubled = await call(app, environ(`/static//${fx.base}/secret.txt`));
  equal(doubled.text, "fallback\n");
  const etc = await call(app, environ("/static//etc/passwd"));
  equal(etc.text, "fallback\n");
});

Deno.test("staticFiles() never serves a FIFO", async () => {
  await using fx = await fixture();
  const made = await new Deno.Command("mkfifo", { args: [`${fx.root}/pipe.txt`] }).output()
    .catch(() => null);
  if (made === null || !made.success) return; // no mkfifo here
  const r = await call(files(fx.root), environ("/static/pipe.txt"));
  equal(r.text, "fallback\n");
});

Deno.test("staticFiles() serves a file named in UTF-8", async () => {
  await using fx = await fixture();
  const r = await call(files(fx.root), environ("/static/caf\u00c3\u00a9.txt"));
  equal(r.text, "unicode name\n");
});

Deno.test("staticFiles() validates its options", () => {
  const root = ".";
  for (const prefix of ["static", "/static/", "", "/a/../b", "/a?b"]) {
    throws(() => staticFiles(fallback, { root, prefix }), RangeError, prefix);
  }
  for (const index of ["", "..", "a/b", "a\\b"]) {
    throws(() => staticFiles(fallback, { root, index }), RangeError, index);
  }
  throws(() => staticFiles(fallback, { root, maxAgeSeconds: -1 }), RangeError);
  throws(() => staticFiles(fallback, { root, maxAgeSeconds: 1.5 }), RangeError);
  throws(
    () => staticFiles(fallback, { root, maxAgeSeconds: "60" as unknown as number }),
    TypeError,
  );
  throws(() => staticFiles(fallback, {} as StaticFilesOptions), TypeError);
});

Deno.test("staticFiles() accepts a file URL as root", async () => {
  await using fx = await fixture();
  const url = new URL(`file://${fx.root}/`);
  equal(
    (await call(staticFiles(fallback, { root: url }), environ("/static/hello.txt"))).text,
    HELLO,
  );
});

// ---------------------------------------------------------------------------
// Through the real server, with raw requests
// ---------------------------------------------------------------------------

function get(port: number, target: string, headers = ""): Promise<string> {
  return exchange(
    port,
    `GET ${target} HTTP/1.1\r\nHost: localhost\r\n${headers}Connection: close\r\n\r\n`,
  );
}

Deno.test("staticFiles() through the server: files, ranges, 304 and fall-through", async () => {
  await using fx = await fixture();
  await using server = startServer(files(fx.root));
  let [r] = parseResponses(await get(server.port, "/static/hello.txt"));
  equal(r!.status, 200);
  equal(r!.body, HELLO);
  const etag = r!.headers.get("etag")!;
  [r] = parseResponses(await get(server.port, "/static/hello.txt", `If-None-Match: ${etag}\r\n`));
  equal(r!.status, 304);
  [r] = parseResponses(await get(server.port, "/static/hello.txt", "Range: bytes=-6\r\n"));
  equal(r!.status, 206);
  equal(r!.body, "world\n");
  [r] = parseResponses(await get(server.port, "/static/hello.txt", "Range: bytes=50-\r\n"));
  equal(r!.status, 416);
  equal(r!.headers.get("content-range"), "bytes */12");
  [r] = parseResponses(await get(server.port, "/static/big.bin"));
  equal(r!.body, latin1String(fx.big));
  [r] = parseResponses(await get(server.port, "/static/caf%C3%A9.txt"));
  equal(r!.body, "unicode name\n");
  [r] = parseResponses(await get(server.port, "/static/nothing.txt"));
  equal(r!.headers.get("x-fallback"), "GET /static/nothing.txt");
  [r] = parseResponses(
    await exchange(
      server.port,
      "HEAD /static/big.bin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ),
    [0],
  );
  equal(r!.headers.get("content-length"), String(fx.big.length));
  equal(r!.body, "");
});

Deno.test("staticFiles() through the server: no way out of the root", async () => {
  await using fx = await fixture();
  await using server = startServer(files(fx.root, { index: "index.html" }));
  const attempts: [string, number | "fallback"][] = [
    ["/static/../secret.txt", 400],
    ["/static/%2e%2e/secret.txt", 400],
    ["/static/%2E%2E/secret.txt", 400],
    ["/static/..%2fsecret.txt", 400],
    ["/static/..%2Fsecret.txt", 400],
    ["/static/sub/..%2f..%2fsecret.txt", 400],
    ["/static/..%5csecret.txt", 400],
    ["/static/..\\secret.txt", 400],
    ["/static/a%00b", 400],
    ["/static/hello.txt%00.png", 400],
    ["/static/%ff", 400],
    ["/static/.%2e/secret.txt", 400],
    ["/static/link-out.txt", 404],
    ["/static/relative-out.txt", 404],
    ["/static/dir-out/", 404],
    [`/static/${fx.base}/secret.txt`, "fallback"],
    [`/static//${fx.base.slice(1)}/secret.txt`, "fallback"],
    ["/static//etc/passwd", "fallback"],
    [`http://localhost/static/../secret.txt`, 400],
  ];
  for (const [target, expected] of attempts) {
    const [r] = parseResponses(await get(server.port, target));
    if (expected === "fallback") {
      ok(r!.headers.has("x-fallback"), target);
    } else {
      equal(r!.status, expected, target);
    }
    ok(!r!.body.includes("SECRET"), target);
  }
  equal(server.errors.length, 0, server.errors.join("\n"));
});

/**
 * Whether this process can open a file whose mode forbids it: as root (and
 * in some containers) it can, and then there is no 403 to test.
 */
function openIgnoresFileMode(): boolean {
  const path = Deno.makeTempFileSync({ prefix: "wsgi_mode_" });
  try {
    Deno.chmodSync(path, 0o000);
    Deno.openSync(path).close();
    return true;
  } catch {
    return false;
  } finally {
    Deno.removeSync(path);
  }
}

const CAN_OPEN_ANYTHING = openIgnoresFileMode();
if (CAN_OPEN_ANYTHING) {
  console.warn(
    "!!! static_files_test.ts: this process opens files whatever their mode (root?): " +
      "SKIPPING the 403 test !!!",
  );
}

Deno.test({
  name: "staticFiles() answers 403 to a file the operating system will not open",
  ignore: CAN_OPEN_ANYTHING,
  async fn() {
    await using fx = await fixture();
    const path = `${fx.root}/locked.txt`;
    await Deno.writeTextFile(path, SECRET);
    await Deno.chmod(path, 0o000);
    const r = await call(files(fx.root), environ("/static/locked.txt"));
    equal(r.status, 403);
    ok(!r.text.includes("SECRET"));
  },
});
