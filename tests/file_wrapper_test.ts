/**
 * `wsgi.file_wrapper`: the body it makes (blocks, position, closing) on its
 * own, and files sent through `serve()` with it.
 */

import { deepEqual, equal, ok, throws } from "node:assert/strict";
import type { Application, Body, FileLike } from "../mod.ts";
import { fileWrapper } from "../_gateway/file_wrapper.ts";
import { concat, exchange, parseResponses, startServer } from "./_helpers.ts";
import { tempDir } from "./_child.ts";

/** A file-like object over `data`, starting at `position`, that counts its closes. */
function memoryFile(data: Uint8Array, position = 0): FileLike & { closes: number } {
  let at = position;
  return {
    closes: 0,
    read(p: Uint8Array): Promise<number | null> {
      if (at === data.length) return Promise.resolve(null);
      const n = Math.min(p.length, data.length - at);
      p.set(data.subarray(at, at + n));
      at += n;
      return Promise.resolve(n);
    },
    close() {
      this.closes++;
    },
  };
}

async function collect(body: Body): Promise<Uint8Array[]> {
  const chunks: Uint8Array[] = [];
  for await (const chunk of body as AsyncIterable<Uint8Array>) chunks.push(chunk.slice());
  return chunks;
}

const data = Uint8Array.from({ length: 150_000 }, (_, i) => (i * 7) % 251);

Deno.test("fileWrapper() reads the rest of the file in blocks, then closes it once", async () => {
  const file = memoryFile(data, 1000);
  const body = fileWrapper(file, 65536);
  const chunks = await collect(body);
  deepEqual(chunks.map((c) => c.length), [65536, 65536, 149_000 - 2 * 65536]);
  deepEqual(concat(chunks), data.subarray(1000), "from the current position to the end");
  equal(file.closes, 1, "closed after the last block");
  body.close!();
  equal(file.closes, 1, "the server's close() does not close it again");
});

Deno.test("fileWrapper() closes the file when the server stops early or never iterates", async () => {
  const stopped = memoryFile(data);
  for await (const _ of fileWrapper(stopped) as AsyncIterable<Uint8Array>) break;
  equal(stopped.closes, 1);

  const unread = memoryFile(data);
  const body = fileWrapper(unread);
  body.close!();
  equal(unread.closes, 1);
  deepEqual(await collect(body), [], "nothing is read after close()");
});

Deno.test("fileWrapper() refuses what is not a file and block sizes that are not positive integers", () => {
  throws(() => fileWrapper({} as FileLike), TypeError);
  throws(() => fileWrapper(null as unknown as FileLike), TypeError);
  for (const size of [0, -1, 1.5, NaN]) {
    throws(() => fileWrapper(memoryFile(data), size), RangeError, String(size));
  }
});

Deno.test("serve() offers wsgi.file_wrapper: a file goes out whole and is closed, on GET and HEAD", async () => {
  await using dir = await tempDir("wsgi_file_wrapper_");
  const path = `${dir.path}/data.bin`;
  await Deno.writeFile(path, data);
  let opened = 0;
  let closed = 0;
  const app: Application = async (environ, startResponse) => {
    const wrapper = environ["wsgi.file_wrapper"];
    ok(typeof wrapper === "function", "the server offers wsgi.file_wrapper");
    const file = await Deno.open(path);
    opened++;
    startResponse("200 OK", [
      ["Content-Type", "application/octet-stream"],
      ["Content-Length", String(data.length)],
    ]);
    return wrapper({
      read: (p) => file.read(p),
      close() {
        closed++;
        file.close();
      },
    }, 16 * 1024);
  };
  await using t = startServer(app);
  const [get, head] = parseResponses(
    await exchange(
      t.port,
      "GET /data HTTP/1.1\r\nHost: x\r\n\r\nHEAD /data HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    ),
    [1],
  );
  equal(get!.status, 200);
  equal(get!.body.length, data.length);
  ok(get!.body.split("").every((c, i) => c.charCodeAt(0) === data[i]), "the file's exact bytes");
  equal(head!.status, 200);
  equal(head!.headers.get("content-length"), String(data.length));
  equal(head!.body, "");
  equal(opened, 2);
  equal(closed, 2, "each file closed once, the HEAD one without being read");
  deepEqual(t.errors, []);
});
