/**
 * What a session's scopes allow, as the set the pages get (`scopes` prop): admin implies
 * every scope, submit and cancel imply read (as coordinator/access/route-scopes.ts says).
 * Actions a set does not allow are not offered.
 */
import type { Scope } from './api/types';

const IMPLIED = new Map<Scope, readonly Scope[]>([
  ['read', []],
  ['submit', ['read']],
  ['cancel', ['read']],
  ['admin', ['read', 'submit', 'cancel']],
]);

/** The scopes held, with every implied one added. */
export function scopeSet(held: readonly Scope[]): ReadonlySet<Scope> {
  const out = new Set<Scope>();
  for (const s of held) {
    out.add(s);
    for (const i of IMPLIED.get(s) ?? []) out.add(i);
  }
  return out;
}
