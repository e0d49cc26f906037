/**
 * The library imported by URL, with no import map and no registry: the
 * repository is served over loopback HTTP (by our own server), and a child
 * Deno runs `server.ts` and imports `mod.ts` from there.
 */

import { equal, match, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import { nativeToBytes } from "../mod.ts";
import { startServer } from "./_helpers.ts";
import { Child, tempDir } from "./_child.ts";

const root = new URL("../", import.meta.url);

/** Serves the repository's files read-only: a tiny static-file WSGI app. */
const files: Application = async (environ, startResponse) => {
  const path = environ.PATH_INFO;
  if (!/^\/[\w./-]+\.(ts|json)$/.test(path) || path.includes("..")) {
    startResponse("404 Not Found", [["Content-Type", "text/plain"]]);
    return [nativeToBytes("not found\n")];
  }
  let data: Uint8Array;
  try {
    data = await Deno.readFile(new URL(`.${path}`, root));
  } catch {
    startResponse("404 Not Found", [["Content-Type", "text/plain"]]);
    return [nativeToBytes("not found\n")];
  }
  startResponse("200 OK", [["Content-Type", "application/typescript; charset=utf-8"]]);
  return [data];
};

Deno.test("server.ts runs when imported by URL over loopback HTTP", async () => {
  await using origin = startServer(files);
  const host = `127.0.0.1:${origin.port}`;
  await using child = new Child(Deno.execPath(), [
    "run",
    "--quiet",
    "--no-lock",
    // Fetched afresh: Deno caches remote modules by URL, and a port used
    // by an earlier run (of older code) would serve that run's files.
    `--reload=http://${host}/`,
    "--allow-net=127.0.0.1",
    `--allow-import=${host}`,
    `http://${host}/server.ts`,
    "--port",
    "0",
    "--no-access-log",
  ]);
  const listening = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:\d+\/$/);
  ok(listening !== null, child.output());
  const port = /:(\d+)\/$/.exec(listening)![1];
  const response = await fetch(`http://127.0.0.1:${port}/hello`);
  equal(response.status, 200);
  equal(await response.text(), "Hello, specific page!\n");
  child.kill("SIGTERM");
  equal((await child.status()).code, 0, child.output());
});

Deno.test("mod.ts imported by URL serves an application", async () => {
  await using origin = startServer(files);
  const host = `127.0.0.1:${origin.port}`;
  const program = `
    import { serve, nativeToText } from "http://${host}/mod.ts";
    const server = serve((environ, startResponse) => {
      startResponse("200 OK", [["Content-Type", "text/plain; charset=utf-8"]]);
      return [new TextEncoder().encode(nativeToText(environ.PATH_INFO))];
    }, { port: 0, onListen() {} });
    const res = await fetch("http://127.0.0.1:" + server.addr.port + "/caf%C3%A9");
    console.log(await res.text());
    await server.shutdown();
  `;
  const output = await new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "--quiet",
      "--no-lock",
      `--reload=http://${host}/`,
      `--allow-import=${host}`,
      "--allow-net=127.0.0.1",
      program,
    ],
    env: { NO_COLOR: "1" },
  }).output();
  const err = new TextDecoder().decode(output.stderr);
  ok(output.success, err);
  match(new TextDecoder().decode(output.stdout), /^\/café\n$/);
});

Deno.test("server.ts by URL serves an application that imports mod.ts from the same URL", async () => {
  await using origin = startServer(files);
  const host = `127.0.0.1:${origin.port}`;
  await using temp = await tempDir("wsgi_url_");
  const module = `${temp.path}/my_app.ts`;
  await Deno.writeTextFile(
    module,
    `import { nativeToBytes, validator } from "http://${host}/mod.ts";
export const app = validator((environ, startResponse) => {
  startResponse("200 OK", [["Content-Type", "text/plain"]]);
  return [nativeToBytes("by URL: " + environ.PATH_INFO + "\\n")];
});
`,
  );
  await using child = new Child(Deno.execPath(), [
    "run",
    "--quiet",
    "--no-lock",
    // Fetched afresh: Deno caches remote modules by URL, and a port used
    // by an earlier run (of older code) would serve that run's files.
    `--reload=http://${host}/`,
    "--allow-net=127.0.0.1",
    `--allow-read=${temp.path}`,
    `--allow-import=${host}`,
    `http://${host}/server.ts`,
    "--port",
    "0",
    "--no-access-log",
    module,
  ]);
  const listening = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:\d+\/$/);
  ok(listening !== null, child.output());
  const port = /:(\d+)\/$/.exec(listening)![1];
  const response = await fetch(`http://127.0.0.1:${port}/x`);
  equal(await response.text(), "by URL: /x\n");
  child.kill("SIGTERM");
  equal((await child.status()).code, 0, child.output());
});
