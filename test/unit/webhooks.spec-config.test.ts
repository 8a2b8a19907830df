/**
 * Webhook configuration: the build spec's `notify:` field (validated field by field, the
 * host checked against the coordinator's allow-list at submit, a secret named never held),
 * the URL rules and host matching, the event filter, and the coordinator's settings
 * (`webhooks.hooks` from a file, JSON in the environment or a flag; the allow-list; a
 * secret file readable by others refused).
 */
import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { loadCoordinatorConfig } from '../../coordinator/config.js';
import { readHookSecret } from '../../coordinator/webhooks/webhooks.js';
import { hostAllowed, validateSpec, wantsEvent, webhookHost, webhookPort, webhookUrlProblem, type ValidateOptions } from '../../shared/index.js';

const node = { a: { dockerfile_inline: 'FROM x' } };
const cli: ValidateOptions = { form: 'file', defaultPlatform: 'linux/amd64' };
const held = { version: (n: string) => (n === 'hook_key' ? 3 : undefined) };
const coordinator = (allowedHosts: string[]): ValidateOptions => ({ form: 'submitted', defaultPlatform: 'linux/amd64', secrets: held, webhooks: { allowedHosts } });

function messages(raw: unknown, opts: ValidateOptions): string[] {
  const r = validateSpec(raw, opts);
  return r.ok ? [] : r.errors.map((e) => e.message);
}

describe('notify: in the build spec', () => {
  it('resolves hooks with their defaults and keeps the secret as a name', () => {
    const r = validateSpec(
      {
        nodes: node,
        notify: {
          webhooks: [
            { url: 'https://hooks.example.com/kiln?x=1', secret: 'hook_key' },
            { url: 'http://10.0.0.5:9000/h', events: ['build', 'node'], node_states: ['failed', 'success', 'failed'] },
          ],
        },
      },
      coordinator(['hooks.example.com', '10.0.0.5:9000']),
    );
    if (!r.ok) throw new Error(JSON.stringify(r.errors));
    expect(r.value.notify).toEqual({
      webhooks: [
        { url: 'https://hooks.example.com/kiln?x=1', events: ['build'], secret: 'hook_key' },
        { url: 'http://10.0.0.5:9000/h', events: ['build', 'node'], node_states: ['failed', 'success'] },
      ],
    });
    // No notify: no field at all (the resolved spec is as before).
    const plain = validateSpec({ nodes: node }, coordinator([]));
    expect(plain.ok && 'notify' in plain.value).toBe(false);
  });

  it('names the field of every bad hook', () => {
    const allowed = coordinator(['hooks.example.com']);
    const one = (hook: Record<string, unknown>) => messages({ nodes: node, notify: { webhooks: [hook] } }, allowed);
    expect(one({ url: 'ftp://hooks.example.com/x' })).toEqual(["field 'notify.webhooks.0.url': unsupported scheme 'ftp:' (use http:// or https://)"]);
    expect(one({ url: 'https://user:pw@hooks.example.com/x' })).toEqual([expect.stringMatching(/^field 'notify\.webhooks\.0\.url': must not hold credentials/)]);
    expect(one({ url: 'not a url' })).toEqual([expect.stringMatching(/^field 'notify\.webhooks\.0\.url': 'not a url' is not a URL/)]);
    expect(one({ url: 'https://hooks.example.com/x#frag' })).toEqual(["field 'notify.webhooks.0.url': must not have a #fragment"]);
    expect(one({ url: 'https://hooks.example.com/x', events: ['deploy'] })[0]).toMatch(/^field 'notify\.webhooks\.0\.events\.0': /);
    expect(one({ url: 'https://hooks.example.com/x', node_states: ['done'] })[0]).toMatch(/^field 'notify\.webhooks\.0\.node_states\.0': /);
    expect(one({ url: 'https://hooks.example.com/x', colour: 'red' })).toEqual(["field 'notify.webhooks.0.colour': unknown field"]);
    expect(one({ url: 'https://hooks.example.com/x', secret: 'not held' })[0]).toMatch(/^field 'notify\.webhooks\.0\.secret': invalid secret name 'not held'/);
    expect(one({ url: 'https://hooks.example.com/x', secret: 'missing_key' })).toEqual([
      "field 'notify.webhooks.0.secret': secret 'missing_key' is not held by the coordinator (an admin sets it with: kiln secrets set missing_key)",
    ]);
    expect(messages({ nodes: node, notify: { webhooks: Array.from({ length: 5 }, () => ({ url: 'https://hooks.example.com/' })) } }, allowed)).toEqual([
      "field 'notify.webhooks': at most 4 webhooks per build",
    ]);
    expect(messages({ nodes: node, notify: { email: 'x@y' } }, allowed)).toEqual(["field 'notify.email': unknown field"]);
  });

  it('refuses hosts the coordinator does not allow, and every hook when it allows none', () => {
    const spec = { nodes: node, notify: { webhooks: [{ url: 'http://169.254.169.254/latest' }] } };
    expect(messages(spec, coordinator([]))).toEqual([
      "field 'notify.webhooks.0.url': this coordinator takes no per-build webhooks (its webhooks.allowed_hosts is empty; an admin sets the hosts builds may call)",
    ]);
    expect(messages(spec, coordinator(['hooks.example.com', '*.ci.example']))).toEqual([
      "field 'notify.webhooks.0.url': host '169.254.169.254' is not in the coordinator's webhooks.allowed_hosts (hooks.example.com, *.ci.example; an entry without :port allows ports 80 and 443 only)",
    ]);
    expect(messages(spec, coordinator(['*']))).toEqual([]);
    // The CLI checks the spec without a coordinator: the URL rules only.
    expect(messages(spec, cli)).toEqual([]);
    expect(messages({ nodes: node, notify: { webhooks: [{ url: 'gopher://x' }] } }, cli)).toHaveLength(1);
  });

  it('matches hosts exactly, by *.domain (subdomains only) or *', () => {
    expect(hostAllowed('hooks.example.com', ['HOOKS.example.com'])).toBe(true);
    expect(hostAllowed('a.hooks.example.com', ['hooks.example.com'])).toBe(false);
    expect(hostAllowed('a.b.example.com', ['*.example.com'])).toBe(true);
    expect(hostAllowed('example.com', ['*.example.com'])).toBe(false);
    expect(hostAllowed('badexample.com', ['*.example.com'])).toBe(false);
    expect(hostAllowed('anything', ['*'])).toBe(true);
    expect(hostAllowed('::1', ['[::1]'])).toBe(true);
    // Ports: an entry without one allows 80 and 443 only; host:port that port only.
    expect(hostAllowed('hooks.example.com', ['hooks.example.com'], 80)).toBe(true);
    expect(hostAllowed('hooks.example.com', ['hooks.example.com'], 2375)).toBe(false);
    expect(hostAllowed('hooks.example.com', ['hooks.example.com:8443'], 8443)).toBe(true);
    expect(hostAllowed('hooks.example.com', ['hooks.example.com:8443'], 443)).toBe(false);
    expect(hostAllowed('anything', ['*'], 6379)).toBe(false);
    expect(hostAllowed('a.example.com', ['*.example.com:9000'], 9000)).toBe(true);
    expect(hostAllowed('::1', ['[::1]:8080'], 8080)).toBe(true);
    expect(hostAllowed('::1', ['::1'], 8080)).toBe(false);
    expect(webhookPort('http://h.example.com/x')).toBe(80);
    expect(webhookPort('https://h.example.com/x')).toBe(443);
    expect(webhookPort('https://h.example.com:8443/x')).toBe(8443);
    expect(hostAllowed('x', [])).toBe(false);
    expect(webhookHost('http://[::1]:8080/x')).toBe('::1');
    expect(webhookHost('https://Hooks.Example.COM/x')).toBe('hooks.example.com');
    expect(webhookUrlProblem('https://hooks.example.com/' + 'x'.repeat(2100))).toMatch(/at most 2048/);
  });

  it('filters events by type and state', () => {
    expect(wantsEvent({ events: ['build'] }, 'build', 'running')).toBe(true);
    expect(wantsEvent({ events: ['build'] }, 'node', 'running')).toBe(false);
    expect(wantsEvent({ events: ['build', 'node'], node_states: ['failed'] }, 'node', 'running')).toBe(false);
    expect(wantsEvent({ events: ['build', 'node'], node_states: ['failed'] }, 'node', 'failed')).toBe(true);
    expect(wantsEvent({ events: ['build', 'node'], node_states: ['failed'] }, 'build', 'running')).toBe(true);
    expect(wantsEvent({ events: ['build'], build_states: ['success', 'failed'] }, 'build', 'pending')).toBe(false);
  });
});

describe('coordinator webhook settings', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'kiln-wh-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });
  const host = (env: Record<string, string> = {}) => ({ env: { HOME: dir, ...env }, arch: 'x64', isTTY: false });

  it('has defaults: no hooks, no allowed hosts, 10 s, 6 attempts, 5 s backoff, 1000 queued', () => {
    expect(loadCoordinatorConfig({}, host()).webhooks).toEqual({ hooks: [], allowedHosts: [], timeoutMs: 10_000, maxAttempts: 6, backoffBaseMs: 5000, queueLimit: 1000 });
  });

  it('reads hooks from the file, JSON from the environment and a flag, with one precedence', async () => {
    const file = join(dir, 'c.yaml');
    await writeFile(
      file,
      'webhooks:\n  hooks:\n    - { name: ops, url: "https://ops.example/kiln", events: [build, node], node_states: [failed], secret_file: ops.secret }\n  allowed_hosts: [hooks.example.com, "*.ci.example"]\n  timeout: 3s\n  attempts: 2\n  backoff: 50ms\n  queue: 10\n',
    );
    const c = loadCoordinatorConfig({ config: file }, host());
    expect(c.webhooks).toEqual({
      hooks: [{ name: 'ops', url: 'https://ops.example/kiln', events: ['build', 'node'], node_states: ['failed'], secretFile: join(process.cwd(), 'ops.secret') }],
      allowedHosts: ['hooks.example.com', '*.ci.example'],
      timeoutMs: 3000,
      maxAttempts: 2,
      backoffBaseMs: 50,
      queueLimit: 10,
    });
    const env = loadCoordinatorConfig({ config: file }, host({ KILN_WEBHOOKS: '[{"name":"env-hook","url":"http://127.0.0.1:9/x"}]', KILN_WEBHOOK_ALLOWED_HOSTS: 'a.example,b.example' }));
    expect(env.webhooks.hooks).toEqual([{ name: 'env-hook', url: 'http://127.0.0.1:9/x', events: ['build'], secretFile: null }]);
    expect(env.webhooks.allowedHosts).toEqual(['a.example', 'b.example']);
    const flag = loadCoordinatorConfig({ config: file, webhooks: '[]', webhookAttempts: '4' }, host({ KILN_WEBHOOKS: '[{"name":"env-hook","url":"http://127.0.0.1:9/x"}]' }));
    expect(flag.webhooks).toMatchObject({ hooks: [], maxAttempts: 4 });
  });

  it('names the setting and the hook of every bad value', () => {
    const bad = (webhooks: string) => () => loadCoordinatorConfig({ webhooks }, host());
    expect(bad('{nope')).toThrow(/config webhooks\.hooks: is not JSON/);
    expect(bad('{"name":"x"}')).toThrow(/config webhooks\.hooks: must be a list of hooks/);
    expect(bad('[{"name":"ops","url":"ftp://x/"}]')).toThrow(/config webhooks\.hooks: hook 1 \(ops\): field 'url': unsupported scheme 'ftp:'/);
    expect(bad('[{"name":"ops","url":"https://u:p@x/"}]')).toThrow(/hook 1 \(ops\): field 'url': must not hold credentials/);
    expect(bad('[{"name":"bad name","url":"https://x/"}]')).toThrow(/hook 1 \(bad name\): field 'name': must be 1-63 characters/);
    expect(bad('[{"name":"ops","url":"https://x/","events":["deploy"]}]')).toThrow(/hook 1 \(ops\): field 'events\.0'/);
    expect(bad('[{"name":"ops","url":"https://x/","secret":"inline"}]')).toThrow(/hook 1 \(ops\): unknown field 'secret'/);
    expect(bad('[{"name":"a","url":"https://x/"},{"name":"a","url":"https://y/"}]')).toThrow(/hook 2 \(a\): the name 'a' is used twice/);
    expect(() => loadCoordinatorConfig({ webhookAllowedHosts: 'https://x.example/' }, host())).toThrow(/config webhooks\.allowed_hosts: 'https:\/\/x\.example\/' is not a host name/);
    expect(() => loadCoordinatorConfig({ webhookAttempts: '0' }, host())).toThrow(/webhooks\.attempts/);
  });

  it('reads a secret file only when group and others cannot', async () => {
    const path = join(dir, 'hook.secret');
    await writeFile(path, '  s3cret-value\n');
    await chmod(path, 0o644);
    await expect(readHookSecret('ops', path)).rejects.toThrow(`config webhooks.hooks: hook 'ops': secret_file ${path} is readable by group or others (mode 0644); chmod 600 it`);
    await chmod(path, 0o600);
    expect(Buffer.from(await readHookSecret('ops', path)).toString()).toBe('s3cret-value');
    await writeFile(join(dir, 'empty'), '\n', { mode: 0o600 });
    await expect(readHookSecret('ops', join(dir, 'empty'))).rejects.toThrow(/is empty/);
    await expect(readHookSecret('ops', join(dir, 'missing'))).rejects.toThrow(/missing cannot be read \(ENOENT\)/);
  });
});
