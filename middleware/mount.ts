/**
 * `mount()`: dispatch to sub-applications by path prefix, moving the prefix
 * from `PATH_INFO` to `SCRIPT_NAME` (werkzeug's `DispatcherMiddleware`).
 *
 * @module
 */

import type { Application } from "../types.ts";
import { textToNative } from "../_gateway/native.ts";
import { checkPathPrefix, optionError } from "../options.ts";

/**
 * Checks a mount prefix: a path prefix like `/api` (see `pathPrefixProblem`
 * in `options.ts`), not the root `/`, which belongs to the fallback.
 */
function checkPrefix(prefix: string): void {
  if (prefix === "/") {
    throw optionError(
      RangeError,
      "mount prefix",
      'a path like "/api" (the root "/" is the fallback)',
      prefix,
    );
  }
  checkPathPrefix("mount prefix", prefix);
}

/**
 * Dispatches each request to the application mounted at the longest prefix
 * of its `PATH_INFO`, matched at a segment boundary: `"/api"` takes `/api`
 * and `/api/users`, but not `/apix`. Requests under no prefix go to
 * `fallback`, with the environ unchanged.
 *
 * The chosen application gets a copy of the environ (a new object with the
 * same entries; the caller's is not changed) in which the prefix has moved
 * from the start of `PATH_INFO` to the end of `SCRIPT_NAME`: for `/api/users`
 * under `"/api"`, `SCRIPT_NAME` `""` becomes `"/api"` and `PATH_INFO` becomes
 * `"/users"`; for `/api` itself, `PATH_INFO` becomes `""`. So the sub-app
 * routes on its own paths, and URLs it rebuilds with `applicationUri()`
 * include the prefix.
 *
 * Prefixes are text: `"/café"` matches `PATH_INFO`'s UTF-8 bytes. Each must
 * start with `/`, must not end with `/`, and has no empty, `.` or `..`
 * segments (the root is `fallback`).
 *
 * @param routes Applications by prefix.
 * @param fallback The application for everything else (typically the main app, or a 404).
 * @returns The dispatching application.
 * @throws {RangeError} If a prefix is not a path like `"/api"`.
 * @throws {TypeError} If a route or the fallback is not a function.
 *
 * @example An API and an admin app beside the main app
 * ```ts
 * import { type Application, mount } from "../mod.ts";
 * import { equal } from "node:assert/strict";
 *
 * let seen = "";
 * function named(name: string): Application {
 *   return (environ, startResponse) => {
 *     seen = `${name} ${environ.SCRIPT_NAME} ${environ.PATH_INFO}`;
 *     startResponse("204 No Content", []);
 *     return [];
 *   };
 * }
 * const app = mount({ "/api": named("api"), "/api/v2": named("v2") }, named("main"));
 * const call = (path: string) =>
 *   app({ SCRIPT_NAME: "", PATH_INFO: path } as never, () => async () => {});
 *
 * await call("/api/users");
 * equal(seen, "api /api /users");
 * await call("/api/v2/users");
 * equal(seen, "v2 /api/v2 /users");
 * await call("/apix");
 * equal(seen, "main  /apix");
 * ```
 */
export function mount(routes: Record<string, Application>, fallback: Application): Application {
  if (typeof fallback !== "function") {
    throw new TypeError("Invalid mount() fallback: expected an application (a function)");
  }
  const table: [prefix: string, app: Application][] = [];
  for (const [prefix, app] of Object.entries(routes)) {
    checkPrefix(prefix);
    if (typeof app !== "function") {
      throw new TypeError(
        `Invalid mount route ${JSON.stringify(prefix)}: expected an application (a function)`,
      );
    }
    table.push([textToNative(prefix), app]);
  }
  // Longest first: the first match is the longest matching prefix.
  table.sort((a, b) => b[0].length - a[0].length);

  return function mount(environ, startResponse) {
    const pathInfo = environ.PATH_INFO;
    for (const [prefix, app] of table) {
      if (
        pathInfo.startsWith(prefix) &&
        (pathInfo.length === prefix.length || pathInfo.charCodeAt(prefix.length) === 0x2f)
      ) {
        const inner = {
          ...environ,
          SCRIPT_NAME: environ.SCRIPT_NAME + prefix,
          PATH_INFO: pathInfo.slice(prefix.length),
        };
        return app(inner, startResponse);
      }
    }
    return fallback(environ, startResponse);
  };
}
