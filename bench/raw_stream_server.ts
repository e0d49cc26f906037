/**
 * Baseline for the throughput benchmark: a raw `Deno.listen` server that
 * understands just enough HTTP for it, with no validation at all.
 * `POST` with `Content-Length: N` echoes the N body bytes back as they come;
 * `GET /download?mb=N` writes N MiB. What a server built on the same socket
 * API cannot beat.
 */

const chunk = new Uint8Array(64 * 1024).fill(0x61);
const encoder = new TextEncoder();

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let at = 0;
  while (at < data.length) at += await conn.write(data.subarray(at));
}

async function handle(conn: Deno.Conn): Promise<void> {
  (conn as Deno.TcpConn).setNoDelay(true);
  const buf = new Uint8Array(64 * 1024);
  let pending = new Uint8Array(0);
  try {
    for (;;) {
      let end = -1;
      while ((end = findHeadEnd(pending)) < 0) {
        const n = await conn.read(buf);
        if (n === null) return;
        const joined = new Uint8Array(pending.length + n);
        joined.set(pending);
        joined.set(buf.subarray(0, n), pending.length);
        pending = joined;
      }
      const head = new TextDecoder().decode(pending.subarray(0, end));
      let rest = pending.subarray(end + 4);
      const length = Number(/content-length:\s*(\d+)/i.exec(head)?.[1] ?? 0);
      if (head.startsWith("POST")) {
        await writeAll(
          conn,
          encoder.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${length}\r\n\r\n`),
        );
        let left = length;
        const first = rest.subarray(0, Math.min(left, rest.length));
        await writeAll(conn, first);
        left -= first.length;
        rest = rest.subarray(first.length);
        while (left > 0) {
          const n = await conn.read(buf);
          if (n === null) return;
          const take = Math.min(n, left);
          await writeAll(conn, buf.subarray(0, take));
          left -= take;
          if (take < n) rest = buf.slice(take, n);
        }
      } else {
        const mb = Number(/mb=(\d+)/.exec(head)?.[1] ?? 1);
        const total = mb * 1024 * 1024;
        await writeAll(conn, encoder.encode(`HTTP/1.1 200 OK\r\nContent-Length: ${total}\r\n\r\n`));
        for (let sent = 0; sent < total; sent += chunk.length) await writeAll(conn, chunk);
      }
      pending = rest.slice();
    }
  } catch {
    // Peer reset.
  } finally {
    try {
      conn.close();
    } catch {
      // Already closed.
    }
  }
}

function findHeadEnd(b: Uint8Array): number {
  for (let i = 0; i + 3 < b.length; i++) {
    if (b[i] === 13 && b[i + 1] === 10 && b[i + 2] === 13 && b[i + 3] === 10) return i;
  }
  return -1;
}

const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.args[0] ?? 0) });
console.log(`Listening on http://127.0.0.1:${listener.addr.port}/`);
for await (const conn of listener) handle(conn);
