/** Baseline for the load benchmark: `Deno.serve` (hyper, in Rust) giving the sample app's `/` answer. */

const body = "Hello from My Simple WSGI App! (Homepage)\n";
Deno.serve({
  hostname: "127.0.0.1",
  port: Number(Deno.args[0] ?? 0),
  onListen: ({ port }) => console.log(`Listening on http://127.0.0.1:${port}/`),
}, () =>
  new Response(body, {
    headers: {
      "Content-type": "text/plain; charset=utf-8",
      "X-Powered-By": "MySimpleWSGIApp",
    },
  }));
