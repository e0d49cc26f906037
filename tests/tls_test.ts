/**
 * HTTPS: `serve()` with `cert` and `key` (`Deno.listenTls`) and the CLI with
 * `--cert`/`--key`, checked by curl against a throwaway self-signed
 * certificate that the test makes with openssl. curl verifies it with
 * `--cacert`, so the certificate the server presents is really checked.
 *
 * Needs `openssl` and `curl` on PATH; without them every test here is
 * skipped, loudly.
 */

import { equal, match, notEqual, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import { app } from "../app.ts";
import { startServer } from "./_helpers.ts";
import {
  type Certificate,
  Child,
  curl as runCurl,
  findExecutable,
  makeCertificate,
  type RunResult,
} from "./_child.ts";

const decoder = new TextDecoder();

const OPENSSL = findExecutable("openssl");
const CURL = findExecutable("curl");
const MISSING = [OPENSSL === null ? "openssl" : "", CURL === null ? "curl" : ""].filter(Boolean);
if (MISSING.length > 0) {
  console.warn(
    `!!! tls_test.ts: ${MISSING.join(" and ")} NOT FOUND on PATH: SKIPPING every TLS test !!!`,
  );
}

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;

/** curl with the test's certificate as the only trusted one; asserts exit 0. */
async function curl(cert: Certificate, ...args: string[]): Promise<RunResult> {
  const result = await runCurl(CURL!, "--cacert", cert.certFile, ...args);
  equal(result.code, 0, `curl ${args.join(" ")} exited ${result.code}:\n${result.stderr}`);
  return result;
}

/** Splits `curl -i` output of one response into status line, headers and body. */
function parseResponse(
  text: string,
): { status: string; headers: Map<string, string>; body: string } {
  const end = text.indexOf("\r\n\r\n");
  ok(end >= 0, `no end of head in ${JSON.stringify(text)}`);
  const [status, ...lines] = text.slice(0, end).split("\r\n");
  const headers = new Map<string, string>();
  for (const line of lines) {
    const colon = line.indexOf(":");
    headers.set(line.slice(0, colon).toLowerCase(), line.slice(colon + 1).trim());
  }
  return { status: status!, headers, body: text.slice(end + 4) };
}

Deno.test({
  name: "serve() with cert and key answers HTTPS that curl verifies, with wsgi.url_scheme https",
  ignore: MISSING.length > 0,
  async fn() {
    await using cert = await makeCertificate(OPENSSL!);
    await using t = startServer(app, { cert: cert.cert, key: cert.key });
    const base = `https://127.0.0.1:${t.port}`;

    const info = parseResponse(
      decoder.decode((await curl(cert, "-i", `${base}/info?a=1`)).stdout),
    );
    equal(info.status, "HTTP/1.1 200 OK");
    const lines = info.body.split("\n");
    ok(lines.includes("wsgi.url_scheme: https"), info.body);
    ok(lines.includes(`SERVER_PORT: ${t.port}`), info.body);
    ok(lines.includes("SERVER_NAME: 127.0.0.1"), info.body);
    ok(lines.includes("QUERY_STRING: a=1"), info.body);
    ok(lines.includes("REMOTE_ADDR: 127.0.0.1"), info.body);

    // The DNS name in the certificate, on one kept-alive TLS connection.
    const both = await curl(
      cert,
      "-v",
      "--resolve",
      `localhost:${t.port}:127.0.0.1`,
      `https://localhost:${t.port}/hello`,
      `https://localhost:${t.port}/`,
    );
    equal(
      decoder.decode(both.stdout),
      "Hello, specific page!\nHello from My Simple WSGI App! (Homepage)\n",
    );
    match(both.stderr, /Re-using existing connection/i);
    match(both.stderr, /SSL certificate verify ok/i);

    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

Deno.test({
  name: "serve() over TLS echoes 1 MiB byte for byte and streams a chunked body",
  ignore: MISSING.length > 0,
  async fn() {
    await using cert = await makeCertificate(OPENSSL!);
    await using t = startServer(app, { cert: cert.cert, key: cert.key });
    const base = `https://127.0.0.1:${t.port}`;
    const data = new Uint8Array(1024 * 1024);
    for (let at = 0; at < data.length; at += 65536) {
      crypto.getRandomValues(data.subarray(at, at + 65536));
    }
    const input = `${cert.dir}/upload.bin`;
    const output = `${cert.dir}/echo.bin`;
    await Deno.writeFile(input, data);
    const echo = await curl(
      cert,
      "--data-binary",
      `@${input}`,
      "-H",
      "Content-Type: application/octet-stream",
      "-o",
      output,
      "-w",
      "%{http_code}",
      `${base}/echo`,
    );
    equal(decoder.decode(echo.stdout), "200");
    const echoed = await Deno.readFile(output);
    equal(echoed.length, data.length);
    ok(echoed.every((b, i) => b === data[i]), "echoed bytes differ");

    const stream = parseResponse(
      decoder.decode((await curl(cert, "-i", `${base}/stream?n=50`)).stdout),
    );
    equal(stream.status, "HTTP/1.1 200 OK");
    equal(stream.headers.get("transfer-encoding"), "chunked");
    equal(stream.body, Array.from({ length: 50 }, (_, i) => `chunk ${i + 1} of 50\n`).join(""));

    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

Deno.test({
  name: "serve() over TLS is refused by curl without the CA and survives a plaintext request",
  ignore: MISSING.length > 0,
  async fn() {
    await using cert = await makeCertificate(OPENSSL!);
    await using t = startServer(app, { cert: cert.cert, key: cert.key });
    const base = `https://127.0.0.1:${t.port}`;

    // No --cacert: the system store does not know this certificate.
    const untrusted = await runCurl(CURL!, `${base}/`);
    equal(untrusted.code, 60, `expected curl's "peer certificate" error:\n${untrusted.stderr}`);

    // Plain HTTP on the TLS port: not a ClientHello, so no HTTP answer,
    // and the connection ends.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    try {
      const request = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
      await conn.write(request);
      const buf = new Uint8Array(4096);
      let received = "";
      for (let reads = 0; reads < 100; reads++) {
        let n: number | null;
        try {
          n = await conn.read(buf);
        } catch {
          break; // Reset: also an end.
        }
        if (n === null) break;
        received += decoder.decode(buf.subarray(0, n));
      }
      ok(!received.includes("HTTP/1.1 200"), JSON.stringify(received));
    } finally {
      conn.close();
    }

    // The server goes on serving TLS.
    const after = await curl(cert, `${base}/hello`);
    equal(decoder.decode(after.stdout), "Hello, specific page!\n");
  },
});

Deno.test({
  name: "the CLI serves HTTPS with --cert and --key and exits 0 on SIGTERM",
  ignore: MISSING.length > 0,
  async fn() {
    await using cert = await makeCertificate(OPENSSL!);
    await using cli = new Child(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      SERVER_TS,
      "--port",
      "0",
      "--cert",
      cert.certFile,
      "--key",
      cert.keyFile,
    ], { cwd: PROJECT_DIR });
    const line = await cli.stdout.waitFor(/^Listening on /);
    notEqual(line, null, `no startup line\n${cli.output()}`);
    const port = /^Listening on https:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line!)?.[1];
    ok(port !== undefined, line!);

    const info = await curl(cert, `https://127.0.0.1:${port}/info`);
    ok(decoder.decode(info.stdout).split("\n").includes("wsgi.url_scheme: https"));
    // The access log names the request.
    notEqual(await cli.stdout.waitFor(/"GET \/info HTTP\/1\.1" 200 /), null, cli.output());

    cli.kill("SIGTERM");
    const status = await cli.status();
    equal(status.signal, null, cli.output());
    equal(status.code, 0, cli.output());
  },
});

Deno.test({
  name: "serve() over TLS closes a connection whose client stops reading, after sendTimeoutMs",
  ignore: OPENSSL === null,
  async fn() {
    await using cert = await makeCertificate(OPENSSL!);
    const closed = Promise.withResolvers<void>();
    const endless: Application = (_environ, startResponse) => {
      startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
      const chunk = new Uint8Array(64 * 1024);
      return {
        *[Symbol.iterator]() {
          for (;;) yield chunk;
        },
        close: () => closed.resolve(),
      };
    };
    await using t = startServer(endless, { cert: cert.cert, key: cert.key, sendTimeoutMs: 200 });
    const conn = await Deno.connectTls({
      hostname: "localhost",
      port: t.port,
      caCerts: [cert.cert],
    });
    try {
      await conn.write(new TextEncoder().encode("GET / HTTP/1.1\r\nHost: localhost\r\n\r\n"));
      // Never read: the server's TLS writes stall, and the deadline ends the response.
      await closed.promise;
    } finally {
      conn.close();
    }
  },
});
