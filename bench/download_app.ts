/**
 * The application the throughput benchmark downloads from: `GET
 * /download?mb=N` streams N MiB from a generator in 64 KiB chunks (with a
 * Content-Length, as the raw baseline sends); `POST /upload` reads the
 * whole body with one `wsgi.input.read()` and answers its length; anything
 * else is the sample app (so `POST /echo` is there too).
 */

import type { Application } from "../mod.ts";
import { app as sample } from "../app.ts";

const chunk = new Uint8Array(64 * 1024).fill(0x61);

export const app: Application = async (environ, startResponse) => {
  if (environ.PATH_INFO === "/upload") {
    const body = await environ["wsgi.input"].read();
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return [new TextEncoder().encode(`${body.length}\n`)];
  }
  if (environ.PATH_INFO !== "/download") return sample(environ, startResponse);
  const mb = Number(/mb=(\d+)/.exec(environ.QUERY_STRING)?.[1] ?? 1);
  const total = mb * 1024 * 1024;
  startResponse("200 OK", [["Content-Type", "application/octet-stream"], [
    "Content-Length",
    String(total),
  ]]);
  return (function* () {
    for (let sent = 0; sent < total; sent += chunk.length) yield chunk;
  })();
};
