/**
 * Behind nginx: the deployment `docs/deployment.md` recommends, run for real. Each
 * test starts Debian's nginx as a child on loopback with its own config in a
 * temp dir (pid file, logs and every temp path inside it; single process, no
 * daemon), in front of our server:
 *
 * - nginx -> `serve()` in this process, over TCP and over a Unix socket:
 *   GET, a 1 MiB upload (Content-Length and chunked), a chunked stream, and
 *   the `X-Forwarded-*` headers nginx adds, as the application sees them.
 * - nginx -> `proxyFix()` -> `serve()`: a client's own `Forwarded` header,
 *   which nginx passes through untouched, cannot choose `REMOTE_ADDR`.
 * - Two CLI backends behind one upstream under a bounded `wrk` load; one gets
 *   SIGTERM mid-load: wrk sees no error at all (the backend drains, nginx
 *   moves on), an in-flight request on the stopped backend completes, and
 *   the stopped backend exits 0.
 *
 * Needs nginx (`nginx-light`), wrk and curl. A missing nginx or wrk is
 * installed with apt-get once; if that fails, every test here is skipped,
 * loudly.
 */

import { equal, match, notEqual, ok } from "node:assert/strict";
import { type Application, proxyFix } from "../mod.ts";
import { app } from "../app.ts";
import { serve } from "../server.ts";
import { startServer } from "./_helpers.ts";
import {
  Child,
  curl as runCurl,
  findExecutable,
  freePort,
  run,
  type RunResult,
  tempDir,
} from "./_child.ts";

const decoder = new TextDecoder();
const encoder = new TextEncoder();

const SBIN = ["/usr/sbin", "/sbin", "/usr/local/sbin"];

/** Finds the tools; installs what is missing with apt-get, once. */
async function findTools(): Promise<{ nginx: string | null; wrk: string | null }> {
  let nginx = findExecutable("nginx", SBIN);
  let wrk = findExecutable("wrk");
  const packages = [nginx === null ? "nginx-light" : "", wrk === null ? "wrk" : ""].filter(Boolean);
  const aptGet = findExecutable("apt-get", SBIN);
  if (packages.length > 0 && aptGet !== null) {
    console.warn(`nginx_test.ts: installing ${packages.join(" ")} with apt-get`);
    const result = await run(aptGet, ["install", "-y", "-q", ...packages], {
      env: { DEBIAN_FRONTEND: "noninteractive" },
    });
    if (result.code !== 0) console.warn(`apt-get failed (${result.code}):\n${result.stderr}`);
    nginx = findExecutable("nginx", SBIN);
    wrk = findExecutable("wrk");
  }
  return { nginx, wrk };
}

const { nginx: NGINX, wrk: WRK } = await findTools();
const CURL = findExecutable("curl");
const MISSING = [
  NGINX === null ? "nginx" : "",
  WRK === null ? "wrk" : "",
  CURL === null ? "curl" : "",
].filter(Boolean);
if (MISSING.length > 0) {
  console.warn(
    `!!! nginx_test.ts: ${MISSING.join(", ")} NOT FOUND (and not installable): ` +
      "SKIPPING every nginx test !!!",
  );
}

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;

/** An upstream: `server` lines of an nginx `upstream` block. */
type Upstream = { name: string; servers: string[] };

/**
 * The config under test: what `docs/deployment.md` recommends in front of
 * the server, plus what a throwaway instance needs (everything inside `dir`,
 * single process, logs on stderr). Each upstream is proxied under
 * `/<name>/`, with the prefix removed.
 */
function nginxConfig(dir: string, port: number, upstreams: Upstream[]): string {
  const blocks = upstreams.map(({ name, servers }) =>
    `  upstream ${name} {
${servers.map((s) => `    server ${s};`).join("\n")}
    keepalive 16;
  }`
  ).join("\n");
  const locations = upstreams.map(({ name }) =>
    `    location /${name}/ {
      proxy_pass http://${name}/;
    }`
  ).join("\n");
  return `daemon off;
master_process off;
pid ${dir}/nginx.pid;
error_log stderr notice;
events {
  worker_connections 256;
}
http {
  access_log off;
  client_body_temp_path ${dir}/client_body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;

  client_max_body_size 10m;
  proxy_http_version 1.1;
  proxy_set_header Connection "";
  proxy_set_header Host $http_host;
  proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
  proxy_set_header X-Forwarded-Proto $scheme;
  proxy_next_upstream error timeout;

${blocks}

  server {
    listen 127.0.0.1:${port};
${locations}
  }
}
`;
}

/** A running nginx on 127.0.0.1 and its temp dir. */
class Nginx implements AsyncDisposable {
  readonly child: Child;
  readonly port: number;
  readonly dir: string;

  private constructor(child: Child, port: number, dir: string) {
    this.child = child;
    this.port = port;
    this.dir = dir;
  }

  /**
   * Writes the config, checks it with `nginx -t`, starts nginx and waits for
   * the notice it logs once its listening socket is open.
   */
  static async start(dir: string, upstreams: Upstream[]): Promise<Nginx> {
    const port = freePort();
    const conf = `${dir}/nginx.conf`;
    await Deno.writeTextFile(conf, nginxConfig(dir, port, upstreams));
    const args = ["-p", `${dir}/`, "-c", conf, "-e", "stderr"];
    const check = await run(NGINX!, ["-t", ...args]);
    equal(check.code, 0, `nginx -t rejected the config:\n${check.stderr}`);
    const child = new Child(NGINX!, args);
    // nginx logs its OS line after it has bound and is listening.
    const ready = await child.stderr.waitFor(/\[notice\].* OS: /);
    if (ready === null) {
      await child.status();
      throw new Error(`nginx did not start:\n${child.output()}`);
    }
    return new Nginx(child, port, dir);
  }

  /** The URL of a path under an upstream's prefix. */
  url(upstream: string, path: string): string {
    return `http://127.0.0.1:${this.port}/${upstream}${path}`;
  }

  /** Stops nginx gracefully (SIGQUIT) and returns how it exited. */
  async stop(): Promise<{ code: number; signal: Deno.Signal | null }> {
    this.child.kill("SIGQUIT");
    return await this.child.status();
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.child[Symbol.asyncDispose]();
  }
}

/** curl; asserts exit 0. */
async function curl(...args: string[]): Promise<RunResult> {
  const result = await runCurl(CURL!, ...args);
  equal(result.code, 0, `curl ${args.join(" ")} exited ${result.code}:\n${result.stderr}`);
  return result;
}

/**
 * The sample app, plus `POST /upload`, which reads the whole request body and
 * then answers with it: what an application behind nginx must do. nginx
 * stops sending the request body once the response head has arrived
 * (`ngx_http_upstream_send_request_handler`), so the sample's `/echo`, which
 * answers while it reads, stalls behind nginx as soon as the body outgrows
 * the socket buffers (about 200 KiB over a Unix socket, a few MiB over
 * loopback TCP).
 */
const proxiedApp: Application = async (environ, startResponse) => {
  if (environ.PATH_INFO !== "/upload") return app(environ, startResponse);
  const body = await environ["wsgi.input"].read();
  startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
  return [body];
};

/** The `KEY: value` lines of a `/info` body, as a map. */
function environLines(body: string): Map<string, string> {
  const map = new Map<string, string>();
  for (const line of body.split("\n").slice(1)) {
    const colon = line.indexOf(": ");
    if (colon > 0) map.set(line.slice(0, colon), line.slice(colon + 2));
  }
  return map;
}

Deno.test({
  name:
    "nginx proxies GET, 1 MiB uploads and a chunked stream to serve() over TCP and a Unix socket",
  ignore: MISSING.length > 0,
  async fn() {
    await using temp = await tempDir("wsgi_nginx_");
    const dir = temp.path;
    const errors: string[] = [];
    const onError = (message: string, error?: unknown) => errors.push(`${message}: ${error}`);
    await using tcp = startServer(proxiedApp, { onError });
    const socketPath = `${dir}/backend.sock`;
    await using _unix = serve(proxiedApp, { path: socketPath, onListen() {}, onError });
    await using nginx = await Nginx.start(dir, [
      { name: "tcp", servers: [`127.0.0.1:${tcp.port}`] },
      { name: "unix", servers: [`unix:${socketPath}`] },
    ]);

    const data = new Uint8Array(1024 * 1024).map((_, i) => (i * 7919 + 13) % 256);
    const upload = `${dir}/upload.bin`;
    await Deno.writeFile(upload, data);

    for (const upstream of ["tcp", "unix"]) {
      const hello = await curl(nginx.url(upstream, "/hello"));
      equal(decoder.decode(hello.stdout), "Hello, specific page!\n", upstream);

      // What the application sees behind the proxy.
      const first = environLines(decoder.decode(
        (await curl("-H", "X-Forwarded-For: 203.0.113.7", nginx.url(upstream, "/info?a=1")))
          .stdout,
      ));
      equal(first.get("HTTP_X_FORWARDED_FOR"), "203.0.113.7, 127.0.0.1", upstream);
      equal(first.get("HTTP_X_FORWARDED_PROTO"), "http", upstream);
      equal(first.get("HTTP_HOST"), `127.0.0.1:${nginx.port}`, upstream);
      equal(first.get("SERVER_NAME"), "127.0.0.1", upstream);
      equal(first.get("SERVER_PORT"), String(nginx.port), upstream);
      equal(first.get("PATH_INFO"), "/info", upstream);
      equal(first.get("QUERY_STRING"), "a=1", upstream);
      equal(first.get("SERVER_PROTOCOL"), "HTTP/1.1", upstream);
      if (upstream === "tcp") {
        equal(first.get("REMOTE_ADDR"), "127.0.0.1");
        // nginx keeps its upstream connection alive: the next request
        // arrives on the same connection.
        const second = environLines(decoder.decode(
          (await curl(nginx.url(upstream, "/info"))).stdout,
        ));
        equal(second.get("REMOTE_PORT"), first.get("REMOTE_PORT"), "upstream keep-alive");
      } else {
        equal(first.has("REMOTE_ADDR"), false, "a Unix peer has no address");
      }

      for (const framing of ["Content-Length", "chunked"]) {
        const output = `${dir}/echo-${upstream}-${framing}.bin`;
        const echo = await curl(
          "-H",
          "Content-Type: application/octet-stream",
          ...(framing === "chunked" ? ["-H", "Transfer-Encoding: chunked"] : []),
          "--data-binary",
          `@${upload}`,
          "-o",
          output,
          "-w",
          "%{http_code}",
          nginx.url(upstream, "/upload"),
        );
        equal(decoder.decode(echo.stdout), "200", `${upstream} ${framing}`);
        const echoed = await Deno.readFile(output);
        equal(echoed.length, data.length, `${upstream} ${framing}: length`);
        ok(echoed.every((b, i) => b === data[i]), `${upstream} ${framing}: bytes differ`);
      }

      const stream = await curl("-D", "-", nginx.url(upstream, "/stream?n=300"));
      const text = decoder.decode(stream.stdout);
      const bodyAt = text.indexOf("\r\n\r\n") + 4;
      match(text.slice(0, bodyAt), /^HTTP\/1\.1 200 OK\r\n/);
      match(text.slice(0, bodyAt), /^Transfer-Encoding: chunked\r$/im);
      equal(
        text.slice(bodyAt),
        Array.from({ length: 300 }, (_, i) => `chunk ${i + 1} of 300\n`).join(""),
        upstream,
      );
    }

    const status = await nginx.stop();
    equal(status.code, 0, nginx.child.output());
    equal(errors.length, 0, errors.join("\n"));
  },
});

Deno.test({
  name:
    "behind nginx, proxyFix() ignores a Forwarded header sent by the client unless told to honour it",
  ignore: MISSING.length > 0,
  async fn() {
    await using temp = await tempDir("wsgi_nginx_forwarded_");
    const trusted = { trustedProxies: ["127.0.0.1"] };
    await using byDefault = startServer(proxyFix(app, trusted));
    await using honouring = startServer(proxyFix(app, { ...trusted, forwarded: true }));
    await using nginx = await Nginx.start(temp.path, [
      { name: "default", servers: [`127.0.0.1:${byDefault.port}`] },
      { name: "honouring", servers: [`127.0.0.1:${honouring.port}`] },
    ]);
    const forged = "for=198.51.100.66;proto=https";
    const seen = async (upstream: string) =>
      environLines(decoder.decode(
        (await curl("-H", `Forwarded: ${forged}`, nginx.url(upstream, "/info"))).stdout,
      ));

    const environ = await seen("default");
    equal(environ.get("HTTP_FORWARDED"), forged, "nginx passes the client's header on as it came");
    equal(environ.get("HTTP_X_FORWARDED_FOR"), "127.0.0.1");
    equal(environ.get("REMOTE_ADDR"), "127.0.0.1", "the client address nginx saw");
    equal(environ.get("wsgi.url_scheme"), "http");

    // What the default prevents: honoured, the client's header wins.
    const forgedEnviron = await seen("honouring");
    equal(forgedEnviron.get("REMOTE_ADDR"), "198.51.100.66");
    equal(forgedEnviron.get("wsgi.url_scheme"), "https");

    equal((await nginx.stop()).code, 0, nginx.child.output());
  },
});

/** A CLI server process (sample app, access log on) and where it listens. */
interface Backend {
  child: Child;
  /** nginx's `server` address: `127.0.0.1:PORT` or `unix:PATH`. */
  address: string;
  /** Opens a plain connection straight to it, bypassing nginx. */
  connect(): Promise<Deno.Conn>;
}

async function startBackend(listen: string[]): Promise<Backend> {
  const child = new Child(Deno.execPath(), [
    "run",
    "--allow-net",
    "--allow-read",
    "--allow-write",
    SERVER_TS,
    "--shutdown-timeout",
    "20000",
    ...listen,
  ], { cwd: PROJECT_DIR });
  const line = await child.stdout.waitFor(/^Listening on /);
  if (line === null) {
    await child.status();
    throw new Error(`The backend did not start:\n${child.output()}`);
  }
  const tcp = /^Listening on http:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line);
  if (tcp !== null) {
    const port = Number(tcp[1]);
    return {
      child,
      address: `127.0.0.1:${port}`,
      connect: () => Deno.connect({ hostname: "127.0.0.1", port }),
    };
  }
  const path = /^Listening on unix:(.+)$/.exec(line)![1]!;
  return {
    child,
    address: `unix:${path}`,
    connect: () => Deno.connect({ transport: "unix", path }),
  };
}

/** Reads until what was read ends with `end`; throws at EOF. */
async function readUntil(conn: Deno.Conn, end: string): Promise<string> {
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  while (!text.endsWith(end)) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`EOF before ${JSON.stringify(end)}: ${JSON.stringify(text)}`);
    text += decoder.decode(buf.subarray(0, n), { stream: true });
  }
  return text;
}

/** Reads until the peer closes (or resets) the connection. */
async function readToEnd(conn: Deno.Conn): Promise<string> {
  const buf = new Uint8Array(16 * 1024);
  let text = "";
  for (;;) {
    let n: number | null;
    try {
      n = await conn.read(buf);
    } catch {
      break;
    }
    if (n === null) break;
    text += decoder.decode(buf.subarray(0, n), { stream: true });
  }
  return text;
}

const ACCESS_LINE = /"GET \/hello HTTP\/1\.1" 200 /;
/** Requests the first backend must have logged before it gets SIGTERM. */
const REQUESTS_BEFORE_SIGTERM = 50;

for (const transport of ["TCP", "Unix socket"] as const) {
  Deno.test({
    name:
      `a backend SIGTERMed under wrk load behind nginx drains and exits 0, with no failed request (${transport})`,
    ignore: MISSING.length > 0,
    async fn() {
      await using temp = await tempDir("wsgi_nginx_drain_");
      const dir = temp.path;
      const listen = (n: number) =>
        transport === "TCP" ? ["--port", "0"] : ["--unix", `${dir}/backend${n}.sock`];
      await using stack = new AsyncDisposableStack();
      const first = await startBackend(listen(1));
      stack.use(first.child);
      const second = await startBackend(listen(2));
      stack.use(second.child);
      const nginx = stack.use(
        await Nginx.start(dir, [{ name: "pair", servers: [first.address, second.address] }]),
      );

      // A request in flight on the first backend when it gets SIGTERM: its
      // body is sent after the load is over. The server sends
      // "100 Continue" when the app starts reading the body, so that line
      // means the app is running the request.
      const held = await first.connect();
      let heldOpen = true;
      stack.defer(() => {
        if (heldOpen) held.close();
      });
      await held.write(encoder.encode(
        "POST /echo HTTP/1.1\r\nHost: held\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
      ));
      equal(await readUntil(held, "\r\n\r\n"), "HTTP/1.1 100 Continue\r\n\r\n");

      await using wrk = new Child(WRK!, [
        "-t1",
        "-c8",
        "-d1s",
        "--timeout",
        "5s",
        nginx.url("pair", "/hello"),
      ]);
      // The trigger: the first backend has served real load through nginx.
      const loaded = await Promise.race([
        first.child.stdout.waitForCount(ACCESS_LINE, REQUESTS_BEFORE_SIGTERM),
        wrk.status().then(() => false),
      ]);
      ok(loaded, `wrk ended before the first backend served ${REQUESTS_BEFORE_SIGTERM} requests`);
      first.child.kill("SIGTERM");
      notEqual(await first.child.stderr.waitFor(/Shutting down/), null, first.child.output());
      const secondAtSigterm = second.child.stdout.count(ACCESS_LINE);

      const wrkStatus = await wrk.status();
      const report = wrk.stdout.lines.join("\n");
      equal(wrkStatus.code, 0, wrk.output());
      const requests = Number(/(\d+) requests in /.exec(report)?.[1] ?? 0);
      ok(requests > REQUESTS_BEFORE_SIGTERM, report);
      equal(/Non-2xx/.test(report), false, `failed requests:\n${report}`);
      equal(/Socket errors/.test(report), false, `socket errors:\n${report}`);
      ok(
        await second.child.stdout.waitForCount(ACCESS_LINE, secondAtSigterm + 1),
        "the second backend took the load after the SIGTERM",
      );

      // The in-flight request still completes, then the backend exits 0.
      equal(first.child.exited, false, "the first backend waits for its in-flight request");
      await held.write(encoder.encode("0123456789"));
      const response = await readToEnd(held);
      // Closing our side ends the server's linger at once.
      held.close();
      heldOpen = false;
      match(response, /^HTTP\/1\.1 200 OK\r\n/);
      match(response, /\r\nConnection: close\r\n/i);
      ok(response.endsWith("\r\n\r\n0123456789"), JSON.stringify(response));
      const exit = await first.child.status();
      equal(exit.signal, null, first.child.output());
      equal(exit.code, 0, first.child.output());
      if (transport === "Unix socket") {
        equal(first.address.startsWith("unix:"), true);
        let gone = false;
        try {
          await Deno.lstat(first.address.slice("unix:".length));
        } catch (error) {
          gone = error instanceof Deno.errors.NotFound;
        }
        ok(gone, "the drained backend removed its socket file");
      }

      equal((await nginx.stop()).code, 0, nginx.child.output());
      second.child.kill("SIGTERM");
      equal((await second.child.status()).code, 0, second.child.output());
    },
  });
}
