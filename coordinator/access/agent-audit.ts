/**
 * The audit sink agent enrolment records to: enrolments, refused enrolments, revocations,
 * rotations and refused agent connections. The interface is the one the audit log
 * (coordinator/access/audit-log.ts) implements; it is copied here so agent credentials do
 * not depend on the log's module. Never given a secret: actors are agent names or
 * token ids.
 */

export interface AuditEvent {
  actor: string;
  action: string;
  target?: string;
  outcome: 'ok' | 'refused';
  detail?: string;
  remote?: string;
}

export interface AuditSink {
  record(e: AuditEvent): void;
}

/** Records nothing (no audit log configured). */
export const NO_AUDIT: AuditSink = { record: () => {} };
