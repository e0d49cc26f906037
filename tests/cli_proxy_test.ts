/** The CLI's --forwarded-allow-ips: proxyFix applied for the named proxies only. */

import { equal, match, ok } from "node:assert/strict";
import { Child } from "./_child.ts";

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;

async function infoThroughCli(allow: string): Promise<string> {
  await using child = new Child(Deno.execPath(), [
    "run",
    "--quiet",
    "--allow-net=127.0.0.1",
    SERVER_TS,
    "--port",
    "0",
    "--no-access-log",
    "--forwarded-allow-ips",
    allow,
  ]);
  const listening = await child.stdout.waitFor(/^Listening on http:\/\/127\.0\.0\.1:\d+\/$/);
  ok(listening !== null, child.output());
  const port = /:(\d+)\/$/.exec(listening)![1];
  const response = await fetch(`http://127.0.0.1:${port}/info`, {
    headers: { "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https" },
  });
  equal(response.status, 200);
  const text = await response.text();
  child.kill("SIGTERM");
  equal((await child.status()).code, 0, child.output());
  return text;
}

Deno.test("the CLI applies X-Forwarded-* from a proxy named in --forwarded-allow-ips", async () => {
  const info = await infoThroughCli("127.0.0.1, ::1");
  match(info, /^REMOTE_ADDR: 203\.0\.113\.9$/m);
  match(info, /^wsgi\.url_scheme: https$/m);
});

Deno.test("the CLI ignores X-Forwarded-* from a peer not in --forwarded-allow-ips", async () => {
  const info = await infoThroughCli("10.0.0.0/8");
  match(info, /^REMOTE_ADDR: 127\.0\.0\.1$/m);
  match(info, /^wsgi\.url_scheme: http$/m);
});
