/**
 * Unix sockets: `serve()` with `path` and the CLI with `--unix`, driven by
 * `curl --unix-socket`. A stale socket file (what a crashed run leaves) is
 * made the honest way: a child process listens on the path and is killed
 * with SIGKILL, so nothing removes the file.
 *
 * curl is needed for the tests that send requests; without it they are
 * skipped, loudly.
 */

import { equal, match, notEqual, ok, rejects, throws } from "node:assert/strict";
import { app } from "../app.ts";
import { serve, type Server } from "../server.ts";
import { removeStaleSocket } from "../cli.ts";
import { Child, curl as runCurl, findExecutable, run, type RunResult, tempDir } from "./_child.ts";

const decoder = new TextDecoder();

const CURL = findExecutable("curl");
if (CURL === null) {
  console.warn(
    "!!! unix_socket_test.ts: `curl` NOT FOUND on PATH: SKIPPING every curl test !!!",
  );
}

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;
const PROJECT_DIR = new URL("..", import.meta.url).pathname;

/** curl over the Unix socket at `path`; asserts exit 0. */
async function curl(path: string, ...args: string[]): Promise<RunResult> {
  const result = await runCurl(CURL!, "--unix-socket", path, ...args);
  equal(result.code, 0, `curl ${args.join(" ")} exited ${result.code}:\n${result.stderr}`);
  return result;
}

/** Whether a socket file exists at `path`. */
async function socketExists(path: string): Promise<boolean> {
  try {
    return (await Deno.lstat(path)).isSocket === true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

/** Serves the sample app on `path` with the logs captured. */
function serveOn(path: string, errors: string[]): Server {
  return serve(app, {
    path,
    onListen() {},
    onError: (message, error) => errors.push(`${message}: ${error}`),
  });
}

/**
 * Leaves a stale socket file at `path`: a child process listens there and
 * is killed with SIGKILL, as a crashed server would be.
 */
async function leaveStaleSocket(path: string): Promise<void> {
  await using child = new Child(Deno.execPath(), [
    "eval",
    `const l = Deno.listen({ transport: "unix", path: ${JSON.stringify(path)} });
     console.log("listening");
     await l.accept();`,
  ]);
  notEqual(await child.stdout.waitFor(/^listening$/), null, child.output());
  child.kill("SIGKILL");
  equal((await child.status()).signal, "SIGKILL");
  ok(await socketExists(path), "the killed listener left its socket file");
  // Nobody answers on it.
  await rejects(Deno.connect({ transport: "unix", path }), Deno.errors.ConnectionRefused);
}

Deno.test({
  name: "serve() on a Unix socket answers curl --unix-socket and removes the file on shutdown",
  ignore: CURL === null,
  async fn() {
    await using temp = await tempDir("wsgi_unix_");
    const dir = temp.path;
    const path = `${dir}/wsgi.sock`;
    const errors: string[] = [];
    const server = serveOn(path, errors);
    try {
      equal(server.addr.transport, "unix");
      equal((server.addr as Deno.UnixAddr).path, path);
      ok(await socketExists(path));

      const hello = await curl(path, "http://localhost/hello");
      equal(decoder.decode(hello.stdout), "Hello, specific page!\n");

      // What environ says about a peer with no address.
      const info = decoder.decode((await curl(path, "http://localhost/info?a=1")).stdout);
      const lines = info.split("\n");
      ok(lines.includes("SERVER_NAME: localhost"), info);
      ok(lines.includes("SERVER_PORT: 80"), info);
      ok(lines.includes("HTTP_HOST: localhost"), info);
      ok(lines.includes("wsgi.url_scheme: http"), info);
      ok(lines.includes("QUERY_STRING: a=1"), info);
      equal(lines.some((l) => l.startsWith("REMOTE_ADDR:")), false, info);
      equal(lines.some((l) => l.startsWith("REMOTE_PORT:")), false, info);

      // A 1 MiB upload and a kept-alive connection through the socket.
      const data = new Uint8Array(1024 * 1024).map((_, i) => (i * 7919) % 251);
      await Deno.writeFile(`${dir}/upload.bin`, data);
      const echo = await curl(
        path,
        "-v",
        "--data-binary",
        `@${dir}/upload.bin`,
        "-o",
        `${dir}/echo.bin`,
        "http://localhost/echo",
        "-o",
        "/dev/null",
        "http://localhost/",
      );
      match(echo.stderr, /Re-using existing connection/i);
      const echoed = await Deno.readFile(`${dir}/echo.bin`);
      equal(echoed.length, data.length);
      ok(echoed.every((b, i) => b === data[i]), "echoed bytes differ");
    } finally {
      await server.shutdown();
    }
    equal(await socketExists(path), false, "the socket file is removed on shutdown");
    equal(errors.length, 0, errors.join("\n"));
  },
});

Deno.test({
  name: "serve() refuses a stale socket file that removeStaleSocket() removes",
  ignore: CURL === null,
  async fn() {
    await using temp = await tempDir("wsgi_unix_");
    const dir = temp.path;
    const path = `${dir}/wsgi.sock`;
    await leaveStaleSocket(path);

    // Plain serve() does not touch what is there.
    throws(() => serveOn(path, []), Deno.errors.AddrInUse);
    ok(await socketExists(path));

    const errors: string[] = [];
    await removeStaleSocket(path);
    const server = serve(app, {
      path,
      onListen() {},
      onError: (message, error) => errors.push(`${message}: ${error}`),
    });
    try {
      const home = await curl(path, "http://localhost/");
      equal(decoder.decode(home.stdout), "Hello from My Simple WSGI App! (Homepage)\n");
    } finally {
      await server.shutdown();
    }
    equal(await socketExists(path), false);
    equal(errors.length, 0, errors.join("\n"));
  },
});

Deno.test("removeStaleSocket() refuses a live socket and a path that is not a socket", async () => {
  await using temp = await tempDir("wsgi_unix_");
  const dir = temp.path;
  // A live listener keeps its socket: AddrInUse, and it still accepts.
  const live = `${dir}/live.sock`;
  const listener = Deno.listen({ transport: "unix", path: live });
  try {
    await rejects(
      removeStaleSocket(live),
      Deno.errors.AddrInUse,
    );
    ok(await socketExists(live));
    const accepted = listener.accept();
    const conn = await Deno.connect({ transport: "unix", path: live });
    conn.close();
    (await accepted).close();
  } finally {
    listener.close();
  }

  // A regular file is not ours to delete.
  const file = `${dir}/not-a-socket`;
  await Deno.writeTextFile(file, "keep me\n");
  await rejects(
    removeStaleSocket(file),
    Deno.errors.AlreadyExists,
  );
  equal(await Deno.readTextFile(file), "keep me\n");
});

Deno.test({
  name: "the CLI on --unix replaces the socket a killed run left and removes it on SIGTERM",
  ignore: CURL === null,
  async fn() {
    await using temp = await tempDir("wsgi_unix_");
    const dir = temp.path;
    const path = `${dir}/wsgi.sock`;
    const args = [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      SERVER_TS,
      "--unix",
      path,
    ];

    // A first run, killed with SIGKILL: its socket file stays behind.
    {
      await using crashed = new Child(Deno.execPath(), args, { cwd: PROJECT_DIR });
      notEqual(
        await crashed.stdout.waitFor(new RegExp(`^Listening on unix:${RegExp.escape(path)}$`)),
        null,
        crashed.output(),
      );
      crashed.kill("SIGKILL");
      equal((await crashed.status()).signal, "SIGKILL");
    }
    ok(await socketExists(path), "SIGKILL left the socket file");

    // The next run takes the path over.
    await using cli = new Child(Deno.execPath(), args, { cwd: PROJECT_DIR });
    notEqual(await cli.stdout.waitFor(/^Listening on unix:/), null, cli.output());
    const hello = await curl(path, "http://localhost/hello");
    equal(decoder.decode(hello.stdout), "Hello, specific page!\n");
    // A Unix peer has no address: the access log says "-".
    const logLine = await cli.stdout.waitFor(/"GET \/hello HTTP\/1\.1"/);
    notEqual(logLine, null, cli.output());
    match(logLine!, /^- - - \[/);

    cli.kill("SIGTERM");
    const status = await cli.status();
    equal(status.signal, null, cli.output());
    equal(status.code, 0, cli.output());
    equal(await socketExists(path), false, "the socket file is removed on exit");
  },
});

Deno.test("the CLI refuses a --unix path held by a live server and exits non-zero", async () => {
  await using temp = await tempDir("wsgi_unix_");
  const dir = temp.path;
  const path = `${dir}/wsgi.sock`;
  const listener = Deno.listen({ transport: "unix", path });
  try {
    const result = await run(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-write",
      SERVER_TS,
      "--unix",
      path,
    ], { cwd: PROJECT_DIR });
    notEqual(result.code, 0, result.stderr);
    match(result.stderr, /another server is using it/);
    ok(await socketExists(path), "the live socket is left alone");
  } finally {
    listener.close();
  }
});
