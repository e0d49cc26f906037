/**
 * `WriteScheduler` on a clock the tests move by hand: who writes at once,
 * who waits for a turn of the event loop, and what starts a new slice.
 */

import { deepEqual, equal, ok } from "node:assert/strict";
import {
  CROWD,
  CROWDED_WRITE_SLICE_MS,
  WRITE_PAUSE_MS,
  WRITE_SLICE_MS,
  type Writer,
  WriteScheduler,
} from "../write_scheduler.ts";

/** A scheduler on a clock that moves only when the test says so. */
function withClock(): { scheduler: WriteScheduler; advance(ms: number): void } {
  let now = 1000;
  return { scheduler: new WriteScheduler(() => now), advance: (ms) => now += ms };
}

function writer(): Writer {
  return { writeSlice: -1 };
}

/** Issues a write that must get the turn at once. */
function issueAtOnce(scheduler: WriteScheduler, w: Writer): void {
  equal(scheduler.begin(), undefined, "the writer has the turn at once");
  scheduler.issued(w);
}

/** Whether `turn` is still pending once the microtasks queued now have run (no timer fires meanwhile). */
async function pending(turn: Promise<unknown> | undefined): Promise<boolean> {
  if (turn === undefined) return false;
  let settled = false;
  turn.then(() => settled = true);
  for (let i = 0; i < 5; i++) await Promise.resolve();
  return !settled;
}

Deno.test("WriteScheduler gives the turn to one writer at a time, the others in order of arrival", async () => {
  const { scheduler } = withClock();
  using _ = scheduler;
  const [a, b, c] = [writer(), writer(), writer()];
  equal(scheduler.begin(), undefined);
  const order: string[] = [];
  const bTurn = scheduler.begin()!.then(() => order.push("b"));
  const cTurn = scheduler.begin()!.then(() => order.push("c"));
  ok(await pending(bTurn), "b waits while a holds the turn");
  scheduler.issued(a);
  await bTurn;
  ok(await pending(cTurn), "c waits while b holds the turn");
  scheduler.issued(b);
  await cTurn;
  scheduler.issued(c);
  deepEqual(order, ["b", "c"]);
});

/**
 * A scheduler in which one write ran for most of a slice and finished, then
 * nothing was written for `pauseMs`; and what the next writer's `begin()` gave.
 */
function afterSliceAndPause(pauseMs: number) {
  const { scheduler, advance } = withClock();
  const w = writer();
  issueAtOnce(scheduler, w);
  advance(WRITE_SLICE_MS - 1);
  scheduler.finished();
  advance(pauseMs);
  return { scheduler, w, turn: scheduler.begin() };
}

Deno.test("WriteScheduler makes writers wait for a timer once writes have run for a slice", async () => {
  const { scheduler, w, turn } = afterSliceAndPause(1);
  using _ = scheduler;
  ok(await pending(turn), "the writer waits for the event loop's turn");
  await turn; // a setTimeout(0) later
  scheduler.issued(w);
  // That turn started a new slice: the next write goes at once.
  scheduler.finished();
  issueAtOnce(scheduler, w);
});

Deno.test("WriteScheduler counts no pause as the event loop's turn while a write is unfinished", async () => {
  const { scheduler, advance } = withClock();
  using _ = scheduler;
  const [slow, other] = [writer(), writer()];
  // A write that waits for room in its socket: Deno completes it inside its
  // event loop, so a pause meanwhile has not let the other clients in.
  issueAtOnce(scheduler, slow);
  advance(WRITE_SLICE_MS + WRITE_PAUSE_MS);
  const turn = scheduler.begin();
  ok(await pending(turn), "the next write waits for a timer");
  await turn;
  scheduler.issued(other);
});

Deno.test("WriteScheduler starts a new slice at once after a pause with every write finished", () => {
  const { scheduler, turn } = afterSliceAndPause(WRITE_PAUSE_MS);
  using _ = scheduler;
  // A large response on a quiet server does not wait for a timer.
  equal(turn, undefined);
});

Deno.test("WriteScheduler shortens the slice once a crowd of connections writes in it", async () => {
  const { scheduler, advance } = withClock();
  using _ = scheduler;
  const writers = Array.from({ length: CROWD }, writer);
  for (const w of writers.slice(0, -1)) issueAtOnce(scheduler, w);
  advance(CROWDED_WRITE_SLICE_MS);
  // One writer short of a crowd, the slice is the long one.
  issueAtOnce(scheduler, writers.at(-1)!);
  // A crowd: the short slice is over.
  const turn = scheduler.begin();
  ok(await pending(turn), "the crowd waits for the event loop's turn");
  await turn;
  scheduler.issued(writers[0]!);
});

Deno.test("WriteScheduler lets its waiting writers go and cancels its timer when disposed", async () => {
  const { scheduler, advance } = withClock();
  issueAtOnce(scheduler, writer());
  advance(WRITE_SLICE_MS);
  const turns = [scheduler.begin(), scheduler.begin()];
  ok(await pending(turns[0]));
  scheduler[Symbol.dispose]();
  // Resolved without the timer, which the sanitizer would report had it been left.
  await Promise.all(turns);
});
