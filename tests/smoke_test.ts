import { equal } from "node:assert/strict";
import { app } from "../app.ts";
import { exchange, parseResponses, startServer } from "./_helpers.ts";

Deno.test("serve() answers the sample app's homepage and closes on Connection: close", async () => {
  await using t = startServer(app);
  const text = await exchange(t.port, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
  const [response] = parseResponses(text);
  equal(response!.status, 200);
  equal(response!.body, "Hello from My Simple WSGI App! (Homepage)\n");
  equal(response!.headers.get("connection"), "close");
});
