import { randomUUID } from 'node:crypto';
import { and, asc, eq } from 'drizzle-orm';
import type { Db } from '../db/index.ts';
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
export function createAccountStore(db: Db, vault: Vault): AccountStore {
  const linkedColumns = {
    id: upstreamAccounts.id,
    provider: upstreamAccounts.provider,
    subject: upstreamAccounts.subject,
    email: upstreamAccounts.email,
    name: upstreamAccounts.name,
    status: upstreamAccounts.status,
  };

  return {
    findAccount(accountId) {
      const account = db.select().from(accounts).where(eq(accounts.id, accountId)).get();
      if (!account) return undefined;
      const upstream = db
        .select(linkedColumns)
        .from(upstreamAccounts)
        .where(eq(upstreamAccounts.accountId, accountId))
        .orderBy(asc(upstreamAccounts.createdAt))
        .all();
      return { id: account.id, upstream };
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
          tx.update(upstreamAccounts).set(sealedFields(existing.id)).where(eq(upstreamAccounts.id, existing.id)).run();
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
