/**
 * The last bytes written to an attempt log kept in memory (about `max` bytes, whole writes), so
 * a live follower on the leader reads what just came without reading the store.
 */
export class LiveTail {
  private readonly parts: Buffer[] = [];
  /** Attempt-log offset of the first byte kept. */
  private first = 0;
  private bytes = 0;

  constructor(private readonly max: number) {}

  /** Keeps `data`, written at attempt-log offset `at` (right after the previous write). */
  add(at: number, data: Uint8Array): void {
    if (this.bytes === 0) this.first = at;
    this.parts.push(Buffer.from(data)); // a copy: a view would keep the whole received message alive
    this.bytes += data.byteLength;
    while (this.parts.length > 1 && this.bytes - this.parts[0]!.length >= this.max) {
      const dropped = this.parts.shift()!;
      this.first += dropped.length;
      this.bytes -= dropped.length;
    }
  }

  /** Whether [from, to) is all in memory. */
  covers(from: number, to: number): boolean {
    return this.bytes > 0 && from >= this.first && to <= this.first + this.bytes;
  }

  /** Bytes [from, to), which `covers`. */
  read(from: number, to: number): Buffer {
    const out = Buffer.allocUnsafe(to - from);
    let at = this.first;
    let n = 0;
    for (const part of this.parts) {
      const end = at + part.length;
      if (end > from && at < to) n += part.copy(out, n, Math.max(from, at) - at, Math.min(to, end) - at);
      at = end;
      if (at >= to) break;
    }
    return out;
  }
}
