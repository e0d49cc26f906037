/**
 * The systemd unit of docs/deployment.md, run as systemd would run it (no
 * systemd here): its `ExecStart` command line is read from the document,
 * with only this machine's paths and a free port put in, so that a flag or
 * permission the unit lacks fails here rather than on a user's server.
 */

import { equal, match, ok } from "node:assert/strict";
import { Child, freePort } from "./_child.ts";
import { deadline, TEST_DEADLINE_MS } from "./_helpers.ts";
import { PROJECT_DIR } from "./_workers.ts";

const DEPLOYMENT_MD = new URL("../docs/deployment.md", import.meta.url);

/** The `[Service]` line `name=...` of the unit in docs/deployment.md, continuation lines joined. */
async function unitSetting(name: string): Promise<string> {
  const text = await Deno.readTextFile(DEPLOYMENT_MD);
  const unit = /```ini\n(\[Unit\][\s\S]*?)```/.exec(text)?.[1];
  if (unit === undefined) throw new Error("docs/deployment.md has no systemd unit");
  const line = new RegExp(`^${name}=((?:.*\\\\\\n)*.*)$`, "m").exec(unit)?.[1];
  if (line === undefined) throw new Error(`the unit has no ${name}=`);
  return line.replace(/\\\n\s*/g, " ");
}

Deno.test("the systemd unit's ExecStart serves the app with its workers and stops on SIGTERM", async () => {
  const execStart = await unitSetting("ExecStart");
  const workingDirectory = await unitSetting("WorkingDirectory");
  const port = String(freePort());
  const [deno, ...args] = execStart.split(/\s+/).map((word) =>
    word
      .replace(/^--allow-run=.*$/, `--allow-run=${Deno.execPath()}`)
      .replaceAll(workingDirectory, PROJECT_DIR.replace(/\/$/, ""))
  );
  match(deno!, /\/deno$/, execStart);
  const portAt = args.indexOf("--port");
  ok(portAt > 0, `the unit sets --port: ${execStart}`);
  args[portAt + 1] = port;
  ok(args.includes("--workers"), `the unit runs workers: ${execStart}`);

  await using child = new Child(Deno.execPath(), args, { cwd: PROJECT_DIR });
  ok(await child.stderr.waitForCount(/^Worker \d \(pid \d+\) listening on /, 2), child.output());
  const response = await deadline(TEST_DEADLINE_MS, fetch(`http://127.0.0.1:${port}/`), "GET /");
  equal(response.status, 200);
  match(await response.text(), /Homepage/);
  child.kill("SIGTERM");
  const status = await child.status();
  equal(status.code, 0, child.output());
});
