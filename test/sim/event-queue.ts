/**
 * The simulation's agenda: events ordered by simulated time, ties broken by the order
 * they were scheduled (a binary heap on (at, seq)), so two runs of one seed pop events in
 * exactly the same order.
 */
export interface SimEvent {
  at: number;
  seq: number;
  label: string;
  run: () => void | Promise<void>;
}

export class EventQueue {
  private readonly heap: SimEvent[] = [];
  private seq = 0;

  get size(): number {
    return this.heap.length;
  }

  push(at: number, label: string, run: () => void | Promise<void>): void {
    if (!Number.isFinite(at)) throw new Error(`EventQueue.push: time of '${label}' is ${at}`);
    const ev: SimEvent = { at, seq: ++this.seq, label, run };
    const h = this.heap;
    h.push(ev);
    let i = h.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (!before(h[i]!, h[p]!)) break;
      [h[i], h[p]] = [h[p]!, h[i]!];
      i = p;
    }
  }

  peekTime(): number | null {
    return this.heap.length > 0 ? this.heap[0]!.at : null;
  }

  pop(): SimEvent | undefined {
    const h = this.heap;
    if (h.length === 0) return undefined;
    const top = h[0]!;
    const last = h.pop()!;
    if (h.length > 0) {
      h[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < h.length && before(h[l]!, h[m]!)) m = l;
        if (r < h.length && before(h[r]!, h[m]!)) m = r;
        if (m === i) break;
        [h[i], h[m]] = [h[m]!, h[i]!];
        i = m;
      }
    }
    return top;
  }
}

function before(a: SimEvent, b: SimEvent): boolean {
  return a.at < b.at || (a.at === b.at && a.seq < b.seq);
}
