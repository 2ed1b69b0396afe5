import { hash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { Adapter, AdapterFactory, AdapterPayload } from 'oidc-provider';
import type { Commits } from '../db/commits.ts';

/** Seals payloads of models that embed a secret (a client secret, the session id inside an Interaction). */
export interface PayloadSealer {
  sealJson(aad: string, value: unknown): string;
  openJson<T>(aad: string, sealed: string): T;
}

/** What to do when a consumed code or refresh token is presented again (see `replay-policy.ts`). */
export type ReplayDecision = 'reuse' | 'hide' | 'allow';

export interface ReplayHooks {
  /** A consumed artifact was found. `supersededAt` is when a later artifact of the same grant was consumed, if any. */
  onConsumedFind(model: string, payload: AdapterPayload, consumedAt: number, supersededAt: number | undefined): ReplayDecision;
  /** `consume` lost a race to another request; return true to let this one through anyway. */
  onConsumeRace(model: string, payload: AdapterPayload, consumedAt: number, supersededAt: number | undefined): boolean;
  /** Raised when a consume race is lost and not forgiven; must be an oidc-provider error (invalid_grant). */
  raceError(): Error;
}

/** Models whose payload is sealed rather than stored as plain JSON. */
const SEALED_MODELS = new Set(['Client', 'Interaction']);
/** Self-registered clients unused for this long are expired (a client that is used slides forward). */
const CLIENT_IDLE_SECONDS = 90 * 24 * 3600;
const CLIENT_SLIDE_AFTER_SECONDS = 24 * 3600;
/** Opened Client payloads kept in memory, keyed by row; a changed row (new sealed text) misses. */
const CLIENT_CACHE_SIZE = 1000;

// The one-shot crypto.hash: this runs about six times per token request, and createHash's object per call cost twice as much.
const sha256 = (value: string): string => hash('sha256', value, 'base64url');
const nowSeconds = (): number => Math.floor(Date.now() / 1000);

interface Row {
  payload: string;
  expires_at: number | null;
  consumed_at: number | null;
  grant_id_hash: string | null;
}

/**
 * oidc-provider storage on SQLite. Raw ids never reach the database: rows are keyed by sha256(id),
 * `jti` is stripped from payloads and restored on read, and `consume` is one conditional UPDATE so
 * two requests racing on one code cannot both win.
 */
export function createAdapterFactory(
  sqlite: Database.Database,
  commits: Commits,
  sealer: PayloadSealer,
  hooks: ReplayHooks,
): AdapterFactory {
  const statements = {
    upsert: sqlite.prepare(
      `INSERT INTO oidc_models (model, id_hash, grant_id_hash, uid_hash, payload, expires_at) VALUES (?, ?, ?, ?, ?, ?)
       ON CONFLICT (model, id_hash) DO UPDATE SET grant_id_hash = excluded.grant_id_hash, uid_hash = excluded.uid_hash,
       payload = excluded.payload, expires_at = excluded.expires_at`,
    ),
    find: sqlite.prepare<[string, string], Row>(
      'SELECT payload, expires_at, consumed_at, grant_id_hash FROM oidc_models WHERE model = ? AND id_hash = ?',
    ),
    findByUid: sqlite.prepare<[string, string], Row & { id_hash: string }>(
      'SELECT id_hash, payload, expires_at, consumed_at, grant_id_hash FROM oidc_models WHERE model = ? AND uid_hash = ?',
    ),
    consume: sqlite.prepare('UPDATE oidc_models SET consumed_at = ? WHERE model = ? AND id_hash = ? AND consumed_at IS NULL'),
    superseded: sqlite.prepare<[string, string, number], { at: number | null }>(
      'SELECT MIN(consumed_at) AS at FROM oidc_models WHERE model = ? AND grant_id_hash = ? AND consumed_at > ?',
    ),
    slide: sqlite.prepare('UPDATE oidc_models SET expires_at = ? WHERE model = ? AND id_hash = ?'),
    destroy: sqlite.prepare('DELETE FROM oidc_models WHERE model = ? AND id_hash = ?'),
    revokeByGrant: sqlite.prepare('DELETE FROM oidc_models WHERE model = ? AND grant_id_hash = ?'),
  };

  const commit = commits.write;
  // Every token request looks its client up; opening the sealed payload each time would cost two AES-GCM operations.
  const openedClients = new Map<string, { sealed: string; json: string }>();
  const openClient = (aad: string, idHash: string, sealedText: string): AdapterPayload => {
    const cached = openedClients.get(idHash);
    if (cached?.sealed === sealedText) return JSON.parse(cached.json);
    const payload = sealer.openJson<AdapterPayload>(aad, sealedText);
    if (openedClients.size >= CLIENT_CACHE_SIZE) openedClients.delete(openedClients.keys().next().value as string);
    openedClients.set(idHash, { sealed: sealedText, json: JSON.stringify(payload) });
    return payload;
  };

  return (model: string): Adapter => {
    const sealed = SEALED_MODELS.has(model);

    const decode = (id: string, idHash: string, row: Row): AdapterPayload | undefined => {
      if (row.expires_at !== null && row.expires_at <= nowSeconds() && model !== 'RefreshToken' && model !== 'AuthorizationCode') {
        return undefined;
      }
      const aad = `oidc:${model}:${idHash}`;
      const payload: AdapterPayload =
        model === 'Client' ? openClient(aad, idHash, row.payload) : sealed ? sealer.openJson(aad, row.payload) : JSON.parse(row.payload);
      payload.jti = id;
      if (row.consumed_at !== null) payload.consumed = Math.floor(row.consumed_at / 1000);
      return payload;
    };

    const supersededAt = (row: Row, consumedAt: number): number | undefined =>
      row.grant_id_hash === null ? undefined : (statements.superseded.get(model, row.grant_id_hash, consumedAt)?.at ?? undefined);

    return {
      async upsert(id, payload, expiresIn) {
        const idHash = sha256(id);
        const { jti: _jti, consumed: _consumed, ...rest } = payload;
        const grantIdHash = model === 'Grant' ? idHash : payload.grantId ? sha256(payload.grantId) : null;
        const uidHash = model === 'Session' && payload.uid ? sha256(payload.uid) : null;
        const text = sealed ? sealer.sealJson(`oidc:${model}:${idHash}`, rest) : JSON.stringify(rest);
        const ttl = expiresIn ?? (model === 'Client' ? CLIENT_IDLE_SECONDS : undefined);
        commit(() => statements.upsert.run(model, idHash, grantIdHash, uidHash, text, ttl ? nowSeconds() + ttl : null));
      },

      async find(id) {
        const idHash = sha256(id);
        const row = statements.find.get(model, idHash);
        if (!row) return undefined;
        const payload = decode(id, idHash, row);
        if (!payload) return undefined;
        if (
          model === 'Client' &&
          row.expires_at !== null &&
          row.expires_at - nowSeconds() < CLIENT_IDLE_SECONDS - CLIENT_SLIDE_AFTER_SECONDS
        ) {
          commit(() => statements.slide.run(nowSeconds() + CLIENT_IDLE_SECONDS, model, idHash));
        }
        if (row.consumed_at === null) return payload;
        const decision = hooks.onConsumedFind(model, payload, row.consumed_at, supersededAt(row, row.consumed_at));
        if (decision === 'hide') return undefined;
        if (decision === 'allow') delete payload.consumed;
        return payload;
      },

      async findByUid(uid) {
        const row = statements.findByUid.get(model, sha256(uid));
        if (!row) return undefined;
        // The session id is needed to answer, but only its hash is stored: callers of findByUid
        // (session lookup by uid) get the payload without `jti`, which they do not use.
        const payload = decode('', row.id_hash, row);
        if (payload) delete payload.jti;
        return payload;
      },

      async findByUserCode() {
        // Device flow is disabled; there are no user codes.
        return undefined;
      },

      async consume(id) {
        const idHash = sha256(id);
        // One conditional UPDATE: of two racing consumers, exactly one changes the row.
        if (commit(() => statements.consume.run(Date.now(), model, idHash)).changes === 1) return;
        const row = statements.find.get(model, idHash);
        const payload = row ? decode(id, idHash, row) : undefined;
        if (
          row?.consumed_at != null &&
          payload &&
          hooks.onConsumeRace(model, payload, row.consumed_at, supersededAt(row, row.consumed_at))
        ) {
          return;
        }
        throw hooks.raceError();
      },

      async destroy(id) {
        commit(() => statements.destroy.run(model, sha256(id)));
      },

      async revokeByGrantId(grantId) {
        commit(() => statements.revokeByGrant.run(model, sha256(grantId)));
      },
    };
  };
}

/**
 * Whether an access token's row still exists, without decoding it: the bearer gate's check for tokens
 * it has already verified once (revocation and grant revocation delete the row). Expiry is the
 * caller's to check, against the `exp` it verified: leaving it out of the query makes the read one
 * covering-index lookup, with no visit to the row itself.
 */
export function accessTokenExistence(sqlite: Database.Database): (token: string) => boolean {
  // pluck: the answer is the one column, not a row object built per request.
  const statement = sqlite.prepare<[string], number>("SELECT 1 FROM oidc_models WHERE model = 'AccessToken' AND id_hash = ?").pluck();
  // The gate asks about the same few tokens on every request: remember their hashes (bounded, oldest
  // out first) rather than hash each time, which cost about as much as the indexed read itself.
  const hashes = new Map<string, string>();
  return (token) => {
    let idHash = hashes.get(token);
    if (idHash === undefined) {
      if (hashes.size >= 10_000) hashes.delete(hashes.keys().next().value as string);
      idHash = sha256(token);
      hashes.set(token, idHash);
    }
    return statement.get(idHash) !== undefined;
  };
}

/** Deletes every artifact of one grant across all models (used when a replay proves a leak). */
export function revokeGrantEverywhere(sqlite: Database.Database, grantId: string): void {
  sqlite.prepare('DELETE FROM oidc_models WHERE grant_id_hash = ?').run(sha256(grantId));
}

/**
 * Ends everything a user holds at Gatehouse: every grant's tokens and codes, the grants, and their
 * browser sessions (so re-authorizing means signing in upstream again, which repairs a dead upstream
 * grant). Used when an upstream grant dies and when a user is deleted. Grants and sessions are found
 * by the `accountId` in their payload: rare, so a scan is fine. Returns how many grants ended.
 */
export function revokeAccountAccess(sqlite: Database.Database, accountId: string): number {
  return sqlite.transaction(() => {
    const grants = sqlite
      .prepare<[string], { id_hash: string }>(
        "SELECT id_hash FROM oidc_models WHERE model = 'Grant' AND json_extract(payload, '$.accountId') = ?",
      )
      .all(accountId);
    const deleteArtifacts = sqlite.prepare('DELETE FROM oidc_models WHERE grant_id_hash = ?');
    for (const { id_hash } of grants) deleteArtifacts.run(id_hash);
    sqlite
      .prepare("DELETE FROM oidc_models WHERE model IN ('Grant', 'Session') AND json_extract(payload, '$.accountId') = ?")
      .run(accountId);
    return grants.length;
  })();
}

/** Deletes expired artifacts and idle clients. Refresh tokens and codes are kept a day past expiry for reuse detection. */
export function purgeExpired(sqlite: Database.Database): number {
  const now = nowSeconds();
  return sqlite
    .prepare(
      `DELETE FROM oidc_models WHERE expires_at IS NOT NULL AND (
         (model IN ('RefreshToken', 'AuthorizationCode') AND expires_at < ?) OR (model NOT IN ('RefreshToken', 'AuthorizationCode') AND expires_at < ?))`,
    )
    .run(now - 86400, now).changes;
}
