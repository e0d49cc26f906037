/**
 * Micro-benchmarks of the hot path, each on bytes alone: request-head
 * parsing, chunked decoding, environ building and response-head writing;
 * and the whole path, requests through `serve()` and the sample app over
 * an in-memory socket (no kernel, so it shows the JavaScript cost alone).
 * Run with `deno task bench`.
 */

import { RequestParser } from "../_h1/parser.ts";
import { OutputBuffer, writeHead } from "../_h1/writer.ts";
import { decideFraming } from "../_h1/writer.ts";
import { buildEnviron } from "../_gateway/environ.ts";
import { BodyReader } from "../_gateway/input.ts";
import { LogErrorStream } from "../_gateway/error_stream.ts";
import { serve, type ServerOptions } from "../server.ts";
import { app } from "../app.ts";
import type { Application } from "../mod.ts";
import { chunkedUpload } from "./_uploads.ts";

const encoder = new TextEncoder();
const small = encoder.encode(
  "GET /hello?x=1 HTTP/1.1\r\nHost: localhost:8000\r\nAccept: */*\r\n\r\n",
);
const browserHeaders = [
  "Host: example.com",
  "User-Agent: Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/126.0 Safari/537.36",
  "Accept: text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
  "Accept-Language: en-US,en;q=0.9",
  "Accept-Encoding: gzip, deflate, br",
  "Connection: keep-alive",
  "Cookie: session=0123456789abcdef; theme=dark; tz=UTC",
  "Upgrade-Insecure-Requests: 1",
  "Cache-Control: max-age=0",
  "Sec-Fetch-Dest: document",
  "Sec-Fetch-Mode: navigate",
  "Sec-Fetch-Site: none",
  "Sec-Fetch-User: ?1",
  'Sec-Ch-Ua: "Chromium";v="126"',
  "Sec-Ch-Ua-Mobile: ?0",
  'Sec-Ch-Ua-Platform: "Linux"',
  "DNT: 1",
  "Referer: https://example.com/start",
  "X-Request-Id: 6f1c2a9e-0b7d-4c55-9d1e-4b3a2f1e0c9d",
  "X-Forwarded-For: 203.0.113.7",
  "X-Forwarded-Proto: https",
  "Pragma: no-cache",
  'If-None-Match: "abc123"',
  "If-Modified-Since: Wed, 21 Oct 2015 07:28:00 GMT",
  "Origin: https://example.com",
  "Priority: u=0, i",
  "X-Trace: 1",
  "X-Client: bench",
  "X-Feature-Flags: a,b,c",
  "Content-Type: text/plain",
];
const large = encoder.encode(`GET /page HTTP/1.1\r\n${browserHeaders.join("\r\n")}\r\n\r\n`);

function parseHead(bytes: Uint8Array) {
  const parser = new RequestParser();
  parser.receive(bytes);
  return parser.next();
}

Deno.bench("parse a small request head", { group: "parse" }, () => {
  parseHead(small);
});

Deno.bench("parse a 30-header request head", { group: "parse" }, () => {
  parseHead(large);
});

const chunkPayload = new Uint8Array(16 * 1024).fill(0x61);
const chunkedParts: Uint8Array[] = [
  encoder.encode("POST /echo HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"),
];
for (let i = 0; i < 64; i++) {
  chunkedParts.push(encoder.encode("4000\r\n"), chunkPayload, encoder.encode("\r\n"));
}
chunkedParts.push(encoder.encode("0\r\n\r\n"));
const chunkedTotal = chunkedParts.reduce((n, p) => n + p.length, 0);

Deno.bench(`decode a 1 MiB chunked body (${(chunkedTotal / 1048576).toFixed(2)} MiB on the wire)`, {
  group: "body",
}, () => {
  const parser = new RequestParser();
  let bytes = 0;
  for (const part of chunkedParts) {
    parser.receive(part);
    for (;;) {
      const event = parser.next();
      if (event.type === "data") bytes += event.data.length;
      else break;
    }
  }
  if (bytes !== 1024 * 1024) throw new Error(`decoded ${bytes}`);
});

const head = parseHead(large);
if (head.type !== "head") throw new Error("no head");
const conn = {
  urlScheme: "http",
  serverName: "127.0.0.1",
  serverPort: "8000",
  remoteAddr: "127.0.0.1",
  remotePort: "40000",
  scriptName: "",
  multiprocess: false,
};
const input = new BodyReader({ pull: () => Promise.resolve(null) });
const errors = new LogErrorStream(() => {});

Deno.bench("build environ from a 30-header head", () => {
  buildEnviron(head, conn, input, errors);
});

const out = new OutputBuffer();
const headers: [string, string][] = [
  ["Content-type", "text/plain; charset=utf-8"],
  ["X-Powered-By", "MySimpleWSGIApp"],
];
const options = { date: new Date().toUTCString(), server: "deno-wsgi" };

Deno.bench("write a response head", () => {
  const decision = decideFraming({
    requestVersion: "HTTP/1.1",
    head: false,
    status: 200,
    contentLength: null,
    knownLength: 42,
    keepAlive: true,
  });
  writeHead(out, "HTTP/1.1", "200 OK", headers, decision, options);
  out.take();
});

/**
 * A listener that hands out one connection whose peer sends `count`
 * keep-alive requests, one at a time as a client does (the next once the
 * server reads again), then EOF; writes succeed at once. `closed` resolves
 * when the server has closed that connection, with the first response that
 * was not a 200 (or `null`): what is measured must be the real answer.
 */
function memoryListener(
  request: Uint8Array,
  count: number,
): { listener: Deno.Listener; closed: Promise<string | null> } {
  const addr: Deno.NetAddr = { transport: "tcp", hostname: "127.0.0.1", port: 8000 };
  const { promise: closed, resolve } = Promise.withResolvers<string | null>();
  let accepted = false;
  let stop = () => {};
  let sent = 0;
  // Where the next read starts in the request being sent: a request larger
  // than the server's buffer goes in as many reads as it takes.
  let at = 0;
  let wrong: string | null = null;
  const conn = {
    localAddr: addr,
    remoteAddr: { ...addr, port: 50000 },
    setNoDelay() {},
    read(buf: Uint8Array): Promise<number | null> {
      if (sent === count) return Promise.resolve(null);
      const n = Math.min(buf.length, request.length - at);
      buf.set(request.subarray(at, at + n));
      at += n;
      if (at === request.length) {
        at = 0;
        sent++;
      }
      return Promise.resolve(n);
    },
    write(buf: Uint8Array): Promise<number> {
      // "HTTP/1.1 200"
      if (buf[9] !== 0x32 || buf[10] !== 0x30 || buf[11] !== 0x30) {
        wrong ??= new TextDecoder().decode(buf.subarray(0, 40));
      }
      return Promise.resolve(buf.length);
    },
    close: () => resolve(wrong),
  };
  const listener = {
    addr,
    accept(): Promise<Deno.Conn> {
      if (accepted) {
        return new Promise((_, reject) => stop = () => reject(new Deno.errors.BadResource()));
      }
      accepted = true;
      return Promise.resolve(conn as unknown as Deno.Conn);
    },
    close: () => stop(),
  };
  return { listener: listener as unknown as Deno.Listener, closed };
}

/**
 * Serves `application` on the in-memory connection of
 * {@linkcode memoryListener} until its client has sent `count` copies of
 * `request`; throws if a response was not a 200.
 */
async function serveInMemory(
  application: Application,
  request: Uint8Array,
  count: number,
  options: ServerOptions = {},
): Promise<void> {
  const { listener, closed } = memoryListener(request, count);
  // serve() listens with Deno.listen; for this one call it gets the
  // in-memory listener instead.
  const listen = Deno.listen;
  let server;
  try {
    (Deno as { listen: unknown }).listen = () => listener;
    server = serve(application, { onListen() {}, ...options });
  } finally {
    (Deno as { listen: unknown }).listen = listen;
  }
  const wrong = await closed;
  await server.shutdown();
  if (wrong !== null) throw new Error(`Expected only 200 responses, got: ${JSON.stringify(wrong)}`);
}

const REQUESTS = 1000;
const hello = encoder.encode("GET / HTTP/1.1\r\nHost: 127.0.0.1:8000\r\n\r\n");

Deno.bench(`${REQUESTS} requests for / through serve() and app.ts, in-memory socket`, {
  group: "request",
}, async () => {
  await serveInMemory(app, hello, REQUESTS);
});

for (const format of ["common", "json"] as const) {
  Deno.bench(`${REQUESTS} requests as above, access log on (${format}, to /dev/null)`, {
    group: "request",
  }, async () => {
    await serveInMemory(app, hello, REQUESTS, { accessLog: { format, path: "/dev/null" } });
  });
}

/** Reads the whole request body with one `wsgi.input.read()`, then answers its length. */
const readAll: Application = async (environ, startResponse) => {
  const body = await environ["wsgi.input"].read();
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [encoder.encode(`${body.length}\n`)];
};

const TINY_CHUNKS = 200_000;
const tinyChunks = chunkedUpload(TINY_CHUNKS, 1);
const bigChunks = chunkedUpload(Math.ceil(TINY_CHUNKS / 65536), 65536);
// As many bytes on the wire as the tiny chunks take (1 byte of data, 5 of framing).
const sameWire = chunkedUpload(Math.ceil(tinyChunks.length / 65536), 65536);

Deno.bench(`upload ${TINY_CHUNKS} one-byte chunks, read with one wsgi.input.read()`, {
  group: "upload",
  baseline: true,
}, async () => {
  await serveInMemory(readAll, tinyChunks, 1);
});

Deno.bench(`upload ${TINY_CHUNKS} bytes in 64 KiB chunks, read with one wsgi.input.read()`, {
  group: "upload",
}, async () => {
  await serveInMemory(readAll, bigChunks, 1);
});

Deno.bench(
  `upload ${
    (sameWire.length / 1048576).toFixed(1)
  } MiB in 64 KiB chunks (the wire bytes of the one-byte chunks)`,
  { group: "upload" },
  async () => {
    await serveInMemory(readAll, sameWire, 1);
  },
);
