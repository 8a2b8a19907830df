/**
 * One-line descriptions of protocol frames for the simulation trace, with the engine's
 * random attempt ids replaced by readable aliases (`B1/compile#2`).
 */
import type { World } from './world.js';

export function describeFrame(w: World, type: string, p: Record<string, unknown>): string {
  const at = (id: unknown) => w.attempt(typeof id === 'string' ? id : undefined);
  switch (type) {
    case 'hello': {
      const running = (p.running as Array<{ attempt_id: string; log_bytes: number }>).map((r) => `${at(r.attempt_id)}@${r.log_bytes}`);
      return `hello session=${String(p.session)} running=[${running.join(' ')}]`;
    }
    case 'welcome': {
      const resume = (p.resume as Array<{ attempt_id: string; action: string; log_offset: number }>).map((r) => `${at(r.attempt_id)}:${r.action}@${r.log_offset}`);
      return `welcome resume=[${resume.join(' ')}]`;
    }
    case 'heartbeat':
      return `heartbeat running=${(p.running as unknown[]).length}`;
    case 'assign':
      return `assign ${at(p.attempt_id)} resolve=${String(p.resolve)}`;
    case 'log':
      return `log ${at(p.attempt_id)} seq=${String(p.seq)} off=${String(p.offset)} len=${(p.data as Uint8Array).length}`;
    case 'ack':
      return p.attempt_id === undefined ? `ack ref=${String(p.ref)}` : `ack ${at(p.attempt_id)}${p.log_offset !== undefined ? ` log_offset=${String(p.log_offset)}` : ' finished'}`;
    case 'finished':
      return `finished ${at(p.attempt_id)} ${String(p.status)}${p.infra ? ' infra' : ''} log_bytes=${String(p.log_bytes)}`;
    case 'cancel':
    case 'reject':
      return `${type} ${at(p.attempt_id)} '${String(p.reason)}'`;
    case 'error':
      return `error ${String(p.code)} '${String(p.message)}'`;
    default:
      return `${type} ${'attempt_id' in p ? at(p.attempt_id) : ''}`.trim();
  }
}
