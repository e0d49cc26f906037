/**
 * Flow control end to end: a slow reader of a large response does not make
 * the server buffer the response, and connections beyond maxConnections
 * wait for a free slot instead of being dropped. Many large bodies at once
 * take turns, and arrive whole.
 */

import { equal, ok } from "node:assert/strict";
import type { Application } from "../mod.ts";
import {
  bytes,
  deadline,
  exchange,
  latin1String,
  parseResponses,
  startServer,
  TEST_DEADLINE_MS,
  textApp,
  writeAll,
} from "./_helpers.ts";

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

Deno.test("serve() sends large bodies to many clients at once whole, even when some hang up, and answers small requests between them", async () => {
  const size = 2 * MiB;
  const clients = 16;
  /** Byte `i` of client `n`'s body. */
  const byteAt = (n: number, i: number) => (n * 31 + i * 7 + (i >> 12)) & 0xff;
  const app: Application = (environ, startResponse) => {
    const n = Number(/n=(\d+)/.exec(environ.QUERY_STRING)?.[1] ?? -1);
    if (n < 0) return textApp("small\n")(environ, startResponse);
    startResponse("200 OK", [["Content-Length", String(size)]]);
    return (function* () {
      for (let at = 0; at < size; at += 64 * 1024) {
        yield new Uint8Array(64 * 1024).map((_, j) => byteAt(n, at + j));
      }
    })();
  };
  await using t = startServer(app, { shutdownTimeoutMs: 3000 });

  /** Downloads client `n`'s body; the odd ones hang up a quarter of the way in. */
  const download = async (n: number): Promise<void> => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: t.port });
    try {
      await writeAll(conn, bytes(`GET /?n=${n} HTTP/1.1\r\nHost: x\r\n\r\n`));
      const hangUpAt = n % 2 === 1 ? size / 4 : Infinity;
      const buf = new Uint8Array(64 * 1024);
      let head = "";
      let at = -1;
      while (at < Math.min(size, hangUpAt)) {
        const read = await deadline(TEST_DEADLINE_MS, conn.read(buf), `client ${n}'s read`);
        if (read === null) throw new Error(`client ${n}: closed after ${at} body bytes`);
        let from = 0;
        if (at < 0) {
          head += latin1String(buf.subarray(0, read));
          const end = head.indexOf("\r\n\r\n");
          if (end < 0) continue;
          ok(head.startsWith("HTTP/1.1 200 OK\r\n"), head);
          from = read - (head.length - (end + 4));
          at = 0;
        }
        for (let j = from; j < read; j++, at++) {
          if (buf[j] !== byteAt(n, at)) throw new Error(`client ${n}: byte ${at} differs`);
        }
      }
    } finally {
      conn.close();
    }
  };
  const small = async (): Promise<void> => {
    for (let i = 0; i < 20; i++) {
      const [r] = parseResponses(
        await exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
      );
      equal(r!.body, "small\n");
    }
  };
  await Promise.all([...Array.from({ length: clients }, (_, n) => download(n)), small()]);
  equal(t.errors.length, 0, t.errors.join("\n"));
});
