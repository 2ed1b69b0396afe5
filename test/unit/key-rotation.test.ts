import { createHash, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { errors } from 'oidc-provider';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { ConfigError, type KeyEntry } from '../../src/config.ts';
import { openDatabase, type Storage } from '../../src/db/index.ts';
import { startUpstreamLogin } from '../../src/login/upstream-state.ts';
import { createAdapterFactory, type ReplayHooks } from '../../src/oauth/adapter.ts';
import { loadSigningKeys } from '../../src/oauth/keys.ts';
import { createAccountStore } from '../../src/upstream/accounts.ts';
import { assertKeyringCovers, countSealedByKid, rewrapSealedRows, SEALED_OIDC_MODELS } from '../../src/upstream/key-rotation.ts';
import { createVault, type Vault } from '../../src/upstream/vault.ts';

const k0: KeyEntry = { kid: 'k0', key: randomBytes(32) };
const k1: KeyEntry = { kid: 'k1', key: randomBytes(32) };
const CANARY = 'canary-rotation-upstream-token-5d1e';
const hooks: ReplayHooks = {
  onConsumedFind: () => 'reuse',
  onConsumeRace: () => false,
  raceError: () => new errors.InvalidGrant('already consumed'),
};
const sha256 = (value: string) => createHash('sha256').update(value).digest('base64url');

/** Every sealed row with the AAD its writer used (db/schema.ts, oauth/adapter.ts), written independently of key-rotation.ts. */
function sealedRows(sqlite: Database.Database): { table: string; aad: string; sealed: string }[] {
  const query = (sql: string) => sqlite.prepare<[], { aad: string; sealed: string }>(sql).all();
  return [
    ...query(`SELECT 'server_secret:' || name AS aad, sealed FROM server_secrets`).map((row) => ({ table: 'server_secrets', ...row })),
    ...query(`SELECT 'upstream_account:' || id AS aad, sealed_tokens AS sealed FROM upstream_accounts`).map((row) => ({
      table: 'upstream_accounts',
      ...row,
    })),
    ...query(`SELECT 'upstream_login:' || state_hash AS aad, sealed FROM upstream_logins`).map((row) => ({
      table: 'upstream_logins',
      ...row,
    })),
    ...query(
      `SELECT 'oidc:' || model || ':' || id_hash AS aad, payload AS sealed FROM oidc_models WHERE model IN ('Client', 'Interaction')`,
    ).map((row) => ({ table: 'oidc_models', ...row })),
  ];
}

/** The plaintext of every sealed row, by AAD. */
const openAll = (sqlite: Database.Database, vault: Vault) =>
  Object.fromEntries(sealedRows(sqlite).map(({ aad, sealed }) => [aad, vault.open(aad, sealed).toString('utf8')]));

interface Seeded {
  storage: Storage;
  path: string;
  accountId: string;
  upstreamIds: string[];
  jwks: unknown;
}

/** Seven sealed values under k0, written by the real code paths, plus one plain AccessToken row that must not count. */
async function seed(path: string): Promise<Seeded> {
  const storage = openDatabase(path);
  const vault = createVault([k0]);
  const jwks = loadSigningKeys(storage.db, vault);
  const accounts = createAccountStore(storage, vault);
  const accountId = accounts.recordUpstreamLogin({
    provider: 'demo',
    identity: { subject: 'alice' },
    tokens: { accessToken: `${CANARY}-a` },
  });
  accounts.recordUpstreamLogin({
    provider: 'demo',
    identity: { subject: 'bob' },
    tokens: { accessToken: `${CANARY}-b`, refreshToken: `${CANARY}-r` },
  });
  for (const browserId of ['browser-1', 'browser-2']) {
    startUpstreamLogin(storage.db, vault, {
      provider: 'demo',
      interactionUid: `uid-${browserId}`,
      browserId,
      redirectUri: 'http://localhost/cb',
    });
  }
  const factory = createAdapterFactory(storage.sqlite, storage.commits, vault, hooks);
  await factory('Client').upsert('client-1', { client_id: 'client-1', client_secret: `${CANARY}-client-secret` });
  await factory('Interaction').upsert('interaction-1', { session: { cookie: `${CANARY}-session` } } as never, 600);
  await factory('AccessToken').upsert('at-1', { grantId: 'g1', accountId, clientId: 'client-1' }, 600);
  storage.commits.flush();
  const upstreamIds = storage.sqlite
    .prepare<[], { id: string }>('SELECT id FROM upstream_accounts ORDER BY rowid')
    .all()
    .map((row) => row.id);
  return { storage, path, accountId, upstreamIds, jwks };
}

const dirs: string[] = [];
let seeded: Seeded;
const rotated = createVault([k1, k0]);

beforeEach(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-rotation-'));
  dirs.push(dir);
  seeded = await seed(join(dir, 'gatehouse.db'));
});

afterEach(() => {
  seeded.storage.close();
  for (const dir of dirs.splice(0)) rmSync(dir, { recursive: true, force: true });
});

describe('key rotation of sealed rows', () => {
  it('counts sealed values by kid over every sealed column, and only the sealed oidc models', () => {
    expect(countSealedByKid(seeded.storage.sqlite)).toEqual(new Map([['k0', 7]]));
    expect(new Set(sealedRows(seeded.storage.sqlite).map((row) => row.table))).toEqual(
      new Set(['server_secrets', 'upstream_accounts', 'upstream_logins', 'oidc_models']),
    );
  });

  it('agrees with the adapter on which oidc-provider models are sealed', async () => {
    const factory = createAdapterFactory(seeded.storage.sqlite, seeded.storage.commits, createVault([k0]), hooks);
    const models = ['AccessToken', 'AuthorizationCode', 'RefreshToken', 'Client', 'Interaction', 'Session', 'Grant', 'ReplayDetection'];
    for (const model of models) await factory(model).upsert(`probe-${model}`, { probe: true } as never, 600);
    seeded.storage.commits.flush();
    const sealedModels = seeded.storage.sqlite
      .prepare<[], { model: string }>(`SELECT DISTINCT model FROM oidc_models WHERE payload LIKE 'v1.%' ORDER BY model`)
      .all()
      .map((row) => row.model);
    expect(sealedModels).toEqual([...SEALED_OIDC_MODELS].sort());
  });

  it('rewraps everything under the new primary kid; every value opens with the rotated keyring and with the new key alone', () => {
    const before = openAll(seeded.storage.sqlite, createVault([k0]));
    const progress: number[] = [];
    const result = rewrapSealedRows(seeded.storage, rotated, { batchSize: 2, onProgress: ({ rewrapped }) => progress.push(rewrapped) });

    expect(result).toEqual({ rewrapped: 7, failed: 0, failures: [], remaining: new Map() });
    expect(progress.at(-1)).toBe(7);
    expect(countSealedByKid(seeded.storage.sqlite)).toEqual(new Map([['k1', 7]]));
    expect(openAll(seeded.storage.sqlite, rotated)).toEqual(before);
    const k1Only = createVault([k1]);
    expect(openAll(seeded.storage.sqlite, k1Only)).toEqual(before);

    // The readers the server uses open them too.
    expect(loadSigningKeys(seeded.storage.db, k1Only)).toEqual(seeded.jwks);
    const accounts = createAccountStore(seeded.storage, k1Only);
    expect(accounts.openTokens(seeded.accountId, seeded.upstreamIds[0] as string)).toEqual({ accessToken: `${CANARY}-a` });
  });

  it('reads the rewrapped Client and Interaction through the adapter with the new key alone', async () => {
    rewrapSealedRows(seeded.storage, rotated);
    const factory = createAdapterFactory(seeded.storage.sqlite, seeded.storage.commits, createVault([k1]), hooks);
    expect(await factory('Client').find('client-1')).toMatchObject({ client_secret: `${CANARY}-client-secret` });
    expect(await factory('Interaction').find('interaction-1')).toMatchObject({ session: { cookie: `${CANARY}-session` } });
  });

  it('is idempotent: a second run rewraps nothing', () => {
    rewrapSealedRows(seeded.storage, rotated);
    const after = sealedRows(seeded.storage.sqlite);
    expect(rewrapSealedRows(seeded.storage, rotated)).toEqual({ rewrapped: 0, failed: 0, failures: [], remaining: new Map() });
    expect(sealedRows(seeded.storage.sqlite)).toEqual(after);
  });

  it('resumes after an interrupted run: each committed batch stays, the rest is done next time', () => {
    const interrupt = () => {
      throw new Error('interrupted');
    };
    expect(() => rewrapSealedRows(seeded.storage, rotated, { batchSize: 1, onProgress: interrupt })).toThrow('interrupted');
    expect(countSealedByKid(seeded.storage.sqlite)).toEqual(
      new Map([
        ['k1', 1],
        ['k0', 6],
      ]),
    );

    const resumed = rewrapSealedRows(seeded.storage, rotated, { batchSize: 1 });
    expect(resumed.rewrapped).toBe(6);
    expect(resumed.remaining).toEqual(new Map());
    expect(countSealedByKid(seeded.storage.sqlite)).toEqual(new Map([['k1', 7]]));
  });

  it('reports a value that does not open by table and row key hash, leaves it, does not loop, and rewraps the rest', () => {
    const { sqlite } = seeded.storage;
    const bob = seeded.upstreamIds[1] as string;
    const bobSealed = sqlite
      .prepare<[string], { sealed: string }>('SELECT sealed_tokens AS sealed FROM upstream_accounts WHERE id = ?')
      .get(bob) as { sealed: string };
    const parts = bobSealed.sealed.split('.');
    const wrapped = Buffer.from(parts[2] as string, 'base64url');
    wrapped[20] = (wrapped[20] as number) ^ 1;
    const tampered = parts.with(2, wrapped.toString('base64url')).join('.');
    sqlite.prepare('UPDATE upstream_accounts SET sealed_tokens = ? WHERE id = ?').run(tampered, bob);
    const loginHash = sqlite
      .prepare<[], { hash: string }>('SELECT state_hash AS hash FROM upstream_logins ORDER BY rowid LIMIT 1')
      .get()?.hash;
    sqlite.prepare('UPDATE upstream_logins SET sealed = ? WHERE state_hash = ?').run('v1.k0.not-an-envelope', loginHash);

    let batches = 0;
    const result = rewrapSealedRows(seeded.storage, rotated, { batchSize: 1, onProgress: () => batches++ });

    expect(result.rewrapped).toBe(5);
    expect(result.failed).toBe(2);
    expect(result.failures).toEqual([
      { table: 'upstream_accounts', rowKeyHash: sha256(`upstream_account:${bob}`).slice(0, 16), reason: 'tampered' },
      { table: 'upstream_logins', rowKeyHash: sha256(`upstream_login:${loginHash}`).slice(0, 16), reason: 'malformed' },
    ]);
    expect(result.remaining).toEqual(new Map([['k0', 2]]));
    // One pass over 7 rows, then one that finds only the two failures and ends.
    expect(batches).toBe(9);
    expect(sqlite.prepare('SELECT sealed_tokens AS sealed FROM upstream_accounts WHERE id = ?').get(bob)).toEqual({ sealed: tampered });
    const report = JSON.stringify(result.failures);
    for (const part of tampered.split('.').slice(2)) expect(report).not.toContain(part);
    expect(report).not.toContain(loginHash);
  });

  it('does not clobber a value the server rewrote, or resurrect a row it deleted, between the read and the write', () => {
    const second = new Database(seeded.path);
    second.pragma('busy_timeout = 5000');
    const alice = seeded.upstreamIds[0] as string;
    const aliceAad = `upstream_account:${alice}`;
    const oldServer = createVault([k0]);
    let raced = 0;
    // The other connection plays a running server still on the old keyring: it refreshes alice's
    // tokens (sealing under k0) and purges the Client while the rewrap holds their old values.
    const racing: Vault = {
      ...rotated,
      rewrap(aad, sealed) {
        const rewrapped = rotated.rewrap(aad, sealed);
        if (aad === aliceAad && raced++ === 0) {
          second
            .prepare('UPDATE upstream_accounts SET sealed_tokens = ?, version = version + 1 WHERE id = ?')
            .run(oldServer.sealJson(aad, { accessToken: `${CANARY}-refreshed` }), alice);
        }
        if (aad.startsWith('oidc:Client:')) second.prepare(`DELETE FROM oidc_models WHERE model = 'Client'`).run();
        return rewrapped;
      },
    };

    const result = rewrapSealedRows(seeded.storage, racing);
    second.close();

    // Alice's refreshed value was kept, then rewrapped in the next pass; the deleted Client stays deleted.
    expect(createAccountStore(seeded.storage, createVault([k1])).openTokens(seeded.accountId, alice)).toEqual({
      accessToken: `${CANARY}-refreshed`,
    });
    expect(seeded.storage.sqlite.prepare(`SELECT COUNT(*) AS n FROM oidc_models WHERE model = 'Client'`).get()).toEqual({ n: 0 });
    expect(result).toMatchObject({ rewrapped: 6, failed: 0, remaining: new Map() });
    expect(countSealedByKid(seeded.storage.sqlite)).toEqual(new Map([['k1', 6]]));
  });

  it('refuses a keyring without a kid that still seals rows, naming the kid and its count, until the rewrap has run', () => {
    const k1Only = createVault([k1]);
    let error: unknown;
    try {
      assertKeyringCovers(seeded.storage.sqlite, k1Only);
    } catch (thrown) {
      error = thrown;
    }
    expect(error).toBeInstanceOf(ConfigError);
    expect((error as Error).message).toBe(
      'ENCRYPTION_KEYS: the database still holds values wrapped under keys that are not configured: kid "k0" (7 sealed values); ' +
        'keep each such key in ENCRYPTION_KEYS until `npm run gatehouse -- keys rewrap` has run',
    );
    expect((error as Error).message).not.toContain(k0.key.toString('base64'));
    expect(() => assertKeyringCovers(seeded.storage.sqlite, rotated)).not.toThrow();

    rewrapSealedRows(seeded.storage, rotated);
    expect(() => assertKeyringCovers(seeded.storage.sqlite, k1Only)).not.toThrow();
  });
});
