/**
 * Flow control end to end: a slow reader of a large response does not make
 * the server buffer the response, and connections beyond maxConnections
 * wait for a free slot instead of being dropped.
 */

import { equal, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import { bytes, latin1String, parseResponses, startServer, textApp, writeAll } from "./_helpers.ts";

const MiB = 1024 * 1024;

Deno.test("serve() never lets a streamed body run far ahead of a slow reader", async () => {
  const total = 64 * MiB;
  const chunk = new Uint8Array(64 * 1024);
  let produced = 0;
  let consumed = 0;
  let maxLead = 0;
  const app: Application = (_environ, startResponse) => {
    startResponse("200 OK", [["Content-Length", String(total)]]);
    return (function* () {
      while (produced < total) {
        // What the generator is asked for beyond what the client has read
        // is what the server (and the kernel's socket buffers) hold.
        maxLead = Math.max(maxLead, produced - consumed);
        produced += chunk.length;
        yield chunk;
      }
    })();
  };
  await using t = startServer(app);
  const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  try {
    await writeAll(conn, bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n"));
    // Read in small pieces, yielding to the event loop between reads so the
    // server runs as far ahead as it is able to.
    const buf = new Uint8Array(16 * 1024);
    let headSkipped = false;
    while (consumed < total) {
      const n = await conn.read(buf);
      if (n === null) throw new Error("Closed early");
      if (!headSkipped) {
        const text = latin1String(buf.subarray(0, n));
        const end = text.indexOf("\r\n\r\n");
        ok(end > 0);
        consumed += n - (end + 4);
        headSkipped = true;
      } else {
        consumed += n;
      }
      await new Promise<void>((resolve) => queueMicrotask(resolve));
    }
  } finally {
    conn.close();
  }
  equal(consumed, total);
  // Loopback socket buffers can hold a few MiB; the server itself holds at
  // most its 64 KiB high-water mark. 64 MiB would mean it buffered it all.
  ok(maxLead < 16 * MiB, `the body ran ${(maxLead / MiB).toFixed(1)} MiB ahead of the reader`);
});

Deno.test("serve() makes connections beyond maxConnections wait for a free slot", async () => {
  await using t = startServer(textApp("ok"), { maxConnections: 2 });
  const request = bytes("GET / HTTP/1.1\r\nHost: x\r\n\r\n");
  const first = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  const second = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  const buf = new Uint8Array(4096);
  // Both are served and stay open (keep-alive), filling the two slots.
  for (const conn of [first, second]) {
    await writeAll(conn, request);
    const n = await conn.read(buf);
    equal(parseResponses(latin1String(buf.subarray(0, n!)))[0]!.status, 200);
  }
  // The third connects (the kernel's backlog accepts it) and asks; it is
  // answered once a slot frees.
  const third = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
  try {
    await writeAll(third, request);
    first.close();
    const n = await third.read(buf);
    ok(n !== null, "the waiting connection is served, not dropped");
    equal(parseResponses(latin1String(buf.subarray(0, n)))[0]!.status, 200);
  } finally {
    second.close();
    third.close();
  }
});
