import { randomUUID } from 'node:crypto';
import { and, eq, sql } from 'drizzle-orm';
import type { Storage } from '../db/index.ts';
import { accounts, upstreamAccounts } from '../db/schema.ts';
import type { UpstreamIdentity, UpstreamTokens } from './types.ts';
import type { Vault } from './vault.ts';

/** An upstream account as tools and pages see it: identity and status, never tokens. */
export interface LinkedAccount {
  id: string;
  provider: string;
  subject: string;
  email: string | null;
  name: string | null;
  status: 'ok' | 'dead';
}

export interface Account {
  id: string;
  upstream: LinkedAccount[];
}

export interface UpstreamLogin {
  provider: string;
  identity: UpstreamIdentity;
  tokens: UpstreamTokens;
  /** The Gatehouse account already signed in in this browser: a new upstream account is linked to it. */
  signedInAccountId?: string | undefined;
}

export interface AccountStore {
  /** Whether the account exists (oidc-provider asks on every code and refresh exchange). */
  hasAccount(accountId: string): boolean;
  findAccount(accountId: string): Account | undefined;
  /** Records a completed upstream login and returns the Gatehouse account it belongs to. */
  recordUpstreamLogin(login: UpstreamLogin): string;
  /** Opens the sealed tokens of one of `accountId`'s upstream accounts. */
  openTokens(accountId: string, upstreamAccountId: string): UpstreamTokens | undefined;
}

const aadFor = (upstreamAccountId: string): string => `upstream_account:${upstreamAccountId}`;

/**
 * Accounts and their linked upstream accounts. Accounts are keyed by (provider, upstream subject) and
 * never merged by email (DESIGN.md §3): an email is a claim the upstream may not have verified.
 */
export function createAccountStore({ db, sqlite }: Pick<Storage, 'db' | 'sqlite'>, vault: Vault): AccountStore {
  // Hot paths (every token exchange, every whoami) use raw prepared statements: drizzle's row mapping
  // cost more than the queries themselves. The linked accounts are sorted here, not by SQL: an ORDER BY
  // made this read three times slower (measured), for the two or three rows an account has.
  const selectExists = sqlite.prepare<[string], { id: string }>('SELECT id FROM accounts WHERE id = ?');
  const selectLinked = sqlite.prepare<[string], LinkedAccount & { createdAt: number }>(
    'SELECT id, provider, subject, email, name, status, created_at AS createdAt FROM upstream_accounts WHERE account_id = ?',
  );
  const hasAccount = (accountId: string): boolean => selectExists.get(accountId) !== undefined;

  return {
    hasAccount,

    findAccount(accountId) {
      const rows = selectLinked.all(accountId);
      // Every account is created with a linked upstream account; one whose links were all removed still exists.
      if (rows.length === 0 && !hasAccount(accountId)) return undefined;
      rows.sort((a, b) => a.createdAt - b.createdAt);
      return {
        id: accountId,
        upstream: rows.map(({ id, provider, subject, email, name, status }) => ({ id, provider, subject, email, name, status })),
      };
    },

    recordUpstreamLogin({ provider, identity, tokens, signedInAccountId }) {
      return db.transaction((tx) => {
        const now = Date.now();
        const existing = tx
          .select({ id: upstreamAccounts.id, accountId: upstreamAccounts.accountId })
          .from(upstreamAccounts)
          .where(and(eq(upstreamAccounts.provider, provider), eq(upstreamAccounts.subject, identity.subject)))
          .get();
        const sealedFields = (id: string) => ({
          email: identity.email ?? null,
          name: identity.name ?? null,
          sealedTokens: vault.sealJson(aadFor(id), tokens),
          tokenExpiresAt: tokens.expiresAt ?? null,
          status: 'ok' as const,
          updatedAt: now,
        });
        if (existing) {
          // A new login replaces the grant: bump the version and drop any lease, so a refresh of the old
          // grant still in flight cannot overwrite it (its compare-and-set no longer matches; grants.ts).
          tx.update(upstreamAccounts)
            .set({ ...sealedFields(existing.id), version: sql`${upstreamAccounts.version} + 1`, leaseOwner: null, leaseExpiresAt: null })
            .where(eq(upstreamAccounts.id, existing.id))
            .run();
          return existing.accountId;
        }
        let accountId = signedInAccountId;
        if (!accountId || !tx.select({ id: accounts.id }).from(accounts).where(eq(accounts.id, accountId)).get()) {
          accountId = randomUUID();
          tx.insert(accounts).values({ id: accountId, createdAt: now }).run();
        }
        const id = randomUUID();
        tx.insert(upstreamAccounts)
          .values({ id, accountId, provider, subject: identity.subject, createdAt: now, ...sealedFields(id) })
          .run();
        return accountId;
      });
    },

    openTokens(accountId, upstreamAccountId) {
      const row = db
        .select({ sealed: upstreamAccounts.sealedTokens })
        .from(upstreamAccounts)
        .where(and(eq(upstreamAccounts.id, upstreamAccountId), eq(upstreamAccounts.accountId, accountId)))
        .get();
      return row ? vault.openJson<UpstreamTokens>(aadFor(upstreamAccountId), row.sealed) : undefined;
    },
  };
}
