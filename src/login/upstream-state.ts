import { createHash, randomBytes } from 'node:crypto';
import { eq, lt } from 'drizzle-orm';
import type { Db } from '../db/index.ts';
import { upstreamLogins } from '../db/schema.ts';
import { UpstreamLoginError, type UpstreamLoginRequest } from '../upstream/types.ts';
import type { Vault } from '../upstream/vault.ts';

/** An upstream login must come back within this long (it includes the user typing a password). */
const STATE_TTL_MS = 10 * 60_000;

const sha256 = (value: string): string => createHash('sha256').update(value).digest('base64url');
const random = (): string => randomBytes(32).toString('base64url');

export interface StartedLogin {
  request: UpstreamLoginRequest;
}

/**
 * Creates the server-side state of one upstream login, after the user approved the client on our
 * consent page. The state is single-use, expires, and is bound to this browser by `browserId`
 * (from a signed cookie), so a callback URL replayed elsewhere is worthless.
 */
export function startUpstreamLogin(
  db: Db,
  vault: Vault,
  input: { provider: string; interactionUid: string; browserId: string; redirectUri: string },
): StartedLogin {
  const request: UpstreamLoginRequest = { state: random(), codeVerifier: random(), nonce: random(), redirectUri: input.redirectUri };
  const stateHash = sha256(request.state);
  db.delete(upstreamLogins).where(lt(upstreamLogins.expiresAt, Date.now())).run();
  db.insert(upstreamLogins)
    .values({
      stateHash,
      provider: input.provider,
      browserHash: sha256(input.browserId),
      sealed: vault.sealJson(`upstream_login:${stateHash}`, {
        interactionUid: input.interactionUid,
        codeVerifier: request.codeVerifier,
        nonce: request.nonce,
      }),
      expiresAt: Date.now() + STATE_TTL_MS,
    })
    .run();
  return { request };
}

/** This browser's own state, past its expiry; it still names the interaction to start again. */
export class ExpiredUpstreamLoginError extends UpstreamLoginError {
  readonly interactionUid: string;
  constructor(interactionUid: string) {
    super('This sign-in took too long and expired.');
    this.interactionUid = interactionUid;
  }
}

/**
 * Consumes the state a callback carries (one DELETE … RETURNING, so a replay finds nothing). Refuses a
 * state from another provider's login (mix-up, RFC 9700 §4.4), another browser, or past its expiry.
 */
export function finishUpstreamLogin(
  db: Db,
  vault: Vault,
  input: { provider: string; state: string; browserId: string | undefined; redirectUri: string },
): { interactionUid: string; request: UpstreamLoginRequest } {
  const stateHash = sha256(input.state);
  const row = db.delete(upstreamLogins).where(eq(upstreamLogins.stateHash, stateHash)).returning().get();
  if (!row) throw new UpstreamLoginError('This sign-in link is unknown or was already used.');
  if (row.provider !== input.provider)
    throw new UpstreamLoginError('This sign-in came back from a different identity provider than the one it was sent to.');
  if (!input.browserId || sha256(input.browserId) !== row.browserHash) {
    throw new UpstreamLoginError('This sign-in was started in a different browser.');
  }
  const { interactionUid, codeVerifier, nonce } = vault.openJson<{ interactionUid: string; codeVerifier: string; nonce: string }>(
    `upstream_login:${stateHash}`,
    row.sealed,
  );
  // After the browser check: only the browser that started the login is offered to start it again.
  if (row.expiresAt <= Date.now()) throw new ExpiredUpstreamLoginError(interactionUid);
  return { interactionUid, request: { state: input.state, redirectUri: input.redirectUri, codeVerifier, nonce } };
}
