import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { KeyEntry } from '../../src/config.ts';
import { createVault, VaultError } from '../../src/upstream/vault.ts';

const k0: KeyEntry = { kid: 'k0', key: randomBytes(32) };
const k1: KeyEntry = { kid: 'k1', key: randomBytes(32) };
const AAD = 'upstream_grant:42';
const CANARY = 'canary-upstream-refresh-token-7f3a9c';

/** Runs `fn` and returns the VaultError it threw; fails the test on any other outcome. */
function vaultErrorOf(fn: () => unknown): VaultError {
  try {
    fn();
  } catch (error) {
    expect(error).toBeInstanceOf(VaultError);
    return error as VaultError;
  }
  throw new Error('expected a VaultError, but nothing was thrown');
}

const BASE64URL = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_';

/**
 * Flips the lowest bit of one base64url character. In the last character of a part whose length is
 * not a multiple of 3 bytes that bit is padding, so a lenient decoder would return the same bytes.
 */
function flipChar(text: string, index: number): string {
  const value = BASE64URL.indexOf(text[index] as string);
  const replacement = value < 0 ? 'A' : BASE64URL[value ^ 1];
  return text.slice(0, index) + replacement + text.slice(index + 1);
}

describe('vault (envelope encryption, AES-256-GCM)', () => {
  const vault = createVault([k0]);

  it('opens what it sealed, for strings, buffers and JSON', () => {
    expect(vault.open(AAD, vault.seal(AAD, CANARY)).toString('utf8')).toBe(CANARY);
    const bytes = randomBytes(100);
    expect(vault.open(AAD, vault.seal(AAD, bytes))).toEqual(bytes);
    expect(vault.open(AAD, vault.seal(AAD, '')).length).toBe(0);
    const grant = { accessToken: CANARY, expiresAt: 1_700_000_000, scopes: ['openid'] };
    expect(vault.openJson<typeof grant>(AAD, vault.sealJson(AAD, grant))).toEqual(grant);
  });

  it('produces a different envelope for the same plaintext on every seal (fresh IV and data key)', () => {
    const first = vault.seal(AAD, CANARY).split('.');
    const second = vault.seal(AAD, CANARY).split('.');
    for (const index of [2, 3, 4, 5]) expect(first[index]).not.toBe(second[index]);
  });

  it('refuses an envelope opened under another row identity (AAD)', () => {
    const sealed = vault.seal(AAD, CANARY);
    expect(vaultErrorOf(() => vault.open('upstream_grant:43', sealed)).reason).toBe('tampered');
    expect(vaultErrorOf(() => vault.rewrap('upstream_grant:43', sealed)).reason).toBe('tampered');
  });

  it('detects a change to any byte of any binary part (GCM authentication)', () => {
    const parts = vault.seal(AAD, CANARY).split('.');
    for (const index of [2, 3, 4, 5]) {
      const bytes = Buffer.from(parts[index] as string, 'base64url');
      for (let position = 0; position < bytes.length; position++) {
        const tampered = Buffer.from(bytes);
        tampered[position] = (tampered[position] as number) ^ 0x01;
        const sealed = parts.with(index, tampered.toString('base64url')).join('.');
        expect(vaultErrorOf(() => vault.open(AAD, sealed)).reason).toBe('tampered');
      }
    }
  });

  it('rejects a change to any character of the sealed string, including non-canonical base64url', () => {
    const sealed = vault.seal(AAD, CANARY);
    for (let index = 0; index < sealed.length; index++) {
      if (sealed[index] === '.') continue;
      vaultErrorOf(() => vault.open(AAD, flipChar(sealed, index)));
    }
  });

  it('refuses an envelope wrapped under a kid it does not hold', () => {
    const foreign = createVault([{ kid: 'k9', key: randomBytes(32) }]).seal(AAD, CANARY);
    expect(vaultErrorOf(() => vault.open(AAD, foreign)).reason).toBe('unknown_kid');
    const relabelled = vault.seal(AAD, CANARY).replace(/^v1\.k0\./, 'v1.k9.');
    expect(vaultErrorOf(() => vault.open(AAD, relabelled)).reason).toBe('unknown_kid');
  });

  it('binds the wrapped data key to its kid: a relabelled kid in the same keyring fails', () => {
    const both = createVault([k1, k0]);
    const relabelled = vault.seal(AAD, CANARY).replace(/^v1\.k0\./, 'v1.k1.');
    expect(vaultErrorOf(() => both.open(AAD, relabelled)).reason).toBe('tampered');
  });

  it('rotates keys: an old envelope opens, needs rewrap, and rewraps to the new primary kid', () => {
    const old = vault.seal(AAD, CANARY);
    const rotated = createVault([k1, k0]);
    expect(rotated.primaryKid).toBe('k1');
    expect(rotated.kids).toEqual(['k1', 'k0']);
    expect(rotated.open(AAD, old).toString('utf8')).toBe(CANARY);
    expect(rotated.kidOf(old)).toBe('k0');
    expect(rotated.needsRewrap(old)).toBe(true);

    const rewrapped = rotated.rewrap(AAD, old);
    expect(rotated.kidOf(rewrapped)).toBe('k1');
    expect(rotated.needsRewrap(rewrapped)).toBe(false);
    // The payload (iv, tag, ciphertext) is carried over untouched; only the wrap changes.
    expect(rewrapped.split('.').slice(3)).toEqual(old.split('.').slice(3));
    expect(createVault([k1]).open(AAD, rewrapped).toString('utf8')).toBe(CANARY);
    expect(vaultErrorOf(() => vault.open(AAD, rewrapped)).reason).toBe('unknown_kid');
  });

  it.each([
    ['empty', ''],
    ['garbage', 'not a sealed value'],
    ['only dots', '.....'],
    ['wrong version', 'v2.k0.AAAA.AAAA.AAAA.AAAA'],
    ['bad kid', 'v1.k 0.AAAA.AAAA.AAAA.AAAA'],
    ['too many parts', 'v1.k0.AAAA.AAAA.AAAA.AAAA.AAAA'],
    ['padding characters', 'v1.k0.AA==.AAAA.AAAA.AAAA'],
  ])('rejects a malformed envelope (%s) with VaultError', (_name, sealed) => {
    expect(vaultErrorOf(() => vault.open(AAD, sealed)).reason).toBe('malformed');
    expect(vaultErrorOf(() => vault.kidOf(sealed)).reason).toBe('malformed');
    expect(vaultErrorOf(() => vault.needsRewrap(sealed)).reason).toBe('malformed');
    expect(vaultErrorOf(() => vault.rewrap(AAD, sealed)).reason).toBe('malformed');
  });

  it('rejects every truncation of a real envelope with VaultError', () => {
    const sealed = vault.seal(AAD, CANARY);
    for (let length = 0; length < sealed.length; length++) vaultErrorOf(() => vault.open(AAD, sealed.slice(0, length)));
    vaultErrorOf(() => vault.open(AAD, `${sealed}A`));
    expect(vaultErrorOf(() => vault.open(AAD, sealed.replace(/^v1\./, 'v0.'))).reason).toBe('malformed');
  });

  it('never shows the plaintext in the envelope or in errors, in any encoding', () => {
    const sealed = vault.seal(AAD, CANARY);
    const plain = Buffer.from(CANARY);
    for (const encoding of ['utf8', 'base64', 'base64url', 'hex'] as const) {
      expect(sealed).not.toContain(plain.toString(encoding));
    }
    const message = vaultErrorOf(() => vault.open('upstream_grant:43', sealed)).message;
    expect(message).not.toContain(CANARY);
    expect(message).not.toContain(k0.key.toString('base64'));
    // JSON.parse would quote the offending plaintext in its SyntaxError.
    const notJson = vaultErrorOf(() => vault.openJson(AAD, sealed));
    expect(notJson.reason).toBe('malformed');
    expect(notJson.message).not.toContain(CANARY);
  });

  it('refuses a keyring that is empty, has a short key or repeats a kid', () => {
    expect(() => createVault([])).toThrow();
    expect(() => createVault([{ kid: 'k0', key: randomBytes(16) }])).toThrow();
    expect(() => createVault([k0, k0])).toThrow();
  });
});
