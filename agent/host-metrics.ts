/**
 * What the agent tells the coordinator about its host with every heartbeat: load
 * (1-minute load average, CPUs, memory, free space of the work dir) and GPU use.
 *
 * Nothing here blocks a heartbeat. Load comes from counters the kernel keeps (os module)
 * and the free space the health monitor measured last; GPU use comes from the last
 * `nvidia-smi` sample, and asking for one (`poke`) starts at most one new sample per
 * interval in the background.
 */
import { statfs } from 'node:fs/promises';
import * as os from 'node:os';
import type { GpuUsePayload, LoadPayload } from '../shared/core.js';

export interface OsCounters {
  loadavg: () => number[];
  cpus: () => number;
  totalmem: () => number;
  freemem: () => number;
}

const SYSTEM: OsCounters = {
  loadavg: () => os.loadavg(),
  cpus: () => os.availableParallelism(),
  totalmem: () => os.totalmem(),
  freemem: () => os.freemem(),
};

const MIB = 1024 * 1024;

/** The host's load now; `diskFreeBytes` is the work dir's free space (null when unknown). */
export function sampleLoad(diskFreeBytes: number | null, counters: OsCounters = SYSTEM): LoadPayload {
  const total = Math.max(0, counters.totalmem());
  const free = Math.min(total, Math.max(0, counters.freemem()));
  const load1 = counters.loadavg()[0] ?? 0;
  return {
    load1: Number.isFinite(load1) && load1 > 0 ? Math.round(load1 * 100) / 100 : 0,
    cpus: Math.max(1, Math.floor(counters.cpus())),
    mem_used_mib: Math.round((total - free) / MIB),
    mem_total_mib: Math.round(total / MIB),
    disk_free_mib: diskFreeBytes === null ? null : Math.floor(Math.max(0, diskFreeBytes) / MIB),
  };
}

export interface DiskSpace {
  /** Bytes an unprivileged process may still write. */
  free: number;
  /** Size of the file system. */
  total: number;
}

/** Free and total bytes of the file system holding `path`. */
export async function diskSpace(path: string): Promise<DiskSpace> {
  const s = await statfs(path);
  return { free: s.bavail * s.bsize, total: s.blocks * s.bsize };
}

/**
 * The last GPU-use sample, refreshed in the background at most once per `minIntervalMs`.
 * A failed query keeps the previous sample.
 */
export class GpuSampler {
  private last: GpuUsePayload[] = [];
  private lastStart = -Infinity;
  private inflight: Promise<void> | null = null;

  constructor(
    private readonly query: () => Promise<GpuUsePayload[] | null>,
    private readonly minIntervalMs: number,
    private readonly now: () => number = Date.now,
  ) {}

  /** The latest sample (empty before the first one finished). */
  latest(): GpuUsePayload[] {
    return this.last;
  }

  /** Starts a new sample unless one is running or the last began less than the interval ago. */
  poke(): void {
    if (this.inflight || this.now() - this.lastStart < this.minIntervalMs) return;
    this.lastStart = this.now();
    this.inflight = this.query()
      .then((s) => {
        if (s) this.last = s;
      })
      .catch(() => {})
      .finally(() => {
        this.inflight = null;
      });
  }

  /** Resolves when the sample in flight (if any) is done. */
  async settled(): Promise<void> {
    await this.inflight;
  }
}
