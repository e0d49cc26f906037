/**
 * Memory per idle keep-alive connection: starts a server in a child process
 * (deno-wsgi with the sample app, Deno.serve, or the raw server), opens N
 * connections that each make one request and then stay open and idle, and
 * reports the server's resident set size before and after, per connection.
 *
 * Usage: deno run -A bench/idle_rss.ts [--connections 10000] [--server deno-wsgi|Deno.serve|raw|all]
 * Needs `ulimit -n` above the connection count (the server and this script
 * each hold one descriptor per connection).
 */

import { readFlags } from "./_args.ts";
import { rssKiB, startChildServer, wsgiServerArgs } from "./_servers.ts";

const flags = readFlags("bench/idle_rss.ts", {
  connections: { help: "idle keep-alive connections to open", default: "10000" },
  server: {
    help: "which server to measure",
    default: "all",
    takes: ["deno-wsgi", "Deno.serve", "raw", "all"],
  },
});
const count = flags.count("connections");
const which = flags.text("server")!;
const here = new URL(".", import.meta.url);

const servers: Record<string, string[]> = {
  "deno-wsgi": wsgiServerArgs("--max-connections", String(count + 100)),
  "Deno.serve": ["run", "--allow-net", new URL("deno_serve.ts", here).pathname, "0"],
  "raw": ["run", "--allow-net", new URL("raw_server.ts", here).pathname, "0"],
};

async function measure(name: string): Promise<{ before: number; after: number }> {
  const server = await startChildServer(servers[name]!);
  const { child, port } = server;
  const request = new TextEncoder().encode("GET / HTTP/1.1\r\nHost: bench\r\n\r\n");
  const buf = new Uint8Array(4096);
  const conns: Deno.Conn[] = [];
  try {
    // Warm up: the first connections pay for code compilation, not memory per connection.
    for (let i = 0; i < 200; i++) {
      const conn = await Deno.connect({ hostname: "127.0.0.1", port });
      await conn.write(request);
      await conn.read(buf);
      conn.close();
    }
    const before = await rssKiB(child.pid);
    const batch = 200;
    for (let i = 0; i < count; i += batch) {
      const opened = await Promise.all(
        Array.from({ length: Math.min(batch, count - i) }, async () => {
          const conn = await Deno.connect({ hostname: "127.0.0.1", port });
          await conn.write(request);
          const n = await conn.read(buf);
          if (n === null) throw new Error("Closed before answering");
          return conn;
        }),
      );
      conns.push(...opened);
    }
    // Let the server settle (finish its bookkeeping, run a GC cycle) before reading RSS.
    await new Promise((resolve) => setTimeout(resolve, 2000));
    const after = await rssKiB(child.pid);
    return { before, after };
  } finally {
    for (const conn of conns) conn.close();
    await server.stop();
  }
}

const names = which === "all" ? Object.keys(servers) : [which];
console.log(`\n${count} idle keep-alive connections, each after one GET /:\n`);
console.log("| server | RSS before (MiB) | RSS with connections (MiB) | KiB per connection |");
console.log("| --- | ---: | ---: | ---: |");
for (const name of names) {
  const { before, after } = await measure(name);
  console.log(
    `| ${name} | ${(before / 1024).toFixed(1)} | ${(after / 1024).toFixed(1)} | ${
      ((after - before) / count).toFixed(1)
    } |`,
  );
}
