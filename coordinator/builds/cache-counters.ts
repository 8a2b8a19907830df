/**
 * Layer-cache figures per pool since the coordinator started: build steps BuildKit reported
 * cached (hits) and executed (misses), and cache pushes that failed, summed from the
 * attempts' `finished` reports. Read by `GET /metrics` as Prometheus counters. Pools are
 * platforms (a bounded set: agents declare them), so the map stays small.
 */
import type { FinishedCachePayload } from '../../shared/index.js';

export interface PoolCacheCounts {
  hits: number;
  misses: number;
  pushes: number;
  pushFailures: number;
}

export class CacheCounters {
  private readonly byPool = new Map<string, PoolCacheCounts>();

  record(pool: string, cache: FinishedCachePayload): void {
    let c = this.byPool.get(pool);
    if (!c) this.byPool.set(pool, (c = { hits: 0, misses: 0, pushes: 0, pushFailures: 0 }));
    c.hits += cache.hit;
    c.misses += cache.miss;
    if (cache.push === 'pushed') c.pushes += 1;
    if (cache.push === 'failed') c.pushFailures += 1;
  }

  /** Pool name -> counts (a copy). */
  snapshot(): Map<string, PoolCacheCounts> {
    return new Map([...this.byPool].map(([k, v]) => [k, { ...v }]));
  }
}
