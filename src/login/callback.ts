import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Provider } from 'oidc-provider';
import type { Db } from '../db/index.ts';
import type { ScopePolicy } from '../oauth/scopes.ts';
import type { AccountStore } from '../upstream/accounts.ts';
import { UpstreamGrantError, UpstreamLoginError, type UpstreamLoginResult, type UpstreamProvider } from '../upstream/types.ts';
import type { Vault } from '../upstream/vault.ts';
import { completeAuthorization, restartUrl } from './consent.ts';
import { ExpiredUpstreamLoginError, finishUpstreamLogin } from './upstream-state.ts';

export interface UpstreamCallbackOptions {
  provider: Provider;
  db: Db;
  vault: Vault;
  accounts: AccountStore;
  upstreams: ReadonlyMap<string, UpstreamProvider>;
  publicUrl: string;
  resourceUrl: string;
  scopes: ScopePolicy;
  errorPage(reply: FastifyReply, status: number, message: string, startAgainUrl?: string): FastifyReply;
  /** The message for an interaction that is gone. */
  expired: string;
  /** The id in this browser's signed binding cookie. */
  browserId(request: FastifyRequest): string | undefined;
}

const incomplete = 'This sign-in link is incomplete. Go back to your app and connect again.';

/**
 * `/upstream/:provider/callback`, the redirect URI operators register upstream. In order: the state
 * must be ours, unused, unexpired, from this provider's login and this browser; then the upstream's
 * own answer (an `error`, or a code whose exchange passes every check). Only then is an account
 * written, in one transaction, and the authorization resumed. Every failure is a page with a way to
 * start again, never a 5xx, never a token in the page or the log.
 */
export function registerUpstreamCallback(app: FastifyInstance, options: UpstreamCallbackOptions): void {
  const { provider, errorPage } = options;

  app.get<{ Params: { provider: string }; Querystring: Record<string, string | string[] | undefined> }>(
    '/upstream/:provider/callback',
    async (request, reply) => {
      const upstream = options.upstreams.get(request.params.provider);
      const { state, error } = request.query;
      if (!upstream || typeof state !== 'string' || !state || state.length > 512) return errorPage(reply, 400, incomplete);
      let pending: ReturnType<typeof finishUpstreamLogin>;
      try {
        pending = finishUpstreamLogin(options.db, options.vault, {
          provider: upstream.id,
          state,
          browserId: options.browserId(request),
          redirectUri: new URL(`/upstream/${upstream.id}/callback`, options.publicUrl).href,
        });
      } catch (cause) {
        if (!(cause instanceof UpstreamLoginError)) throw cause;
        const expiredIn = cause instanceof ExpiredUpstreamLoginError ? await provider.Interaction.find(cause.interactionUid) : undefined;
        if (expiredIn) return errorPage(reply, 400, cause.message, restartUrl(expiredIn));
        return errorPage(reply, 400, `${cause.message} Go back to your app and connect again.`);
      }
      const interaction = await provider.Interaction.find(pending.interactionUid);
      if (!interaction) return errorPage(reply, 400, options.expired);
      const startAgain = restartUrl(interaction);
      if (error !== undefined)
        return errorPage(reply, 400, `${upstream.label} did not sign you in (${String(error).slice(0, 64)}).`, startAgain);

      let login: UpstreamLoginResult;
      try {
        login = await upstream.finishLogin(new URL(request.url, options.publicUrl), pending.request);
      } catch (cause) {
        if (cause instanceof UpstreamLoginError) return errorPage(reply, 400, cause.message, startAgain);
        // Only the class and our own message: an upstream error may quote a code or a token.
        const reason = cause instanceof UpstreamGrantError ? cause.message : cause instanceof Error ? cause.name : 'unknown';
        request.log.warn({ provider: upstream.id, reason }, 'upstream login failed');
        return errorPage(reply, 502, `${upstream.label} could not be reached or gave an answer Gatehouse did not understand.`, startAgain);
      }
      const accountId = options.accounts.recordUpstreamLogin({
        provider: upstream.id,
        ...login,
        signedInAccountId: interaction.session?.accountId,
      });
      const returnTo = await completeAuthorization(provider, interaction.uid, accountId, options.resourceUrl, options.scopes);
      return returnTo ? reply.redirect(returnTo, 303) : errorPage(reply, 400, options.expired);
    },
  );
}
