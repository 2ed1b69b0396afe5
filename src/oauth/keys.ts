import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { Db } from '../db/index.ts';
import { serverSecrets } from '../db/schema.ts';
import type { Vault } from '../upstream/vault.ts';

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
  if (row) return vault.openJson<SigningJwks>(aad, row.sealed);

  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwks: SigningJwks = { keys: [{ ...privateKey.export({ format: 'jwk' }), kid: randomUUID(), alg: 'ES256', use: 'sig' }] };
  db.insert(serverSecrets)
    .values({ name: NAME, sealed: vault.sealJson(aad, jwks), createdAt: Date.now() })
    .onConflictDoNothing()
    .run();
  // Another process may have won the insert race; what is stored is authoritative.
  const stored = db.select().from(serverSecrets).where(eq(serverSecrets.name, NAME)).get();
  return stored ? vault.openJson<SigningJwks>(aad, stored.sealed) : jwks;
}
