import { sql } from 'drizzle-orm';
import { index, integer, primaryKey, sqliteTable, text, uniqueIndex } from 'drizzle-orm/sqlite-core';

/**
 * Every oidc-provider artifact (tokens, codes, sessions, interactions, grants, clients). The raw id
 * (the bearer value of a token, code or session cookie) is never stored: `id_hash` is sha256(id), so a
 * copy of this table cannot be replayed. The grant and session-uid index columns are hashed too; they
 * are references, not credentials. Payloads that embed a secret (Client: its secret; Interaction: the
 * session id) are sealed by the vault. `expires_at` is epoch seconds, `consumed_at` epoch milliseconds.
 */
export const oidcModels = sqliteTable(
  'oidc_models',
  {
    model: text('model').notNull(),
    idHash: text('id_hash').notNull(),
    grantIdHash: text('grant_id_hash'),
    uidHash: text('uid_hash'),
    payload: text('payload').notNull(),
    expiresAt: integer('expires_at'),
    consumedAt: integer('consumed_at'),
  },
  // Only the indexes find, findByUid and revokeByGrantId need, partial so rows without the column
  // cost nothing: every token write pays for each index it touches (the purge, every 10 min, scans).
  (table) => [
    primaryKey({ columns: [table.model, table.idHash] }),
    index('oidc_models_grant').on(table.grantIdHash).where(sql`${table.grantIdHash} IS NOT NULL`),
    index('oidc_models_uid').on(table.uidHash).where(sql`${table.uidHash} IS NOT NULL`),
  ],
);

/** A Gatehouse user. Created at first login from (provider, upstream subject); never merged by email. */
export const accounts = sqliteTable('accounts', {
  id: text('id').primaryKey(),
  createdAt: integer('created_at').notNull(),
});

/**
 * One upstream account linked to a Gatehouse account, with its tokens sealed by the vault
 * (AAD = `upstream_account:<id>`). Identity fields are what the upstream said at login. Disconnecting
 * deletes the row, which shreds the grant: its data key existed only inside `sealed_tokens`.
 */
export const upstreamAccounts = sqliteTable(
  'upstream_accounts',
  {
    id: text('id').primaryKey(),
    accountId: text('account_id')
      .notNull()
      .references(() => accounts.id, { onDelete: 'cascade' }),
    provider: text('provider').notNull(),
    subject: text('subject').notNull(),
    email: text('email'),
    name: text('name'),
    sealedTokens: text('sealed_tokens').notNull(),
    tokenExpiresAt: integer('token_expires_at'),
    status: text('status', { enum: ['ok', 'dead'] })
      .notNull()
      .default('ok'),
    /** Bumped on every token write: a refresh writes only if the version it read is still current (compare-and-set). */
    version: integer('version').notNull().default(0),
    /** Which process is refreshing these tokens, and until when (so two processes never refresh one grant at once). */
    leaseOwner: text('lease_owner'),
    leaseExpiresAt: integer('lease_expires_at'),
    createdAt: integer('created_at').notNull(),
    updatedAt: integer('updated_at').notNull(),
  },
  (table) => [
    uniqueIndex('upstream_accounts_subject').on(table.provider, table.subject),
    index('upstream_accounts_account').on(table.accountId, table.createdAt),
  ],
);

/**
 * An upstream login in flight: created when the user approves a client on our consent page, consumed
 * once at `/upstream/:provider/callback`. `state_hash` is sha256(state); the interaction it resumes, the PKCE verifier and the nonce are sealed.
 */
export const upstreamLogins = sqliteTable('upstream_logins', {
  stateHash: text('state_hash').primaryKey(),
  provider: text('provider').notNull(),
  browserHash: text('browser_hash').notNull(),
  sealed: text('sealed').notNull(),
  expiresAt: integer('expires_at').notNull(),
});

/** Server secrets generated on first start (the JWKS for ID tokens), sealed by the vault (AAD = `server_secret:<name>`). */
export const serverSecrets = sqliteTable('server_secrets', {
  name: text('name').primaryKey(),
  sealed: text('sealed').notNull(),
  createdAt: integer('created_at').notNull(),
});

/**
 * Tool-call rate limits (`src/mcp/tool-limits.ts`), one row per limited key: `kind` is `account` or
 * `client`. GCRA state in one column: `full_at` is when the key's whole budget is available again
 * (epoch µs); each allowed call moves it one emission interval later, and a call is refused while
 * that would put it more than the burst window ahead of now. A row whose `full_at` has passed means
 * the same as no row, so the periodic purge deletes it.
 */
export const toolRateLimits = sqliteTable(
  'tool_rate_limits',
  {
    kind: text('kind', { enum: ['account', 'client'] }).notNull(),
    key: text('key').notNull(),
    fullAt: integer('full_at').notNull(),
  },
  (table) => [primaryKey({ columns: [table.kind, table.key] })],
);

/**
 * One row per tool call decided at /mcp (`src/mcp/audit.ts`): allowed calls with their outcome, and
 * refusals (step-up, rate limit). Never arguments, results or tokens. `at` is epoch ms when the call
 * arrived; rows are purged after the retention period (AUDIT_RETENTION_DAYS). No foreign key: the
 * trail outlives a deleted account, which leaves only its random id here.
 */
export const toolAudit = sqliteTable(
  'tool_audit',
  {
    id: integer('id').primaryKey(),
    at: integer('at').notNull(),
    accountId: text('account_id').notNull(),
    clientId: text('client_id').notNull(),
    tool: text('tool').notNull(),
    decision: text('decision', { enum: ['allowed', 'insufficient_scope', 'rate_limited_account', 'rate_limited_client'] }).notNull(),
    /** Null when the call was refused before it reached the tool. */
    outcome: text('outcome', { enum: ['ok', 'tool_error', 'reconnect', 'upstream_unavailable', 'internal_error'] }),
    upstreamStatus: integer('upstream_status'),
    durationMs: integer('duration_ms'),
  },
  // The operator's question is "what did this account do, most recent first"; the purge walks rowid order instead of an index on `at`.
  (table) => [index('tool_audit_account').on(table.accountId, table.at)],
);
