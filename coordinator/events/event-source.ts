/**
 * The change feed's source in a coordinator: the Engine's `node` and `build` events and
 * the agent registry's changes, each turned into a `Change` whose `render` makes the
 * events stream's data from the same view functions the HTTP routes use (`summaryView`,
 * `nodeStatusView`, `agentView`, `poolListView`). A change holds the build record it was
 * made on, so a build archived within the coalescing window still renders.
 */
import type { AgentRegistry } from '../placement/agent-registry.js';
import { agentView } from '../placement/agent-view.js';
import type { Engine } from '../builds/engine.js';
import { nodeStatusView, poolListView, summaryView } from '../builds/build-views.js';
import { summarize } from '../state/records.js';
import type { Change, FeedSource } from './change-feed.js';

/** What the source asks of the Engine. */
export type FeedEngine = Pick<Engine, 'on' | 'off' | 'activeBuild' | 'buildSummary' | 'budgetWaiting' | 'graph' | 'agentControl' | 'durable' | 'pools' | 'cacheCounts' | 'concurrencyGroupViews'>;

export function engineSource(engine: FeedEngine, agents: AgentRegistry, now: () => number = Date.now): FeedSource {
  return {
    watch(notify) {
      const onNode = (buildId: string, name: string): void => {
        const build = engine.activeBuild(buildId);
        if (!build) return;
        notify({
          key: `n:${buildId}/${name}`,
          type: 'node',
          build: buildId,
          render: () => {
            const node = engine.graph(build).byName.get(name);
            return node ? { build: buildId, node: nodeStatusView(node, agents, now(), engine.budgetWaiting(build, node)) } : null;
          },
        } satisfies Change);
      };
      const onBuild = (buildId: string): void => {
        const build = engine.activeBuild(buildId);
        notify({
          key: `b:${buildId}`,
          type: 'build',
          build: buildId,
          render: () => {
            const s = build ? summarize(build) : engine.buildSummary(buildId);
            return s ? summaryView(s) : null;
          },
        } satisfies Change);
      };
      const onAgent = (name: string): void => {
        notify({
          key: `a:${name}`,
          type: 'agent',
          build: null,
          render: () => {
            const a = agents.get(name);
            return a ? agentView(a, now(), engine.agentControl(name)) : null;
          },
        } satisfies Change);
      };
      engine.on('node', onNode);
      engine.on('build', onBuild);
      const unwatch = agents.watch(onAgent);
      return () => {
        engine.off('node', onNode);
        engine.off('build', onBuild);
        unwatch();
      };
    },
    pools: () => poolListView(engine),
    durable: () => engine.durable(),
  };
}
