import { randomBytes } from 'node:crypto';
import { type UpstreamIdentity, UpstreamLoginError, type UpstreamProvider, type UpstreamTokens } from './types.ts';

const CODE_TTL_MS = 60_000;
const TOKEN_TTL_SECONDS = 3600;

interface IssuedCode {
  identity: UpstreamIdentity;
  state: string;
  expiresAt: number;
}

export interface DemoProvider extends UpstreamProvider {
  /** Called by the demo sign-in page: what the user typed becomes a one-time code for the callback. */
  issueCode(state: string, email: string, name: string): string;
}

/**
 * The embedded demo identity provider (DEMO_LOGIN): a stand-in upstream so the whole flow works with
 * no external account. It behaves like a real one — a redirect out, a one-time code back, "upstream
 * tokens" that are sealed in the vault — so every path the real providers take is exercised locally.
 */
export function createDemoProvider(publicUrl: string): DemoProvider {
  const codes = new Map<string, IssuedCode>();

  return {
    id: 'demo',
    label: 'Demo sign-in',
    async startLogin({ state }) {
      const url = new URL('/upstream/demo/login', publicUrl);
      url.searchParams.set('state', state);
      return url;
    },
    issueCode(state, email, name) {
      const now = Date.now();
      for (const [code, issued] of codes) if (issued.expiresAt <= now) codes.delete(code);
      const code = randomBytes(24).toString('base64url');
      const normalized = email.trim().toLowerCase();
      codes.set(code, {
        identity: { subject: normalized, email: normalized, name: name.trim() || undefined },
        state,
        expiresAt: now + CODE_TTL_MS,
      });
      return code;
    },
    async finishLogin(callbackUrl, request) {
      const code = callbackUrl.searchParams.get('code') ?? '';
      const issued = codes.get(code);
      codes.delete(code);
      if (!issued || issued.expiresAt <= Date.now() || issued.state !== request.state) {
        throw new UpstreamLoginError('The demo sign-in code is unknown or expired.');
      }
      const tokens: UpstreamTokens = {
        accessToken: `demo_at_${randomBytes(24).toString('base64url')}`,
        refreshToken: `demo_rt_${randomBytes(24).toString('base64url')}`,
        expiresAt: Math.floor(Date.now() / 1000) + TOKEN_TTL_SECONDS,
      };
      return { identity: issued.identity, tokens };
    },
  };
}
