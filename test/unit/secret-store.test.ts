/**
 * The coordinator's secret store (coordinator/secrets/secret-store.ts), on real files:
 * values encrypted at rest (the store file holds neither a value nor its base64), the key
 * outside the store (0600, made on the first set), a wrong or missing key refusing the
 * open with both files named, a value moved to another name not decrypting, versions
 * never reused, bounds, and values attached to an assignment only by the send-time hook.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { SecretStore } from '../../coordinator/secrets/secret-store.js';
import { secretValuesAttacher } from '../../coordinator/secrets/assign-secrets.js';
import { MAX_SECRET_BYTES, type Payload } from '../../shared/index.js';

describe('secret store', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-secrets-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('stores values encrypted, with the key in its own 0600 file, and reads them back after a reopen', async () => {
    const value = `v-${randomBytes(16).toString('hex')}`;
    const s = await SecretStore.open({ dataDir: dir, now: () => 1000 });
    expect(s.list()).toEqual([]);
    const r = await s.set('tok', Buffer.from(value));
    expect(r).toEqual({ name: 'tok', size: value.length, version: 1, updated_at: 1000, created: true });
    const file = await readFile(join(dir, 'secrets.json'));
    expect(file.includes(value)).toBe(false);
    expect(file.includes(Buffer.from(value).toString('base64'))).toBe(false);
    expect(file.includes(Buffer.from(value).toString('hex'))).toBe(false);
    expect((await stat(join(dir, 'secrets.json'))).mode & 0o777).toBe(0o600);
    expect((await stat(join(dir, 'keys', 'secrets.key'))).mode & 0o777).toBe(0o600);
    const again = await SecretStore.open({ dataDir: dir });
    expect(again.values(['tok', 'absent']).map((v) => [v.name, Buffer.from(v.value).toString()])).toEqual([['tok', value]]);
    expect(again.list()).toEqual([{ name: 'tok', size: value.length, version: 1, updated_at: 1000 }]);
  });

  it('bumps the version on every set and never reuses one, also after a removal', async () => {
    const s = await SecretStore.open({ dataDir: dir });
    expect((await s.set('a', Buffer.from('1111'))).version).toBe(1);
    expect((await s.set('a', Buffer.from('2222'))).version).toBe(2);
    expect(await s.remove('a')).toBe(true);
    expect(await s.remove('a')).toBe(false);
    expect(s.version('a')).toBeUndefined();
    expect((await s.set('a', Buffer.from('1111'))).version).toBe(3);
    expect((await SecretStore.open({ dataDir: dir })).version('a')).toBe(3);
  });

  it('refuses to open a store with a wrong key or without its key, naming both files', async () => {
    const s = await SecretStore.open({ dataDir: dir });
    await s.set('tok', Buffer.from('value-1'));
    const other = join(dir, 'other.key');
    await writeFile(other, `${randomBytes(32).toString('base64')}\n`, { mode: 0o600 });
    await expect(SecretStore.open({ dataDir: dir, keyFile: other })).rejects.toThrow(new RegExp(`key file ${other} does not decrypt the secret store ${join(dir, 'secrets.json')}`));
    await expect(SecretStore.open({ dataDir: dir, keyFile: join(dir, 'missing.key') })).rejects.toThrow(/exists but its key file .*missing\.key does not/);
    await writeFile(other, 'short\n');
    await expect(SecretStore.open({ dataDir: dir, keyFile: other })).rejects.toThrow(/must hold 32 bytes/);
  });

  it('a sealed value copied under another name does not decrypt (the name is bound to it)', async () => {
    const s = await SecretStore.open({ dataDir: dir });
    await s.set('a', Buffer.from('value-a'));
    await s.set('b', Buffer.from('value-b'));
    const doc = JSON.parse(await readFile(join(dir, 'secrets.json'), 'utf8')) as { secrets: Array<{ name: string; box: string }> };
    doc.secrets[1]!.box = doc.secrets[0]!.box;
    await writeFile(join(dir, 'secrets.json'), JSON.stringify(doc));
    await expect(SecretStore.open({ dataDir: dir })).rejects.toThrow(/does not decrypt/);
  });

  it('bounds names, sizes and count', async () => {
    const s = await SecretStore.open({ dataDir: dir });
    await expect(s.set('../x', Buffer.from('v'))).rejects.toThrow(/invalid secret name/);
    await expect(s.set('__proto__', Buffer.from('v'))).rejects.toThrow(/invalid secret name/);
    await expect(s.set('e', Buffer.alloc(0))).rejects.toThrow(/empty/);
    await expect(s.set('big', Buffer.alloc(MAX_SECRET_BYTES + 1, 1))).rejects.toThrow(/at most 65536/);
    expect((await s.set('max', Buffer.alloc(MAX_SECRET_BYTES, 1))).size).toBe(MAX_SECRET_BYTES);
  });

  it('attaches values only to assignments naming secrets, as a copy', async () => {
    const s = await SecretStore.open({ dataDir: dir });
    await s.set('tok', Buffer.from('value-1'));
    const attach = secretValuesAttacher(s);
    const plain = { attempt_id: 'a-1' } as unknown as Payload<'assign'>;
    expect(attach(plain)).toBe(plain);
    const named = { attempt_id: 'a-1', secrets: [{ name: 'tok', version: 1 }] } as unknown as Payload<'assign'>;
    const sent = attach(named);
    expect(sent).not.toBe(named);
    expect('secret_values' in named).toBe(false);
    expect(sent.secret_values?.map((v) => [v.name, Buffer.from(v.value).toString()])).toEqual([['tok', 'value-1']]);
  });
});
