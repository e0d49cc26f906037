/**
 * mount(): longest-prefix dispatch at segment boundaries, SCRIPT_NAME and
 * PATH_INFO on a copy of the environ, prefix validation, and a mounted app
 * behind the real server.
 */

import { deepEqual, equal, notEqual, throws } from "node:assert/strict";
import type { Application, Environ } from "../mod.ts";
import { applicationUri, mount } from "../mod.ts";
import { exchange, parseResponses, startServer } from "./_helpers.ts";

interface Seen {
  app: string;
  environ: Environ;
}

/** Apps that record which of them answered, and with what environ. */
function recorder(): { seen: Seen[]; app(name: string): Application } {
  const seen: Seen[] = [];
  return {
    seen,
    app(name) {
      return function recorded(environ, startResponse) {
        seen.push({ app: name, environ });
        const body = new TextEncoder().encode(
          `${name} ${JSON.stringify(environ.SCRIPT_NAME)} ${JSON.stringify(environ.PATH_INFO)}\n`,
        );
        startResponse("200 OK", [["Content-Type", "text/plain"]]);
        return [body];
      };
    },
  };
}

function environ(pathInfo: string, scriptName = ""): Environ {
  return {
    REQUEST_METHOD: "GET",
    SCRIPT_NAME: scriptName,
    PATH_INFO: pathInfo,
    QUERY_STRING: "",
    SERVER_NAME: "example.com",
    SERVER_PORT: "80",
    HTTP_HOST: "example.com",
    "wsgi.url_scheme": "http",
    "x.custom": { shared: true },
  } as unknown as Environ;
}

const startResponse = () => () => Promise.resolve();

Deno.test("mount() dispatches on the longest prefix at a segment boundary", async () => {
  const r = recorder();
  const app = mount(
    { "/api": r.app("api"), "/api/v2": r.app("v2"), "/a": r.app("a") },
    r.app("main"),
  );
  const cases: [string, string, string, string][] = [
    ["/api", "api", "/api", ""],
    ["/api/", "api", "/api", "/"],
    ["/api/users/7", "api", "/api", "/users/7"],
    ["/api/v2", "v2", "/api/v2", ""],
    ["/api/v2/users", "v2", "/api/v2", "/users"],
    ["/api/v20", "api", "/api", "/v20"],
    ["/apix", "main", "", "/apix"],
    ["/a", "a", "/a", ""],
    ["/ab", "main", "", "/ab"],
    ["/", "main", "", "/"],
    ["", "main", "", ""],
    ["/API", "main", "", "/API"],
  ];
  for (const [path, name, scriptName, pathInfo] of cases) {
    await app(environ(path), startResponse);
    const last = r.seen[r.seen.length - 1]!;
    deepEqual([last.app, last.environ.SCRIPT_NAME, last.environ.PATH_INFO], [
      name,
      scriptName,
      pathInfo,
    ], path);
  }
});

Deno.test("mount() appends the prefix to an existing SCRIPT_NAME", async () => {
  const r = recorder();
  await mount({ "/api": r.app("api") }, r.app("main"))(environ("/api/x", "/outer"), startResponse);
  equal(r.seen[0]!.environ.SCRIPT_NAME, "/outer/api");
  equal(r.seen[0]!.environ.PATH_INFO, "/x");
  equal(applicationUri(r.seen[0]!.environ), "http://example.com/outer/api");
});

Deno.test("mount() gives the mounted app a copy and leaves the caller's environ alone", async () => {
  const r = recorder();
  const app = mount({ "/api": r.app("api") }, r.app("main"));
  const original = environ("/api/users");
  const before = { ...original };
  await app(original, startResponse);
  deepEqual({ ...original }, before);
  const inner = r.seen[0]!.environ;
  notEqual(inner, original);
  equal(inner["x.custom"], original["x.custom"], "other entries are the same values");
  equal(inner.REQUEST_METHOD, "GET");
  // The fallback gets the environ itself, unchanged.
  const other = environ("/else");
  await app(other, startResponse);
  equal(r.seen[1]!.environ, other);
});

Deno.test("mount() matches text prefixes against PATH_INFO's UTF-8 bytes", async () => {
  const r = recorder();
  const app = mount({ "/caf\u00e9": r.app("cafe") }, r.app("main"));
  await app(environ("/caf\u00c3\u00a9/menu"), startResponse);
  deepEqual([r.seen[0]!.app, r.seen[0]!.environ.SCRIPT_NAME], ["cafe", "/caf\u00c3\u00a9"]);
});

Deno.test("mount() nests", async () => {
  const r = recorder();
  const inner = mount({ "/v1": r.app("v1") }, r.app("api"));
  const app = mount({ "/api": inner }, r.app("main"));
  await app(environ("/api/v1/items"), startResponse);
  deepEqual(
    [r.seen[0]!.app, r.seen[0]!.environ.SCRIPT_NAME, r.seen[0]!.environ.PATH_INFO],
    ["v1", "/api/v1", "/items"],
  );
});

Deno.test("mount() rejects malformed prefixes and routes", () => {
  const app: Application = () => [];
  for (const prefix of ["api", "/", "", "/api/", "/a//b", "/a/../b", "/./a", "/a?b", "/a\0"]) {
    throws(() => mount({ [prefix]: app }, app), RangeError, JSON.stringify(prefix));
  }
  throws(() => mount({ "/api": "nope" as unknown as Application }, app), TypeError);
  throws(() => mount({}, undefined as unknown as Application), TypeError);
});

Deno.test("mount() behind the real server, with the server's scriptName", async () => {
  const r = recorder();
  await using server = startServer(mount({ "/api": r.app("api") }, r.app("main")), {
    scriptName: "/site",
  });
  const get = async (target: string) => {
    const [response] = parseResponses(
      await exchange(
        server.port,
        `GET ${target} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n`,
      ),
    );
    return response!.body;
  };
  equal(await get("/site/api/users?x=1"), 'api "/site/api" "/users"\n');
  equal(await get("/site/api"), 'api "/site/api" ""\n');
  equal(await get("/site/apix"), 'main "/site" "/apix"\n');
  equal(await get("/site/a%70i/x"), 'api "/site/api" "/x"\n');
});
