/**
 * proxyFix(): which peers are trusted (addresses, CIDR ranges, IPv4 and
 * IPv6), each X-Forwarded-* header, hop counts, the RFC 7239 Forwarded
 * header (honoured only when asked), and malformed values (ignored, never
 * a crash). Most tests call the
 * middleware directly; one goes through the real server.
 */

import { deepEqual, equal, ok, throws } from "node:assert/strict";
import type { Application, Environ } from "../mod.ts";
import { proxyFix, type ProxyFixOptions } from "../mod.ts";
import { exchange, parseResponses, startServer } from "./_helpers.ts";

/** Runs `environ` through proxyFix(options) and returns the environ the app saw. */
async function seen(
  options: ProxyFixOptions,
  environ: Record<string, unknown>,
): Promise<Environ> {
  let got: Environ | undefined;
  const app: Application = (e, startResponse) => {
    got = e;
    startResponse("204 No Content", []);
    return [];
  };
  await proxyFix(app, options)(request(environ), () => async () => {});
  ok(got !== undefined, "the app was called");
  return got;
}

function request(extra: Record<string, unknown>): Environ {
  return {
    REQUEST_METHOD: "GET",
    SCRIPT_NAME: "",
    PATH_INFO: "/",
    QUERY_STRING: "",
    SERVER_NAME: "backend",
    SERVER_PORT: "8000",
    SERVER_PROTOCOL: "HTTP/1.1",
    HTTP_HOST: "backend:8000",
    REMOTE_ADDR: "127.0.0.1",
    REMOTE_PORT: "50000",
    "wsgi.url_scheme": "http",
    ...extra,
  } as unknown as Environ;
}

const LOCAL: ProxyFixOptions = { trustedProxies: ["127.0.0.1"] };
/** As {@linkcode LOCAL}, with the `Forwarded` header honoured. */
const FORWARDED: ProxyFixOptions = { ...LOCAL, forwarded: true };
const ALL: ProxyFixOptions = {
  trustedProxies: ["127.0.0.1"],
  forwardedFor: 1,
  forwardedProto: 1,
  forwardedHost: 1,
  forwardedPrefix: 1,
};

Deno.test("proxyFix() takes REMOTE_ADDR from X-Forwarded-For of a trusted peer", async () => {
  const e = await seen(LOCAL, { HTTP_X_FORWARDED_FOR: "203.0.113.7" });
  equal(e.REMOTE_ADDR, "203.0.113.7");
  equal(e.REMOTE_PORT, "50000", "REMOTE_PORT is not changed");
});

Deno.test("proxyFix() leaves the environ untouched for an untrusted peer", async () => {
  const extra = {
    REMOTE_ADDR: "198.51.100.1",
    HTTP_X_FORWARDED_FOR: "203.0.113.7",
    HTTP_X_FORWARDED_PROTO: "https",
    HTTP_X_FORWARDED_HOST: "example.com",
    HTTP_X_FORWARDED_PREFIX: "/app",
    HTTP_FORWARDED: "for=203.0.113.8;proto=https",
  };
  const e = await seen(ALL, extra);
  deepEqual({ ...e }, { ...request(extra) });
  equal(e["proxy_fix.orig"], undefined);
});

Deno.test("proxyFix() trusts no one without REMOTE_ADDR unless 'unix' is listed", async () => {
  const extra = { REMOTE_ADDR: undefined, HTTP_X_FORWARDED_FOR: "203.0.113.7" };
  equal((await seen(LOCAL, extra)).REMOTE_ADDR, undefined);
  const unix = await seen({ trustedProxies: ["unix"] }, extra);
  equal(unix.REMOTE_ADDR, "203.0.113.7");
  equal(
    (await seen({ trustedProxies: ["unix"] }, { HTTP_X_FORWARDED_FOR: "203.0.113.7" }))
      .REMOTE_ADDR,
    "127.0.0.1",
    "'unix' does not trust TCP peers",
  );
});

Deno.test("proxyFix() counts X-Forwarded-For hops from the right", async () => {
  const header = { HTTP_X_FORWARDED_FOR: "1.1.1.1, 10.0.0.2,10.0.0.3" };
  equal((await seen(LOCAL, header)).REMOTE_ADDR, "10.0.0.3");
  equal((await seen({ ...LOCAL, forwardedFor: 2 }, header)).REMOTE_ADDR, "10.0.0.2");
  equal((await seen({ ...LOCAL, forwardedFor: 3 }, header)).REMOTE_ADDR, "1.1.1.1");
  equal(
    (await seen({ ...LOCAL, forwardedFor: 4 }, header)).REMOTE_ADDR,
    "127.0.0.1",
    "fewer entries than hops: the header is not believed",
  );
  equal((await seen({ ...LOCAL, forwardedFor: 0 }, header)).REMOTE_ADDR, "127.0.0.1");
});

Deno.test("proxyFix() ignores malformed X-Forwarded-For values", async () => {
  for (
    const value of [
      "unknown",
      "not-an-ip",
      "256.1.1.1",
      "01.2.3.4",
      "1.2.3",
      "1.2.3.4.5",
      "",
      " ",
      "1.2.3.4, ",
      "[::1",
      "::1::2",
      "1:2:3:4:5:6:7:8:9",
      "fe80::1%<x>",
      "1.2.3.4:port",
      "1.2.3.4\r\nX: y",
    ]
  ) {
    const e = await seen(LOCAL, { HTTP_X_FORWARDED_FOR: value });
    equal(e.REMOTE_ADDR, "127.0.0.1", JSON.stringify(value));
  }
});

Deno.test("proxyFix() accepts IPv6 and address:port forms in X-Forwarded-For", async () => {
  const cases: [string, string][] = [
    ["2001:db8::1", "2001:db8::1"],
    ["[2001:db8::1]:4711", "2001:db8::1"],
    ["[::1]", "::1"],
    ["203.0.113.7:5555", "203.0.113.7"],
    ["::ffff:192.0.2.1", "::ffff:192.0.2.1"],
    ["1:2:3:4:5:6:7:8", "1:2:3:4:5:6:7:8"],
  ];
  for (const [value, expected] of cases) {
    equal((await seen(LOCAL, { HTTP_X_FORWARDED_FOR: value })).REMOTE_ADDR, expected, value);
  }
});

Deno.test("proxyFix() sets wsgi.url_scheme from X-Forwarded-Proto, http or https only", async () => {
  equal((await seen(LOCAL, { HTTP_X_FORWARDED_PROTO: "https" }))["wsgi.url_scheme"], "https");
  equal((await seen(LOCAL, { HTTP_X_FORWARDED_PROTO: "HTTPS" }))["wsgi.url_scheme"], "https");
  equal(
    (await seen(LOCAL, { HTTP_X_FORWARDED_PROTO: "https, http" }))["wsgi.url_scheme"],
    "http",
    "the rightmost value is the nearest proxy's",
  );
  equal(
    (await seen({ ...LOCAL, forwardedProto: 2 }, { HTTP_X_FORWARDED_PROTO: "https, http" }))[
      "wsgi.url_scheme"
    ],
    "https",
  );
  for (const bad of ["ftp", "javascript", "", "https ;", "http s"]) {
    equal(
      (await seen(LOCAL, { "wsgi.url_scheme": "http", HTTP_X_FORWARDED_PROTO: bad }))[
        "wsgi.url_scheme"
      ],
      "http",
      bad,
    );
  }
  equal(
    (await seen({ ...LOCAL, forwardedProto: 0 }, { HTTP_X_FORWARDED_PROTO: "https" }))[
      "wsgi.url_scheme"
    ],
    "http",
  );
});

Deno.test("proxyFix() ignores X-Forwarded-Host unless forwardedHost is set", async () => {
  const e = await seen(LOCAL, { HTTP_X_FORWARDED_HOST: "example.com" });
  equal(e.HTTP_HOST, "backend:8000");
  equal(e.SERVER_NAME, "backend");
});

Deno.test("proxyFix() sets HTTP_HOST, SERVER_NAME and SERVER_PORT from X-Forwarded-Host", async () => {
  const options = { ...LOCAL, forwardedHost: 1 };
  let e = await seen(options, { HTTP_X_FORWARDED_HOST: "example.com" });
  deepEqual([e.HTTP_HOST, e.SERVER_NAME, e.SERVER_PORT], ["example.com", "example.com", "80"]);
  e = await seen(options, {
    HTTP_X_FORWARDED_HOST: "example.com",
    HTTP_X_FORWARDED_PROTO: "https",
  });
  deepEqual(
    [e.SERVER_NAME, e.SERVER_PORT],
    ["example.com", "443"],
    "the default port follows the scheme",
  );
  e = await seen(options, { HTTP_X_FORWARDED_HOST: "example.com:8443" });
  deepEqual([e.HTTP_HOST, e.SERVER_NAME, e.SERVER_PORT], [
    "example.com:8443",
    "example.com",
    "8443",
  ]);
  e = await seen(options, { HTTP_X_FORWARDED_HOST: "[2001:db8::1]:8080" });
  deepEqual([e.SERVER_NAME, e.SERVER_PORT], ["[2001:db8::1]", "8080"]);
  e = await seen(options, { HTTP_X_FORWARDED_HOST: "evil.example, example.com" });
  equal(e.SERVER_NAME, "example.com");
  e = await seen({ ...LOCAL, forwardedHost: 2 }, {
    HTTP_X_FORWARDED_HOST: "evil.example, example.com",
  });
  equal(e.SERVER_NAME, "evil.example");
});

Deno.test("proxyFix() ignores malformed X-Forwarded-Host values", async () => {
  const options = { ...LOCAL, forwardedHost: 1 };
  for (
    const bad of [
      "",
      "exa mple.com",
      "example.com:99999",
      "example.com:80:80",
      "example.com/path",
      "user@example.com",
      "[::1",
      "[nothex]:80",
      "-leading.example",
      "example.com:",
      "a\r\nb",
    ]
  ) {
    const e = await seen(options, { HTTP_X_FORWARDED_HOST: bad });
    deepEqual([e.HTTP_HOST, e.SERVER_NAME, e.SERVER_PORT], [
      "backend:8000",
      "backend",
      "8000",
    ], JSON.stringify(bad));
  }
});

Deno.test("proxyFix() prepends a validated X-Forwarded-Prefix to SCRIPT_NAME", async () => {
  const options = { ...LOCAL, forwardedPrefix: 1 };
  equal((await seen(options, { HTTP_X_FORWARDED_PREFIX: "/app" })).SCRIPT_NAME, "/app");
  equal((await seen(options, { HTTP_X_FORWARDED_PREFIX: "/app/" })).SCRIPT_NAME, "/app");
  equal(
    (await seen(options, { HTTP_X_FORWARDED_PREFIX: "/app", SCRIPT_NAME: "/inner" })).SCRIPT_NAME,
    "/app/inner",
  );
  equal(
    (await seen(options, { HTTP_X_FORWARDED_PREFIX: "/caf%C3%A9" })).SCRIPT_NAME,
    "/caf\u00c3\u00a9",
    "percent-decoded to a native string, as SCRIPT_NAME is",
  );
  equal((await seen(options, { HTTP_X_FORWARDED_PREFIX: "/" })).SCRIPT_NAME, "");
  for (
    const bad of [
      "app",
      "/a/../b",
      "/a/./b",
      "//evil",
      "/a//b",
      "/%2e%2e",
      "/a\\b",
      "/a%00",
      "/a?b",
    ]
  ) {
    equal((await seen(options, { HTTP_X_FORWARDED_PREFIX: bad })).SCRIPT_NAME, "", bad);
  }
  equal(
    (await seen(LOCAL, { HTTP_X_FORWARDED_PREFIX: "/app" })).SCRIPT_NAME,
    "",
    "off by default",
  );
});

Deno.test("proxyFix() saves the replaced values under proxy_fix.orig", async () => {
  const e = await seen(ALL, {
    HTTP_X_FORWARDED_FOR: "203.0.113.7",
    HTTP_X_FORWARDED_PROTO: "https",
    HTTP_X_FORWARDED_HOST: "example.com",
    HTTP_X_FORWARDED_PREFIX: "/app",
  });
  deepEqual(e["proxy_fix.orig"], {
    REMOTE_ADDR: "127.0.0.1",
    "wsgi.url_scheme": "http",
    HTTP_HOST: "backend:8000",
    SERVER_NAME: "backend",
    SERVER_PORT: "8000",
    SCRIPT_NAME: "",
  });
  deepEqual(
    [e.REMOTE_ADDR, e["wsgi.url_scheme"], e.HTTP_HOST, e.SERVER_PORT, e.SCRIPT_NAME],
    ["203.0.113.7", "https", "example.com", "443", "/app"],
  );
});

Deno.test("proxyFix() matches trusted proxies by CIDR range, IPv4 and IPv6", async () => {
  const cases: [string[], string, boolean][] = [
    [["10.0.0.0/8"], "10.200.3.4", true],
    [["10.0.0.0/8"], "11.0.0.1", false],
    [["192.168.1.0/25"], "192.168.1.127", true],
    [["192.168.1.0/25"], "192.168.1.128", false],
    [["172.16.0.0/12"], "172.31.255.255", true],
    [["172.16.0.0/12"], "172.32.0.0", false],
    [["0.0.0.0/0"], "8.8.8.8", true],
    [["0.0.0.0/0"], "::1", false],
    [["10.1.2.3/32"], "10.1.2.3", true],
    [["10.1.2.3"], "10.1.2.4", false],
    [["::1"], "::1", true],
    [["::1"], "0:0:0:0:0:0:0:1", true],
    [["::1"], "::2", false],
    [["fd00::/8"], "fd12:3456::1", true],
    [["fd00::/8"], "fe80::1", false],
    [["2001:db8::/32"], "2001:db8:ffff::1", true],
    [["2001:db8::/33"], "2001:db8:8000::1", false],
    [["2001:db8::/127"], "2001:db8::1", true],
    [["::/0"], "2001:db8::1", true],
    [["::/0"], "127.0.0.1", false],
    [["127.0.0.1"], "::ffff:127.0.0.1", true],
    [["10.0.0.0/8"], "::ffff:10.9.9.9", true],
    [["::ffff:10.0.0.0/104"], "10.9.9.9", true],
    [["::ffff:10.0.0.0/104"], "11.9.9.9", false],
    [["fe80::/10"], "fe80::1%eth0", true],
    [["127.0.0.1"], "localhost", false],
    [["127.0.0.1"], "", false],
  ];
  for (const [trustedProxies, remoteAddr, trusted] of cases) {
    const e = await seen({ trustedProxies }, {
      REMOTE_ADDR: remoteAddr,
      HTTP_X_FORWARDED_FOR: "203.0.113.7",
    });
    equal(
      e.REMOTE_ADDR === "203.0.113.7",
      trusted,
      `${remoteAddr} in ${trustedProxies.join(" ")}`,
    );
  }
});

Deno.test("proxyFix() rejects malformed trusted proxies and hop counts", () => {
  const app: Application = () => [];
  for (
    const bad of ["localhost", "10.0.0.0/33", "::1/129", "10.0.0.0/", "10.0.0.0/-1", "1.2.3", "*"]
  ) {
    throws(() => proxyFix(app, { trustedProxies: [bad] }), TypeError, bad);
  }
  throws(() => proxyFix(app, {} as ProxyFixOptions), TypeError);
  throws(() => proxyFix(app, { trustedProxies: [], forwardedFor: -1 }), RangeError);
  throws(() => proxyFix(app, { trustedProxies: [], forwardedHost: 1.5 }), RangeError);
});

Deno.test("proxyFix() ignores the Forwarded header by default, whatever it says", async () => {
  const options = { ...LOCAL, forwardedHost: 1 };
  const header = { HTTP_FORWARDED: 'for=192.0.2.60;proto=https;host="evil.example"' };
  const e = await seen(options, header);
  deepEqual(
    [e.REMOTE_ADDR, e["wsgi.url_scheme"], e.HTTP_HOST, e.SERVER_NAME],
    ["127.0.0.1", "http", "backend:8000", "backend"],
  );
  const both = await seen(options, {
    ...header,
    HTTP_X_FORWARDED_FOR: "203.0.113.7",
    HTTP_X_FORWARDED_PROTO: "https",
  });
  deepEqual(
    [both.REMOTE_ADDR, both["wsgi.url_scheme"]],
    ["203.0.113.7", "https"],
    "X-Forwarded-* apply as if there were no Forwarded header",
  );
});

Deno.test("proxyFix() reads for, proto and host from the Forwarded header when forwarded is true", async () => {
  const options = { ...FORWARDED, forwardedHost: 1 };
  const e = await seen(options, {
    HTTP_FORWARDED: 'for=192.0.2.60;proto=https;host="example.com:8443";by=203.0.113.43',
  });
  deepEqual(
    [e.REMOTE_ADDR, e["wsgi.url_scheme"], e.HTTP_HOST, e.SERVER_NAME, e.SERVER_PORT],
    ["192.0.2.60", "https", "example.com:8443", "example.com", "8443"],
  );
});

Deno.test("proxyFix() with forwarded true prefers Forwarded to X-Forwarded-*", async () => {
  const headers = {
    HTTP_FORWARDED: "for=192.0.2.60",
    HTTP_X_FORWARDED_FOR: "203.0.113.7",
    HTTP_X_FORWARDED_PROTO: "https",
  };
  const e = await seen(FORWARDED, headers);
  equal(e.REMOTE_ADDR, "192.0.2.60");
  equal(e["wsgi.url_scheme"], "http", "X-Forwarded-Proto is ignored when Forwarded is present");
  const off = await seen({ ...FORWARDED, forwarded: false }, headers);
  equal(off.REMOTE_ADDR, "203.0.113.7");
  equal(off["wsgi.url_scheme"], "https");
});

Deno.test("proxyFix() parses Forwarded edge cases", async () => {
  const cases: [string, string][] = [
    ['for="[2001:db8:cafe::17]:4711"', "2001:db8:cafe::17"],
    ['for="[2001:db8:cafe::17]"', "2001:db8:cafe::17"],
    ['FOR="192.0.2.43:47011"', "192.0.2.43"],
    ['for="192.0.2.43:_hidden"', "192.0.2.43"],
    ["for=192.0.2.43, for=198.51.100.17", "198.51.100.17"],
    ["for=192.0.2.43,for=198.51.100.17;proto=https", "198.51.100.17"],
    ["for=192.0.2.43 , for=198.51.100.17", "198.51.100.17"],
    ['for="\\1\\9\\2.0.2.1"', "192.0.2.1"],
    ["proto=https;for=192.0.2.1;", "192.0.2.1"],
    ["for=192.0.2.1;;by=x", "192.0.2.1"],
    // Not believed: the field keeps the server's value.
    ["for=unknown", "127.0.0.1"],
    ['for="unknown:80"', "127.0.0.1"],
    ["for=_hidden", "127.0.0.1"],
    ["for=_hidden, for=unknown", "127.0.0.1"],
    ["for=192.0.2.43, proto=https", "127.0.0.1"],
    ["for=[2001:db8::1]", "127.0.0.1"],
    ["for=2001:db8::1", "127.0.0.1"],
    ['for="192.0.2.43', "127.0.0.1"],
    ['for="192.0.2.43\\', "127.0.0.1"],
    ["for=192.0.2.43;for=192.0.2.44", "127.0.0.1"],
    ["for", "127.0.0.1"],
    ["for=", "127.0.0.1"],
    ["=192.0.2.43", "127.0.0.1"],
    ["for=192.0.2.43 junk", "127.0.0.1"],
    ['for="192.0.2.43"junk', "127.0.0.1"],
    ['for="\x01192.0.2.43"', "127.0.0.1"],
    ["by=203.0.113.43", "127.0.0.1"],
    [",", "127.0.0.1"],
    ['for="[::1]:port"', "127.0.0.1"],
    ['for="[1.2.3.4]"', "127.0.0.1"],
  ];
  for (const [header, expected] of cases) {
    const e = await seen(FORWARDED, { HTTP_FORWARDED: header });
    equal(e.REMOTE_ADDR, expected, header);
  }
});

Deno.test("proxyFix() counts Forwarded hops by element", async () => {
  const header = {
    HTTP_FORWARDED: "for=192.0.2.1;proto=https, for=10.0.0.2, for=10.0.0.3;proto=http",
  };
  let e = await seen({ ...FORWARDED, forwardedFor: 3, forwardedProto: 3 }, header);
  deepEqual([e.REMOTE_ADDR, e["wsgi.url_scheme"]], ["192.0.2.1", "https"]);
  e = await seen({ ...FORWARDED, forwardedFor: 2, forwardedProto: 2 }, header);
  deepEqual(
    [e.REMOTE_ADDR, e["wsgi.url_scheme"]],
    ["10.0.0.2", "http"],
    "no proto in that element",
  );
  e = await seen({ ...FORWARDED, forwardedFor: 4 }, header);
  equal(e.REMOTE_ADDR, "127.0.0.1");
});

Deno.test("proxyFix() ignores bad proto and host values in Forwarded", async () => {
  const options = { ...FORWARDED, forwardedHost: 1 };
  const e = await seen(options, { HTTP_FORWARDED: 'proto=gopher;host="bad host"' });
  deepEqual([e["wsgi.url_scheme"], e.HTTP_HOST], ["http", "backend:8000"]);
});

Deno.test("proxyFix() behind the real server rewrites what the app sees", async () => {
  const app: Application = (environ, startResponse) => {
    const text = `${environ.REMOTE_ADDR} ${environ["wsgi.url_scheme"]} ${environ.HTTP_HOST}\n`;
    startResponse("200 OK", [["Content-Type", "text/plain"]]);
    return [new TextEncoder().encode(text)];
  };
  await using trusted = startServer(
    proxyFix(app, { trustedProxies: ["127.0.0.0/8", "::1"], forwardedHost: 1 }),
  );
  const head = "X-Forwarded-For: 203.0.113.7\r\nX-Forwarded-Proto: https\r\n" +
    "X-Forwarded-Host: example.com\r\nConnection: close\r\n\r\n";
  let [response] = parseResponses(
    await exchange(trusted.port, `GET / HTTP/1.1\r\nHost: backend\r\n${head}`),
  );
  equal(response!.body, "203.0.113.7 https example.com\n");

  await using untrusted = startServer(proxyFix(app, { trustedProxies: ["10.0.0.0/8"] }));
  [response] = parseResponses(
    await exchange(untrusted.port, `GET / HTTP/1.1\r\nHost: backend\r\n${head}`),
  );
  equal(response!.body, "127.0.0.1 http backend\n");
});
