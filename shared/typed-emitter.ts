/**
 * A typed event emitter: an event map (event name -> the tuple of listener arguments)
 * instead of free string names, so emitters and listeners agree on every payload at
 * compile time. Backed by node:events (same ordering and synchronous delivery; no
 * listener limit warning, since followers come and go in numbers).
 *
 *   interface BuildEvents { node: [buildId: string, node: string]; build: [buildId: string] }
 *   class Engine extends TypedEmitter<BuildEvents> { ... this.emit('node', id, name) }
 *   engine.on('node', (buildId, node) => ...)   // both typed as string
 */
import { EventEmitter } from 'node:events';

/** Event name -> listener arguments. */
export type EventMap<E> = { [K in keyof E]: unknown[] };

export type Listener<A extends unknown[]> = (...args: A) => void;

export class TypedEmitter<E extends EventMap<E>> {
  private readonly inner = new EventEmitter();

  constructor() {
    this.inner.setMaxListeners(0);
  }

  on<K extends keyof E & string>(event: K, listener: Listener<E[K]>): this {
    this.inner.on(event, listener as (...args: unknown[]) => void);
    return this;
  }

  once<K extends keyof E & string>(event: K, listener: Listener<E[K]>): this {
    this.inner.once(event, listener as (...args: unknown[]) => void);
    return this;
  }

  off<K extends keyof E & string>(event: K, listener: Listener<E[K]>): this {
    this.inner.off(event, listener as (...args: unknown[]) => void);
    return this;
  }

  emit<K extends keyof E & string>(event: K, ...args: E[K]): boolean {
    return this.inner.emit(event, ...args);
  }

  listenerCount<K extends keyof E & string>(event: K): number {
    return this.inner.listenerCount(event);
  }
}
