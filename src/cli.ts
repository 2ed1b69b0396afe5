// The admin command (`npm run gatehouse -- …`). It prints ids, kids, counts and upstream emails: never keys, tokens or sealed values.
import { existsSync } from 'node:fs';
import { type Config, ConfigError, loadConfig } from './config.ts';
import { openDatabase, type Storage } from './db/index.ts';
import { createToolAudit } from './mcp/audit.ts';
import { revokeAccountAccess } from './oauth/adapter.ts';
import { type AccountAdmin, createAccountAdmin, type Revocation } from './upstream/account-admin.ts';
import type { LinkedAccount } from './upstream/accounts.ts';
import { assertKeyringCovers, countSealedByKid, rewrapSealedRows } from './upstream/key-rotation.ts';
import { createUpstreams } from './upstream/registry.ts';
import { createVault, type Vault } from './upstream/vault.ts';

const USAGE = `Usage: npm run gatehouse -- keys <status|rewrap>
       npm run gatehouse -- accounts <list|disconnect <upstream-account-id>|delete <account-id>>
       npm run gatehouse -- audit [--account <account-id>] [--limit <n>]

  keys status   the primary kid, the configured kids, how many sealed values each kid wraps,
                and which kids can be removed from ENCRYPTION_KEYS now
  keys rewrap   rewrap every sealed value under the primary kid; safe beside a running server,
                and resumable if interrupted

  accounts list           one line per Gatehouse account: its id, when it was created, and each linked
                          upstream account (id, provider, email, ok or dead); never tokens
  accounts disconnect <upstream-account-id>
                          revoke that grant at its provider where the provider can (Google, OwnerRez;
                          Entra cannot), then delete it for good; when it was the account's last upstream
                          account, the account's Gatehouse grants and sessions end too
  accounts delete <account-id>
                          end the account's Gatehouse grants and sessions, disconnect every upstream
                          account (revoking each), and delete the account

  audit                   the latest tool calls (50 unless --limit, at most 10000), newest first, of one
                          account or of everyone: time, account, client, tool, decision (allowed,
                          insufficient_scope, rate_limited_account/_client), outcome, upstream status,
                          duration; never arguments or tokens

Configuration comes from the environment and ./.env, as for npm start (ENCRYPTION_KEYS, DATABASE_PATH, and
the provider variables, so that revocation reaches the configured providers). Safe beside a running server.
Exit status: 0 done; 1 keys: values left under old kids, accounts: unknown id, or an upstream grant that may
still be live (revocation failed or not tried; the rows are deleted anyway); 2 usage or configuration error.`;

const plural = (count: number, noun: string): string => `${count} ${noun}${count === 1 ? '' : 's'}`;

function status(counts: Map<string, number>, vault: Vault): number {
  console.log(`primary kid: ${vault.primaryKid}`);
  console.log(`configured kids: ${vault.kids.join(', ')}`);
  console.log('sealed values by kid:');
  for (const kid of new Set([...vault.kids, ...counts.keys()])) {
    const note = vault.kids.includes(kid) ? '' : '  NOT CONFIGURED: the server refuses to start until this key is back';
    console.log(`  ${kid}: ${counts.get(kid) ?? 0}${note}`);
  }
  const removable = vault.kids.filter((kid) => kid !== vault.primaryKid && !counts.get(kid));
  const waiting = vault.kids.filter((kid) => kid !== vault.primaryKid && counts.get(kid));
  console.log(`removable from ENCRYPTION_KEYS now: ${removable.join(', ') || 'none'}`);
  if (waiting.length > 0) console.log(`still in use (run \`npm run gatehouse -- keys rewrap\` first): ${waiting.join(', ')}`);
  return [...counts.keys()].every((kid) => vault.kids.includes(kid)) ? 0 : 2;
}

function rewrap(storage: Storage, vault: Vault): number {
  // Rows under a kid we do not hold cannot be rewrapped: say so before touching anything.
  assertKeyringCovers(storage.sqlite, vault);
  const result = rewrapSealedRows(storage, vault, {
    onProgress: ({ table, rewrapped, failed }) => console.log(`${table}: ${rewrapped} rewrapped, ${failed} failed so far`),
  });
  for (const { table, rowKeyHash, reason } of result.failures)
    console.log(`could not open ${table} row ${rowKeyHash} (${reason}): left in place`);
  const left = [...result.remaining].map(([kid, count]) => `${kid} ${count}`).join(', ');
  console.log(
    `rewrapped ${plural(result.rewrapped, 'value')} under ${vault.primaryKid}; ${result.failed} failed; left under old kids: ${left || 'none'}`,
  );
  if (result.failed > 0) console.log('Values that cannot be opened keep their kid in use: delete those rows to drop it (users reconnect).');
  else if (result.remaining.size > 0)
    console.log(
      'Values were sealed under an old kid during the run: restart every server with the new ENCRYPTION_KEYS, then run this again.',
    );
  return result.failed > 0 || result.remaining.size > 0 ? 1 : 0;
}

/** Upstream-supplied text (an email) with control characters escaped, so it cannot rewrite the terminal. */
const printable = (text: string): string =>
  text.replace(/[\p{Cc}\p{Cf}\p{Zl}\p{Zp}]/gu, (char) => `\\u${char.codePointAt(0)?.toString(16).padStart(4, '0')}`);

const describeUpstream = ({ provider, id, email }: LinkedAccount): string =>
  `${provider} account ${id} (${email ? printable(email) : 'no email'})`;

function describeRevocation(revocation: Revocation): string {
  if (revocation.result === 'revoked') return 'revoked upstream: yes';
  if (revocation.result === 'unsupported') return 'revoked upstream: not supported by this provider';
  return `revoked upstream: ${revocation.result === 'failed' ? 'failed' : 'no'} (${revocation.reason})`;
}

/** Whether the grant may still be live upstream: the operator's exit status 1. */
const mayBeLive = (revocation: Revocation): boolean => revocation.result === 'failed' || revocation.result === 'skipped';

function listAccounts(admin: AccountAdmin): number {
  const accounts = admin.listAccounts();
  for (const { id, createdAt, upstream } of accounts) {
    const linked = upstream.map(
      ({ provider, id, email, status }) => `${provider} ${id} ${email ? printable(email) : '(no email)'} ${status}`,
    );
    console.log(`${id}  created ${new Date(createdAt).toISOString()}  upstream: ${linked.join('; ') || 'none'}`);
  }
  if (accounts.length === 0) console.log('no accounts');
  return 0;
}

async function disconnectUpstream(admin: AccountAdmin, upstreamAccountId: string): Promise<number> {
  const report = await admin.disconnectUpstream(upstreamAccountId);
  if (!report) {
    const hint = admin.findAccount(upstreamAccountId) ? ': that is a Gatehouse account id (see `accounts delete`)' : '';
    console.error(`gatehouse accounts disconnect: no upstream account ${printable(upstreamAccountId)}${hint}`);
    return 1;
  }
  const { accountId, upstream, revocation, endedGrants } = report;
  console.log(`disconnected ${describeUpstream(upstream)} from account ${accountId}; its sealed grant is deleted`);
  console.log(describeRevocation(revocation));
  if (mayBeLive(revocation)) console.log(`the grant may still be live at ${upstream.provider}: the user can remove the app's access there`);
  if (endedGrants === undefined) console.log(`account ${accountId} keeps its other upstream accounts and its Gatehouse access`);
  else
    console.log(
      `account ${accountId} has no upstream account left: its Gatehouse access ended (${plural(endedGrants, 'grant')}, with tokens and sessions); \`accounts delete ${accountId}\` removes the account`,
    );
  return mayBeLive(revocation) ? 1 : 0;
}

async function deleteAccount(admin: AccountAdmin, accountId: string): Promise<number> {
  const report = await admin.deleteAccount(accountId);
  if (!report) {
    const hint = admin.findUpstream(accountId) ? ': that is an upstream account id (see `accounts disconnect`)' : '';
    console.error(`gatehouse accounts delete: no account ${printable(accountId)}${hint}`);
    return 1;
  }
  console.log(`ended the Gatehouse access of account ${accountId} (${plural(report.endedGrants, 'grant')}, with tokens and sessions)`);
  for (const { upstream, revocation } of report.disconnected)
    console.log(`disconnected ${describeUpstream(upstream)}: ${describeRevocation(revocation)}`);
  console.log(`deleted account ${accountId}`);
  const live = report.disconnected.filter(({ revocation }) => mayBeLive(revocation));
  for (const { upstream } of live) console.log(`the grant of ${upstream.provider} account ${upstream.id} may still be live there`);
  return live.length > 0 ? 1 : 0;
}

function runAccounts(command: string, id: string | undefined, config: Config, storage: Storage, vault: Vault): number | Promise<number> {
  const admin = createAccountAdmin({
    storage,
    vault,
    upstreams: createUpstreams(config).upstreams,
    endAccountAccess: (accountId) => revokeAccountAccess(storage.sqlite, accountId),
  });
  if (command === 'list') return listAccounts(admin);
  const run = command === 'disconnect' ? disconnectUpstream(admin, id as string) : deleteAccount(admin, id as string);
  return run.then(async (code) => {
    // secure_delete zeroed the rows in the database; their earlier copies in the write-ahead log go now.
    if (!(await admin.truncateWal()))
      console.log(
        `note: the write-ahead log was busy; earlier copies of deleted rows stay in ${config.databasePath}-wal until a later checkpoint`,
      );
    return code;
  });
}

function listAudit(storage: Storage, config: Config, accountId: string | undefined, limit: number): number {
  const audit = createToolAudit(storage.sqlite, storage.commits, { retentionDays: config.auditRetentionDays });
  const entries = audit.list({ accountId, limit });
  for (const { at, accountId, clientId, tool, decision, outcome, upstreamStatus, durationMs } of entries) {
    const ended = outcome === null ? '' : ` ${outcome} upstream=${upstreamStatus ?? '-'} ${durationMs}ms`;
    console.log(`${new Date(at).toISOString()}  ${accountId}  ${printable(clientId)}  ${tool}  ${decision}${ended}`);
  }
  if (entries.length === 0) console.log('no tool calls recorded');
  return 0;
}

/** `audit [--account <id>] [--limit <n>]`, in any order. */
function parseAudit(rest: readonly string[]): { id?: string; limit: number } | undefined {
  const options: { id?: string; limit: number } = { limit: 50 };
  for (let index = 0; index < rest.length; index += 2) {
    const [flag, value] = [rest[index], rest[index + 1]];
    if (flag === '--account' && value) options.id = value;
    else if (flag === '--limit' && value && /^[1-9]\d{0,4}$/.test(value) && Number(value) <= 10_000) options.limit = Number(value);
    else return undefined;
  }
  return options;
}

/** Whether `args` is a command this tool has; anything else prints the usage. */
function parse(
  args: readonly string[],
): { group: 'keys' | 'accounts' | 'audit'; command: string; id?: string | undefined; limit?: number } | undefined {
  const [group, command, ...rest] = args;
  if (group === 'audit') {
    const options = parseAudit(args.slice(1));
    return options && { group, command: 'list', ...options };
  }
  if (group === 'keys' && (command === 'status' || command === 'rewrap') && rest.length === 0) return { group, command };
  if (group === 'accounts' && command === 'list' && rest.length === 0) return { group, command };
  if (group === 'accounts' && (command === 'disconnect' || command === 'delete') && rest.length === 1 && rest[0])
    return { group, command, id: rest[0] };
  return undefined;
}

async function main(args: readonly string[]): Promise<number> {
  const parsed = parse(args);
  if (!parsed) {
    console.error(USAGE);
    return 2;
  }
  const { group, command, id, limit } = parsed;
  // A `.env` file in the working directory is read if present, as by the server (real env wins).
  if (existsSync('.env')) process.loadEnvFile('.env');
  try {
    // Of config's development notices only the generated-key one concerns keys (it says which key is in use).
    const config = loadConfig(process.env, (message) => {
      if (message.includes('ENCRYPTION_KEY')) console.warn(message);
    });
    // Opening would create an empty database: a wrong DATABASE_PATH must not look like "nothing sealed".
    if (!existsSync(config.databasePath)) throw new ConfigError('DATABASE_PATH', `no database at ${config.databasePath}`);
    const vault = createVault(config.encryptionKeys);
    const storage = openDatabase(config.databasePath);
    try {
      if (group === 'accounts') return await runAccounts(command, id, config, storage, vault);
      if (group === 'audit') return listAudit(storage, config, id, limit ?? 50);
      return command === 'status' ? status(countSealedByKid(storage.sqlite), vault) : rewrap(storage, vault);
    } finally {
      // Commits the open batch, if any, before the connection closes.
      storage.close();
    }
  } catch (error) {
    if (!(error instanceof ConfigError)) throw error;
    console.error(`gatehouse ${group} ${command}: ${error.message}`);
    return 2;
  }
}

process.exitCode = await main(process.argv.slice(2));
