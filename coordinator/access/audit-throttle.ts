/**
 * Refusals recorded in the audit log at a bounded rate: without a key anyone can make the
 * coordinator refuse calls (401, 429) or WebSocket upgrades as fast as they can send them,
 * and one line each would rotate the log's history (two files of 64 MiB) away within
 * minutes. Per source address and action, the first refusal in a window is recorded and
 * the rest are counted; the next one recorded says how many were left out. Everything that
 * is not a refusal (every mutation) is recorded as it comes.
 */
import type { AuditSink } from './audit-log.js';

type AuditEvent = Parameters<AuditSink['record']>[0];

/** The most keys (address + action) tracked at once: beyond that the oldest window is dropped. */
const MAX_KEYS = 10_000;

export class RefusalThrottle implements AuditSink {
  private readonly windows = new Map<string, { since: number; skipped: number }>();

  constructor(
    private readonly sink: AuditSink,
    private readonly windowMs = 10_000,
    private readonly now: () => number = Date.now,
  ) {}

  record(e: AuditEvent): void {
    if (e.outcome !== 'refused') return this.sink.record(e);
    const key = `${e.remote ?? '-'}\u0000${e.action}`;
    const t = this.now();
    const w = this.windows.get(key);
    if (w && t - w.since < this.windowMs) {
      w.skipped++;
      return;
    }
    if (w) this.windows.delete(key);
    else if (this.windows.size >= MAX_KEYS) this.windows.delete(this.windows.keys().next().value!);
    this.windows.set(key, { since: t, skipped: 0 });
    const skipped = w?.skipped ?? 0;
    this.sink.record(skipped > 0 ? { ...e, detail: `${e.detail ?? ''}${e.detail ? ' ' : ''}(and ${skipped} more like it from this address in the ${this.windowMs / 1000} s before, not recorded one by one)` } : e);
  }
}
