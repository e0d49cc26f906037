/**
 * Baseline for the load benchmark: a raw `Deno.listen` server that answers
 * every request head it sees (counted by its blank line) with one canned
 * response, without parsing anything. No real server can beat it; it shows
 * what the socket path costs.
 */

const body = "Hello from My Simple WSGI App! (Homepage)\n";
const response = new TextEncoder().encode(
  "HTTP/1.1 200 OK\r\nContent-type: text/plain; charset=utf-8\r\n" +
    "X-Powered-By: MySimpleWSGIApp\r\n" +
    `Content-Length: ${body.length}\r\nDate: ${new Date().toUTCString()}\r\n` +
    `Server: raw\r\n\r\n${body}`,
);
const batches: Uint8Array[] = [response];

function batch(count: number): Uint8Array {
  let out = batches[count - 1];
  if (out === undefined) {
    out = new Uint8Array(response.length * count);
    for (let i = 0; i < count; i++) out.set(response, i * response.length);
    batches[count - 1] = out;
  }
  return out;
}

async function handle(conn: Deno.Conn): Promise<void> {
  (conn as Deno.TcpConn).setNoDelay(true);
  const buf = new Uint8Array(64 * 1024);
  let state = 0; // how much of "\r\n\r\n" was matched at the end of the last read
  try {
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return;
      let heads = 0;
      for (let i = 0; i < n; i++) {
        const b = buf[i];
        if (b === (state % 2 === 0 ? 13 : 10)) {
          if (++state === 4) {
            heads++;
            state = 0;
          }
        } else {
          state = b === 13 ? 1 : 0;
        }
      }
      if (heads > 0) {
        const out = batch(heads);
        let at = 0;
        while (at < out.length) at += await conn.write(out.subarray(at));
      }
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

const listener = Deno.listen({ hostname: "127.0.0.1", port: Number(Deno.args[0] ?? 0) });
console.log(`Listening on http://127.0.0.1:${listener.addr.port}/`);
for await (const conn of listener) handle(conn);
