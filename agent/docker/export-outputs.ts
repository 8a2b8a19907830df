/**
 * Exporting a node's outputs from the image it built, without running it: create a
 * container (never started, network none), read each output path as a tar through the
 * Engine API (`GET /containers/{id}/archive`), extract it contained into a temp dir,
 * re-pack it as a deterministic tar (sorted entries, mtime 0, owner 0:0, normalised
 * modes; shared/archive/pack-dir.ts) so equal trees give equal digests, upload it to the
 * coordinator's CAS (only if missing) and keep it in the local CAS cache. The container
 * is removed whatever happens.
 *
 * An output path is a directory (the artifact holds its contents) or a file (the artifact
 * holds that one file under its name).
 */
import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { basename, join } from 'node:path';
import type Docker from 'dockerode';
import { coerceError, ARTIFACT_MEDIA_TYPE, KilnError, extractTarContained, packDir, type OutputArtifactPayload } from '../../shared/core.js';
import type { CasCache } from '../cas-cache.js';

export interface OutputSpec {
  name: string;
  path: string;
}

export async function exportOutputs(docker: Docker, imageId: string, outputs: readonly OutputSpec[], cas: CasCache, workDir: string, signal?: AbortSignal): Promise<OutputArtifactPayload[]> {
  if (outputs.length === 0) return [];
  const scratch = join(workDir, 'export');
  await mkdir(scratch, { recursive: true });
  const container = await docker.createContainer({
    Image: imageId,
    // Never started; an image without CMD (FROM scratch) still needs a command to be created.
    Cmd: ['/kiln-export-never-runs'],
    NetworkDisabled: true,
    HostConfig: { NetworkMode: 'none' },
  });
  const results: OutputArtifactPayload[] = [];
  try {
    for (const out of outputs) {
      if (signal?.aborted) throw new KilnError('E_INTERNAL', 'cancelled while exporting outputs');
      const tmp = await mkdtemp(join(scratch, `${out.name}-`));
      try {
        let archive: NodeJS.ReadableStream;
        try {
          archive = await container.getArchive({ path: out.path });
        } catch (err) {
          const status = (err as { statusCode?: number }).statusCode;
          if (status === 404) throw new KilnError('E_NOT_FOUND', `output '${out.name}': ${out.path} does not exist in the built image`);
          throw new KilnError('E_DOCKER', `output '${out.name}': reading ${out.path} from the image failed: ${coerceError(err).message}`, { cause: err });
        }
        const raw = join(tmp, 'raw');
        await mkdir(raw);
        await extractTarContained(archive, raw);
        const top = join(raw, basename(out.path));
        const root = (await stat(top).catch(() => null))?.isDirectory() ? top : raw;
        const packed = await packDir(root, { tmpRoot: tmp });
        await cas.upload(packed.digest, packed.path, packed.size, signal);
        results.push({ name: out.name, digest: packed.digest, size: packed.size, media_type: ARTIFACT_MEDIA_TYPE });
      } finally {
        await rm(tmp, { recursive: true, force: true });
      }
    }
  } finally {
    await container.remove({ force: true }).catch(() => {});
  }
  return results;
}
