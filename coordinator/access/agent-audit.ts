/**
 * The audit sink agent enrolment records to: enrolments, refused enrolments, revocations,
 * rotations and refused agent connections (the audit log's interface, audit-log.ts). Never
 * given a secret: actors are agent names or token ids.
 */
import type { AuditSink } from './audit-log.js';

export type { AuditSink } from './audit-log.js';
export type AuditEvent = Parameters<AuditSink['record']>[0];

/** Records nothing (no audit log configured). */
export const NO_AUDIT: AuditSink = { record: () => {} };
