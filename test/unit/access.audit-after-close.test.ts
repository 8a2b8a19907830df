/**
 * The audit log after close() (the coordinator shutting down while a request is still
 * answered): a line recorded then is not written, and flush() and close() still return.
 * They used to spin for ever: a drain started with the file closed ended before it was
 * stored as the one in progress, which then stayed set (a busy loop in flush(), and a
 * coordinator that never exited after SIGTERM).
 */
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../coordinator/access/audit-log.js';

describe('audit log after close', () => {
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
