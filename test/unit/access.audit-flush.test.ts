/**
 * The audit log's flush after its batching timer fired with nothing left to write (a drain
 * in progress had taken the lines): flush() must return. It used to spin on a settled
 * promise forever, blocking the coordinator's event loop (found by the OpenAPI conformance
 * test once GET /api/v1/events added refused calls to the log).
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { AuditLog } from '../../coordinator/access/audit-log.js';

describe('audit log flush', () => {
  it('returns after the write timer fired with nothing pending', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'kiln-audit-flush-'));
    try {
      const log = await AuditLog.open(dir);
      log.record({ actor: 'a', action: 'first', outcome: 'refused' });
      const flushing = log.flush(); // a drain starts with the first line
      log.record({ actor: 'a', action: 'second', outcome: 'refused' }); // arms the timer; the running drain takes it
      await flushing;
      await new Promise((r) => setTimeout(r, 120)); // the timer fires: nothing is pending
      log.record({ actor: 'a', action: 'third', outcome: 'ok' });
      await log.flush();
      expect((await log.query({ limit: 10 })).map((e) => e.action)).toEqual(['third', 'second', 'first']);
      await log.close();
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
