import { createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import { ConfigError } from '../config.ts';
import type { Storage } from '../db/index.ts';
import { type Vault, VaultError, type VaultErrorReason } from './vault.ts';

/** oidc-provider models whose payload the adapter seals (`SEALED_MODELS` in oauth/adapter.ts); the others are plain JSON. */
export const SEALED_OIDC_MODELS = ['Client', 'Interaction'] as const;

/** One column the vault seals, with the row key its AAD is built from (see db/schema.ts). */
interface SealedColumn {
  readonly table: string;
  readonly column: string;
  readonly key: readonly string[];
  /** Which rows of the table hold sealed values (SQL, no parameters). */
  readonly where: string;
  aad(key: readonly string[]): string;
}

const SEALED_COLUMNS: readonly SealedColumn[] = [
  { table: 'server_secrets', column: 'sealed', key: ['name'], where: '1', aad: ([name]) => `server_secret:${name}` },
  { table: 'upstream_accounts', column: 'sealed_tokens', key: ['id'], where: '1', aad: ([id]) => `upstream_account:${id}` },
  { table: 'upstream_logins', column: 'sealed', key: ['state_hash'], where: '1', aad: ([hash]) => `upstream_login:${hash}` },
  {
    table: 'oidc_models',
    column: 'payload',
    key: ['model', 'id_hash'],
    where: `model IN (${SEALED_OIDC_MODELS.map((model) => `'${model}'`).join(', ')})`,
    aad: ([model, idHash]) => `oidc:${model}:${idHash}`,
  },
];

/** The kid of a `v1.<kid>.…` value, parsed in SQL; NULL for a value that is not an envelope. */
const kidSql = (column: string): string =>
  `CASE WHEN substr(${column}, 1, 3) = 'v1.' AND instr(substr(${column}, 4), '.') > 1
   THEN substr(${column}, 4, instr(substr(${column}, 4), '.') - 1) END`;

/**
 * How many sealed values each kid wraps, over every sealed column. Values that are not `v1.<kid>.`
 * envelopes have no kid and are not counted (a rewrap reports them as failures).
 */
export function countSealedByKid(sqlite: Database.Database): Map<string, number> {
  const counts = new Map<string, number>();
  for (const { table, column, where } of SEALED_COLUMNS) {
    const rows = sqlite
      .prepare<[], { kid: string | null; count: number }>(
        `SELECT ${kidSql(column)} AS kid, COUNT(*) AS count FROM ${table} WHERE ${where} GROUP BY kid`,
      )
      .all();
    for (const { kid, count } of rows) if (kid !== null) counts.set(kid, (counts.get(kid) ?? 0) + count);
  }
  return counts;
}

/**
 * Refuses a keyring that cannot open every sealed row: throws `ConfigError('ENCRYPTION_KEYS', …)` naming
 * each kid that still seals rows but is not configured. Called at start-up, before serving, so a key
 * dropped too early fails loudly instead of as scattered 500s and dead grants.
 */
export function assertKeyringCovers(sqlite: Database.Database, vault: Pick<Vault, 'kids'>): void {
  const missing = [...countSealedByKid(sqlite)].filter(([kid]) => !vault.kids.includes(kid));
  if (missing.length === 0) return;
  const named = missing.map(([kid, count]) => `kid "${kid}" (${count} sealed ${count === 1 ? 'value' : 'values'})`).join(', ');
  throw new ConfigError(
    'ENCRYPTION_KEYS',
    `the database still holds values wrapped under keys that are not configured: ${named}; keep each such key in ENCRYPTION_KEYS until \`npm run gatehouse -- keys rewrap\` has run`,
  );
}

/** A sealed value the rewrap could not open; identified by table and a hash of its row key, never by its value. */
export interface RewrapFailure {
  readonly table: string;
  /** First 16 characters of base64url(sha256(aad)), where the aad is e.g. `upstream_account:<id>`. */
  readonly rowKeyHash: string;
  readonly reason: VaultErrorReason;
}

export interface RewrapProgress {
  readonly table: string;
  /** Totals so far in this run. */
  readonly rewrapped: number;
  readonly failed: number;
}

export interface RewrapResult {
  readonly rewrapped: number;
  readonly failed: number;
  readonly failures: readonly RewrapFailure[];
  /** Sealed values still wrapped under a kid other than the primary, by kid (failures, and anything sealed meanwhile by a process on the old keyring). */
  readonly remaining: Map<string, number>;
}

export interface RewrapOptions {
  /** Rows read and written per transaction: small, so a running server waits at most one batch for the write lock. */
  batchSize?: number;
  /** Called after each batch is committed; throwing stops the run (everything committed so far stays). */
  onProgress?: (progress: RewrapProgress) => void;
}

/** A pass that rewraps nothing ends the run; this bounds it if another process keeps sealing under an old kid. */
const MAX_PASSES = 5;

const rowKeyHash = (aad: string): string => createHash('sha256').update(aad).digest('base64url').slice(0, 16);

/**
 * Rewraps every sealed value wrapped under a kid other than the primary (`vault.rewrap`: the data key
 * gets a new wrap, the payload is untouched). Safe beside a running server on the same file: rows are
 * read outside any transaction, each batch is written in its own `BEGIN IMMEDIATE` transaction, and
 * every write is compare-and-set on the old value, so a value the server rewrote (or a row the purge
 * deleted) meanwhile is left as it is. Resumable: progress lives in the rows themselves. A value that
 * does not open is counted, reported and left in place, once per run.
 */
export function rewrapSealedRows(
  { sqlite }: Pick<Storage, 'sqlite'>,
  vault: Vault,
  { batchSize = 200, onProgress }: RewrapOptions = {},
): RewrapResult {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError('rewrapSealedRows: batchSize must be a positive integer');
  const primaryPrefix = `v1.${vault.primaryKid}.`;
  // Keyed by aad, so a row that fails again in a later pass is counted once.
  const failures = new Map<string, RewrapFailure>();
  let rewrapped = 0;

  for (let pass = 0; pass < MAX_PASSES; pass++) {
    const before = rewrapped;
    for (const sealedColumn of SEALED_COLUMNS) {
      const { table, column, key, where } = sealedColumn;
      // The rowid is only a cursor (each row is visited once per pass, failures included); writes match on the real key.
      const select = sqlite.prepare<[number, number, string, number], Record<string, string | number>>(
        `SELECT rowid AS cursor, ${key.join(', ')}, ${column} AS sealed FROM ${table}
         WHERE rowid > ? AND ${where} AND substr(${column}, 1, ?) IS NOT ? ORDER BY rowid LIMIT ?`,
      );
      const update = sqlite.prepare(
        `UPDATE ${table} SET ${column} = ? WHERE ${key.map((name) => `${name} = ?`).join(' AND ')} AND ${column} = ?`,
      );
      const writeBatch = sqlite.transaction((writes: unknown[][]) =>
        writes.reduce<number>((sum, values) => sum + update.run(...values).changes, 0),
      );

      for (let cursor = 0; ; ) {
        const rows = select.all(cursor, primaryPrefix.length, primaryPrefix, batchSize);
        const last = rows.at(-1);
        if (!last) break;
        cursor = Number(last.cursor);
        const writes: unknown[][] = [];
        for (const row of rows) {
          const keyValues = key.map((name) => String(row[name]));
          const aad = sealedColumn.aad(keyValues);
          const sealed = String(row.sealed);
          try {
            // Opening checks the payload too (a rewrap authenticates only the wrap), so a broken value is reported, not carried over.
            vault.open(aad, sealed).fill(0);
            writes.push([vault.rewrap(aad, sealed), ...keyValues, sealed]);
            failures.delete(aad);
          } catch (error) {
            if (!(error instanceof VaultError)) throw error;
            failures.set(aad, { table, rowKeyHash: rowKeyHash(aad), reason: error.reason });
          }
        }
        rewrapped += writes.length > 0 ? writeBatch.immediate(writes) : 0;
        onProgress?.({ table, rewrapped, failed: failures.size });
      }
    }
    if (rewrapped === before) break;
  }

  const remaining = countSealedByKid(sqlite);
  remaining.delete(vault.primaryKid);
  return { rewrapped, failed: failures.size, failures: [...failures.values()], remaining };
}
