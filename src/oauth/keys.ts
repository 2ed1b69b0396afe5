import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { ConfigError } from '../config.ts';
import type { Db } from '../db/index.ts';
import { serverSecrets } from '../db/schema.ts';
import { type Vault, VaultError } from '../upstream/vault.ts';

export interface SigningJwks {
  keys: Record<string, unknown>[];
}

const NAME = 'signing_jwks';

/**
 * The JWKS that signs ID tokens (only issued when a client asks for `openid`). Generated on first
 * start and kept sealed by the vault, so a copy of the database alone cannot mint ID tokens.
 */
export function loadSigningKeys(db: Db, vault: Vault): SigningJwks {
  const aad = `server_secret:${NAME}`;
  const row = db.select().from(serverSecrets).where(eq(serverSecrets.name, NAME)).get();
  if (row) return openStored(vault, aad, row.sealed);

  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwks: SigningJwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' }] };
  db.insert(serverSecrets)
    .values({ name: NAME, sealed: vault.sealJson(aad, jwks), createdAt: Date.now() })
    .onConflictDoNothing()
    .run();
  // Another process may have won the insert race; what is stored is authoritative.
  const stored = db.select().from(serverSecrets).where(eq(serverSecrets.name, NAME)).get();
  return stored ? openStored(vault, aad, stored.sealed) : jwks;
}

/** A database sealed under a key that is not configured must stop start-up, naming the variable. */
function openStored(vault: Vault, aad: string, sealed: string): SigningJwks {
  try {
    return vault.openJson<SigningJwks>(aad, sealed);
  } catch (error) {
    if (!(error instanceof VaultError)) throw error;
    const kid = error.reason === 'unknown_kid' ? ` (sealed with kid "${vault.kidOf(sealed)}")` : '';
    throw new ConfigError(
      'ENCRYPTION_KEYS',
      `the configured keys cannot open this database's sealed secrets${kid}; configure the key that sealed them`,
    );
  }
}
