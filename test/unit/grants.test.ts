import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { Worker } from 'node:worker_threads';
import { afterEach, describe, expect, it } from 'vitest';
import { openDatabase, type Storage } from '../../src/db/index.ts';
import { createAccountStore } from '../../src/upstream/accounts.ts';
import { createGrants, type GrantsOptions } from '../../src/upstream/grants.ts';
import { UpstreamGrantError, type UpstreamProvider, type UpstreamTokens } from '../../src/upstream/types.ts';
import { withUpstreamTokens } from '../../src/upstream/upstream-call.ts';
import { createVault } from '../../src/upstream/vault.ts';

const KEY = randomBytes(32);
const nowSeconds = () => Math.floor(Date.now() / 1000);
const cleanups: (() => void)[] = [];
afterEach(() => {
  for (const cleanup of cleanups.splice(0).reverse()) cleanup();
});

/** An upstream whose refresh counts its calls, can be slowed down or made to fail, and answers canary tokens. */
function fakeUpstream(counter = new Int32Array(new SharedArrayBuffer(4))) {
  const upstream = {
    id: 'test',
    label: 'Test',
    counter,
    get calls() {
      return Atomics.load(counter, 0);
    },
    delayMs: 0,
    failWith: undefined as unknown,
    omitRefreshToken: false,
    tag: '',
    revoked: [] as UpstreamTokens[],
    revokeFailsWith: undefined as unknown,
    startLogin: async () => new URL('https://upstream.test/authorize'),
    finishLogin: async () => {
      throw new Error('not used here');
    },
    async refresh(tokens: UpstreamTokens): Promise<UpstreamTokens> {
      const n = Atomics.add(counter, 0, 1) + 2;
      expect(tokens.refreshToken).toMatch(/^CANARY-rt-/);
      await sleep(upstream.delayMs);
      if (upstream.failWith) throw upstream.failWith;
      const refreshToken = upstream.omitRefreshToken ? undefined : `CANARY-rt-${n}`;
      return { accessToken: `CANARY-at-${n}${upstream.tag}`, refreshToken, expiresAt: nowSeconds() + 3600 };
    },
    async revoke(tokens: UpstreamTokens): Promise<void> {
      upstream.revoked.push(tokens);
      if (upstream.revokeFailsWith) throw upstream.revokeFailsWith;
    },
  } satisfies UpstreamProvider & Record<string, unknown>;
  return upstream;
}

/** OwnerRez-like: no refresh grant at all. */
const noRefreshUpstream: UpstreamProvider = {
  id: 'test',
  label: 'Test',
  startLogin: async () => new URL('https://upstream.test/authorize'),
  finishLogin: async () => {
    throw new Error('not used here');
  },
};

interface Setup {
  path: string;
  storage: Storage;
  accountId: string;
  id: string;
  dead: [string, string][];
  grants: ReturnType<typeof createGrants>;
  row(): { status: string; version: number; leaseOwner: string | null; sealed: string } | undefined;
  stored(): UpstreamTokens | undefined;
  seal(tokens: UpstreamTokens): string;
}

function setup(upstream: UpstreamProvider, tokens: Partial<UpstreamTokens> = {}, extra: Partial<GrantsOptions> = {}): Setup {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-grants-'));
  const path = join(dir, 'test.db');
  const storage = openDatabase(path);
  cleanups.push(() => rmSync(dir, { recursive: true, force: true }));
  cleanups.push(() => storage.close());
  const vault = createVault([{ kid: 'k0', key: KEY }]);
  const store = createAccountStore(storage, vault);
  const accountId = store.recordUpstreamLogin({
    provider: 'test',
    identity: { subject: 'alice', email: 'alice@example.test' },
    tokens: { accessToken: 'CANARY-at-1', refreshToken: 'CANARY-rt-1', expiresAt: nowSeconds() + 3600, ...tokens },
  });
  const id = store.findAccount(accountId)?.upstream[0]?.id as string;
  const dead: [string, string][] = [];
  const grants = createGrants({
    sqlite: storage.sqlite,
    commits: storage.commits,
    vault,
    upstreams: new Map([['test', upstream]]),
    onGrantDead: (...args) => dead.push(args),
    ...extra,
  });
  const selectRow = storage.sqlite.prepare(
    'SELECT status, version, lease_owner AS leaseOwner, sealed_tokens AS sealed FROM upstream_accounts WHERE id = ?',
  );
  return {
    path,
    storage,
    accountId,
    id,
    dead,
    grants,
    row: () => selectRow.get(id) as ReturnType<Setup['row']>,
    stored: () => store.openTokens(accountId, id),
    seal: (value) => vault.sealJson(`upstream_account:${id}`, value),
  };
}

async function rejectionOf(promise: Promise<unknown>): Promise<UpstreamGrantError> {
  const error = await promise.then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(UpstreamGrantError);
  return error as UpstreamGrantError;
}

describe('just-in-time refresh of upstream grants (DESIGN.md §3)', () => {
  it('returns tokens still good beyond the skew without refreshing or writing', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    expect((await t.grants.freshTokens(t.accountId, t.id)).accessToken).toBe('CANARY-at-1');
    expect(upstream.calls).toBe(0);
    expect(t.row()?.version).toBe(0);
  });

  it('refreshes exactly once when the token expires within five minutes, and stores the result', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream, { expiresAt: nowSeconds() + 120 });
    const tokens = await t.grants.freshTokens(t.accountId, t.id);
    expect(tokens).toMatchObject({ accessToken: 'CANARY-at-2', refreshToken: 'CANARY-rt-2' });
    expect(upstream.calls).toBe(1);
    expect(t.stored()).toEqual(tokens);
    expect(t.row()).toMatchObject({ status: 'ok', version: 1, leaseOwner: null });
    await t.grants.freshTokens(t.accountId, t.id);
    expect(upstream.calls).toBe(1);
  });

  it('shares one refresh among 20 concurrent callers', async () => {
    const upstream = fakeUpstream();
    upstream.delayMs = 50;
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const results = await Promise.all(Array.from({ length: 20 }, () => t.grants.freshTokens(t.accountId, t.id)));
    expect(upstream.calls).toBe(1);
    expect(new Set(results.map((tokens) => tokens.accessToken))).toEqual(new Set(['CANARY-at-2']));
  });

  it('keeps the old refresh token when the response has none (Google)', async () => {
    const upstream = fakeUpstream();
    upstream.omitRefreshToken = true;
    const t = setup(upstream, { expiresAt: nowSeconds() - 10, scope: 'openid email' });
    const tokens = await t.grants.freshTokens(t.accountId, t.id);
    expect(tokens).toMatchObject({ accessToken: 'CANARY-at-2', refreshToken: 'CANARY-rt-1', scope: 'openid email' });
    expect(t.stored()).toEqual(tokens);
  });
});

describe('the refresh lease across processes', () => {
  it('lets only one of two processes refresh when 20 callers split across both ask at once', async () => {
    const upstream = fakeUpstream();
    upstream.delayMs = 300;
    upstream.tag = '-main';
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const other = startOtherProcess(t.path, upstream.counter);
    cleanups.push(() => void other.worker.terminate());
    await other.ready;
    other.worker.postMessage({ accountId: t.accountId, id: t.id });
    const [mine, theirs] = await Promise.all([
      Promise.all(Array.from({ length: 10 }, () => t.grants.freshTokens(t.accountId, t.id).then((tokens) => tokens.accessToken))),
      other.results,
    ]);
    expect(upstream.calls).toBe(1);
    const all = [...mine, ...theirs];
    expect(all).toHaveLength(20);
    expect(new Set(all).size).toBe(1);
    expect(all[0]).toMatch(/^CANARY-at-2-(main|worker)$/);
    expect(t.stored()?.accessToken).toBe(all[0]);
  });

  it('waits for a lease another process holds, then takes the tokens it wrote without calling upstream', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    t.storage.sqlite
      .prepare("UPDATE upstream_accounts SET lease_owner = 'other', lease_expires_at = ? WHERE id = ?")
      .run(Date.now() + 30_000, t.id);
    const pending = t.grants.freshTokens(t.accountId, t.id);
    await sleep(250);
    const theirs = { accessToken: 'CANARY-at-other', refreshToken: 'CANARY-rt-other', expiresAt: nowSeconds() + 3600 };
    t.storage.sqlite
      .prepare(
        'UPDATE upstream_accounts SET sealed_tokens = ?, version = version + 1, lease_owner = NULL, lease_expires_at = NULL WHERE id = ?',
      )
      .run(t.seal(theirs), t.id);
    expect(await pending).toEqual(theirs);
    expect(upstream.calls).toBe(0);
  });

  it('takes over the lease of a process that died holding it', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    t.storage.sqlite
      .prepare("UPDATE upstream_accounts SET lease_owner = 'crashed', lease_expires_at = ? WHERE id = ?")
      .run(Date.now() - 1, t.id);
    expect((await t.grants.freshTokens(t.accountId, t.id)).accessToken).toBe('CANARY-at-2');
    expect(upstream.calls).toBe(1);
  });

  it('does not clobber tokens written by someone else while its refresh was pending (compare-and-set)', async () => {
    const upstream = fakeUpstream();
    upstream.delayMs = 100;
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const pending = t.grants.freshTokens(t.accountId, t.id);
    await sleep(30);
    const theirs = { accessToken: 'CANARY-at-other', refreshToken: 'CANARY-rt-other', expiresAt: nowSeconds() + 3600 };
    t.storage.sqlite
      .prepare('UPDATE upstream_accounts SET sealed_tokens = ?, version = version + 1 WHERE id = ?')
      .run(t.seal(theirs), t.id);
    expect(await pending).toEqual(theirs);
    expect(upstream.calls).toBe(1);
    expect(t.stored()).toEqual(theirs);
    expect(t.row()?.version).toBe(1);
  });
});

describe('terminal and transient failures', () => {
  it('marks the grant dead on invalid_grant, tells the app once, and never calls upstream again', async () => {
    const upstream = fakeUpstream();
    upstream.delayMs = 20;
    upstream.failWith = new UpstreamGrantError('terminal', 'The upstream refused the refresh token (invalid_grant).');
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const errors = await Promise.all(Array.from({ length: 5 }, () => rejectionOf(t.grants.freshTokens(t.accountId, t.id))));
    expect(errors.map((error) => error.kind)).toEqual(Array(5).fill('terminal'));
    expect(t.row()).toMatchObject({ status: 'dead', leaseOwner: null });
    expect(t.dead).toEqual([[t.accountId, t.id]]);
    expect((await rejectionOf(t.grants.freshTokens(t.accountId, t.id))).kind).toBe('terminal');
    expect(upstream.calls).toBe(1);
    expect(t.dead).toHaveLength(1);
  });

  it('reports a timeout or 5xx as transient and changes nothing: tokens kept, status ok, lease released', async () => {
    const upstream = fakeUpstream();
    upstream.failWith = new UpstreamGrantError('transient', 'The upstream timed out.', 7);
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const before = t.row()?.sealed;
    const error = await rejectionOf(t.grants.freshTokens(t.accountId, t.id));
    expect(error).toMatchObject({ kind: 'transient', retryAfter: 7 });
    expect(t.row()).toMatchObject({ status: 'ok', version: 0, leaseOwner: null, sealed: before });
    expect(t.dead).toEqual([]);
    upstream.failWith = undefined;
    expect((await t.grants.freshTokens(t.accountId, t.id)).accessToken).toBe('CANARY-at-3');
    expect(upstream.calls).toBe(2);
  });

  it('turns any other provider error into a transient one without its text', async () => {
    const upstream = fakeUpstream();
    upstream.failWith = new Error('upstream said: {"error":"server_error","token":"CANARY-rt-1"}');
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const error = await rejectionOf(t.grants.freshTokens(t.accountId, t.id));
    expect(error.kind).toBe('transient');
    expect(error.message).not.toMatch(/CANARY|server_error/);
    expect(t.row()).toMatchObject({ status: 'ok', leaseOwner: null });
  });

  it('tells the app once when two processes find the same tampered row', async () => {
    const t = setup(fakeUpstream());
    const second = createGrants({
      sqlite: t.storage.sqlite,
      commits: t.storage.commits,
      vault: createVault([{ kid: 'k0', key: KEY }]),
      upstreams: new Map(),
      onGrantDead: (...args) => t.dead.push(args),
    });
    t.storage.sqlite.prepare("UPDATE upstream_accounts SET sealed_tokens = 'v1.k0.garbage' WHERE id = ?").run(t.id);
    const errors = await Promise.all([t.grants, second].map((grants) => rejectionOf(grants.freshTokens(t.accountId, t.id))));
    expect(errors.map((error) => error.kind)).toEqual(['terminal', 'terminal']);
    expect(t.dead).toEqual([[t.accountId, t.id]]);
  });

  it('without a refresh grant, hands out a token that has not expired yet', async () => {
    const t = setup(noRefreshUpstream, { refreshToken: undefined, expiresAt: nowSeconds() + 60 });
    expect((await t.grants.freshTokens(t.accountId, t.id)).accessToken).toBe('CANARY-at-1');
    expect(t.row()?.status).toBe('ok');
  });

  it('without a refresh grant, an expired token kills the grant (reconnect)', async () => {
    const t = setup(noRefreshUpstream, { refreshToken: undefined, expiresAt: nowSeconds() - 1 });
    expect((await rejectionOf(t.grants.freshTokens(t.accountId, t.id))).kind).toBe('terminal');
    expect(t.row()?.status).toBe('dead');
    expect(t.dead).toEqual([[t.accountId, t.id]]);
  });

  it('treats a tampered row as a dead grant instead of crashing', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    const sealed = t.row()?.sealed as string;
    const tampered = `${sealed.slice(0, -2)}${sealed.at(-2) === 'A' ? 'B' : 'A'}${sealed.slice(-1)}`;
    t.storage.sqlite.prepare('UPDATE upstream_accounts SET sealed_tokens = ? WHERE id = ?').run(tampered, t.id);
    expect((await rejectionOf(t.grants.freshTokens(t.accountId, t.id))).kind).toBe('terminal');
    expect(t.row()?.status).toBe('dead');
    expect(t.dead).toEqual([[t.accountId, t.id]]);
    expect(upstream.calls).toBe(0);
  });

  it("never hands out or touches another account's grant", async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream, { expiresAt: nowSeconds() - 1 });
    const error = await rejectionOf(t.grants.freshTokens('someone-else', t.id));
    expect(error).toMatchObject({ kind: 'terminal', message: 'This upstream account is not connected.' });
    await rejectionOf(t.grants.refreshAfterRejection('someone-else', t.id, { accessToken: 'CANARY-at-1' }));
    await t.grants.disconnect('someone-else', t.id);
    expect(upstream.calls).toBe(0);
    expect(upstream.revoked).toEqual([]);
    expect(t.row()).toMatchObject({ status: 'ok', version: 0 });
  });
});

describe('refresh after the upstream API answered 401', () => {
  it('refreshes once even though the token is far from expiry', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    const rejected = await t.grants.freshTokens(t.accountId, t.id);
    const results = await Promise.all([1, 2, 3].map(() => t.grants.refreshAfterRejection(t.accountId, t.id, rejected)));
    expect(results.map((tokens) => tokens.accessToken)).toEqual(['CANARY-at-2', 'CANARY-at-2', 'CANARY-at-2']);
    expect(upstream.calls).toBe(1);
  });

  it('returns the replacement without refreshing when someone already replaced the rejected token', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    const rejected = await t.grants.freshTokens(t.accountId, t.id);
    await t.grants.refreshAfterRejection(t.accountId, t.id, rejected);
    expect((await t.grants.refreshAfterRejection(t.accountId, t.id, rejected)).accessToken).toBe('CANARY-at-2');
    expect(upstream.calls).toBe(1);
  });

  it('retries a rejected call once with refreshed tokens, and retires the grant when those are rejected too', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    const seen: string[] = [];
    const call = async (tokens: UpstreamTokens) => {
      seen.push(tokens.accessToken);
      if (tokens.accessToken === 'CANARY-at-1') throw new UpstreamGrantError('terminal', 'rejected');
      return 'ok';
    };
    expect(await withUpstreamTokens(t.grants, t.accountId, t.id, call)).toBe('ok');
    expect(seen).toEqual(['CANARY-at-1', 'CANARY-at-2']);
    expect(t.row()?.status).toBe('ok');

    const alwaysRejected = async (tokens: UpstreamTokens) => {
      seen.push(tokens.accessToken);
      throw new UpstreamGrantError('terminal', 'rejected');
    };
    expect((await rejectionOf(withUpstreamTokens(t.grants, t.accountId, t.id, alwaysRejected))).kind).toBe('terminal');
    expect(seen.slice(2)).toEqual(['CANARY-at-2', 'CANARY-at-3']);
    expect(upstream.calls).toBe(2);
    expect(t.row()?.status).toBe('dead');
    expect(t.dead).toEqual([[t.accountId, t.id]]);
  });

  it('does not retire a grant whose rejected tokens were already replaced by someone else', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    const old = await t.grants.freshTokens(t.accountId, t.id);
    await t.grants.refreshAfterRejection(t.accountId, t.id, old);
    await t.grants.retire(t.accountId, t.id, old);
    expect(t.row()?.status).toBe('ok');
    expect(t.dead).toEqual([]);
  });

  it('kills the grant when the rejected token cannot be refreshed', async () => {
    const t = setup(noRefreshUpstream, { refreshToken: undefined });
    expect((await rejectionOf(t.grants.refreshAfterRejection(t.accountId, t.id, { accessToken: 'CANARY-at-1' }))).kind).toBe('terminal');
    expect(t.row()?.status).toBe('dead');
    expect(t.dead).toHaveLength(1);
  });
});

describe('disconnect and account deletion', () => {
  it('revokes upstream, then deletes the row so the sealed grant is gone from the database file', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    const sealed = t.row()?.sealed as string;
    t.storage.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    const ciphertext = sealed.split('.').at(-1) as string;
    expect(readFileSync(t.path).includes(ciphertext)).toBe(true);
    await t.grants.disconnect(t.accountId, t.id);
    expect(upstream.revoked).toEqual([expect.objectContaining({ accessToken: 'CANARY-at-1', refreshToken: 'CANARY-rt-1' })]);
    expect(t.row()).toBeUndefined();
    t.storage.sqlite.pragma('wal_checkpoint(TRUNCATE)');
    expect(readFileSync(t.path).includes(ciphertext)).toBe(false);
  });

  it('lets a refresh in flight land before disconnecting, so the newest grant is the one revoked', async () => {
    const upstream = fakeUpstream();
    upstream.delayMs = 100;
    const t = setup(upstream, { expiresAt: nowSeconds() + 60 });
    const pending = t.grants.freshTokens(t.accountId, t.id);
    await sleep(10);
    await t.grants.disconnect(t.accountId, t.id);
    expect((await pending).accessToken).toBe('CANARY-at-2');
    expect(upstream.revoked.map((tokens) => tokens.accessToken)).toEqual(['CANARY-at-2']);
    expect(t.row()).toBeUndefined();
  });

  it('deletes the row even when the upstream revocation fails, and reports the failure without its text', async () => {
    const upstream = fakeUpstream();
    upstream.revokeFailsWith = new Error('503 from upstream: CANARY-body');
    const failures: [string, UpstreamGrantError][] = [];
    const t = setup(upstream, {}, { onRevokeFailed: (...args) => failures.push(args) });
    await t.grants.disconnect(t.accountId, t.id);
    expect(t.row()).toBeUndefined();
    expect(failures).toHaveLength(1);
    expect(failures[0]?.[1].message).not.toMatch(/CANARY/);
  });

  it('deletes an account with all its upstream accounts', async () => {
    const upstream = fakeUpstream();
    const t = setup(upstream);
    createAccountStore(t.storage, createVault([{ kid: 'k0', key: KEY }])).recordUpstreamLogin({
      provider: 'test',
      identity: { subject: 'alice-second' },
      tokens: { accessToken: 'CANARY-at-second' },
      signedInAccountId: t.accountId,
    });
    await t.grants.deleteAccount(t.accountId);
    expect(upstream.revoked.map((tokens) => tokens.accessToken).sort()).toEqual(['CANARY-at-1', 'CANARY-at-second']);
    const count = (sql: string) => (t.storage.sqlite.prepare(sql).get(t.accountId) as { n: number }).n;
    expect(count('SELECT COUNT(*) AS n FROM upstream_accounts WHERE account_id = ?')).toBe(0);
    expect(count('SELECT COUNT(*) AS n FROM accounts WHERE id = ?')).toBe(0);
  });
});

/**
 * A second "process": a worker thread with its own SQLite connection, Grants and upstream (sharing the
 * call counter). A thread, not a second connection on this one, because a writer blocked on the other
 * connection's open batch would stall the very event loop that has to commit it.
 */
function startOtherProcess(path: string, counter: Int32Array) {
  const source = (file: string) => new URL(`../../src/${file}`, import.meta.url).href;
  const worker = new Worker(
    `
    const { parentPort, workerData } = require('node:worker_threads');
    (async () => {
      const { openDatabase } = await import(workerData.db);
      const { createVault } = await import(workerData.vault);
      const { createGrants } = await import(workerData.grants);
      const storage = openDatabase(workerData.path);
      const counter = new Int32Array(workerData.counter);
      const upstream = {
        id: 'test', label: 'Test',
        async startLogin() { throw new Error('unused'); },
        async finishLogin() { throw new Error('unused'); },
        async refresh() {
          const n = Atomics.add(counter, 0, 1) + 2;
          await new Promise((resolve) => setTimeout(resolve, 300));
          return { accessToken: 'CANARY-at-' + n + '-worker', refreshToken: 'CANARY-rt-' + n, expiresAt: Math.floor(Date.now() / 1000) + 3600 };
        },
      };
      const grants = createGrants({
        sqlite: storage.sqlite, commits: storage.commits, upstreams: new Map([['test', upstream]]),
        vault: createVault([{ kid: 'k0', key: Buffer.from(workerData.key) }]), onGrantDead() {},
      });
      parentPort.once('message', async ({ accountId, id }) => {
        const results = await Promise.allSettled(Array.from({ length: 10 }, () => grants.freshTokens(accountId, id)));
        storage.close();
        parentPort.postMessage(results.map((result) => result.status === 'fulfilled' ? result.value.accessToken : String(result.reason)));
      });
      parentPort.postMessage('ready');
    })();
    `,
    {
      eval: true,
      workerData: {
        path,
        counter: counter.buffer,
        key: new Uint8Array(KEY),
        db: source('db/index.ts'),
        vault: source('upstream/vault.ts'),
        grants: source('upstream/grants.ts'),
      },
    },
  );
  // `once` rejects on the worker's 'error' event, so a crash in the other process fails the test.
  const ready = once(worker, 'message');
  return { worker, ready, results: ready.then(() => once(worker, 'message')).then(([results]) => results as string[]) };
}
