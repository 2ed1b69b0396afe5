import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import cookie from '@fastify/cookie';
import csrf from '@fastify/csrf-protection';
import formbody from '@fastify/formbody';
import helmet from '@fastify/helmet';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { Provider } from 'oidc-provider';
import type { Commits } from '../db/commits.ts';
import type { Db } from '../db/index.ts';
import { hijackReply } from '../http.ts';
import type { ScopePolicy } from '../oauth/scopes.ts';
import type { AccountStore } from '../upstream/accounts.ts';
import type { DemoProvider } from '../upstream/demo.ts';
import { UpstreamGrantError, type UpstreamProvider } from '../upstream/types.ts';
import type { Vault } from '../upstream/vault.ts';
import { rememberApproval, wasApprovedHere } from './approvals.ts';
import { registerUpstreamCallback } from './callback.ts';
import { completeAuthorization, describeClient, restartUrl } from './consent.ts';
import { registerDemoLogin } from './demo-routes.ts';
import { sendPage, unsignCookie } from './reply.ts';
import { startUpstreamLogin } from './upstream-state.ts';
import type { Views } from './views.ts';

export interface LoginRoutesOptions {
  provider: Provider;
  db: Db;
  vault: Vault;
  views: Views;
  accounts: AccountStore;
  upstreams: ReadonlyMap<string, UpstreamProvider>;
  demo: DemoProvider | undefined;
  publicUrl: string;
  resourceUrl: string;
  scopes: ScopePolicy;
  cookieSecrets: readonly string[];
  /** The group commit; responses the provider writes itself wait for it (Fastify replies wait in app.ts). */
  commits: Pick<Commits, 'pending' | 'durable'>;
}

/** The consent page's choice for "continue as the account already signed in here". */
const CURRENT_ACCOUNT = '_current';
/** Binds an upstream login to the browser that started it; read only at the callback. */
const BROWSER_COOKIE = 'gatehouse_browser';
type Interaction = Awaited<ReturnType<Provider['interactionDetails']>>;
const approvalOf = ({ params }: Interaction) => ({ clientId: String(params.client_id), scope: String(params.scope ?? '') });
const stylesheet = readFileSync(new URL('../../views/gatehouse.css', import.meta.url));

/**
 * Interactions: the consent page (with the provider choice) before the browser leaves Gatehouse,
 * the upstream callback, and the demo sign-in. The only HTML, form bodies and cookies we own.
 */
export async function loginRoutes(app: FastifyInstance, options: LoginRoutesOptions): Promise<void> {
  const { provider, views, upstreams } = options;
  const secure = options.publicUrl.startsWith('https://');
  const cookieOptions = { httpOnly: true, sameSite: 'lax', secure, signed: true } as const;

  await app.register(cookie, { secret: [...options.cookieSecrets] });
  await app.register(formbody, { bodyLimit: 4096 });
  await app.register(csrf, {
    cookieOpts: { ...cookieOptions, path: '/' },
    getToken: (request) => (request.body as { _csrf?: string })?._csrf,
  });
  await app.register(helmet, {
    contentSecurityPolicy: {
      useDefaults: false,
      // No form-action: Chrome applies it to the redirect chain after a POST, which ends at the client.
      directives: {
        defaultSrc: ["'none'"],
        styleSrc: ["'self'"],
        imgSrc: ["'self'", 'data:'],
        frameAncestors: ["'none'"],
        baseUri: ["'none'"],
      },
    },
    frameguard: { action: 'deny' },
    referrerPolicy: { policy: 'no-referrer' },
  });
  app.addHook('onSend', async (_request, reply) => {
    // Pages carry CSRF tokens and sign-in state; only the stylesheet says otherwise.
    if (!reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
  });
  app.setErrorHandler((error: Error & { statusCode?: number }, request, reply) => {
    const status = error.statusCode && error.statusCode >= 400 && error.statusCode < 500 ? error.statusCode : 500;
    if (status === 500) request.log.error({ err: error }, 'login request failed');
    const message =
      status === 403
        ? 'This form expired or was not sent from this page. Go back to your app and try again.'
        : 'The request could not be processed.';
    return sendPage(reply, status, views.error({ title: status === 500 ? 'Something went wrong' : 'Request refused', message }));
  });

  const errorPage = (reply: FastifyReply, status: number, message: string, startAgainUrl?: string) =>
    sendPage(reply, status, views.error({ title: 'Sign-in could not continue', message, ...(startAgainUrl ? { startAgainUrl } : {}) }));

  /** The interaction the cookie names, if it is the one in the URL. */
  const loadInteraction = async (request: FastifyRequest<{ Params: { uid: string } }>, reply: FastifyReply) => {
    try {
      const interaction = await provider.interactionDetails(request.raw, reply.raw);
      return interaction.uid === request.params.uid ? interaction : undefined;
    } catch {
      return undefined;
    }
  };
  const expired = 'This sign-in page has expired or was opened in another browser. Go back to your app and connect again.';

  /** Starts the upstream login (state bound to this browser) and sends the browser to the provider. */
  const sendUpstream = async (request: FastifyRequest, reply: FastifyReply, interaction: Interaction, upstream: UpstreamProvider) => {
    let browserId = unsignCookie(request, BROWSER_COOKIE);
    if (!browserId) {
      browserId = randomBytes(32).toString('base64url');
      reply.setCookie(BROWSER_COOKIE, browserId, { ...cookieOptions, path: '/upstream' });
    }
    const { request: login } = startUpstreamLogin(options.db, options.vault, {
      provider: upstream.id,
      interactionUid: interaction.uid,
      browserId,
      redirectUri: new URL(`/upstream/${upstream.id}/callback`, options.publicUrl).href,
    });
    try {
      return reply.redirect((await upstream.startLogin(login)).href, 303);
    } catch (cause) {
      if (!(cause instanceof UpstreamGrantError)) throw cause;
      request.log.warn({ provider: upstream.id, reason: cause.message }, 'upstream login could not start');
      return errorPage(reply, 502, `${cause.message}. Try again in a moment.`, restartUrl(interaction));
    }
  };

  app.get('/assets/gatehouse.css', (_request, reply) =>
    reply.type('text/css').header('cache-control', 'public, max-age=3600').send(stylesheet),
  );

  app.get<{ Params: { uid: string } }>('/interaction/:uid', async (request, reply) => {
    const interaction = await loadInteraction(request, reply);
    if (!interaction) return errorPage(reply, 400, expired);
    const [only] = upstreams.values();
    // A returning browser with one way to sign in and a client it already approved has nothing to choose.
    if (upstreams.size === 1 && only && !interaction.session?.accountId && wasApprovedHere(request, approvalOf(interaction)))
      return sendUpstream(request, reply, interaction, only);
    const signedIn = interaction.session?.accountId ? options.accounts.findAccount(interaction.session.accountId) : undefined;
    const current = signedIn?.upstream[0];
    const providers = [
      ...(signedIn && current ? [{ id: CURRENT_ACCOUNT, label: `your current account (${current.email ?? current.subject})` }] : []),
      ...[...upstreams.values()].map(({ id, label }) => ({ id, label })),
    ];
    const uid = encodeURIComponent(interaction.uid);
    const view = {
      ...(await describeClient(provider, interaction, options.scopes, options.resourceUrl)),
      providers,
      action: `/interaction/${uid}/approve`,
      cancelAction: `/interaction/${uid}/cancel`,
      csrfToken: reply.generateCsrf(),
    };
    return sendPage(reply, 200, views.consent(view));
  });

  app.post<{ Params: { uid: string }; Body: { provider?: string } }>(
    '/interaction/:uid/approve',
    { preHandler: app.csrfProtection },
    async (request, reply) => {
      const interaction = await loadInteraction(request, reply);
      if (!interaction) return errorPage(reply, 400, expired);
      const choice = String(request.body?.provider ?? '');
      const signedInAccountId = interaction.session?.accountId;
      const upstream = upstreams.get(choice);
      if (!(choice === CURRENT_ACCOUNT && signedInAccountId) && !upstream)
        return errorPage(reply, 400, 'Choose one of the sign-in options on the previous page.', restartUrl(interaction));
      rememberApproval(request, reply, approvalOf(interaction), secure);
      if (!upstream) {
        const returnTo = await completeAuthorization(
          provider,
          interaction.uid,
          signedInAccountId as string,
          options.resourceUrl,
          options.scopes,
        );
        return returnTo ? reply.redirect(returnTo, 303) : errorPage(reply, 400, expired);
      }
      return sendUpstream(request, reply, interaction, upstream);
    },
  );

  app.post<{ Params: { uid: string } }>('/interaction/:uid/cancel', { preHandler: app.csrfProtection }, async (request, reply) => {
    if (!(await loadInteraction(request, reply))) return errorPage(reply, 400, expired);
    // Phase 2 of the two-phase rule: client and redirect URI are trusted now, so the error goes back to the client.
    const res = hijackReply(reply, options.commits);
    await provider.interactionFinished(
      request.raw,
      res,
      { error: 'access_denied', error_description: 'the user declined' },
      { mergeWithLastSubmission: false },
    );
  });

  registerUpstreamCallback(app, { ...options, errorPage, expired, browserId: (request) => unsignCookie(request, BROWSER_COOKIE) });
  if (options.demo) registerDemoLogin(app, options.demo, views);
}
