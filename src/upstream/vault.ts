import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import type { KeyEntry } from '../config.ts';

/** Why `open` refused a sealed value. Never carries key material or plaintext. */
export type VaultErrorReason = 'malformed' | 'unknown_kid' | 'tampered';

/** Thrown for any sealed value that cannot be opened; `reason` says which check failed. */
export class VaultError extends Error {
  readonly reason: VaultErrorReason;
  constructor(reason: VaultErrorReason, message: string) {
    super(message);
    this.name = 'VaultError';
    this.reason = reason;
  }
}

/** Envelope encryption of secrets at rest: a fresh data key per write, wrapped by a key-encryption key. */
export interface Vault {
  /** The kid new envelopes are wrapped under (the first configured key). */
  readonly primaryKid: string;
  readonly kids: readonly string[];
  /** Encrypts `plaintext` bound to `aad` (the row identity, e.g. `upstream_grant:42`). */
  seal(aad: string, plaintext: Buffer | string): string;
  /** Decrypts a sealed value; throws `VaultError` unless it is intact and was sealed for `aad`. */
  open(aad: string, sealed: string): Buffer;
  sealJson(aad: string, value: unknown): string;
  openJson<T>(aad: string, sealed: string): T;
  /** The kid a sealed value is wrapped under; throws `VaultError` if it is malformed. */
  kidOf(sealed: string): string;
  /** True when the value is wrapped under an older key and should be rewrapped on the next write. */
  needsRewrap(sealed: string): boolean;
  /** Rewraps the data key under the primary key; the payload is untouched and opens with the same `aad`. */
  rewrap(aad: string, sealed: string): string;
}

const VERSION = 'v1';
const KEY_BYTES = 32;
// NIST SP 800-38D §8.2: 96-bit IVs are the recommended length; random ones stay safe for 2^32 uses per key.
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KID_PATTERN = /^[A-Za-z0-9_-]{1,32}$/;
const PART_PATTERN = /^[A-Za-z0-9_-]*$/;

/** `wrapped` is wrap IV ‖ encrypted data key ‖ wrap tag; the rest is the payload, which a rewrap never touches. */
type Envelope = { kid: string; wrapped: Buffer; iv: Buffer; tag: Buffer; ciphertext: Buffer };

/**
 * Builds the vault over a keyring from config (`ENCRYPTION_KEYS`, first entry primary). Sealed values
 * read `v1.<kid>.<wrapped>.<iv>.<tag>.<ciphertext>`, each binary part base64url.
 */
export function createVault(keys: readonly KeyEntry[]): Vault {
  const keyring = new Map<string, Buffer>();
  for (const { kid, key } of keys) {
    if (!KID_PATTERN.test(kid) || key.length !== KEY_BYTES || keyring.has(kid)) {
      throw new Error(`vault: key "${kid}" needs a unique kid of A-Z a-z 0-9 _ - and exactly ${KEY_BYTES} bytes`);
    }
    keyring.set(kid, Buffer.from(key));
  }
  if (!keys[0]) throw new Error('vault: the keyring is empty');
  const primaryKid = keys[0].kid;

  /** Wraps the data key under the primary key, then wipes it from memory. */
  function wrap(aad: string, dataKey: Buffer): Buffer {
    const iv = randomBytes(IV_BYTES);
    const [body, tag] = encrypt(keyring.get(primaryKid) as Buffer, iv, dataKey, wrapAad(primaryKid, aad));
    dataKey.fill(0);
    return Buffer.concat([iv, body, tag]);
  }

  function unwrap(aad: string, { kid, wrapped }: Envelope): Buffer {
    const kek = keyring.get(kid);
    if (!kek) throw new VaultError('unknown_kid', `vault: no key-encryption key with kid "${kid}"`);
    const [iv, body, tag] = [wrapped.subarray(0, IV_BYTES), wrapped.subarray(IV_BYTES, -TAG_BYTES), wrapped.subarray(-TAG_BYTES)];
    return decrypt(kek, iv, body, tag, wrapAad(kid, aad));
  }

  function seal(aad: string, plaintext: Buffer | string): string {
    const dataKey = randomBytes(KEY_BYTES);
    const iv = randomBytes(IV_BYTES);
    const [ciphertext, tag] = encrypt(dataKey, iv, Buffer.from(plaintext), dataAad(aad));
    return format({ kid: primaryKid, wrapped: wrap(aad, dataKey), iv, tag, ciphertext });
  }

  function open(aad: string, sealed: string): Buffer {
    const envelope = parse(sealed);
    const dataKey = unwrap(aad, envelope);
    try {
      return decrypt(dataKey, envelope.iv, envelope.ciphertext, envelope.tag, dataAad(aad));
    } finally {
      dataKey.fill(0);
    }
  }

  return {
    primaryKid,
    kids: Object.freeze([...keyring.keys()]),
    seal,
    open,
    sealJson(aad, value) {
      const text = JSON.stringify(value);
      if (text === undefined) throw new TypeError('vault: sealJson needs a JSON-serialisable value');
      return seal(aad, text);
    },
    openJson<T>(aad: string, sealed: string): T {
      try {
        return JSON.parse(open(aad, sealed).toString('utf8')) as T;
      } catch (error) {
        // V8's SyntaxError quotes the input, which here is plaintext: replace it.
        throw error instanceof VaultError ? error : new VaultError('malformed', 'vault: sealed value does not hold JSON');
      }
    },
    kidOf: (sealed) => parse(sealed).kid,
    needsRewrap: (sealed) => parse(sealed).kid !== primaryKid,
    rewrap(aad, sealed) {
      const envelope = parse(sealed);
      // Unwrapping authenticates the old wrap against its kid and the aad; the payload tag is checked at open.
      return format({ ...envelope, kid: primaryKid, wrapped: wrap(aad, unwrap(aad, envelope)) });
    },
  };
}

// Domain-separated AADs: the wrap is bound to its kid and the row, the payload to the row only, so a
// rewrap never touches the payload. Kids cannot contain NUL, and the free-form aad always comes last.
const wrapAad = (kid: string, aad: string) => Buffer.from(`gatehouse-vault/${VERSION}/wrap\0${kid}\0${aad}`, 'utf8');
const dataAad = (aad: string) => Buffer.from(`gatehouse-vault/${VERSION}/data\0${aad}`, 'utf8');

function encrypt(key: Buffer, iv: Buffer, plaintext: Buffer, aad: Buffer): [Buffer, Buffer] {
  const cipher = createCipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES }).setAAD(aad);
  return [Buffer.concat([cipher.update(plaintext), cipher.final()]), cipher.getAuthTag()];
}

function decrypt(key: Buffer, iv: Buffer, ciphertext: Buffer, tag: Buffer, aad: Buffer): Buffer {
  try {
    const decipher = createDecipheriv('aes-256-gcm', key, iv, { authTagLength: TAG_BYTES }).setAAD(aad).setAuthTag(tag);
    return Buffer.concat([decipher.update(ciphertext), decipher.final()]);
  } catch {
    // Node's message ("unable to authenticate data") says nothing useful; a wrong aad looks the same.
    throw new VaultError('tampered', 'vault: sealed value failed authentication (tampered, or sealed for another row)');
  }
}

function format({ kid, wrapped, iv, tag, ciphertext }: Envelope): string {
  return [VERSION, kid, ...[wrapped, iv, tag, ciphertext].map((part) => part.toString('base64url'))].join('.');
}

function parse(sealed: string): Envelope {
  const parts = typeof sealed === 'string' ? sealed.split('.') : [];
  const [version, kid, ...binary] = parts;
  if (parts.length !== 6 || version !== VERSION || !kid || !KID_PATTERN.test(kid)) throw malformed();
  const [wrapped, iv, tag, ciphertext] = binary.map(decodeStrict) as [Buffer, Buffer, Buffer, Buffer];
  if (wrapped.length !== IV_BYTES + KEY_BYTES + TAG_BYTES || iv.length !== IV_BYTES || tag.length !== TAG_BYTES) throw malformed();
  return { kid, wrapped, iv, tag, ciphertext };
}

// Buffer.from(…, 'base64url') skips bad characters and ignores trailing bits, so several strings decode
// to the same bytes; accepting only the canonical encoding makes every changed character detectable.
function decodeStrict(part: string): Buffer {
  const bytes = PART_PATTERN.test(part) ? Buffer.from(part, 'base64url') : undefined;
  if (!bytes || bytes.toString('base64url') !== part) throw malformed();
  return bytes;
}

const malformed = () => new VaultError('malformed', 'vault: sealed value is malformed');
