/**
 * The audit log's drains never leave flush() spinning. A drain started with nothing to do
 * (its batch timer firing after a running drain took the lines) or with the file closed
 * (a request answered while the coordinator shuts down) used to end before it was stored
 * as the one in progress, which then stayed set: flush() looped for ever on it (a busy
 * coordinator that never exited after SIGTERM). A line recorded after close() is dropped.
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../coordinator/access/audit-log.js';

describe('audit log drains', () => {
  it('flushes after a batch timer fired with nothing left to write', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-audit-timer-'));
    try {
      const log = await AuditLog.open(dir);
      log.record({ actor: 'key:a', action: 'a.one', outcome: 'ok' });
      const first = log.flush(); // a drain starts and awaits its write
      log.record({ actor: 'key:a', action: 'a.two', outcome: 'ok' }); // sets the batch timer; the running drain takes the line
      await first;
      await new Promise((r) => setTimeout(r, 120)); // the timer (50 ms) fires: nothing is pending
      await log.flush();
      await log.close();
      const text = await readFile(join(dir, 'audit.log'), 'utf8');
      expect(text.trim().split('\n').map((l) => (JSON.parse(l) as { action: string }).action)).toEqual(['a.one', 'a.two']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });


  it('drops what is recorded after close() and still flushes and closes', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-audit-close-'));
    try {
      const log = await AuditLog.open(dir);
      log.record({ actor: 'key:a', action: 'build.submit', outcome: 'ok' });
      await log.close();
      log.record({ actor: 'key:a', action: 'build.cancel', outcome: 'ok' });
      await log.flush(); // starts a drain with the file closed
      await log.flush();
      await log.close();
      const text = await readFile(join(dir, 'audit.log'), 'utf8');
      expect(text.trim().split('\n').map((l) => (JSON.parse(l) as { action: string }).action)).toEqual(['build.submit']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
