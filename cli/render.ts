/**
 * Terminal output of the CLI: node-prefixed log lines (`compile | ...`, one stable colour
 * per node, colour only on a TTY and never with NO_COLOR), status lines, and the end
 * summary of a build.
 */
import { formatDuration, type BuildViewT } from '../shared/index.js';

const COLOURS = [36, 33, 35, 32, 34, 91, 96, 93, 95, 92];

export interface Output {
  write(text: string): void;
  isTTY: boolean;
}

export function useColour(out: Output, env: Record<string, string | undefined>): boolean {
  if (env.NO_COLOR) return false;
  if (env.FORCE_COLOR && env.FORCE_COLOR !== '0') return true;
  return out.isTTY;
}

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 16777619);
  return h >>> 0;
}

/**
 * Prints node-prefixed log lines as they come. A partial line (a prompt, progress dots: the
 * agent and the coordinator send one once its stream has been quiet for a moment) is shown
 * at once, and its rest continues it on the same line; if another node prints meanwhile,
 * the open line is ended first and the rest goes on a new prefixed line. No text is lost
 * or repeated.
 */
export class LinePrinter {
  /** The node whose partial line is on screen, the cursor right after it. */
  private open: string | null = null;
  width = 0;

  constructor(
    private readonly out: Output,
    private readonly colour: boolean,
    names: string[] = [],
  ) {
    for (const n of names) this.width = Math.max(this.width, n.length);
  }

  prefix(node: string): string {
    this.width = Math.max(this.width, node.length);
    const p = `${node.padEnd(this.width)} |`;
    return this.colour ? `\x1b[${COLOURS[hash(node) % COLOURS.length]}m${p}\x1b[0m` : p;
  }

  /** Prints `text` of `node`'s log: complete lines, and a trailing partial line left open. */
  log(node: string, text: string): void {
    if (text === '') return;
    if (this.open !== null && this.open !== node) this.endOpenLine();
    let out = '';
    let rest = text;
    if (this.open === node) {
      const nl = rest.indexOf('\n');
      if (nl < 0) {
        this.out.write(rest);
        return;
      }
      out += `${rest.slice(0, nl).replace(/\r$/, '')}\n`;
      rest = rest.slice(nl + 1);
      this.open = null;
    }
    const lines = rest.split('\n');
    const tail = lines.pop() ?? '';
    if (lines.length > 0 || tail !== '') {
      const p = this.prefix(node);
      for (const l of lines) out += `${p} ${l.replace(/\r$/, '')}\n`;
      if (tail !== '') {
        out += `${p} ${tail}`;
        this.open = node;
      }
    }
    this.out.write(out);
  }

  note(node: string, text: string): void {
    this.flush();
    const t = this.colour ? `\x1b[2m${text}\x1b[0m` : text;
    this.out.write(`${this.prefix(node)} ${t}\n`);
  }

  /** Ends a partial line left open (of `node`, or of any node). */
  flush(node?: string): void {
    if (this.open !== null && (node === undefined || node === this.open)) this.endOpenLine();
  }

  private endOpenLine(): void {
    this.out.write('\n');
    this.open = null;
  }
}

function stateText(state: string, colour: boolean): string {
  if (!colour) return state;
  const c = state === 'success' ? 32 : state === 'failed' || state === 'partial' ? 31 : state === 'cancelled' || state === 'skipped' ? 33 : 0;
  return c ? `\x1b[${c}m${state}\x1b[0m` : state;
}

/** The end-of-build summary: one line per node, then the result and where data lives. */
export function buildSummary(b: BuildViewT, colour: boolean): string {
  const lines: string[] = [];
  const width = Math.max(4, ...b.nodes.map((n) => n.name.length));
  for (const n of b.nodes) {
    const dur = n.duration_ms !== null ? formatDuration(n.duration_ms) : '-';
    const reused = n.reused_from ? `  reused from ${n.reused_from.build_id}/${n.reused_from.node}` : '';
    const outputs = n.state === 'success' && n.outputs.length > 0 ? `  outputs: ${n.outputs.map((o) => `${o.name}=${(o.digest ?? '?').slice(0, 19)}`).join(' ')}` : '';
    const pushed = n.state === 'success' && (n.images ?? []).length > 0 ? `  pushed: ${n.images.map((i) => `${i.ref}@${i.digest.slice(0, 19)}`).join(' ')}` : '';
    const axes = Object.entries(n.matrix ?? {});
    const matrix = axes.length > 0 ? `[${axes.map(([k, v]) => `${k}=${v}`).join(' ')}] ` : '';
    const cache = n.cache ? `  cache: ${n.cache.hit} hit, ${n.cache.miss} miss${n.cache.push === 'failed' ? ', push failed' : ''}` : '';
    const extra = matrix + (n.state === 'success' ? `${n.image_id ? n.image_id.slice(0, 19) : ''}${reused}${cache}${outputs}${pushed}` : (n.error ?? n.waiting ?? ''));
    lines.push(`  ${n.name.padEnd(width)}  ${stateText(n.state, colour).padEnd(colour ? 18 : 9)} ${dur.padStart(7)}  ${n.agent ?? '-'}  ${extra.split('\n')[0]!.slice(0, 240)}`);
  }
  const took = b.started_at && b.finished_at ? ` in ${formatDuration(Date.parse(b.finished_at) - Date.parse(b.started_at))}` : '';
  const why = b.reason ? `: ${b.reason}` : '';
  return `build ${b.id} (${b.name}): ${stateText(b.state, colour)}${took}${why}\n${budgetLine(b)}${lines.join('\n')}\n  logs: kiln logs ${b.id}\n`;
}

/** The build's budgets (issue 11) in one line, or nothing when it has none. */
function budgetLine(b: BuildViewT): string {
  const g = b.budget;
  if (!g) return '';
  const parts: string[] = [];
  if (g.concurrency !== null) parts.push(`concurrency ${g.running}/${g.concurrency}`);
  if (g.concurrency_group !== null) parts.push(`group ${g.concurrency_group}`);
  if (g.deadline_at !== null) parts.push(`deadline ${g.deadline_at}${g.deadline_exceeded ? ' (passed)' : ''}`);
  return parts.length > 0 ? `  budget: ${parts.join(', ')}\n` : '';
}
