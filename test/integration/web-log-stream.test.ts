/**
 * The dashboard's log stream and model (web/src/logs/) against a real coordinator and a
 * real BuildKit build, over real sockets through a TCP proxy: the connection is cut while
 * the build writes, the stream resumes from its last offset (Last-Event-ID), and the model
 * ends up with exactly the stored log's lines (no gap, no duplicate) with their colours;
 * after `end` the source is closed and does not reconnect. Also: the raw log route with
 * `download=1` answers as an attachment.
 */
import { describe, expect, it } from 'vitest';
import { apiPath } from '../../shared/index.js';
import { LogModel } from '../../web/src/logs/log-model.js';
import { followNodeLog, logDownloadUrl, type LogStreamState } from '../../web/src/logs/log-stream.js';
import { inline, nodeLog, submitSpec, useCluster, waitFor } from '../helpers/cluster.js';
import { NodeEventSource } from '../helpers/node-event-source.js';
import { startTcpProxy } from '../helpers/tcp-proxy.js';

function lines(m: LogModel): string[] {
  return Array.from({ length: m.lineCount }, (_, i) => m.text(i));
}

describe('dashboard log stream', () => {
  const c = useCluster('weblog', { agents: [{ name: 'weblog-docker' }] });

  it('resumes after a cut connection with every line once, in colour, and stops at end', async () => {
    const marker = `w${Date.now()}`;
    const id = await submitSpec(c.coord, {
      nodes: {
        colours: inline(
          `FROM kiln/busybox:1\nRUN for i in $(seq 1 400); do printf '\\033[3%dm${marker} line %d\\033[0m of the log\\n' $((i % 7 + 1)) $i; if [ $((i % 100)) -eq 0 ]; then sleep 1; fi; done; echo finished`,
          { no_cache: true },
        ),
      },
    });
    const proxy = await startTcpProxy({ port: c.coord.port });
    const sources: NodeEventSource[] = [];
    const model = new LogModel();
    const states: LogStreamState[] = [];
    const problems: string[] = [];
    let ended: string | null = null;
    const stream = followNodeLog({
      buildId: id,
      node: 'colours',
      onText: (t) => model.append(t),
      onState: (s) => states.push(s),
      onProblem: (p) => problems.push(p),
      onEnd: (e) => {
        ended = e.state;
        model.finish();
      },
      open: (url) => {
        const es = new NodeEventSource(`${proxy.url}${url}`, { headers: { authorization: `Bearer ${c.coord.apiToken}` }, retryMs: 100 });
        sources.push(es);
        return es;
      },
    });
    try {
      // cut the connection while the build is still writing (it sleeps after every 100 lines)
      await waitFor('the first 100 lines', () => lines(model).some((l) => l.includes(`${marker} line 100 `)));
      expect(lines(model).some((l) => l.includes(`${marker} line 400 `))).toBe(false);
      proxy.cut();
      await waitFor('the end of the stream', () => ended !== null, 120_000);
      expect(ended).toBe('success');
      expect(problems).toEqual([]);

      const stored = await nodeLog(c.coord, id, 'colours');
      const whole = new LogModel();
      whole.append(stored);
      whole.finish();
      expect(lines(model)).toEqual(lines(whole));
      const mine = lines(model).filter((l) => l.includes(`${marker} line `) && !l.includes('printf'));
      expect(mine).toHaveLength(400);
      expect(mine.map((l) => Number(/line (\d+) of/.exec(l)?.[1]))).toEqual(Array.from({ length: 400 }, (_, i) => i + 1));
      // the build's colours arrive as styled spans (line 1 is green: \033[32m for i=1)
      const first = lines(model).findIndex((l) => l.includes(`${marker} line 1 of`));
      expect(model.segments(first).map((s) => s.style.className)).toContain('ansi-green-fg');

      // one reconnect, resumed from the last offset received; closed at end, not reopened
      expect(states).toContain('reconnecting');
      expect(states[states.length - 1]).toBe('ended');
      expect(sources).toHaveLength(1);
      const es = sources[0]!;
      expect(es.connections).toBe(2);
      expect(es.sentIds[0]).toBeNull();
      expect(Number(es.sentIds[1])).toBeGreaterThan(0);
      expect(es.readyState).toBe(2);
      expect(stream.state).toBe('ended');
    } finally {
      stream.close();
      await proxy.close();
    }

    // the raw log as a download
    const auth = { authorization: `Bearer ${c.coord.apiToken}` };
    const dl = await fetch(`${c.coord.url}${logDownloadUrl(id, 'colours')}`, { headers: auth });
    expect(dl.status).toBe(200);
    expect(dl.headers.get('content-disposition')).toBe(`attachment; filename="${id}-colours.log"`);
    expect(await dl.text()).toBe(await nodeLog(c.coord, id, 'colours'));
    const plain = await fetch(`${c.coord.url}${apiPath.nodeLogs(id, 'colours')}`, { headers: auth });
    expect(plain.headers.get('content-disposition')).toBeNull();
    await plain.body?.cancel();
    const bad = await fetch(`${c.coord.url}${apiPath.nodeLogs(id, 'colours')}?download=yes`, { headers: auth });
    expect(bad.status).toBe(400);
    await bad.body?.cancel();
  });
});
