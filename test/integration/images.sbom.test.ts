/**
 * SBOMs of pushed images, for real: a coordinator and an agent process on the real
 * dockerd build images whose Dockerfile writes package-database fixtures (dpkg status and
 * status.d, apk installed, a Python dist-info and egg-info, npm package.json files, a
 * malformed one among them) on busybox, push them to the real registry (KILN_REGISTRY),
 * and the agent makes each image's CycloneDX SBOM from its file system.
 *
 * - The SBOM is in the CAS (fetched by digest, hash checked), lists exactly the fixture
 *   packages with their versions and purls, and names the pushed manifest; both refs of the
 *   image share it; it is linked from the node's provenance, the images route and the build
 *   view; `kiln images --json` shows it and `kiln images --sbom REF -o FILE` writes it; the
 *   malformed package.json is a warning in the node's log, not a failure.
 * - A two-platform node (amd64, arm64 emulated): each platform image has its own SBOM, and
 *   the index row lists them (`platform_sboms`) without scanning anything again.
 */
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { apiPath, sha256, type ImageViewT, type NodeViewT } from '../../shared/index.js';
import { inline, kiln, submitSpec, useCluster, waitForBuild } from '../helpers/cluster.js';

const REGISTRY = process.env.KILN_REGISTRY;
const DIGEST = /^sha256:[0-9a-f]{64}$/;

type PushedImage = NodeViewT['images'][number];
interface Bom {
  bomFormat: string;
  specVersion: string;
  metadata: { component: { type: string; name: string; version: string; properties: Array<{ name: string; value: string }> } };
  components?: Array<{ name: string; version: string; purl?: string; properties: Array<{ name: string; value: string }> }>;
}

/** A RUN line writing `body` to `path` (printf's format turns \n into newlines; bodies have no ' or %). */
const put = (path: string, body: string) => `RUN mkdir -p ${path.slice(0, path.lastIndexOf('/'))} && printf '${body.replace(/\n/g, '\\n')}' > ${path}`;

const FIXTURES = [
  put('/etc/os-release', 'ID=debian\nVERSION_ID="12"\n'),
  put('/var/lib/dpkg/status', 'Package: kiln-fixture-deb\nStatus: install ok installed\nArchitecture: amd64\nVersion: 1.2.3-4\n\nPackage: kiln-removed\nStatus: deinstall ok config-files\nVersion: 0.1\n'),
  put('/var/lib/dpkg/status.d/kiln-distroless', 'Package: kiln-distroless\nVersion: 2024.1\nArchitecture: all\n'),
  put('/lib/apk/db/installed', 'P:kiln-fixture-apk\nV:3.2.1-r0\nA:x86_64\nL:MIT\n\n'),
  put('/usr/lib/python3/dist-packages/kiln_fixture_py-0.9.dist-info/METADATA', 'Metadata-Version: 2.1\nName: kiln_fixture_py\nVersion: 0.9.1\nLicense: BSD-3-Clause\n\nbody\n'),
  put('/opt/venv/lib/python3.12/site-packages/kiln_legacy.egg-info/PKG-INFO', 'Metadata-Version: 1.0\nName: kiln-legacy\nVersion: 0.1\n'),
  put('/app/node_modules/@kiln/fixture-npm/package.json', '{"name":"@kiln/fixture-npm","version":"4.5.6","license":"MIT"}'),
  put('/app/node_modules/left-pad/package.json', '{"name":"left-pad","version":"1.3.0"}'),
  put('/app/node_modules/broken/package.json', '{"name": broken'),
].join('\n');

const EXPECTED = [
  'kiln-distroless@2024.1',
  'kiln-fixture-deb@1.2.3-4',
  'kiln-fixture-apk@3.2.1-r0',
  'kiln_fixture_py@0.9.1',
  'kiln-legacy@0.1',
  '@kiln/fixture-npm@4.5.6',
  'left-pad@1.3.0',
].sort();

describe.skipIf(!REGISTRY)('SBOMs of pushed images (needs KILN_REGISTRY, e.g. 127.0.0.1:5000)', () => {
  const c = useCluster('images-sbom', { agents: [{ name: 'sbom', platforms: ['linux/arm64'], maxJobs: 2 }] });
  const uniq = `${process.pid}-${Date.now().toString(36)}`;
  const api = <T>(path: string) => c.coord.api<T>(path).then((r) => r.body);
  const env = () => c.coord.cliEnv;

  /** The SBOM from the coordinator's CAS, checked against its digest. */
  async function casSbom(digest: string): Promise<{ bom: Bom; bytes: Buffer }> {
    const res = await fetch(`${c.coord.url}${apiPath.casBlob(digest)}`, { headers: { authorization: `Bearer ${c.coord.apiToken}` } });
    expect(res.status).toBe(200);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(sha256(bytes)).toBe(digest);
    return { bom: JSON.parse(bytes.toString('utf8')) as Bom, bytes };
  }

  it('makes the image SBOM from its package databases: in the CAS, in provenance, the images route and kiln images', async () => {
    const repo = `kiln-test/sbom-${uniq}`;
    const refs = [`${REGISTRY}/${repo}:1.0`, `${REGISTRY}/${repo}:latest`];
    const id = await submitSpec(c.coord, { name: 'sbom', nodes: { app: inline(`FROM kiln/busybox:1-amd64\n${FIXTURES}\nRUN echo ${uniq} > /stamp\n`, { image: refs }) } });
    const b = await waitForBuild(c.coord, id);
    const app = (await api<{ nodes: NodeViewT[] }>(apiPath.build(id))).nodes.find((n) => n.name === 'app')!;
    expect(b.state, JSON.stringify(app)).toBe('success');
    expect(app.images.map((i) => i.ref)).toEqual(refs);
    const sbom = app.images[0]!.sbom!;
    expect(sbom).toMatch(DIGEST);
    expect(app.images[1]!.sbom).toBe(sbom);

    const { bom } = await casSbom(sbom);
    expect(bom).toMatchObject({ bomFormat: 'CycloneDX', specVersion: '1.5' });
    expect(bom.metadata.component).toMatchObject({ type: 'container', name: `${REGISTRY}/${repo}`, version: app.images[0]!.digest });
    expect(bom.metadata.component.properties.filter((p) => p.name === 'kiln:image:ref').map((p) => p.value)).toEqual(refs);
    expect((bom.components ?? []).map((x) => `${x.name}@${x.version}`).sort()).toEqual(EXPECTED);
    const purls = new Map((bom.components ?? []).map((x) => [x.name, x.purl]));
    expect(purls.get('kiln-fixture-deb')).toBe('pkg:deb/debian/kiln-fixture-deb@1.2.3-4?arch=amd64&distro=debian-12');
    expect(purls.get('kiln-fixture-apk')).toBe('pkg:apk/debian/kiln-fixture-apk@3.2.1-r0?arch=x86_64&distro=debian-12');
    expect(purls.get('kiln_fixture_py')).toBe('pkg:pypi/kiln-fixture-py@0.9.1');
    expect(purls.get('@kiln/fixture-npm')).toBe('pkg:npm/%40kiln/fixture-npm@4.5.6');
    const where = (bom.components ?? []).find((x) => x.name === 'kiln-legacy')!.properties.find((p) => p.name === 'kiln:location')!.value;
    expect(where).toBe('/opt/venv/lib/python3.12/site-packages/kiln_legacy.egg-info/PKG-INFO');

    // The malformed package.json is a warning in the log; the node succeeded anyway.
    const log = await api<string>(apiPath.nodeLogs(id, 'app'));
    expect(log).toContain('[kiln] sbom: warning: /app/node_modules/broken/package.json: not valid JSON; skipped');
    expect(log).toMatch(new RegExp(`\\[kiln\\] sbom: 7 packages \\(deb 2, apk 1, pypi 2, npm 2\\); CycloneDX 1\\.5 ${sbom} `));

    // Provenance links it; the images route and kiln images list it.
    const prov = await kiln(['provenance', id, 'app', '--json'], env());
    expect((JSON.parse(prov.stdout) as { images: PushedImage[] }).images.map((i) => i.sbom)).toEqual([sbom, sbom]);
    const listed = await api<{ items: ImageViewT[] }>(apiPath.buildImages(id));
    expect(listed.items.map((i) => [i.ref, i.sbom])).toEqual(refs.map((r) => [r, sbom]));
    const json = await kiln(['images', id, '--json'], env());
    expect(json.code, json.stderr).toBe(0);
    expect(json.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { sbom: string }).sbom)).toEqual([sbom, sbom]);
    const table = await kiln(['images', id], env());
    expect(table.stdout.split('\n')[0]).toMatch(/^NODE\s+REF\s+DIGEST\s+PLATFORM\s+SIZE\s+SBOM$/);
    expect(table.stdout.split('\n')[1]!.trim().endsWith(sbom)).toBe(true);

    const out = join(c.dir, 'sbom.json');
    const got = await kiln(['images', id, '--sbom', refs[0]!, '-o', out], env());
    expect(got.code, got.stderr).toBe(0);
    expect(sha256(await readFile(out))).toBe(sbom);
    const missing = await kiln(['images', id, '--sbom', `${REGISTRY}/${repo}:nope`], env());
    expect(missing.code).not.toBe(0);
    expect(missing.stderr).toContain(`pushed no image at ${REGISTRY}/${repo}:nope`);
  });

  it('an index lists its platform images’ SBOMs, each made once on its platform node', async () => {
    const repo = `kiln-test/sbom-multi-${uniq}`;
    const ref = `${REGISTRY}/${repo}:1`;
    const id = await submitSpec(c.coord, {
      name: 'sbom-multi',
      nodes: {
        app: {
          platforms: ['linux/amd64', 'linux/arm64'],
          allow_emulation: true,
          image: ref,
          dockerfile_inline: `ARG TARGETARCH\nFROM kiln/busybox:1-\${TARGETARCH}\n${put('/app/node_modules/arch-pkg/package.json', '{"name":"arch-pkg","version":"1.0.0"}')}\nRUN uname -m > /arch && echo ${uniq} > /stamp\n`,
        },
      },
    });
    const b = await waitForBuild(c.coord, id, undefined, 600_000);
    const nodes = new Map((await api<{ nodes: NodeViewT[] }>(apiPath.build(id))).nodes.map((n) => [n.name, n]));
    expect(b.state, JSON.stringify([...nodes.values()].map((n) => [n.name, n.state, n.error]))).toBe('success');
    const per = new Map<string, string>();
    for (const p of ['linux/amd64', 'linux/arm64']) {
      const node = nodes.get(`app.${p.replace('/', '-')}`)!;
      const s = node.images[0]!.sbom!;
      expect(s, p).toMatch(DIGEST);
      const { bom } = await casSbom(s);
      expect((bom.components ?? []).map((x) => `${x.name}@${x.version}`)).toEqual(['arch-pkg@1.0.0']);
      expect(bom.metadata.component.version).toBe(node.images[0]!.digest);
      per.set(p, s);
    }
    // Two images of different platforms: two different SBOMs.
    expect(per.get('linux/amd64')).not.toBe(per.get('linux/arm64'));

    const index = nodes.get('app')!;
    expect(index.images[0]!.sbom).toBeNull();
    expect(index.images[0]!.platform_sboms).toEqual([
      { platform: 'linux/amd64', sbom: per.get('linux/amd64') },
      { platform: 'linux/arm64', sbom: per.get('linux/arm64') },
    ]);
    const listed = await api<{ items: ImageViewT[] }>(apiPath.buildImages(id));
    expect(listed.items.find((i) => i.index)).toMatchObject({ ref, sbom: null, platform_sboms: index.images[0]!.platform_sboms });
    const prov = await api<{ images: PushedImage[] }>(apiPath.casBlob(index.provenance!));
    expect(prov.images[0]!.platform_sboms).toEqual(index.images[0]!.platform_sboms);
    // The index node scanned nothing.
    expect(await api<string>(apiPath.nodeLogs(id, 'app'))).not.toContain('[kiln] sbom:');

    const table = await kiln(['images', id], env());
    expect(table.stdout.split('\n').find((l) => l.startsWith('app ') && l.includes('index:'))).toMatch(/2 platform SBOMs$/);
    const noPlatform = await kiln(['images', id, '--sbom', ref], env());
    expect(noPlatform.code).not.toBe(0);
    expect(noPlatform.stderr).toContain('choose one of its platforms with --platform (linux/amd64, linux/arm64)');
    const arm = await kiln(['images', id, '--sbom', ref, '--platform', 'linux/arm64'], env());
    expect(arm.code, arm.stderr).toBe(0);
    expect(sha256(arm.stdout.replace(/\n$/, ''))).toBe(per.get('linux/arm64'));
  });
});
