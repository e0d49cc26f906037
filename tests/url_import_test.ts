/**
 * The library imported by URL, with no import map and no registry: the
 * repository is served over loopback HTTP (by our own server), and a child
 * Deno runs `server.ts` and imports `mod.ts` from there.
 */

import { equal, match, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import { nativeToBytes } from "../mod.ts";
import { startServer } from "./_helpers.ts";

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

async function readLine(
  reader: ReadableStreamDefaultReader<string>,
  pattern: RegExp,
): Promise<RegExpExecArray> {
  let seen = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`Stream ended before ${pattern}: ${JSON.stringify(seen)}`);
    seen += value;
    const found = pattern.exec(seen);
    if (found) return found;
  }
}

Deno.test("server.ts runs when imported by URL over loopback HTTP", async () => {
  await using origin = startServer(files);
  const host = `127.0.0.1:${origin.port}`;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--no-lock",
      "--allow-net=127.0.0.1",
      `--allow-import=${host}`,
      `http://${host}/server.ts`,
      "--port",
      "0",
      "--no-access-log",
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = child.stderr.pipeThrough(new TextDecoderStream());
  const errText = (async () => {
    let text = "";
    for await (const part of stderr) text += part;
    return text;
  })();
  try {
    const [, port] = await readLine(stdout, /Listening on http:\/\/127\.0\.0\.1:(\d+)\//);
    const response = await fetch(`http://127.0.0.1:${port}/hello`);
    equal(response.status, 200);
    equal(await response.text(), "Hello, specific page!\n");
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    while (!(await stdout.read()).done);
    const err = await errText;
    equal(status.code, 0, err);
  }
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
