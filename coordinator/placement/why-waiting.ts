/**
 * Why a ready node has not been placed, in words for the node view: either no connected
 * agent could ever run it (`whyNoMatch`: the missing platform, emulation, labels or GPUs,
 * named), or what keeps the matching agents from taking it now (`waitingReason`: paused,
 * draining, unhealthy, breaker open, no free GPU), or its budget (`waiting: build
 * concurrency 4 reached`, `waiting: concurrency group gpu-heavy full (2/2)`: budgets.ts).
 */
import { normalizePlatform, type AgentState, type GpuRequirement } from '../../shared/index.js';
import type { AgentEntry } from './agent-entry.js';
import type { HeapMember } from './agent-heap.js';
import { gpuCount, labelsMatch, type CapClass } from './capability-classes.js';
import { describeGpus } from './gpu-allocation.js';
import { requirementOf, type Requirement } from './requirement.js';
import type { NodeRecord } from '../state/records.js';

type Member = HeapMember & { readonly state: AgentState };

function plural(n: number, word: string): string {
  return `${n} ${word}${n === 1 ? '' : 's'}`;
}

function names(list: string[], max = 3): string {
  const shown = list.slice(0, max).join(', ');
  return list.length > max ? `${shown} and ${list.length - max} more` : shown;
}

function connectedNames(classes: Iterable<CapClass<Member>>): string[] {
  const out: string[] = [];
  for (const c of classes) for (const a of c.members) if (a.state === 'connected') out.push(a.name);
  return out.sort();
}

/**
 * Why no connected agent (of these classes) could ever run a node with `req`, ignoring
 * load, control, health and breakers, naming what is missing; null when some can.
 */
export function whyNoMatch(classes: Iterable<CapClass<Member>>, req: Requirement): string | null {
  const platform = normalizePlatform(req.platform);
  const live = [...classes].filter((c) => c.connected > 0);
  const withPlatform = live.filter((c) => c.native.has(platform) || c.emulated.has(platform));
  if (withPlatform.length === 0) return `no connected agent has platform ${platform}`;
  const usable = req.allowEmulation ? withPlatform : withPlatform.filter((c) => c.native.has(platform));
  if (usable.length === 0) {
    const emulating = connectedNames(withPlatform);
    return `no connected agent has platform ${platform} natively (${emulating.length === 1 ? 'agent' : 'agents'} ${names(emulating)} ${emulating.length === 1 ? 'emulates' : 'emulate'} it; set allow_emulation: true)`;
  }
  const labelled = usable.filter((c) => labelsMatch(c, req));
  if (labelled.length === 0) {
    const rules: Array<{ text: string; ok: (c: CapClass<Member>) => boolean; not: boolean }> = [];
    for (const [k, v] of Object.entries(req.labels)) rules.push({ text: `${k}=${v}`, ok: (c) => c.labels.get(k) === v, not: false });
    for (const [k, vs] of Object.entries(req.labelsNot)) {
      for (const v of vs) rules.push({ text: `${k}!=${v}`, ok: (c) => c.labels.get(k) !== v, not: true });
    }
    const impossible = rules.filter((r) => !usable.some(r.ok));
    const where = `with platform ${platform}`;
    const has = impossible.filter((r) => !r.not).map((r) => r.text);
    const hasNot = impossible.filter((r) => r.not).map((r) => r.text.replace('!=', '='));
    const parts: string[] = [];
    if (has.length > 0) parts.push(`no connected agent ${where} has ${has.length === 1 ? 'label' : 'labels'} ${has.join(', ')}`);
    if (hasNot.length > 0) parts.push(`every connected agent ${where} has ${hasNot.join(', ')} (the node requires ${impossible.filter((r) => r.not).map((r) => r.text).join(', ')})`);
    if (parts.length > 0) return parts.join('; ');
    return `no connected agent ${where} has labels ${rules.map((r) => r.text).join(', ')} together`;
  }
  if (req.gpus) {
    const g = req.gpus;
    if (!labelled.some((c) => gpuCount(c, g) >= g.count)) {
      let most = 0;
      let on: CapClass<Member> | null = null;
      for (const c of labelled) {
        const n = gpuCount(c, g);
        if (n > most) {
          most = n;
          on = c;
        }
      }
      const best = on ? ` (the most on one agent is ${most}, on ${connectedNames([on])[0]})` : '';
      return `no connected agent has ${describeGpus(g)}${best}`;
    }
  }
  return null;
}

/** What `waitingReason` asks of the agent registry. */
export interface FleetQuery {
  whyNoMatch(req: Requirement): string | null;
  connected(): AgentEntry[];
  matches(a: AgentEntry, req: Requirement): boolean;
  freeSlots(a: AgentEntry, now: number): number;
  allocateGpus(a: AgentEntry, req: GpuRequirement | null): number[] | null;
}

/**
 * Why a ready node has not been dispatched yet: `no matching agent: ...` when no
 * connected agent could ever run it (wrong platform, labels, GPUs), else what keeps the
 * matching agents busy, e.g. `waiting for a free slot on 3 matching agents (2 paused, 1 breaker open)`.
 */
export function waitingReason(node: NodeRecord, agents: FleetQuery, now: number, budget: string | null = null): string | null {
  if (node.state !== 'ready') return null;
  const req = requirementOf(node);
  const why = agents.whyNoMatch(req);
  if (why !== null) return `no matching agent: ${why}`;
  // A full budget (Budgets.blockedBy) holds the node whatever the agents' state.
  if (budget !== null) return budget;
  const matching = agents.connected().filter((a) => agents.matches(a, req));
  const held: string[] = [];
  const count = (what: string, pred: (a: AgentEntry) => boolean) => {
    const n = matching.filter(pred).length;
    if (n > 0) held.push(`${n} ${what}`);
  };
  count('paused', (a) => a.control === 'paused');
  count('draining', (a) => a.control === 'draining');
  count('unhealthy', (a) => !a.health.accepting);
  count('breaker open', (a) => a.breaker.view(now).state === 'open');
  count('breaker half-open', (a) => a.breaker.view(now).state === 'half_open');
  const free = matching.filter((a) => agents.freeSlots(a, now) > 0);
  if (req.gpus && free.length > 0 && free.every((a) => agents.allocateGpus(a, req.gpus) === null)) {
    return `waiting for ${plural(req.gpus.count, 'free GPU')} on ${plural(matching.length, 'matching agent')}${held.length ? ` (${held.join(', ')})` : ''}`;
  }
  return `waiting for a free slot on ${plural(matching.length, 'matching agent')}${held.length ? ` (${held.join(', ')})` : ''}`;
}
