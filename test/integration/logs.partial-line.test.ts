/**
 * A line printed without its newline inside a real BuildKit step (a prompt, progress dots)
 * reaches a log follower before its newline does: the agent shows it after a short wait, the
 * coordinator's follower sends it after its own, and the rest of the line follows on the
 * same line. The stored log has every line once, unsplit.
 */
import { describe, expect, it } from 'vitest';
import { parseSse } from '../../cli/follow.js';
import { inline, nodeLog, submitSpec, useCluster, waitForBuild } from '../helpers/cluster.js';

describe('partial log lines', () => {
  const c = useCluster('partial', { agents: [{ name: 'prompter' }] });

  it('a prompt shows up before its newline and the line is stored once, whole', async () => {
    const marker = `m${Date.now()}`;
    const id = await submitSpec(c.coord, {
      nodes: {
        ask: inline(`FROM kiln/busybox:1\nRUN printf 'Password-${marker}: '; sleep 6; echo ok; printf 'dots'; for i in 1 2 3; do sleep 0.3; printf .; done; echo ' done'`, { no_cache: true }),
      },
    });
    const res = await fetch(`${c.coord.url}/api/v1/builds/${id}/logs?follow=true`, { headers: { authorization: `Bearer ${c.coord.apiToken}` } });
    expect(res.status).toBe(200);
    const texts: string[] = [];
    for await (const m of parseSse(res.body!)) {
      if (m.event === 'log') texts.push((JSON.parse(m.data) as { text: string }).text);
      if (m.event === 'end') break;
    }
    // The prompt came in an event of its own, before the answer.
    const prompt = texts.findIndex((t) => t.includes(`Password-${marker}: `));
    const answer = texts.findIndex((t) => t.includes('ok\n'));
    expect(prompt, JSON.stringify(texts)).toBeGreaterThanOrEqual(0);
    expect(answer, JSON.stringify(texts)).toBeGreaterThan(prompt);
    expect(texts[prompt]).not.toContain('ok\n');

    expect((await waitForBuild(c.coord, id)).state).toBe('success');
    const stored = await nodeLog(c.coord, id, 'ask');
    expect(texts.join('')).toBe(stored);
    expect(stored).toMatch(new RegExp(`^#\\d+ \\d+\\.\\d+ Password-${marker}: ok$`, 'm'));
    expect(stored).toMatch(/^#\d+ \d+\.\d+ dots\.\.\. done$/m);
    // the RUN header names the command too; the output has the prompt once
    expect(stored.split('\n').filter((l) => /^#\d+ \d+\.\d+ /.test(l) && l.includes(`Password-${marker}`))).toHaveLength(1);
  });
});
