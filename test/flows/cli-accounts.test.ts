import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type FakeOidc, startFakeOidc } from '../support/fake-oidc.ts';
import { type FakeOwnerRez, startFakeOwnerRez } from '../support/fake-ownerrez.ts';
import { connectThroughUpstream, federationEnv, GOOGLE_CLIENT, OWNERREZ_CLIENT } from '../support/federation.ts';
import { startGatehouse, type TestGatehouse } from '../support/gatehouse.ts';
import { INITIALIZE, mcpPost } from '../support/oauth.ts';

const cliEntry = new URL('../../src/cli.ts', import.meta.url).pathname;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

interface UpstreamRow {
  id: string;
  accountId: string;
  provider: string;
  email: string;
  sealed: string;
}

type Session = Awaited<ReturnType<typeof connectThroughUpstream>>;

describe('the account commands (npm run gatehouse -- accounts …) beside a running server', () => {
  let google: FakeOidc;
  let ownerrez: FakeOwnerRez;
  let gatehouse: TestGatehouse;
  let cliEnv: Record<string, string>;
  let cwd: string;
  // ada: Google only. host: OwnerRez only. cyd: OwnerRez, then Google linked in the same browser. dan: Google only.
  let ada: Session;
  let host: Session;
  let cyd: Session;
  let dan: Session;
  const sessions: Session[] = [];

  /** Runs `node src/cli.ts …` as `npm run gatehouse -- …` does, on the running server's database and providers. */
  function cli(args: string[]): Promise<Run> {
    const child = spawn(process.execPath, [cliEntry, ...args], { cwd, env: cliEnv, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (chunk) => {
      stdout += chunk;
    });
    child.stderr.on('data', (chunk) => {
      stderr += chunk;
    });
    return new Promise((resolve) => child.once('close', (code) => resolve({ code, stdout, stderr })));
  }

  /** Reads the database on a connection of its own, closed at once (it must not hold the WAL open). */
  function query<T>(sql: string, ...params: string[]): T[] {
    const sqlite = new Database(gatehouse.databasePath, { readonly: true, fileMustExist: true });
    try {
      return sqlite.prepare<string[], T>(sql).all(...params);
    } finally {
      sqlite.close();
    }
  }

  const upstreamRows = () =>
    query<UpstreamRow>('SELECT id, account_id AS accountId, provider, email, sealed_tokens AS sealed FROM upstream_accounts');
  const upstreamOf = (provider: string, email: string): UpstreamRow => {
    const row = upstreamRows().find((candidate) => candidate.provider === provider && candidate.email === email);
    if (!row) throw new Error(`no ${provider} row for ${email}`);
    return row;
  };
  const accountIds = () => query<{ id: string }>('SELECT id FROM accounts').map(({ id }) => id);

  /** Every byte SQLite has on disk for this database: the main file and the write-ahead log. */
  const databaseBytes = () =>
    [gatehouse.databasePath, `${gatehouse.databasePath}-wal`]
      .filter(existsSync)
      .map((file) => readFileSync(file).toString('latin1'))
      .join('');

  /** The status /mcp gives this session's Gatehouse access token. */
  async function mcpStatus(session: Session): Promise<number> {
    const response = await mcpPost(gatehouse.url, String(session.oauth.tokens()?.access_token), INITIALIZE);
    await response.body?.cancel();
    return response.status;
  }

  beforeAll(async () => {
    google = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
    ownerrez = await startFakeOwnerRez({ clientId: OWNERREZ_CLIENT.id, clientSecret: OWNERREZ_CLIENT.secret });
    const providers = federationEnv({ google, ownerrez });
    gatehouse = await startGatehouse(providers);
    cwd = mkdtempSync(join(tmpdir(), 'gatehouse-cli-accounts-'));
    const { config } = gatehouse;
    cliEnv = {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'test',
      PUBLIC_URL: config.publicUrl,
      DATABASE_PATH: config.databasePath,
      ENCRYPTION_KEYS: config.encryptionKeys.map(({ kid, key }) => `${kid}:${key.toString('base64')}`).join(','),
      COOKIE_SECRET: config.cookieSecrets.join(','),
      ...providers,
    };

    google.user = { email: 'ada@example.com', name: 'Ada Lovelace' };
    ada = await connectThroughUpstream(gatehouse.url, 'google');
    host = await connectThroughUpstream(gatehouse.url, 'ownerrez');
    ownerrez.user = { id: 2002, email: 'cyd@example.com', firstName: 'Cyd', lastName: 'Charisse' };
    cyd = await connectThroughUpstream(gatehouse.url, 'ownerrez');
    google.user = { email: 'cyd@example.com', name: 'Cyd Charisse' };
    // A second MCP client in the same browser: the user is signed in, so the Google account is linked to cyd's account.
    sessions.push(await connectThroughUpstream(gatehouse.url, 'google', { agent: cyd.agent }));
    google.user = { email: 'dan@example.com', name: 'Dan Brown' };
    dan = await connectThroughUpstream(gatehouse.url, 'google');
    sessions.push(ada, host, cyd, dan);
  });

  afterAll(async () => {
    await Promise.all(sessions.map(({ client }) => client.close()));
    await gatehouse?.close();
    await Promise.all([google?.close(), ownerrez?.close()]);
    if (cwd) rmSync(cwd, { recursive: true, force: true });
  });

  it('lists every account with its linked upstream accounts, provider, email and status, and never a token', async () => {
    const cydOwnerRez = upstreamOf('ownerrez', 'cyd@example.com');
    expect(upstreamOf('google', 'cyd@example.com').accountId).toBe(cydOwnerRez.accountId);

    const run = await cli(['accounts', 'list']);
    expect(run.code).toBe(0);
    expect(run.stderr).toBe('');
    const lines = run.stdout.trimEnd().split('\n');
    expect(lines).toHaveLength(4);
    for (const row of upstreamRows()) {
      const line = lines.find((candidate) => candidate.startsWith(`${row.accountId}  created `));
      expect(line, row.email).toContain(`${row.provider} ${row.id} ${row.email} ok`);
    }
    const cydLine = lines.find((line) => line.startsWith(cydOwnerRez.accountId)) as string;
    expect(cydLine).toMatch(
      /^\S+ {2}created \d{4}-\d\d-\d\dT[\d:.]+Z {2}upstream: ownerrez \S+ cyd@example\.com ok; google \S+ cyd@example\.com ok$/,
    );

    const canaries = [...google.issuedTokens(), ...ownerrez.issuedTokens()];
    expect(canaries.length).toBeGreaterThanOrEqual(5);
    const sealed = upstreamRows().flatMap(({ sealed }) => [sealed, ...sealed.split('.').slice(2)]);
    for (const secret of [...canaries, ...sealed]) expect(run.stdout).not.toContain(secret);
  });

  it("disconnects a user's only upstream account: revokes at Google, shreds the row, and the MCP client gets 401", async () => {
    const row = upstreamOf('google', 'ada@example.com');
    const revocations = google.calls.revoke;
    expect(await mcpStatus(ada)).toBe(200);
    expect(databaseBytes()).toContain(row.sealed);

    const run = await cli(['accounts', 'disconnect', row.id]);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(
      [
        `disconnected google account ${row.id} (ada@example.com) from account ${row.accountId}; its sealed grant is deleted`,
        'revoked upstream: yes',
        `account ${row.accountId} has no upstream account left: its Gatehouse access ended (1 grant, with tokens and sessions); ` +
          `\`accounts delete ${row.accountId}\` removes the account`,
        '',
      ].join('\n'),
    );
    expect(run.code).toBe(0);
    expect(google.calls.revoke).toBe(revocations + 1);
    expect(upstreamRows().map(({ id }) => id)).not.toContain(row.id);
    // secure_delete zeroed the row and the CLI truncated the WAL: neither the envelope nor any part of it is on disk.
    const bytes = databaseBytes();
    for (const part of [row.sealed, ...row.sealed.split('.').slice(2)]) expect(bytes.includes(part)).toBe(false);
    expect(await mcpStatus(ada)).toBe(401);

    const list = await cli(['accounts', 'list']);
    expect(list.stdout).toContain(`${row.accountId}  created `);
    expect(list.stdout).toMatch(new RegExp(`${row.accountId} {2}created \\S+ {2}upstream: none\\n`));
  });

  it('disconnects one of several upstream accounts and leaves the Gatehouse access on the others', async () => {
    const row = upstreamOf('google', 'cyd@example.com');
    const revocations = google.calls.revoke;

    const run = await cli(['accounts', 'disconnect', row.id]);
    expect(run.code).toBe(0);
    expect(run.stdout).toContain('revoked upstream: yes\n');
    expect(run.stdout).toContain(`account ${row.accountId} keeps its other upstream accounts and its Gatehouse access\n`);
    expect(google.calls.revoke).toBe(revocations + 1);
    expect(upstreamRows().map(({ id }) => id)).not.toContain(row.id);

    const whoami = await cyd.client.callTool({ name: 'whoami', arguments: {} });
    expect(whoami.isError).toBeFalsy();
    expect(whoami.structuredContent).toMatchObject({ identities: [{ provider: 'ownerrez', status: 'ok' }] });
    expect((whoami.structuredContent as { identities: unknown[] }).identities).toHaveLength(1);
  });

  it("deletes a user: revokes at OwnerRez, removes the account and its rows, ends that user's access and nobody else's", async () => {
    const row = upstreamOf('ownerrez', 'host@example.com');
    const revocations = ownerrez.calls.revoke;
    expect(await mcpStatus(host)).toBe(200);

    const run = await cli(['accounts', 'delete', row.accountId]);
    expect(run.stderr).toBe('');
    expect(run.stdout).toBe(
      [
        `ended the Gatehouse access of account ${row.accountId} (1 grant, with tokens and sessions)`,
        `disconnected ownerrez account ${row.id} (host@example.com): revoked upstream: yes`,
        `deleted account ${row.accountId}`,
        '',
      ].join('\n'),
    );
    expect(run.code).toBe(0);
    expect(ownerrez.calls.revoke).toBe(revocations + 1);
    expect(accountIds()).not.toContain(row.accountId);
    expect(upstreamRows().filter(({ accountId }) => accountId === row.accountId)).toEqual([]);
    expect(databaseBytes().includes(row.sealed)).toBe(false);
    expect(await mcpStatus(host)).toBe(401);
    expect(await mcpStatus(cyd)).toBe(200);
    expect(await mcpStatus(dan)).toBe(200);
  });

  it('deletes the row when the upstream revocation fails, says so, and exits 1', async () => {
    const row = upstreamOf('google', 'dan@example.com');
    google.failNext('revoke', '500');

    const run = await cli(['accounts', 'disconnect', row.id]);
    expect(run.code).toBe(1);
    expect(run.stdout).toMatch(/\nrevoked upstream: failed \(Google [^)\n]+\)\n/);
    expect(run.stdout).toContain('the grant may still be live at google');
    expect(run.stdout).toContain(`account ${row.accountId} has no upstream account left`);
    expect(upstreamRows().map(({ id }) => id)).not.toContain(row.id);
    expect(await mcpStatus(dan)).toBe(401);
  });

  it('refuses unknown ids (exit 1) and malformed commands (exit 2, usage)', async () => {
    const cydAccount = upstreamOf('ownerrez', 'cyd@example.com').accountId;
    const [disconnect, remove, swapped] = await Promise.all([
      cli(['accounts', 'disconnect', 'no-such-upstream-account']),
      cli(['accounts', 'delete', 'no-such-account']),
      cli(['accounts', 'disconnect', cydAccount]),
    ]);
    expect(disconnect).toMatchObject({ code: 1, stdout: '' });
    expect(disconnect.stderr.trim()).toBe('gatehouse accounts disconnect: no upstream account no-such-upstream-account');
    expect(remove).toMatchObject({ code: 1, stdout: '' });
    expect(remove.stderr.trim()).toBe('gatehouse accounts delete: no account no-such-account');
    expect(swapped.code).toBe(1);
    expect(swapped.stderr).toContain('that is a Gatehouse account id (see `accounts delete`)');
    expect(accountIds()).toContain(cydAccount);

    const malformed = [
      ['accounts', 'disconnect'],
      ['accounts', 'delete', 'a', 'b'],
      ['accounts', 'list', 'x'],
    ];
    for (const run of await Promise.all(malformed.map((args) => cli(args)))) {
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toContain('accounts disconnect <upstream-account-id>');
    }
  });
});
