/**
 * Faults from the client's side that the other suites do not cover: the
 * client leaving while the application uses write(), and leaving in the
 * middle of a pipeline. Each time: close() (or the generator's finally) runs
 * once, nothing leaks (the sanitizers check), and the server goes on.
 */

import { equal, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import { bytes, deferred, exchange, parseResponses, startServer, writeAll } from "./_helpers.ts";

Deno.test("write() rejects once the client has left, and the server goes on", async () => {
  const written = deferred();
  const clientGone = deferred();
  const failure = deferred<unknown>();
  let closed = 0;
  const app: Application = async (environ, startResponse) => {
    if (environ.PATH_INFO !== "/write") {
      startResponse("200 OK", [["Content-Type", "text/plain"]]);
      return [bytes("still here\n")];
    }
    const write = startResponse("200 OK", [["Content-Type", "application/octet-stream"]]);
    await write(bytes("first\n"));
    written.resolve();
    await clientGone.promise;
    try {
      // A peer that closed makes a write fail within a few writes (RST).
      for (let i = 0; i < 1000; i++) await write(new Uint8Array(64 * 1024));
    } catch (error) {
      failure.resolve(error);
      throw error;
    }
    failure.resolve(null);
    return Object.assign([], { close: () => void closed++ });
  };
  await using t = startServer(app);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  await writeAll(conn, bytes("GET /write HTTP/1.1\r\nHost: x\r\n\r\n"));
  await written.promise;
  conn.close();
  clientGone.resolve();
  const error = await failure.promise;
  ok(error instanceof Error, "write() rejected after the client left");
  equal(closed, 0, "the application threw: there is no body to close");
  const [response] = parseResponses(
    await exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  equal(response!.body, "still here\n");
  equal(t.errors.length, 0, `a disconnect is not an application error: ${t.errors}`);
});

Deno.test("a client leaving mid-pipeline closes each started body once and the server goes on", async () => {
  const started = deferred();
  const release = deferred();
  const closes: string[] = [];
  const served: string[] = [];
  const app: Application = (environ, startResponse) => {
    const path = environ.PATH_INFO;
    served.push(path);
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return (async function* () {
      try {
        if (path === "/2") {
          started.resolve();
          await release.promise;
        }
        yield bytes(`${path}\n`);
        yield new Uint8Array(256 * 1024);
      } finally {
        closes.push(path);
      }
    })();
  };
  await using t = startServer(app);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  const get = (path: string) => `GET ${path} HTTP/1.1\r\nHost: x\r\n\r\n`;
  await writeAll(conn, bytes(get("/1") + get("/2") + get("/3") + get("/4")));
  await started.promise;
  conn.close();
  release.resolve();
  // The server finds out when a write of /2's response fails; whatever it
  // had started by then, each body is closed exactly once.
  const [response] = parseResponses(
    await exchange(t.port, "GET /after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
  );
  equal(response!.status, 200, "the server goes on");
  await t.server.shutdown();
  ok(served.includes("/1") && served.includes("/2"));
  for (const path of served) {
    equal(closes.filter((p) => p === path).length, 1, `${path} closed once`);
  }
});
