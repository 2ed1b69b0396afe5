import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openDatabase } from '../../src/db/index.ts';
import { startUpstreamLogin } from '../../src/login/upstream-state.ts';
import { loadSigningKeys } from '../../src/oauth/keys.ts';
import { createAccountStore } from '../../src/upstream/accounts.ts';
import { createVault } from '../../src/upstream/vault.ts';

const cliEntry = new URL('../../src/cli.ts', import.meta.url).pathname;
const CANARY = 'canary-cli-upstream-token-93be';
const k0 = randomBytes(32).toString('base64');
const k1 = randomBytes(32).toString('base64');
const dirs: string[] = [];
let dir: string;
let databasePath: string;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node src/cli.ts …` as `npm run gatehouse -- …` does, in its own working directory (no stray .env). */
function cli(args: string[], env: Record<string, string> = {}): Promise<Run> {
  const child = spawn(process.execPath, [cliEntry, ...args], {
    cwd: dir,
    env: {
      PATH: process.env.PATH ?? '',
      NODE_ENV: 'test',
      LOG_LEVEL: 'silent',
      COOKIE_SECRET: 'c'.repeat(40),
      DATABASE_PATH: databasePath,
      ...env,
    },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
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

/** Three sealed values under k0: the signing JWKS, one upstream account, one upstream login. */
function seed(): void {
  const storage = openDatabase(databasePath);
  const vault = createVault([{ kid: 'k0', key: Buffer.from(k0, 'base64') }]);
  loadSigningKeys(storage.db, vault);
  createAccountStore(storage, vault).recordUpstreamLogin({
    provider: 'demo',
    identity: { subject: 'alice' },
    tokens: { accessToken: CANARY, refreshToken: `${CANARY}-refresh` },
  });
  startUpstreamLogin(storage.db, vault, {
    provider: 'demo',
    interactionUid: 'uid-1',
    browserId: 'browser-1',
    redirectUri: 'http://localhost/cb',
  });
  storage.close();
}

/** Every sealed value in the database, and each of its binary parts: none may ever be printed. */
function sealedFragments(): string[] {
  const storage = openDatabase(databasePath);
  const values = storage.sqlite
    .prepare<[], { sealed: string }>(
      `SELECT sealed FROM server_secrets UNION ALL SELECT sealed_tokens FROM upstream_accounts UNION ALL SELECT sealed FROM upstream_logins`,
    )
    .all()
    .map((row) => row.sealed);
  storage.close();
  return values.flatMap((value) => [value, ...value.split('.').slice(2)]);
}

function expectNothingSecret(run: Run): void {
  const output = run.stdout + run.stderr;
  for (const secret of [k0, k1, Buffer.from(k0, 'base64').toString('base64url'), CANARY, ...sealedFragments()]) {
    expect(output).not.toContain(secret);
  }
}

beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'gatehouse-cli-'));
  dirs.push(dir);
  databasePath = join(dir, 'gatehouse.db');
});

afterEach(() => {
  for (const done of dirs.splice(0)) rmSync(done, { recursive: true, force: true });
});

describe('the admin command (npm run gatehouse -- keys …)', () => {
  it('shows counts by kid, rewraps to the primary kid, then says the old kid can be removed', async () => {
    seed();
    const rotating = { ENCRYPTION_KEYS: `k1:${k1},k0:${k0}` };

    const before = await cli(['keys', 'status'], rotating);
    expect(before.code).toBe(0);
    expect(before.stdout).toBe(
      [
        'primary kid: k1',
        'configured kids: k1, k0',
        'sealed values by kid:',
        '  k1: 0',
        '  k0: 3',
        'removable from ENCRYPTION_KEYS now: none',
        'still in use (run `npm run gatehouse -- keys rewrap` first): k0',
        '',
      ].join('\n'),
    );
    expect(before.stderr).toBe('');
    expectNothingSecret(before);

    const rewrap = await cli(['keys', 'rewrap'], rotating);
    expect(rewrap.code).toBe(0);
    expect(rewrap.stdout).toContain('upstream_accounts: 2 rewrapped, 0 failed so far');
    expect(rewrap.stdout).toMatch(/rewrapped 3 values under k1; 0 failed; left under old kids: none\n$/);
    expectNothingSecret(rewrap);

    const after = await cli(['keys', 'status'], rotating);
    expect(after.code).toBe(0);
    expect(after.stdout).toContain('  k1: 3\n  k0: 0\nremovable from ENCRYPTION_KEYS now: k0\n');
    expect(after.stdout).not.toContain('still in use');

    const again = await cli(['keys', 'rewrap'], { ENCRYPTION_KEYS: `k1:${k1}` });
    expect(again.code).toBe(0);
    expect(again.stdout).toContain('rewrapped 0 values under k1; 0 failed; left under old kids: none');
  });

  it('marks a kid that still seals values but is not configured, and refuses to rewrap without it (exit 2)', async () => {
    seed();
    const newKeyOnly = { ENCRYPTION_KEYS: `k1:${k1}` };
    const status = await cli(['keys', 'status'], newKeyOnly);
    expect(status.code).toBe(2);
    expect(status.stdout).toContain('  k0: 3  NOT CONFIGURED: the server refuses to start until this key is back\n');
    expectNothingSecret(status);

    const rewrap = await cli(['keys', 'rewrap'], newKeyOnly);
    expect(rewrap.code).toBe(2);
    expect(rewrap.stdout).toBe('');
    expect(rewrap.stderr.trim()).toBe(
      'gatehouse keys rewrap: ENCRYPTION_KEYS: the database still holds values wrapped under keys that are not configured: ' +
        'kid "k0" (3 sealed values); keep each such key in ENCRYPTION_KEYS until `npm run gatehouse -- keys rewrap` has run',
    );
  });

  it('reports a value that cannot be opened without printing it, rewraps the rest, and exits 1', async () => {
    seed();
    const storage = openDatabase(databasePath);
    const row = storage.sqlite
      .prepare<[], { id: string; sealed: string }>('SELECT id, sealed_tokens AS sealed FROM upstream_accounts')
      .get() as { id: string; sealed: string };
    const parts = row.sealed.split('.');
    const tag = Buffer.from(parts[4] as string, 'base64url');
    tag[0] = (tag[0] as number) ^ 1;
    storage.sqlite
      .prepare('UPDATE upstream_accounts SET sealed_tokens = ? WHERE id = ?')
      .run(parts.with(4, tag.toString('base64url')).join('.'), row.id);
    storage.close();

    const rewrap = await cli(['keys', 'rewrap'], { ENCRYPTION_KEYS: `k1:${k1},k0:${k0}` });
    expect(rewrap.code).toBe(1);
    expect(rewrap.stdout).toMatch(/could not open upstream_accounts row [\w-]{16} \(tampered\): left in place\n/);
    expect(rewrap.stdout).toContain('rewrapped 2 values under k1; 1 failed; left under old kids: k0 1\n');
    expect(rewrap.stdout).not.toContain(row.id);
    expectNothingSecret(rewrap);
  });

  it('reads ENCRYPTION_KEYS from ./.env like the server', async () => {
    seed();
    writeFileSync(join(dir, '.env'), `ENCRYPTION_KEYS=k1:${k1},k0:${k0}\n`);
    const status = await cli(['keys', 'status']);
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('primary kid: k1\nconfigured kids: k1, k0\n');
  });

  it('refuses a DATABASE_PATH with no database instead of creating an empty one (exit 2)', async () => {
    const status = await cli(['keys', 'status'], { ENCRYPTION_KEYS: `k0:${k0}` });
    expect(status.code).toBe(2);
    expect(status.stderr.trim()).toBe(`gatehouse keys status: DATABASE_PATH: no database at ${databasePath}`);
  });

  it('prints usage to stderr and exits 2 for --help, no command or an unknown one', async () => {
    const cases = [[], ['--help'], ['keys'], ['keys', 'rotate'], ['keys', 'status', 'extra'], ['status']];
    const runs = await Promise.all(cases.map((args) => cli(args, { ENCRYPTION_KEYS: `k0:${k0}` })));
    for (const run of runs) {
      expect(run.code).toBe(2);
      expect(run.stdout).toBe('');
      expect(run.stderr).toMatch(/^Usage: npm run gatehouse -- keys <status\|rewrap>\n/);
      expect(run.stderr).toContain('keys rewrap');
    }
  });
});
