/**
 * A dockerode client for DOCKER_HOST (`unix:///path` or `tcp://host:port`). Its own
 * module so that only what builds (the docker executor, tests, benchmarks) loads
 * dockerode; an idle agent talks to the engine through docker/engine-api.ts.
 */
import Docker from 'dockerode';
import { engineEndpoint } from './engine-api.js';

export function dockerClient(dockerHost: string): Docker {
  return new Docker(engineEndpoint(dockerHost));
}
