import { setTimeout as sleep } from 'node:timers/promises';
import type { Storage } from '../db/index.ts';
import type { LinkedAccount } from './accounts.ts';
import { createGrants } from './grants.ts';
import type { UpstreamGrantError, UpstreamProvider, UpstreamTokens } from './types.ts';
import type { Vault } from './vault.ts';

/** A TRUNCATE checkpoint is retried this often, this far apart, while other connections keep the WAL busy. */
const TRUNCATE_ATTEMPTS = 50;
const TRUNCATE_RETRY_MS = 20;

/** A Gatehouse account as the operator sees it: identities and status, never tokens. */
export interface AccountListing {
  id: string;
  /** Epoch milliseconds. */
  createdAt: number;
  upstream: LinkedAccount[];
}

/**
 * What happened to the grant upstream before its row was shredded. `unsupported`: the provider has no
 * revocation (Entra, the demo). `skipped`: it was not attempted (provider not enabled here, or the
 * sealed grant cannot be opened); `failed`: attempted, not confirmed. After either, the grant may
 * still be live upstream. Reasons are safe to print (UpstreamGrantError messages, never a body).
 */
export type Revocation = { result: 'revoked' } | { result: 'unsupported' } | { result: 'skipped' | 'failed'; reason: string };

export interface Disconnected {
  accountId: string;
  upstream: LinkedAccount;
  revocation: Revocation;
}

export interface DisconnectReport extends Disconnected {
  /** Set when this was the account's last upstream account: how many Gatehouse grants ended with it. */
  endedGrants: number | undefined;
}

export interface DeleteReport {
  accountId: string;
  disconnected: Disconnected[];
  /** Gatehouse grants (with their tokens and the account's sessions) that ended. */
  endedGrants: number;
}

export interface AccountAdminOptions {
  storage: Pick<Storage, 'sqlite' | 'commits'>;
  vault: Vault;
  /** The configured providers (`createUpstreams(config)`), so revocation reaches the real IdPs. */
  upstreams: ReadonlyMap<string, UpstreamProvider>;
  /** Ends every Gatehouse grant, token and session of the account (`revokeAccountAccess`); returns the grants ended. */
  endAccountAccess(accountId: string): number;
}

/** The operator's actions on users' grants (`npm run gatehouse -- accounts …`). One call at a time. */
export interface AccountAdmin {
  listAccounts(): AccountListing[];
  /** Undefined for an unknown id. */
  findAccount(accountId: string): AccountListing | undefined;
  findUpstream(upstreamAccountId: string): UpstreamAccount | undefined;
  /**
   * Revokes upstream where the provider can, then deletes the row (crypto-shred: its data key existed
   * only in that row, and secure_delete zeroes it). When it was the account's last upstream account,
   * the account's Gatehouse access ends too: nothing can act upstream for it any more, and only that
   * upstream identity could sign into it. The account row stays until `deleteAccount`.
   */
  disconnectUpstream(upstreamAccountId: string): Promise<DisconnectReport | undefined>;
  /** Ends the account's Gatehouse access, disconnects every upstream account (revoking each), deletes the account. */
  deleteAccount(accountId: string): Promise<DeleteReport | undefined>;
  /**
   * Truncates the write-ahead log, so the copies of shredded rows written before the delete leave the
   * disk now rather than whenever later frames overwrite them. False if other connections kept it busy
   * for a second (a running server's checkpointer takes the checkpoint lock for a moment every 100 ms).
   */
  truncateWal(): Promise<boolean>;
}

/** An upstream account with the Gatehouse account it is linked to. */
export type UpstreamAccount = LinkedAccount & { accountId: string };
type ListingRow = { accountId: string; createdAt: number } & { [K in keyof LinkedAccount]: LinkedAccount[K] | null };

export function createAccountAdmin({ storage, vault, upstreams, endAccountAccess }: AccountAdminOptions): AccountAdmin {
  const { sqlite, commits } = storage;
  // grants.ts disconnect reports only failures; the wrappers below see successes. Calls run one at a
  // time, so one slot holds the outcome of the disconnect under way.
  let outcome: Revocation | undefined;
  const observed = new Map(
    [...upstreams].map(([id, provider]): [string, UpstreamProvider] => {
      const revoke = provider.revoke?.bind(provider);
      if (!revoke) return [id, provider];
      const wrapper: UpstreamProvider = Object.create(provider);
      wrapper.revoke = async (tokens: UpstreamTokens) => {
        await revoke(tokens);
        outcome = { result: 'revoked' };
      };
      return [id, wrapper];
    }),
  );
  const grants = createGrants({
    sqlite,
    commits,
    vault,
    upstreams: observed,
    // Only refreshes kill grants, and this process refreshes none.
    onGrantDead: (accountId) => endAccountAccess(accountId),
    onRevokeFailed: (_id, error: UpstreamGrantError) => {
      outcome = { result: 'failed', reason: error.message };
    },
  });

  // Never `sealed_tokens`: nothing here needs a token.
  const linkedColumns = 'u.id, u.provider, u.subject, u.email, u.name, u.status';
  const selectListing = sqlite.prepare<[], ListingRow>(
    `SELECT a.id AS accountId, a.created_at AS createdAt, ${linkedColumns}
     FROM accounts a LEFT JOIN upstream_accounts u ON u.account_id = a.id ORDER BY a.created_at, a.id, u.created_at`,
  );
  const selectAccount = sqlite.prepare<[string], ListingRow>(
    `SELECT a.id AS accountId, a.created_at AS createdAt, ${linkedColumns}
     FROM accounts a LEFT JOIN upstream_accounts u ON u.account_id = a.id WHERE a.id = ? ORDER BY u.created_at`,
  );
  const selectUpstream = sqlite.prepare<[string], UpstreamAccount>(
    `SELECT u.account_id AS accountId, ${linkedColumns} FROM upstream_accounts u WHERE u.id = ?`,
  );
  const countUpstream = sqlite.prepare<[string], { count: number }>('SELECT COUNT(*) AS count FROM upstream_accounts WHERE account_id = ?');

  function group(rows: ListingRow[]): AccountListing[] {
    const listings = new Map<string, AccountListing>();
    for (const { accountId, createdAt, ...linked } of rows) {
      const listing = listings.get(accountId) ?? { id: accountId, createdAt, upstream: [] };
      listings.set(accountId, listing);
      if (linked.id !== null) listing.upstream.push(linked as LinkedAccount);
    }
    return [...listings.values()];
  }

  /** Writes in the group commit as one savepoint (all or nothing, as commits.ts asks), awaited until on disk. */
  async function writeDurably<T>(write: () => T): Promise<T> {
    const result = commits.write(() => sqlite.transaction(write)());
    await commits.durable();
    return result;
  }

  async function disconnectOne(accountId: string, upstream: LinkedAccount): Promise<Disconnected> {
    const provider = upstreams.get(upstream.provider);
    // grants.disconnect revokes only when the provider can and the grant opens; the wrapper or the
    // failure hook overwrite this when it tries, so what is left here is why it did not.
    outcome = !provider
      ? { result: 'skipped', reason: `${upstream.provider} is not enabled in this configuration` }
      : provider.revoke
        ? { result: 'skipped', reason: 'the sealed grant cannot be opened with the configured keys' }
        : { result: 'unsupported' };
    try {
      await grants.disconnect(accountId, upstream.id);
      return { accountId, upstream, revocation: outcome };
    } finally {
      outcome = undefined;
    }
  }

  return {
    listAccounts: () => group(selectListing.all()),

    findAccount: (accountId) => group(selectAccount.all(accountId))[0],

    findUpstream: (upstreamAccountId) => selectUpstream.get(upstreamAccountId),

    async disconnectUpstream(upstreamAccountId) {
      const row = selectUpstream.get(upstreamAccountId);
      if (!row) return undefined;
      const { accountId, ...upstream } = row;
      const disconnected = await disconnectOne(accountId, upstream);
      // Counted inside the batch's write transaction, so a link made meanwhile is seen.
      const endedGrants = await writeDurably(() => (countUpstream.get(accountId)?.count === 0 ? endAccountAccess(accountId) : undefined));
      return { ...disconnected, endedGrants };
    },

    async deleteAccount(accountId) {
      const account = group(selectAccount.all(accountId))[0];
      if (!account) return undefined;
      // Access ends first: the user's MCP clients stop now, and no tool call refreshes a grant being revoked.
      let endedGrants = await writeDurably(() => endAccountAccess(accountId));
      const disconnected: Disconnected[] = [];
      for (const upstream of account.upstream) disconnected.push(await disconnectOne(accountId, upstream));
      // Also disconnects anything linked since we looked, then deletes the account row.
      await grants.deleteAccount(accountId);
      // A sign-in that completed during the revocations may have left a grant behind.
      endedGrants += await writeDurably(() => endAccountAccess(accountId));
      return { accountId, disconnected, endedGrants };
    },

    async truncateWal() {
      for (let attempt = 1; ; attempt++) {
        const [result] = sqlite.pragma('wal_checkpoint(TRUNCATE)') as { busy: number }[];
        if (result?.busy === 0) return true;
        if (attempt === TRUNCATE_ATTEMPTS) return false;
        await sleep(TRUNCATE_RETRY_MS);
      }
    },
  };
}
