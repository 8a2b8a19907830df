/**
 * Listening on the configured address, with the two failures a user can fix named (the
 * address in use, or another reason) as configuration errors.
 */
import type { AddressInfo, Server as NetServer } from 'node:net';
import { KilnError, errnoCode } from '../shared/index.js';

export function listen(server: NetServer, host: string, port: number): Promise<number> {
  return new Promise((resolve, reject) => {
    const onError = (err: Error) => {
      const code = errnoCode(err);
      reject(new KilnError('E_CONFIG', code === 'EADDRINUSE' ? `cannot listen on ${host}:${port}: address already in use` : `cannot listen on ${host}:${port}: ${err.message}`, { cause: err }));
    };
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve((server.address() as AddressInfo).port);
    });
  });
}

