/**
 * Benchmark child process: N clients of `GET /api/v1/events`, each a plain fetch reading
 * the SSE stream (as a browser's EventSource would), counting events and bytes. Driven by
 * the parent through IPC (child_process.fork), so the clients' own CPU is not the
 * coordinator's.
 *
 * Messages: parent -> {type:'start', url, token, count, query?} / {type:'report'} / {type:'stop'};
 *           child  -> {type:'ready'} / {type:'report', events, bytes, resets} .
 */
interface StartMsg {
  type: 'start';
  url: string;
  token: string;
  count: number;
  query?: string;
}

const ac = new AbortController();
let events = 0;
let bytes = 0;
let resets = 0;

async function client(m: StartMsg, opened: () => void): Promise<void> {
  const res = await fetch(`${m.url}/api/v1/events${m.query ?? ''}`, { headers: { authorization: `Bearer ${m.token}` }, signal: ac.signal });
  if (res.status !== 200) throw new Error(`events: ${res.status} ${await res.text()}`);
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let first = true;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) return;
    if (first) {
      first = false;
      opened();
    }
    bytes += value.length;
    for (let at = value.indexOf('\nid: '); at >= 0; at = value.indexOf('\nid: ', at + 5)) events++;
    if (value.includes('event: reset')) resets++;
  }
}

process.on('message', (m: { type: string } & Partial<StartMsg>) => {
  if (m.type === 'start') {
    const start = m as StartMsg;
    let waiting = start.count;
    const opened = () => {
      if (--waiting === 0) process.send!({ type: 'ready' });
    };
    if (waiting === 0) process.send!({ type: 'ready' });
    for (let i = 0; i < start.count; i++) {
      client(start, opened).catch((err: unknown) => {
        if (!ac.signal.aborted) {
          console.error(err);
          process.exit(1);
        }
      });
    }
  } else if (m.type === 'report') {
    process.send!({ type: 'report', events, bytes, resets });
  } else if (m.type === 'stop') {
    ac.abort();
    process.exit(0);
  }
});
