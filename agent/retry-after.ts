/**
 * The agent's HTTP calls to the coordinator (CAS downloads and lookups, enrolment, credential
 * rotation) honour a 429 the same way: wait Retry-After, bounded, and send again.
 */

/**
 * fetch that honours a 429 from the coordinator (or a proxy in front of it): waits
 * Retry-After (at most 30 s) and sends again, up to 3 times, when the body can be sent
 * twice (not the streamed upload). kiln's own limits do not apply to agents.
 */
export function honouring429(f: typeof fetch, wait = (ms: number) => new Promise<void>((r) => setTimeout(r, ms))): typeof fetch {
  return async (input, init) => {
    const replayable = init?.body === undefined || init.body === null || typeof init.body === 'string';
    for (let attempt = 0; ; attempt++) {
      const res = await f(input, init);
      if (res.status !== 429 || !replayable || attempt >= 3) return res;
      await res.body?.cancel().catch(() => {});
      const after = Number(res.headers.get('retry-after'));
      await wait(Math.min(30_000, Number.isFinite(after) && after > 0 ? after * 1000 : 1000));
    }
  };
}
