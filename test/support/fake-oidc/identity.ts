import { createHash, generateKeyPairSync, type JsonWebKey, type KeyObject, randomBytes, sign } from 'node:crypto';

/** Who signs in at the fake. Unset ids are derived from the email, so one email is one stable identity. */
export interface FakeUser {
  sub?: string;
  email: string;
  name: string;
  /** Entra: the user's home tenant (defaults to the fake's tenant). */
  tid?: string;
  /** Entra: the user's object id, the same for every app (defaults to a UUID derived from the email). */
  oid?: string;
  /** Google: the Workspace domain. */
  hd?: string;
}

export type Shape = 'entra' | 'google';

const digest = (value: string): Buffer => createHash('sha256').update(value).digest();

/** A UUID v4-shaped id derived from `seed`, as Entra's object and tenant ids look. */
function derivedUuid(seed: string): string {
  const hex = digest(seed).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-8${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

/**
 * The claims the fake releases for `user`, keyed by `sub`. Entra's `sub` is pairwise (per app) and
 * differs from `oid`, so a relying party that keys users by `sub` instead of `tid`+`oid` shows up.
 * Google's `sub` is a long decimal string.
 */
export function claimsFor(shape: Shape, user: FakeUser, context: { clientId: string; tenantId: string }): Record<string, unknown> {
  if (shape === 'entra') {
    const oid = user.oid ?? derivedUuid(`oid:${user.email}`);
    const tid = user.tid ?? context.tenantId;
    return {
      sub: user.sub ?? digest(`sub:${oid}:${context.clientId}`).toString('base64url').slice(0, 43),
      tid,
      oid,
      email: user.email,
      preferred_username: user.email,
      name: user.name,
      ver: '2.0',
    };
  }
  const sub =
    user.sub ??
    `1${BigInt(`0x${digest(`sub:${user.email}`).toString('hex').slice(0, 16)}`)
      .toString()
      .padStart(20, '0')}`;
  return { sub, email: user.email, email_verified: true, name: user.name, ...(user.hd ? { hd: user.hd } : {}) };
}

/** The fake's RS256 signing key; oidc-provider signs with it, and so does `resignJwt`. */
export interface SigningKey {
  privateKey: KeyObject;
  jwk: JsonWebKey & { kid: string; alg: 'RS256'; use: 'sig' };
}

export function generateSigningKey(): SigningKey {
  const { privateKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
  return { privateKey, jwk: { ...privateKey.export({ format: 'jwk' }), kid: randomBytes(8).toString('hex'), alg: 'RS256', use: 'sig' } };
}

/** Decodes a compact JWS's payload (no verification: the fake signed it itself). */
export function decodeJwtPayload(jwt: string): Record<string, unknown> {
  return JSON.parse(Buffer.from(jwt.split('.')[1] ?? '', 'base64url').toString('utf8')) as Record<string, unknown>;
}

/** Merges `claims` into a JWT's payload and signs it again with the same header and key. */
export function resignJwt(jwt: string, claims: Record<string, unknown>, key: SigningKey): string {
  const [header = ''] = jwt.split('.');
  const payload = Buffer.from(JSON.stringify({ ...decodeJwtPayload(jwt), ...claims })).toString('base64url');
  const signature = sign('sha256', Buffer.from(`${header}.${payload}`), key.privateKey).toString('base64url');
  return `${header}.${payload}.${signature}`;
}
