/**
 * Interoperability tests: the server against real HTTP clients that nobody on
 * this project wrote, `curl` and Python's `http.client`, and the command line
 * run as a separate process.
 *
 * No sleeps: every wait ends on an event (a child's exit, a stream's line or
 * EOF). Each child is bounded: curl by `--max-time`, Python by its socket
 * timeout, the CLI server by a watchdog that kills it (its stdout then ends,
 * and the test fails on EOF).
 */

import { equal, match, ok } from "node:assert/strict";
import { app } from "../app.ts";
import { startServer } from "./_helpers.ts";
import {
  Child,
  CLIENT_TIMEOUT_S,
  curl as runCurl,
  findExecutable,
  run,
  type RunResult,
  tempDir,
} from "./_child.ts";

const decoder = new TextDecoder();

const CURL = findExecutable("curl");
const PYTHON = findExecutable("python3");
if (CURL === null) {
  console.warn("!!! interop_test.ts: `curl` NOT FOUND on PATH: SKIPPING every curl test !!!");
}
if (PYTHON === null) {
  console.warn(
    "!!! interop_test.ts: `python3` NOT FOUND on PATH: SKIPPING the http.client test !!!",
  );
}

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;

const HOMEPAGE = "Hello from My Simple WSGI App! (Homepage)\n";
const HELLO = "Hello, specific page!\n";
const NOT_FOUND = "404 Not Found: This page does not exist.\n";
const TEXT_PLAIN = "text/plain; charset=utf-8";
const POWERED_BY = "MySimpleWSGIApp";

/** Runs curl (no proxy, no config file, bounded in time) and asserts it exits 0. */
async function curl(...args: string[]): Promise<RunResult> {
  const result = await runCurl(CURL!, ...args);
  equal(result.code, 0, `curl ${args.join(" ")} exited ${result.code}:\n${result.stderr}`);
  return result;
}

/** One response as `curl -i` prints it. Header names are lower-cased. */
interface CurlResponse {
  statusLine: string;
  headers: Map<string, string>;
  headerNames: string[];
  body: string;
}

/**
 * Splits `curl -i` output into its responses (several URLs, or interim 1xx
 * heads, give several). A response's body runs to the next status line that
 * curl printed, so this is only for bodies known not to contain one.
 */
function parseCurlOutput(text: string): CurlResponse[] {
  const responses: CurlResponse[] = [];
  let rest = text;
  while (rest.length > 0) {
    const end = rest.indexOf("\r\n\r\n");
    if (end < 0) throw new Error(`No end of head in curl output: ${JSON.stringify(rest)}`);
    const lines = rest.slice(0, end).split("\r\n");
    const headers = new Map<string, string>();
    const headerNames: string[] = [];
    for (const line of lines.slice(1)) {
      const colon = line.indexOf(":");
      const name = line.slice(0, colon);
      headerNames.push(name);
      headers.set(name.toLowerCase(), line.slice(colon + 1).trim());
    }
    rest = rest.slice(end + 4);
    const next = rest.search(/HTTP\/1\.[01] \d{3}/);
    const body = next < 0 ? rest : rest.slice(0, next);
    rest = next < 0 ? "" : rest.slice(next);
    responses.push({ statusLine: lines[0]!, headers, headerNames, body });
  }
  return responses;
}

/** The single final response in `curl -i` output, after any 1xx heads. */
function finalResponse(text: string): CurlResponse {
  const responses = parseCurlOutput(text).filter((r) => !/^HTTP\/1\.1 1\d\d/.test(r.statusLine));
  equal(responses.length, 1, `expected one final response in ${JSON.stringify(text)}`);
  return responses[0]!;
}

/** Index of the first byte where `a` and `b` differ (or the shorter length), -1 if equal. */
function firstDifference(a: Uint8Array, b: Uint8Array): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) if (a[i] !== b[i]) return i;
  return a.length === b.length ? -1 : n;
}

/** `size` cryptographically random bytes. */
function randomBytes(size: number): Uint8Array {
  const out = new Uint8Array(size);
  for (let at = 0; at < size; at += 65536) {
    crypto.getRandomValues(out.subarray(at, Math.min(size, at + 65536)));
  }
  return out;
}

// ---------------------------------------------------------------------------
// curl against the in-process server
// ---------------------------------------------------------------------------

Deno.test({
  name: "curl gets the seed's answers from the sample app",
  ignore: CURL === null,
  async fn() {
    await using t = startServer(app);

    const home = finalResponse(decoder.decode((await curl("-i", `${t.url}/`)).stdout));
    equal(home.statusLine, "HTTP/1.1 200 OK");
    equal(home.body, HOMEPAGE);
    equal(home.headers.get("content-type"), TEXT_PLAIN);
    equal(home.headers.get("x-powered-by"), POWERED_BY);
    equal(home.headers.get("content-length"), "42");

    const hello = finalResponse(decoder.decode((await curl("-i", `${t.url}/hello`)).stdout));
    equal(hello.statusLine, "HTTP/1.1 200 OK");
    equal(hello.body, HELLO);
    equal(hello.headers.get("content-type"), TEXT_PLAIN);
    equal(hello.headers.get("x-powered-by"), POWERED_BY);

    const info = finalResponse(decoder.decode((await curl("-i", `${t.url}/info?a=1`)).stdout));
    equal(info.statusLine, "HTTP/1.1 200 OK");
    equal(info.headers.get("content-type"), TEXT_PLAIN);
    equal(info.headers.get("x-powered-by"), POWERED_BY);
    ok(info.body.startsWith("Environment info:\n"), info.body);
    const infoLines = info.body.split("\n");
    ok(infoLines.includes("REQUEST_METHOD: GET"), info.body);
    ok(infoLines.includes("QUERY_STRING: a=1"), info.body);
    ok(infoLines.includes("PATH_INFO: /info"), info.body);
    ok(infoLines.includes("SERVER_PROTOCOL: HTTP/1.1"), info.body);
    const keys = infoLines.slice(1, -1).map((line) => line.slice(0, line.indexOf(":")));
    equal(JSON.stringify(keys), JSON.stringify([...keys].sort()), "sorted keys");

    const missing = finalResponse(
      decoder.decode((await curl("-i", `${t.url}/nonexistent_page`)).stdout),
    );
    equal(missing.statusLine, "HTTP/1.1 404 Not Found");
    equal(missing.body, NOT_FOUND);
    equal(missing.headers.get("content-type"), TEXT_PLAIN);
    equal(missing.headers.has("x-powered-by"), false, "no X-Powered-By on a 404");

    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

Deno.test({
  name: "curl reuses one kept-alive connection for several URLs",
  ignore: CURL === null,
  async fn() {
    await using t = startServer(app);
    const result = await curl(
      "-v",
      "-i",
      `${t.url}/`,
      `${t.url}/hello`,
      `${t.url}/info?first`,
      `${t.url}/info?second`,
    );
    match(result.stderr, /Re-using existing connection/i);
    equal(
      result.stderr.match(/Connected to /g)?.length,
      1,
      `one TCP connection expected:\n${result.stderr}`,
    );

    const responses = parseCurlOutput(decoder.decode(result.stdout));
    equal(responses.length, 4);
    for (const r of responses) equal(r.statusLine, "HTTP/1.1 200 OK");
    equal(responses[0]!.body, HOMEPAGE);
    equal(responses[1]!.body, HELLO);
    // The server also saw one connection: the same client port both times.
    const remotePort = (body: string) => /^REMOTE_PORT: (\d+)$/m.exec(body)?.[1];
    const firstPort = remotePort(responses[2]!.body);
    ok(firstPort !== undefined, responses[2]!.body);
    equal(remotePort(responses[3]!.body), firstPort);
    ok(responses[2]!.body.includes("QUERY_STRING: first\n"));
    ok(responses[3]!.body.includes("QUERY_STRING: second\n"));

    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

Deno.test({
  name: "curl uploads 1 MiB to /echo and gets it back byte for byte",
  ignore: CURL === null,
  async fn() {
    await using t = startServer(app);
    await using temp = await tempDir("wsgi_interop_");
    const dir = temp.path;
    const input = `${dir}/upload.bin`;
    const data = randomBytes(1024 * 1024);
    await Deno.writeFile(input, data);

    const cases: [string, string[]][] = [
      ["Content-Length", []],
      ["chunked", ["-H", "Transfer-Encoding: chunked"]],
      ["Expect: 100-continue", ["-H", "Expect: 100-continue", "--expect100-timeout", "15"]],
    ];
    for (const [label, extra] of cases) {
      const output = `${dir}/echo-${label.replace(/\W+/g, "_")}.bin`;
      const result = await curl(
        "-v",
        "-H",
        "Content-Type: application/octet-stream",
        ...extra,
        "--data-binary",
        `@${input}`,
        "-o",
        output,
        "-w",
        "%{http_code}",
        `${t.url}/echo`,
      );
      equal(decoder.decode(result.stdout), "200", `${label}: status`);
      const echoed = await Deno.readFile(output);
      equal(echoed.length, data.length, `${label}: length`);
      equal(firstDifference(echoed, data), -1, `${label}: bytes differ`);
      if (label === "chunked") {
        match(result.stderr, /^> Transfer-Encoding: chunked\r?$/im, `${label}: request framing`);
        match(result.stderr, /^< Transfer-Encoding: chunked\r?$/im, `${label}: response framing`);
      } else if (label === "Content-Length") {
        match(result.stderr, /^> Content-Length: 1048576\r?$/im);
        match(result.stderr, /^< Content-Length: 1048576\r?$/im);
      } else {
        match(result.stderr, /^> Expect: 100-continue\r?$/im);
        // curl waited for the interim response rather than timing out.
        match(result.stderr, /^< HTTP\/1\.1 100 Continue\r?$/im, result.stderr);
        ok(!/Done waiting for 100-continue/i.test(result.stderr), result.stderr);
      }
    }
    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

Deno.test({
  name: "curl reads the chunked /stream and a bodiless HEAD",
  ignore: CURL === null,
  async fn() {
    await using t = startServer(app);

    const stream = finalResponse(decoder.decode((await curl("-i", `${t.url}/stream`)).stdout));
    equal(stream.statusLine, "HTTP/1.1 200 OK");
    equal(stream.headers.get("transfer-encoding"), "chunked");
    equal(stream.headers.has("content-length"), false);
    equal(
      stream.body,
      "chunk 1 of 5\nchunk 2 of 5\nchunk 3 of 5\nchunk 4 of 5\nchunk 5 of 5\n",
    );
    const many = await curl(`${t.url}/stream?n=200`);
    const expected = Array.from({ length: 200 }, (_, i) => `chunk ${i + 1} of 200\n`).join("");
    equal(decoder.decode(many.stdout), expected);

    // Two HEADs on one connection: a stray body after the first would be
    // read by curl as the second response's status line.
    const head = await curl("-v", "-I", `${t.url}/`, `${t.url}/hello`);
    match(head.stderr, /Re-using existing connection/i);
    const text = decoder.decode(head.stdout);
    const responses = parseCurlOutput(text);
    equal(responses.length, 2, text);
    equal(responses[0]!.statusLine, "HTTP/1.1 200 OK");
    equal(responses[0]!.headers.get("content-length"), "42");
    equal(responses[0]!.headers.get("content-type"), TEXT_PLAIN);
    equal(responses[0]!.body, "", "no body after HEAD");
    equal(responses[1]!.statusLine, "HTTP/1.1 200 OK");
    equal(responses[1]!.headers.get("content-length"), String(HELLO.length));
    equal(responses[1]!.body, "", "no body after HEAD");
    ok(text.endsWith("\r\n\r\n"), JSON.stringify(text));

    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

// ---------------------------------------------------------------------------
// Python's http.client against the in-process server
// ---------------------------------------------------------------------------

const PYTHON_CLIENT = `
import hashlib, http.client, json, sys

port = int(sys.argv[1])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=${CLIENT_TIMEOUT_S})
out = {"requests": []}
first_sock = None

def record(label, resp, body, extra=None):
    global first_sock
    if first_sock is None:
        first_sock = conn.sock
    entry = {
        "label": label,
        "status": resp.status,
        "reason": resp.reason,
        "version": resp.version,
        "headers": [[k, v] for k, v in resp.getheaders()],
        "body": body.decode("utf-8", "replace"),
        "bodyLength": len(body),
        "sameSocket": conn.sock is not None and conn.sock is first_sock,
        "willClose": resp.will_close,
    }
    if extra:
        entry.update(extra)
    out["requests"].append(entry)

for path in ["/", "/hello", "/info?a=1"]:
    conn.request("GET", path)
    resp = conn.getresponse()
    record("GET " + path, resp, resp.read())

conn.request("POST", "/echo", body=b"hello from python\\x00\\xff",
             headers={"Content-Type": "application/x-test"})
resp = conn.getresponse()
record("POST /echo", resp, resp.read())

big = bytes((i * 7919) % 256 for i in range(300 * 1024))
conn.request("POST", "/echo", body=big)
resp = conn.getresponse()
body = resp.read()
record("POST /echo big", resp, b"", {
    "echoLength": len(body),
    "echoMatches": hashlib.sha256(body).hexdigest() == hashlib.sha256(big).hexdigest(),
})

def pieces():
    yield b"chunked "
    yield b"upload "
    yield b"from "
    yield b"python"

conn.request("POST", "/echo", body=pieces(), encode_chunked=True,
             headers={"Transfer-Encoding": "chunked", "Content-Type": "text/plain"})
resp = conn.getresponse()
record("POST /echo chunked", resp, resp.read())

conn.request("HEAD", "/")
resp = conn.getresponse()
record("HEAD /", resp, resp.read())

conn.request("GET", "/hello")
resp = conn.getresponse()
record("GET /hello after HEAD", resp, resp.read())

conn.close()
json.dump(out, sys.stdout)
`;

interface PythonEntry {
  label: string;
  status: number;
  reason: string;
  version: number;
  headers: [string, string][];
  body: string;
  bodyLength: number;
  sameSocket: boolean;
  willClose: boolean;
  echoLength?: number;
  echoMatches?: boolean;
}

function header(entry: PythonEntry, name: string): string | undefined {
  return entry.headers.find(([k]) => k.toLowerCase() === name.toLowerCase())?.[1];
}

Deno.test({
  name: "python http.client keeps one connection through GETs, POSTs and HEAD",
  ignore: PYTHON === null,
  async fn() {
    await using t = startServer(app);
    const result = await run(PYTHON!, ["-c", PYTHON_CLIENT, String(t.port)]);
    equal(result.code, 0, `python3 exited ${result.code}:\n${result.stderr}`);
    const { requests } = JSON.parse(decoder.decode(result.stdout)) as {
      requests: PythonEntry[];
    };
    equal(
      JSON.stringify(requests.map((r) => r.label)),
      JSON.stringify([
        "GET /",
        "GET /hello",
        "GET /info?a=1",
        "POST /echo",
        "POST /echo big",
        "POST /echo chunked",
        "HEAD /",
        "GET /hello after HEAD",
      ]),
    );
    const by = (label: string) => requests.find((r) => r.label === label)!;
    for (const r of requests) {
      equal(r.status, 200, `${r.label}: status`);
      equal(r.reason, "OK", `${r.label}: reason`);
      equal(r.version, 11, `${r.label}: HTTP/1.1`);
      ok(r.sameSocket, `${r.label}: the socket of the first request was reused`);
      equal(r.willClose, false, `${r.label}: keep-alive`);
      equal(header(r, "x-powered-by"), POWERED_BY, `${r.label}: X-Powered-By`);
    }

    equal(by("GET /").body, HOMEPAGE);
    equal(header(by("GET /"), "content-type"), TEXT_PLAIN);
    equal(by("GET /hello").body, HELLO);
    const infoLines = by("GET /info?a=1").body.split("\n");
    equal(infoLines[0], "Environment info:");
    ok(infoLines.includes("REQUEST_METHOD: GET"));
    ok(infoLines.includes("QUERY_STRING: a=1"));

    const echo = by("POST /echo");
    equal(echo.body, "hello from python\u0000\ufffd");
    equal(echo.bodyLength, 19);
    equal(header(echo, "content-type"), "application/x-test");
    equal(header(echo, "content-length"), "19");

    const big = by("POST /echo big");
    equal(big.echoLength, 300 * 1024);
    equal(big.echoMatches, true);

    const chunked = by("POST /echo chunked");
    equal(chunked.body, "chunked upload from python");
    equal(header(chunked, "content-type"), "text/plain");
    equal(header(chunked, "transfer-encoding"), "chunked");

    const head = by("HEAD /");
    equal(head.bodyLength, 0);
    equal(header(head, "content-length"), "42");
    equal(header(head, "content-type"), TEXT_PLAIN);
    equal(by("GET /hello after HEAD").body, HELLO);

    equal(t.errors.length, 0, t.errors.join("\n"));
  },
});

// ---------------------------------------------------------------------------
// The command line, as a child process
// ---------------------------------------------------------------------------

/**
 * Spawns `deno run <runFlags> server.ts <args>` and waits for its
 * "Listening on" line; returns the child (bounded by its watchdog) and the
 * port the line names.
 */
async function startCli(
  runFlags: string[],
  args: string[],
): Promise<{ child: Child; port: number }> {
  const child = new Child(Deno.execPath(), ["run", ...runFlags, SERVER_TS, ...args], {
    cwd: PROJECT_DIR,
  });
  const line = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:(\d+)\/$/);
  if (line === null) {
    await child[Symbol.asyncDispose]();
    throw new Error(`The CLI exited without a startup line.\n${child.output()}`);
  }
  return { child, port: Number(/:(\d+)\/$/.exec(line)![1]) };
}

const CLF_LINE =
  /^127\.0\.0\.1 - - \[\d{2}\/[A-Z][a-z]{2}\/\d{4}:\d{2}:\d{2}:\d{2} \+0000\] "GET \/ HTTP\/1\.1" 200 42$/;

Deno.test({
  name: "the CLI serves on the port it prints, logs in CLF, and exits 0 on SIGTERM",
  ignore: CURL === null,
  async fn() {
    const cli = await startCli(["--allow-net"], ["--port", "0"]);
    await using child = cli.child;
    const result = await curl("-i", `http://127.0.0.1:${cli.port}/`);
    const home = finalResponse(decoder.decode(result.stdout));
    equal(home.statusLine, "HTTP/1.1 200 OK");
    equal(home.body, HOMEPAGE);
    equal(home.headers.get("x-powered-by"), POWERED_BY);

    const logLine = await child.stdout.waitFor(/"GET \/ HTTP\/1\.1"/);
    ok(logLine !== null, `no access-log line\n${child.output()}`);
    match(logLine, CLF_LINE);

    child.kill("SIGTERM");
    const status = await child.status();
    equal(status.signal, null, `killed by ${status.signal}\n${child.output()}`);
    equal(status.code, 0, `exit code\n${child.output()}`);
    match(child.stderr.lines.join("\n"), /Shutting down/);
  },
});

Deno.test({
  name: "the CLI serves MODULE:EXPORT from another module",
  ignore: CURL === null,
  async fn() {
    await using temp = await tempDir("wsgi_interop_cli_");
    const dir = temp.path;
    const module = `${dir}/custom_app.js`;
    await Deno.writeTextFile(
      module,
      `export const custom = (environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"], ["X-Custom", "yes"]]);
  return [new TextEncoder().encode("custom app at " + environ.PATH_INFO + "\\n")];
};
export const app = () => { throw new Error("the default export must not be served"); };
`,
    );
    const cli = await startCli(
      ["--allow-net", "--allow-read"],
      ["--port", "0", "--no-access-log", `${module}:custom`],
    );
    await using child = cli.child;
    const result = await curl("-i", `http://127.0.0.1:${cli.port}/some/path`);
    const response = finalResponse(decoder.decode(result.stdout));
    equal(response.statusLine, "HTTP/1.1 200 OK");
    equal(response.body, "custom app at /some/path\n");
    equal(response.headers.get("x-custom"), "yes");
    equal(response.headers.has("x-powered-by"), false);

    child.kill("SIGTERM");
    const status = await child.status();
    equal(status.code, 0, `exit code\n${child.output()}`);
    // --no-access-log: nothing but the startup line on stdout.
    equal(child.stdout.lines.length, 1, child.output());
  },
});

/** Uploads `size` bytes with urllib (which sends the whole body before reading) and prints the status. */
const URLLIB_UPLOAD = `
import sys, urllib.request, urllib.error
port, size = sys.argv[1], int(sys.argv[2])
request = urllib.request.Request(f"http://127.0.0.1:{port}/echo", data=b"x" * size, method="POST")
try:
    with urllib.request.urlopen(request, timeout=20) as response:
        print(response.status)
except urllib.error.HTTPError as error:
    print(error.code)
`;

Deno.test({
  name: "python urllib and curl read the 413 for an announced upload over the limit, not a reset",
  ignore: PYTHON === null || CURL === null,
  async fn() {
    await using t = startServer(app, { maxBodyBytes: 1000 });
    for (const size of [2000, 1024 * 1024, 10 * 1024 * 1024]) {
      const result = await run(PYTHON!, ["-c", URLLIB_UPLOAD, String(t.port), String(size)]);
      equal(result.code, 0, `urllib, ${size} bytes:\n${result.stderr}`);
      equal(decoder.decode(result.stdout).trim(), "413", `urllib, ${size} bytes`);
    }
    await using temp = await tempDir("wsgi_upload_");
    const file = `${temp.path}/big.bin`;
    await Deno.writeFile(file, new Uint8Array(10 * 1024 * 1024));
    for (const expect of [[], ["-H", "Expect:"]]) {
      const result = await curl(
        "-s",
        "-o",
        "/dev/null",
        "-w",
        "%{http_code}",
        ...expect,
        "--data-binary",
        `@${file}`,
        `${t.url}/echo`,
      );
      equal(decoder.decode(result.stdout), "413", `curl ${expect.join(" ")}: ${result.stderr}`);
    }
  },
});
