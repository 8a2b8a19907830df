/**
 * What the systemd units rely on outside the unit files: process log lines for the journal
 * (`<N>level msg key=value`, no time or name, one line per record, priorities journald
 * understands; the terminal text format and JSON unchanged), the journal stream recognised
 * only when stderr is it, and the coordinator's data dir under $STATE_DIRECTORY.
 */
import { openSync, closeSync, fstatSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { createLogger, formatTextLine, isJournalStream } from '../../shared/logger.js';

function capture(): { stream: Writable; text: () => string } {
  let out = '';
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      out += chunk.toString();
      cb();
    },
  });
  return { stream, text: () => out };
}

describe('journal log lines', () => {
  it('are `<priority>level msg key=value`, with quoted values where a bare one would be ambiguous', () => {
    const c = capture();
    const log = createLogger({ name: 'kiln-agent', level: 'debug', format: 'text', stream: c.stream, journal: true });
    log.info({ coordinator: '0.1.0', heartbeat_ms: 10000 }, 'connected to coordinator');
    log.warn({ reason: 'disk low: 3 MiB', ok: false }, 'pausing');
    log.error({ detail: 'a\nb' }, 'failed\ntwice');
    log.debug('quiet');
    log.fatal('gone');
    expect(c.text().split('\n')).toEqual([
      '<6>info connected to coordinator coordinator=0.1.0 heartbeat_ms=10000',
      '<4>warn pausing reason="disk low: 3 MiB" ok=false',
      '<3>error failed twice detail="a\\nb"',
      '<7>debug quiet',
      '<2>fatal gone',
      '',
    ]);
  });

  it('leave the terminal text format and JSON as they were', () => {
    const t = formatTextLine({ level: 40, time: Date.UTC(2026, 0, 1, 12, 3, 4, 5), name: 'kiln-agent', msg: 'pausing', reason: 'disk low' }, false);
    expect(t).toBe('12:03:04.005 WARN  kiln-agent: pausing reason=disk low\n');
    const c = capture();
    createLogger({ name: 'kiln-agent', level: 'info', format: 'json', stream: c.stream, journal: true }).info({ a: 1 }, 'hello');
    expect(JSON.parse(c.text())).toMatchObject({ level: 30, name: 'kiln-agent', msg: 'hello', a: 1 });
  });

  it('are chosen only when stderr is the stream $JOURNAL_STREAM names', () => {
    const dir = mkdtempSync(join(tmpdir(), 'kiln-journal-'));
    try {
      const fd = openSync(join(dir, 'f'), 'w');
      const other = openSync(join(dir, 'g'), 'w');
      const st = fstatSync(fd);
      expect(isJournalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd)).toBe(true);
      expect(isJournalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, other)).toBe(false); // inherited variable, redirected stream
      expect(isJournalStream({}, fd)).toBe(false);
      expect(isJournalStream({ JOURNAL_STREAM: 'junk' }, fd)).toBe(false);
      closeSync(fd);
      closeSync(other);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('coordinator data dir under systemd', () => {
  const load = (env: Record<string, string>) => loadCoordinatorConfig({}, { env: { HOME: '/home/u', ...env }, arch: 'x64', isTTY: false });
  it('is $STATE_DIRECTORY/data (the first of several); KILN_DATA_DIR still wins; off systemd unchanged', () => {
    expect(load({ STATE_DIRECTORY: '/var/lib/kiln-coordinator' }).dataDir).toBe('/var/lib/kiln-coordinator/data');
    expect(load({ STATE_DIRECTORY: '/var/lib/a:/var/lib/b' }).dataDir).toBe('/var/lib/a/data');
    expect(load({ STATE_DIRECTORY: '/var/lib/kiln-coordinator', KILN_DATA_DIR: '/srv/kiln' }).dataDir).toBe('/srv/kiln');
    expect(load({}).dataDir).toBe('/home/u/.local/state/kiln/coordinator');
  });
});
