/**
 * Gathers what one turn of the event loop writes to a socket into one system call. The
 * WebSocket ends of both processes call `corkForTurn` before every frame they send: the
 * socket is corked at the first frame of a turn and uncorked once the turn's callback and
 * its next ticks are done, so the log frames of every busy step on the agent's shared tick,
 * or the acks the coordinator sends for them, leave in one write.
 *
 * Why it matters: each write to a loopback or LAN socket wakes the reader. On a busy host
 * the woken reader often takes the writer's core, reads one frame, handles it and sleeps,
 * and the writer gets its core back only to wake it again for the next frame: a frame per
 * context switch. Measured with the live-logs benchmark (10 steps x 1,000 lines/s) and the
 * dispatch benchmark (issue 10): README.
 *
 * What a caller must know: the frames leave when the turn's next ticks run, which is after
 * the promise jobs queued before them, so a loop that sends and awaits in promise jobs only
 * holds its frames (in the socket's buffer, not the kernel's) until it ends; and a socket
 * destroyed in the same turn (`ws.terminate()`, `process.exit()`) drops the frames the turn
 * gathered, while `ws.close()` sends them first (ending a stream uncorks it).
 */
import type { Writable } from 'node:stream';

const corked = new WeakSet<Writable>();

function uncork(socket: Writable): void {
  corked.delete(socket);
  socket.uncork();
}

/** Corks `socket` until this turn's work is done (a no-op while this turn already corked it). */
export function corkForTurn(socket: Writable): void {
  if (corked.has(socket)) return;
  corked.add(socket);
  socket.cork();
  process.nextTick(uncork, socket);
}
