import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type Database from 'better-sqlite3';
import type { Commits } from '../db/commits.ts';
import { UpstreamGrantError, type UpstreamProvider, type UpstreamTokens } from './types.ts';
import { type Vault, VaultError } from './vault.ts';

export interface GrantsOptions {
  /** The raw connection: these statements sit on the hot path of every upstream call. */
  sqlite: Database.Database;
  commits: Pick<Commits, 'write' | 'durable'>;
  vault: Vault;
  upstreams: ReadonlyMap<string, UpstreamProvider>;
  /** Called once when a grant dies (invalid_grant upstream, tampered row, no refresh possible): the app revokes the user's Gatehouse tokens so the MCP client gets 401 and re-authorizes. */
  onGrantDead(accountId: string, upstreamAccountId: string): void;
  /** Told when a best-effort upstream revocation failed at disconnect (the row is deleted anyway); the error is safe to log. */
  onRevokeFailed?(upstreamAccountId: string, error: UpstreamGrantError): void;
  /** Unique per process (default randomUUID()): the lease owner. */
  processId?: string;
  /** Milliseconds since the epoch; for tests. */
  now?: () => number;
  /** Refresh this long before expiry (default 300: just in time, DESIGN.md §3). */
  refreshSkewSeconds?: number;
  /** How long a refresh lease holds (default 30 000 ms: longer than the 10 s upstream timeout). */
  leaseMs?: number;
}

/** The user's upstream grants as MCP tools use them. Every error thrown is an `UpstreamGrantError` whose message is safe to show and log. */
export interface Grants {
  /** Tokens good for at least the skew, refreshing first if needed (single-flight per grant, in-process and across processes). Throws UpstreamGrantError: terminal (grant dead: reconnect) or transient (retry later; nothing changed). */
  freshTokens(accountId: string, upstreamAccountId: string): Promise<UpstreamTokens>;
  /** After an upstream API answered 401 to `rejected`: refresh once (unless someone already replaced those tokens), else terminal. */
  refreshAfterRejection(accountId: string, upstreamAccountId: string, rejected: UpstreamTokens): Promise<UpstreamTokens>;
  /** The upstream rejected tokens it had just issued: the grant is unusable, so it dies (once, if they are still the stored ones). */
  retire(accountId: string, upstreamAccountId: string, rejected: UpstreamTokens): Promise<void>;
  /** Disconnects one upstream account: revokes upstream where the provider can (best effort), then deletes the row, which shreds the grant. A row that is not this account's is left alone. */
  disconnect(accountId: string, upstreamAccountId: string): Promise<void>;
  /** Deletes a user: disconnects every upstream account, then deletes the account row. */
  deleteAccount(accountId: string): Promise<void>;
}

/** What one caller wants from the stored tokens. */
interface Need {
  /** These tokens must be replaced, by us or by whoever holds the lease. */
  stale(tokens: UpstreamTokens, version: number): boolean;
  /** These tokens may be handed out when no refresh is possible or another writer won the race. */
  usable(tokens: UpstreamTokens): boolean;
}

type Grant = { tokens: UpstreamTokens; version: number; provider: string };
type Row = { provider: string; sealed: string; status: 'ok' | 'dead'; version: number };
type LeaseRow = { status: 'ok' | 'dead'; version: number; leaseOwner: string | null; leaseExpiresAt: number | null };

const POLL_MS = 100;
/** Opened grants kept in memory (see `openTokens`): enough for every active user of one process. */
const OPENED_MAX = 10_000;
/** Lease attempts per call: each lost one waits for the holder, so this bounds a call at a few lease lengths. */
const MAX_ROUNDS = 4;

const aadFor = (upstreamAccountId: string): string => `upstream_account:${upstreamAccountId}`;
const notConnected = () => new UpstreamGrantError('terminal', 'This upstream account is not connected.');
const reconnect = () => new UpstreamGrantError('terminal', 'The upstream account must be reconnected.');
const unavailable = (message: string) => new UpstreamGrantError('transient', message);

/**
 * Loads and refreshes upstream grants (DESIGN.md §3). A refresh is single-flight twice over: one
 * promise per grant in this process, and a lease on the row across processes, because providers that
 * rotate refresh tokens (Entra) treat a second use of the old one as replay and kill the grant.
 */
export function createGrants(options: GrantsOptions): Grants {
  const { sqlite, commits, vault, upstreams, onGrantDead } = options;
  const processId = options.processId ?? randomUUID();
  const now = options.now ?? Date.now;
  const skewMs = (options.refreshSkewSeconds ?? 300) * 1000;
  const leaseMs = options.leaseMs ?? 30_000;
  const maxPolls = Math.ceil((leaseMs + 1000) / POLL_MS);
  const flights = new Map<string, Promise<UpstreamTokens>>();

  const selectRow = sqlite.prepare<[string, string], Row>(
    'SELECT provider, sealed_tokens AS sealed, status, version FROM upstream_accounts WHERE id = ? AND account_id = ?',
  );
  const selectLease = sqlite.prepare<[string], LeaseRow>(
    'SELECT status, version, lease_owner AS leaseOwner, lease_expires_at AS leaseExpiresAt FROM upstream_accounts WHERE id = ?',
  );
  const selectIds = sqlite.prepare<[string], { id: string }>('SELECT id FROM upstream_accounts WHERE account_id = ?');
  // Taken only at the version we read: a lease on tokens someone already replaced would refresh them twice.
  const takeLease = sqlite.prepare<[string, number, string, number, number]>(
    `UPDATE upstream_accounts SET lease_owner = ?, lease_expires_at = ?
     WHERE id = ? AND version = ? AND status = 'ok' AND (lease_owner IS NULL OR lease_expires_at < ?)`,
  );
  const releaseLease = sqlite.prepare<[string, string]>(
    'UPDATE upstream_accounts SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?',
  );
  const saveTokens = sqlite.prepare<[string, number | null, number, string, number, string]>(
    `UPDATE upstream_accounts SET sealed_tokens = ?, token_expires_at = ?, version = version + 1,
       lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
     WHERE id = ? AND version = ? AND lease_owner = ?`,
  );
  const markDead = sqlite.prepare<[number, string, number]>(
    `UPDATE upstream_accounts SET status = 'dead', lease_owner = NULL, lease_expires_at = NULL, updated_at = ?
     WHERE id = ? AND version = ? AND status = 'ok'`,
  );
  const deleteUpstream = sqlite.prepare<[string, string]>('DELETE FROM upstream_accounts WHERE id = ? AND account_id = ?');
  const deleteAccountRow = sqlite.prepare<[string]>('DELETE FROM accounts WHERE id = ?');

  const expired = (tokens: UpstreamTokens): boolean => tokens.expiresAt !== undefined && tokens.expiresAt * 1000 <= now();
  const fresh = (tokens: UpstreamTokens): boolean => tokens.expiresAt === undefined || tokens.expiresAt * 1000 - now() > skewMs;

  /** One statement in the open batch, acknowledged only once on disk (db/commits.ts): nothing acts on it before. */
  async function writeDurably(write: () => Database.RunResult): Promise<number> {
    const { changes } = commits.write(write);
    await commits.durable().catch(() => Promise.reject(unavailable('Saving the upstream account failed; try again shortly.')));
    return changes;
  }

  /**
   * Opened grants, keyed by row and valid only for the exact sealed text they came from: the row is
   * still read on every call (status, version, the sealed text), but an unchanged grant is not
   * decrypted again. Every write re-seals with a fresh IV, so any change misses. Bounded, oldest out.
   */
  const opened = new Map<string, { sealed: string; tokens: UpstreamTokens }>();
  function openTokens(upstreamAccountId: string, sealed: string): UpstreamTokens | undefined {
    const cached = opened.get(upstreamAccountId);
    if (cached?.sealed === sealed) return cached.tokens;
    try {
      const tokens = vault.openJson<UpstreamTokens>(aadFor(upstreamAccountId), sealed);
      if (typeof tokens?.accessToken !== 'string') return undefined;
      opened.delete(upstreamAccountId);
      if (opened.size >= OPENED_MAX) opened.delete(opened.keys().next().value as string);
      opened.set(upstreamAccountId, { sealed, tokens: Object.freeze(tokens) });
      return tokens;
    } catch (error) {
      if (error instanceof VaultError) return undefined;
      throw error;
    }
  }

  /** Marks the grant dead unless someone changed it since `version`; only the writer that flips it tells the app. */
  async function kill(accountId: string, upstreamAccountId: string, version: number): Promise<boolean> {
    const killed = (await writeDurably(() => markDead.run(now(), upstreamAccountId, version))) === 1;
    if (killed) onGrantDead(accountId, upstreamAccountId);
    return killed;
  }

  /** The row, only if it is `accountId`'s (never another user's tokens); dead or unreadable grants are terminal. */
  async function load(accountId: string, upstreamAccountId: string): Promise<Grant> {
    const row = selectRow.get(upstreamAccountId, accountId);
    if (!row) throw notConnected();
    if (row.status !== 'ok') throw reconnect();
    const tokens = openTokens(upstreamAccountId, row.sealed);
    if (!tokens) {
      // Tampered or sealed for another row: the grant cannot be used again, but the server must stay up.
      await kill(accountId, upstreamAccountId, row.version);
      throw reconnect();
    }
    return { tokens, version: row.version, provider: row.provider };
  }

  /** Joins the refresh of this grant already running in this process, or starts it. */
  async function share(accountId: string, upstreamAccountId: string, need: Need): Promise<UpstreamTokens> {
    for (let running = flights.get(upstreamAccountId); running; running = flights.get(upstreamAccountId)) {
      const tokens = await running;
      if (need.usable(tokens)) return tokens;
    }
    const flight = refresh(accountId, upstreamAccountId, need).finally(() => {
      if (flights.get(upstreamAccountId) === flight) flights.delete(upstreamAccountId);
    });
    flights.set(upstreamAccountId, flight);
    return flight;
  }

  async function refresh(accountId: string, upstreamAccountId: string, need: Need): Promise<UpstreamTokens> {
    for (let round = 0; round < MAX_ROUNDS; round++) {
      const grant = await load(accountId, upstreamAccountId);
      const { tokens, version } = grant;
      if (!need.stale(tokens, version)) return tokens;
      const provider = upstreams.get(grant.provider);
      // A provider switched off in config is not a dead grant: it works again once re-enabled.
      if (!provider) throw new UpstreamGrantError('terminal', 'This upstream provider is not enabled on this server.');
      if (!provider.refresh || !tokens.refreshToken) {
        if (need.usable(tokens)) return tokens;
        if (await kill(accountId, upstreamAccountId, version)) throw reconnect();
        continue;
      }
      if (await lease(upstreamAccountId, version)) {
        return await refreshUnderLease(accountId, upstreamAccountId, provider.refresh.bind(provider), grant, need);
      }
      await awaitOtherRefresh(upstreamAccountId, version);
    }
    throw unavailable('The upstream account is being refreshed elsewhere; try again shortly.');
  }

  async function lease(upstreamAccountId: string, version: number): Promise<boolean> {
    try {
      return (await writeDurably(() => takeLease.run(processId, now() + leaseMs, upstreamAccountId, version, now()))) === 1;
    } catch (error) {
      // Another connection is mid-commit past busy_timeout: as good as a held lease, so wait and look again.
      if ((error as { code?: unknown })?.code === 'SQLITE_BUSY') return false;
      throw error;
    }
  }

  /** Polls the cheap lease columns until the holder wrote, gave up, or let its lease run out. */
  async function awaitOtherRefresh(upstreamAccountId: string, version: number): Promise<void> {
    for (let poll = 0; poll < maxPolls; poll++) {
      await sleep(POLL_MS);
      const row = selectLease.get(upstreamAccountId);
      if (row?.status !== 'ok' || row.version !== version || row.leaseOwner === null || (row.leaseExpiresAt ?? 0) < now()) return;
    }
    throw unavailable('The upstream account is being refreshed elsewhere; try again shortly.');
  }

  type Refresh = (tokens: UpstreamTokens) => Promise<UpstreamTokens>;
  async function refreshUnderLease(accountId: string, upstreamAccountId: string, call: Refresh, grant: Grant, need: Need) {
    const { tokens, version } = grant;
    let next: UpstreamTokens;
    try {
      next = await call(tokens);
      if (typeof next?.accessToken !== 'string' || next.accessToken === '') throw new TypeError('no access token');
    } catch (error) {
      if (error instanceof UpstreamGrantError && error.kind === 'terminal') {
        if (await kill(accountId, upstreamAccountId, version)) throw error;
        return settledElsewhere(accountId, upstreamAccountId, need);
      }
      await writeDurably(() => releaseLease.run(upstreamAccountId, processId)).catch(() => undefined);
      // Anything but our own error type may quote the upstream's body (or be garbage): never pass its text on.
      throw error instanceof UpstreamGrantError
        ? error
        : unavailable('The upstream did not complete the token refresh; try again shortly.');
    }
    // A response may leave out what did not change: Google omits the refresh token, RFC 6749 §5.1 an unchanged scope.
    const merged: UpstreamTokens = {
      accessToken: next.accessToken,
      refreshToken: next.refreshToken ?? tokens.refreshToken,
      expiresAt: next.expiresAt,
      scope: next.scope ?? tokens.scope,
      issuer: next.issuer ?? tokens.issuer,
    };
    const sealed = vault.sealJson(aadFor(upstreamAccountId), merged);
    const saved = await writeDurably(() => saveTokens.run(sealed, merged.expiresAt ?? null, now(), upstreamAccountId, version, processId));
    if (saved === 1) return merged;
    // Our lease ran out and another writer got in first; theirs stands, since ours may hold a refresh token already rotated away.
    return settledElsewhere(accountId, upstreamAccountId, need);
  }

  async function settledElsewhere(accountId: string, upstreamAccountId: string, need: Need): Promise<UpstreamTokens> {
    const { tokens } = await load(accountId, upstreamAccountId);
    if (need.usable(tokens)) return tokens;
    throw unavailable('The upstream account changed during the refresh; try again shortly.');
  }

  async function disconnect(accountId: string, upstreamAccountId: string): Promise<void> {
    // A refresh in flight would write a grant we never revoke; let it land first.
    await flights.get(upstreamAccountId)?.catch(() => undefined);
    const row = selectRow.get(upstreamAccountId, accountId);
    if (!row) return;
    const provider = upstreams.get(row.provider);
    const tokens = openTokens(upstreamAccountId, row.sealed);
    if (provider?.revoke && tokens) {
      try {
        await provider.revoke(tokens);
      } catch (error) {
        const safe = error instanceof UpstreamGrantError ? error : unavailable('The upstream did not confirm the revocation.');
        options.onRevokeFailed?.(upstreamAccountId, safe);
      }
    }
    await writeDurably(() => deleteUpstream.run(upstreamAccountId, accountId));
    opened.delete(upstreamAccountId);
  }

  return {
    async freshTokens(accountId, upstreamAccountId) {
      const grant = await load(accountId, upstreamAccountId);
      if (fresh(grant.tokens)) return grant.tokens;
      const seen = grant.version;
      return share(accountId, upstreamAccountId, {
        // Within the skew only while nobody has written since we looked: a newer write is someone's refresh.
        stale: (tokens, version) => expired(tokens) || (!fresh(tokens) && version === seen),
        usable: (tokens) => !expired(tokens),
      });
    },

    async refreshAfterRejection(accountId, upstreamAccountId, rejected) {
      const usable = (tokens: UpstreamTokens) => tokens.accessToken !== rejected.accessToken && !expired(tokens);
      const { tokens } = await load(accountId, upstreamAccountId);
      if (usable(tokens)) return tokens;
      return share(accountId, upstreamAccountId, { stale: (current) => !usable(current), usable });
    },

    async retire(accountId, upstreamAccountId, rejected) {
      const row = selectRow.get(upstreamAccountId, accountId);
      if (row?.status !== 'ok' || openTokens(upstreamAccountId, row.sealed)?.accessToken !== rejected.accessToken) return;
      await kill(accountId, upstreamAccountId, row.version);
    },

    disconnect,

    async deleteAccount(accountId) {
      await Promise.all(selectIds.all(accountId).map(({ id }) => disconnect(accountId, id)));
      await writeDurably(() => deleteAccountRow.run(accountId));
    },
  };
}
