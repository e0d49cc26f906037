/** The CLI's --forwarded-allow-ips: proxyFix applied for the named proxies only. */

import { equal, match } from "node:assert/strict";

const SERVER_TS = new URL("../server.ts", import.meta.url).pathname;

async function infoThroughCli(allow: string): Promise<string> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "--quiet",
      "--allow-net=127.0.0.1",
      SERVER_TS,
      "--port",
      "0",
      "--no-access-log",
      "--forwarded-allow-ips",
      allow,
    ],
    stdout: "piped",
    stderr: "piped",
    env: { NO_COLOR: "1" },
  }).spawn();
  const stdout = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const stderr = new Response(child.stderr).text();
  try {
    let seen = "";
    let port = 0;
    while (port === 0) {
      const { value, done } = await stdout.read();
      if (done) throw new Error(`The CLI exited before listening: ${await stderr}`);
      seen += value;
      port = Number(/Listening on http:\/\/127\.0\.0\.1:(\d+)\//.exec(seen)?.[1] ?? 0);
    }
    const response = await fetch(`http://127.0.0.1:${port}/info`, {
      headers: { "X-Forwarded-For": "203.0.113.9", "X-Forwarded-Proto": "https" },
    });
    equal(response.status, 200);
    return await response.text();
  } finally {
    child.kill("SIGTERM");
    const status = await child.status;
    while (!(await stdout.read()).done);
    equal(status.code, 0, await stderr);
  }
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
