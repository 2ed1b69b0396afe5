import { randomBytes } from 'node:crypto';
import { errors } from 'oidc-provider';
import { beforeEach, describe, expect, it } from 'vitest';
import { openDatabase, type Storage } from '../../src/db/index.ts';
import { createAdapterFactory, purgeExpired, type ReplayHooks } from '../../src/oauth/adapter.ts';
import { createVault } from '../../src/upstream/vault.ts';

const vault = createVault([{ kid: 'k0', key: randomBytes(32) }]);

/** Hooks that record what they were asked and answer as configured. */
function hooks(decision: 'reuse' | 'hide' | 'allow' = 'reuse', forgiveRace = false): ReplayHooks & { calls: string[] } {
  const calls: string[] = [];
  return {
    calls,
    onConsumedFind: (model) => {
      calls.push(`find:${model}`);
      return decision;
    },
    onConsumeRace: (model) => {
      calls.push(`race:${model}`);
      return forgiveRace;
    },
    raceError: () => new errors.InvalidGrant('already consumed'),
  };
}

const rows = (storage: Storage) => storage.sqlite.prepare('SELECT * FROM oidc_models').all() as Record<string, unknown>[];

describe('SQLite adapter for oidc-provider', () => {
  let storage: Storage;
  beforeEach(() => {
    storage = openDatabase(':memory:');
  });

  it('stores only sha256 of ids and strips jti from payloads, restoring it on read', async () => {
    const adapter = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks())('AccessToken');
    const id = `at-${randomBytes(16).toString('base64url')}`;
    await adapter.upsert(id, { jti: id, grantId: 'g0', accountId: 'a1', clientId: 'c1' }, 60);
    const dump = JSON.stringify(rows(storage));
    expect(dump).not.toContain(id);
    expect(await adapter.find(id)).toMatchObject({ jti: id, accountId: 'a1', clientId: 'c1' });
  });

  it('seals Client and Interaction payloads (client secrets, embedded session ids)', async () => {
    const factory = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks());
    await factory('Client').upsert('client-1', { client_id: 'client-1', client_secret: 'canary-client-secret' });
    await factory('Interaction').upsert('int-1', { session: { cookie: 'canary-session-id' } } as never, 60);
    const dump = JSON.stringify(rows(storage));
    expect(dump).not.toContain('canary-client-secret');
    expect(dump).not.toContain('canary-session-id');
    expect(await factory('Client').find('client-1')).toMatchObject({ client_secret: 'canary-client-secret' });
  });

  it('consumes atomically: the second consumer gets invalid_grant unless the policy forgives it', async () => {
    const factory = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks());
    const codes = factory('AuthorizationCode');
    await codes.upsert('code-1', { grantId: 'g1', clientId: 'c1' }, 60);
    await codes.consume('code-1');
    await expect(codes.consume('code-1')).rejects.toBeInstanceOf(errors.InvalidGrant);

    const forgiving = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks('allow', true))('RefreshToken');
    await forgiving.upsert('rt-1', { grantId: 'g1', clientId: 'c1' }, 60);
    await forgiving.consume('rt-1');
    await expect(forgiving.consume('rt-1')).resolves.toBeUndefined();
  });

  it('asks the replay policy about a consumed artifact and follows its decision', async () => {
    for (const [decision, expected] of [
      ['hide', undefined],
      ['allow', false],
      ['reuse', true],
    ] as const) {
      const policy = hooks(decision);
      const tokens = createAdapterFactory(storage.sqlite, storage.commits, vault, policy)('RefreshToken');
      const id = `rt-${decision}`;
      await tokens.upsert(id, { grantId: 'g2', clientId: 'c1' }, 60);
      await tokens.consume(id);
      const found = await tokens.find(id);
      expect(policy.calls).toEqual(['find:RefreshToken']);
      expect(found === undefined ? undefined : 'consumed' in found).toBe(expected);
    }
  });

  it('finds sessions by uid and revokes every artifact of a grant', async () => {
    const factory = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks());
    await factory('Session').upsert('session-id', { uid: 'uid-1', accountId: 'a1' }, 60);
    expect(await factory('Session').findByUid('uid-1')).toMatchObject({ accountId: 'a1' });
    await factory('AccessToken').upsert('at-g', { grantId: 'g3' }, 60);
    await factory('RefreshToken').upsert('rt-g', { grantId: 'g3' }, 60);
    await factory('AccessToken').revokeByGrantId('g3');
    expect(await factory('AccessToken').find('at-g')).toBeUndefined();
    expect(await factory('RefreshToken').find('rt-g')).toBeDefined();
  });

  it('purges expired rows, keeping codes and refresh tokens a day longer for reuse detection', async () => {
    const factory = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks());
    await factory('AccessToken').upsert('expired-at', { grantId: 'g4' }, 1);
    await factory('RefreshToken').upsert('expired-rt', { grantId: 'g4' }, 1);
    await factory('AccessToken').upsert('live-at', { grantId: 'g4' }, 3600);
    storage.sqlite.prepare('UPDATE oidc_models SET expires_at = expires_at - 10 WHERE expires_at < unixepoch() + 10').run();
    expect(purgeExpired(storage.sqlite)).toBe(1);
    expect(await factory('AccessToken').find('live-at')).toBeDefined();
    expect(rows(storage)).toHaveLength(2);
  });

  it('expires self-registered clients after 90 idle days', async () => {
    const clients = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks())('Client');
    await clients.upsert('idle-client', { client_id: 'idle-client' });
    const [row] = rows(storage);
    expect(Number(row?.expires_at) - Math.floor(Date.now() / 1000)).toBeGreaterThan(89 * 86400);
    storage.sqlite.prepare('UPDATE oidc_models SET expires_at = unixepoch() - 1').run();
    expect(purgeExpired(storage.sqlite)).toBe(1);
    expect(await clients.find('idle-client')).toBeUndefined();
  });
});
