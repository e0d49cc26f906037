/**
 * `--workers N` and `serveWorkers()`: several processes on one port under a
 * supervisor. The application is a module written to a temp dir that
 * answers with its process id, so a test can tell the workers apart.
 *
 * No sleeps: the tests wait on the supervisor's own lines (a worker
 * listening, exiting, being restarted), on responses, and on EOF of idle
 * kept-alive connections, which a worker closes when it shuts down. Every
 * process is bounded by a watchdog.
 */

import { deepEqual, equal, match, notEqual, ok, rejects } from "node:assert/strict";
import { serveWorkers, type WorkerGroup } from "../workers.ts";
import { decoder, encoder, exchange, parseResponses } from "./_helpers.ts";
import { Child, curl, findExecutable, makeCertificate, tempDir } from "./_child.ts";
import {
  LISTENING,
  pidsAnswering,
  PROJECT_DIR,
  refused,
  SERVER_TS,
  Supervisor,
  twoWorkers,
  twoWorkersArgs,
  whoAnswers,
} from "./_workers.ts";

const OPENSSL = findExecutable("openssl");
const CURL = findExecutable("curl");
if (OPENSSL === null || CURL === null) {
  console.warn(
    "!!! workers_test.ts: openssl or curl NOT FOUND on PATH: SKIPPING the HTTPS workers test !!!",
  );
}

/**
 * The test application: `GET /` answers `PID MULTIPROCESS`; `POST /slow`
 * echoes its body as it reads it, so a client sees that its request is in
 * flight when the first part comes back.
 */
const APP_SOURCE = `
export const app = (environ, startResponse) => {
  if (environ.PATH_INFO === "/slow") {
    startResponse("200 OK", [["Content-Type", "text/plain"], ["Content-Length", environ.CONTENT_LENGTH]]);
    return (async function* () {
      for (;;) {
        const chunk = await environ["wsgi.input"].read(5);
        if (chunk.length === 0) return;
        yield chunk;
      }
    })();
  }
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [new TextEncoder().encode(\`\${Deno.pid} \${environ["wsgi.multiprocess"]}\\n\`)];
};
`;

/** The test application in a new temp dir, removed on disposal (`await using`). */
interface TestApp extends AsyncDisposable {
  readonly dir: string;
  readonly module: string;
}

/** Writes the test application into a new temp dir. */
async function writeApp(): Promise<TestApp> {
  const temp = await tempDir("wsgi_workers_");
  const module = `${temp.path}/pid_app.js`;
  await Deno.writeTextFile(module, APP_SOURCE);
  return { dir: temp.path, module, [Symbol.asyncDispose]: () => temp[Symbol.asyncDispose]() };
}

/** Opens a kept-alive connection and makes one request on it; returns it and the pid that answered. */
async function idleConnection(port: number): Promise<{ conn: Deno.Conn; pid: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(encoder.encode("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
  const buf = new Uint8Array(4096);
  let text = "";
  while (!/\r\n\r\n\d+ \w+\n$/.test(text)) {
    const n = await conn.read(buf);
    if (n === null) throw new Error(`EOF before a whole response: ${JSON.stringify(text)}`);
    text += decoder.decode(buf.subarray(0, n));
  }
  return { conn, pid: Number(/\r\n\r\n(\d+) /.exec(text)![1]) };
}

/** Resolves true at EOF (or reset), false if bytes arrive first. */
async function endsWithoutData(conn: Deno.Conn): Promise<boolean> {
  try {
    return await conn.read(new Uint8Array(1)) === null;
  } catch {
    return true;
  }
}

Deno.test({
  name:
    "the CLI with --workers 2 serves from two processes on one port with wsgi.multiprocess true",
  async fn() {
    await using app = await writeApp();
    await using supervisor = await twoWorkers(app.module);
    const pids = supervisor.listeningPids();
    equal(pids.length, 2, supervisor.child.output());
    equal(new Set(pids).size, 2);
    ok(!pids.includes(supervisor.child.pid), "the supervisor serves nothing itself");
    notEqual(
      await supervisor.child.stderr.waitFor(/^Started 2 workers: pids \d+, \d+$/),
      null,
      supervisor.child.output(),
    );

    deepEqual(await pidsAnswering(supervisor.port, pids), new Set(pids));
    equal((await whoAnswers(supervisor.port)).multiprocess, "true");

    supervisor.child.kill("SIGTERM");
    const status = await supervisor.child.status();
    equal(status.signal, null, supervisor.child.output());
    equal(status.code, 0, supervisor.child.output());
    equal(
      supervisor.child.stderr.count(/^Worker \d \(pid \d+\) shutting down/),
      2,
      supervisor.child.output(),
    );
    ok(await refused(supervisor.port), "nothing listens once the supervisor has exited");
  },
});

Deno.test({
  name: "the CLI restarts a worker killed with SIGKILL and keeps serving from two processes",
  async fn() {
    await using app = await writeApp();
    await using supervisor = await twoWorkers(app.module);
    const [victim, survivor] = supervisor.listeningPids() as [number, number];

    Deno.kill(victim, "SIGKILL");
    const restarting = await supervisor.child.stderr.waitFor(
      new RegExp(
        `^Worker \\d \\(pid ${victim}\\) was killed by SIGKILL; restarting it in \\d+ ms$`,
      ),
    );
    notEqual(restarting, null, supervisor.child.output());
    ok(
      await supervisor.child.stderr.waitForCount(LISTENING, 3),
      `no replacement worker\n${supervisor.child.output()}`,
    );
    const replacement = supervisor.listeningPids()[2]!;
    notEqual(replacement, victim);

    const seen = await pidsAnswering(supervisor.port, [survivor, replacement]);
    deepEqual(seen, new Set([survivor, replacement]), "the killed worker's pid never answers");

    supervisor.child.kill("SIGTERM");
    equal((await supervisor.child.status()).code, 0, supervisor.child.output());
  },
});

Deno.test({
  name: "SIGTERM to the supervisor stops accepting, finishes in-flight requests, then exits 0",
  async fn() {
    await using app = await writeApp();
    await using supervisor = await twoWorkers(app.module);

    // Half a request body now, the rest after the SIGTERM. The first half
    // coming back means a worker is running the request.
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: supervisor.port });
    try {
      await conn.write(
        encoder.encode("POST /slow HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234"),
      );
      const buf = new Uint8Array(4096);
      let text = "";
      while (!text.endsWith("\r\n\r\n01234")) {
        const n = await conn.read(buf);
        if (n === null) throw new Error(`EOF before the first half: ${JSON.stringify(text)}`);
        text += decoder.decode(buf.subarray(0, n));
      }

      supervisor.child.kill("SIGTERM");
      ok(
        await supervisor.child.stderr.waitForCount(/^Worker \d \(pid \d+\) shutting down/, 2),
        supervisor.child.output(),
      );
      equal(supervisor.child.exited, false, "the supervisor waits for the in-flight request");

      await conn.write(encoder.encode("56789"));
      // The rest of the response, then the end of the connection: the
      // worker closes it after the response because it is shutting down.
      let eof = false;
      for (let reads = 0; reads < 100 && !eof; reads++) {
        const n = await conn.read(buf);
        if (n === null) eof = true;
        else text += decoder.decode(buf.subarray(0, n));
      }
      ok(eof, "the worker closes the connection after the response");
      match(text, /^HTTP\/1\.1 200 OK\r\n/);
      ok(text.endsWith("\r\n\r\n0123456789"), JSON.stringify(text));
      // Many turns of the workers' event loops after their listeners were
      // closed (a listener's socket goes away a turn after close()).
      ok(await refused(supervisor.port), "no worker accepts after the SIGTERM");
    } finally {
      conn.close();
    }
    const status = await supervisor.child.status();
    equal(status.signal, null, supervisor.child.output());
    equal(status.code, 0, supervisor.child.output());
  },
});

Deno.test({
  name: "workers shut down gracefully when their supervisor is killed with SIGKILL",
  async fn() {
    await using app = await writeApp();
    await using supervisor = await twoWorkers(app.module);
    const pids = supervisor.listeningPids();

    // One idle kept-alive connection to each worker: a worker shutting
    // down closes it, which is the event to wait for.
    const idle = new Map<number, Deno.Conn>();
    try {
      for (let i = 0; i < 200 && idle.size < 2; i++) {
        const { conn, pid } = await idleConnection(supervisor.port);
        if (idle.has(pid)) conn.close();
        else idle.set(pid, conn);
      }
      deepEqual(new Set(idle.keys()), new Set(pids));

      supervisor.child.kill("SIGKILL");
      // The workers write to the supervisor's stdout, so the test's end of
      // that pipe sees EOF (and status() resolves) only once they have
      // exited too.
      equal((await supervisor.child.status()).signal, "SIGKILL");
      for (const [pid, conn] of idle) {
        ok(await endsWithoutData(conn), `worker ${pid} closed its idle connection`);
      }
      ok(await refused(supervisor.port), "no orphan worker still accepts");
    } finally {
      for (const conn of idle.values()) conn.close();
    }
  },
});

Deno.test({
  name: "serveWorkers() runs a group in code: two pids on one port, shutdown() drains them",
  async fn() {
    await using app = await writeApp();
    const { module } = app;
    const lines: string[] = [];
    let listened: Deno.NetAddr | null = null;
    const group = await serveWorkers(module, {
      workers: 2,
      port: 0,
      onListen: (addr) => listened = addr,
      log: (line) => lines.push(line),
    });
    try {
      deepEqual(listened, group.addr);
      equal(group.pids.length, 2);
      deepEqual(await pidsAnswering(group.addr.port, group.pids), new Set(group.pids));
      equal(lines.filter((l) => LISTENING.test(l)).length, 2, lines.join("\n"));
    } finally {
      await group.shutdown();
    }
    equal(group.pids.length, 0);
    equal(lines.filter((l) => / shutting down/.test(l)).length, 2, lines.join("\n"));
    ok(await refused(group.addr.port));
  },
});

Deno.test({
  name: "serveWorkers() rejects a worker that cannot load the app, and options it cannot send",
  async fn() {
    await using app = await writeApp();
    const { dir, module } = app;
    const lines: string[] = [];
    await rejects(
      serveWorkers(`${module}:missing`, { workers: 2, port: 0, log: (l) => lines.push(l) }),
      /Worker \d \(pid \d+\) exited with code 1 before it was listening/,
    );
    ok(
      lines.some((l) =>
        /Cannot serve .*pid_app\.js: it has no export "missing"; its exports: app$/.test(l)
      ),
      lines.join("\n"),
    );

    await rejects(
      serveWorkers(module, { workers: 0 }),
      RangeError,
    );
    await rejects(
      // @ts-expect-error: a Unix socket cannot be shared.
      serveWorkers(module, { path: `${dir}/wsgi.sock` }),
      TypeError,
    );
    await rejects(
      serveWorkers(module, { serverHeader: (() => "x") as unknown as string }),
      /cannot be sent to worker processes/,
    );
  },
});

Deno.test({
  name: "the CLI with --workers 2 and --cert/--key serves HTTPS from both workers",
  ignore: OPENSSL === null || CURL === null,
  async fn() {
    await using app = await writeApp();
    const { module } = app;
    await using cert = await makeCertificate(OPENSSL!);
    await using child = new Child(Deno.execPath(), [
      "run",
      "--allow-net",
      "--allow-read",
      "--allow-run",
      SERVER_TS,
      ...twoWorkersArgs(module, ["--cert", cert.certFile, "--key", cert.keyFile]),
    ], { cwd: PROJECT_DIR });
    const line = await child.stdout.waitFor(/^Listening on /);
    const port = /^Listening on https:\/\/127\.0\.0\.1:(\d+)\/$/.exec(line ?? "")?.[1];
    ok(port !== undefined, child.output());
    const listening = /^Worker \d+ \(pid (\d+)\) listening on https:/;
    ok(await child.stderr.waitForCount(listening, 2), child.output());
    const pids = child.stderr.lines.flatMap((l) => {
      const m = listening.exec(l);
      return m === null ? [] : [Number(m[1])];
    });
    equal(pids.length, 2, child.output());

    // curl makes a new connection per run: until both workers answered.
    const seen = new Set<number>();
    for (let i = 0; i < 200 && seen.size < 2; i++) {
      const result = await curl(
        CURL!,
        "--cacert",
        cert.certFile,
        `https://127.0.0.1:${port}/`,
      );
      equal(result.code, 0, result.stderr);
      const [pid, multiprocess] = decoder.decode(result.stdout).trim().split(" ");
      equal(multiprocess, "true");
      seen.add(Number(pid));
    }
    deepEqual(seen, new Set(pids));

    child.kill("SIGTERM");
    equal((await child.status()).code, 0, child.output());
  },
});

for (const workers of [1, 2]) {
  Deno.test({
    name:
      `a SIGTERM the moment the CLI says "Listening on" is a graceful stop (--workers ${workers})`,
    async fn() {
      // The signal handler must be in place before the line is printed: a
      // supervisor may signal as soon as it reads it. Ten rounds, since a
      // missing handler loses a race rather than failing every time.
      for (let round = 0; round < 10; round++) {
        const supervisor = new Supervisor([
          "--workers",
          String(workers),
          "--port",
          "0",
          "--no-access-log",
        ]);
        await using child = supervisor.child;
        notEqual(await child.stdout.waitFor(/^Listening on /), null, child.output());
        child.kill("SIGTERM");
        const status = await child.status();
        deepEqual(status, { code: 0, signal: null }, child.output());
        ok(child.stderr.lines.some((l) => l.startsWith("Shutting down")), child.output());
      }
    },
  });
}

/** An application module that answers `VERSION PID`, for the reload tests. */
function versionApp(version: string): string {
  return `export const app = (_environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [new TextEncoder().encode(\`${version} \${Deno.pid}\\n\`)];
};
`;
}

/** Asks for `/` on new connections `count` times; returns the `VERSION PID` answers. */
async function versionsAnswering(port: number, count: number): Promise<Set<string>> {
  const seen = new Set<string>();
  for (let i = 0; i < count; i++) {
    const text = await exchange(port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    const [response] = parseResponses(text);
    equal(response?.status, 200, text);
    seen.add(response!.body.trim());
  }
  return seen;
}

/** Two workers serving `versionApp("one")` from `module`, with their log; shut down on disposal. */
async function versionedGroup(
  module: string,
): Promise<{ group: WorkerGroup; lines: string[] } & AsyncDisposable> {
  await Deno.writeTextFile(module, versionApp("one"));
  const lines: string[] = [];
  const group = await serveWorkers(module, {
    workers: 2,
    port: 0,
    onListen() {},
    log: (line) => lines.push(line),
  });
  return { group, lines, [Symbol.asyncDispose]: () => group.shutdown() };
}

Deno.test({
  name:
    "reload() replaces each worker with one running the changed module; old ones drain and exit",
  async fn() {
    await using app = await writeApp();
    await using versioned = await versionedGroup(app.module);
    const { group, lines } = versioned;
    const old = [...group.pids];
    deepEqual(
      new Set([...await versionsAnswering(group.addr.port, 4)].map((a) => a.split(" ")[0])),
      new Set(["one"]),
    );
    await Deno.writeTextFile(app.module, versionApp("two"));
    await group.reload();
    const renewed = [...group.pids];
    equal(renewed.length, 2);
    ok(renewed.every((pid) => !old.includes(pid)), `${old} -> ${renewed}`);
    for (const pid of old) {
      ok(
        lines.some((l) => new RegExp(`^Worker \\d \\(pid ${pid}\\) shutting down`).test(l)),
        `old worker ${pid} drained\n${lines.join("\n")}`,
      );
    }
    // The old workers have exited: every answer is the new code's, from a new pid.
    for (const answer of await versionsAnswering(group.addr.port, 20)) {
      const [version, pid] = answer.split(" ");
      equal(version, "two");
      ok(renewed.includes(Number(pid)), answer);
    }
  },
});

Deno.test({
  name: "reload() keeps the old workers when a new one cannot load the application",
  async fn() {
    await using app = await writeApp();
    await using versioned = await versionedGroup(app.module);
    const { group } = versioned;
    const old = [...group.pids];
    await Deno.writeTextFile(app.module, "export const app = 42;\n");
    await rejects(
      group.reload(),
      /started by a reload, exited with code 1 before it was listening; worker 1 \(pid \d+\) serves on/,
    );
    deepEqual([...group.pids], old, "the old workers serve on");
    for (const answer of await versionsAnswering(group.addr.port, 6)) {
      equal(answer.split(" ")[0], "one");
    }
    // The group is still whole: a later reload with good code goes through.
    await Deno.writeTextFile(app.module, versionApp("three"));
    await group.reload();
    for (const answer of await versionsAnswering(group.addr.port, 6)) {
      equal(answer.split(" ")[0], "three");
    }
  },
});

Deno.test({
  name: "SIGHUP to the CLI supervisor reloads the workers; SIGTERM then exits 0",
  async fn() {
    await using app = await writeApp();
    await Deno.writeTextFile(app.module, versionApp("one"));
    await using supervisor = await twoWorkers(app.module);
    const old = supervisor.listeningPids();
    await Deno.writeTextFile(app.module, versionApp("two"));
    supervisor.child.kill("SIGHUP");
    const reloaded = await supervisor.child.stderr.waitFor(/^Reloaded: pids \d+, \d+$/);
    notEqual(reloaded, null, supervisor.child.output());
    const renewed = reloaded!.slice("Reloaded: pids ".length).split(", ").map(Number);
    ok(renewed.every((pid) => !old.includes(pid)), `${old} -> ${renewed}`);
    for (const answer of await versionsAnswering(supervisor.port, 10)) {
      equal(answer.split(" ")[0], "two");
    }
    supervisor.child.kill("SIGTERM");
    equal((await supervisor.child.status()).code, 0, supervisor.child.output());
  },
});
