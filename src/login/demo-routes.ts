import type { FastifyInstance } from 'fastify';
import type { DemoProvider } from '../upstream/demo.ts';
import { sendPage } from './reply.ts';
import type { Views } from './views.ts';

/** The embedded demo identity provider's sign-in page (DEMO_LOGIN; refused in production by config). */
export function registerDemoLogin(app: FastifyInstance, demo: DemoProvider, views: Views): void {
  app.get<{ Querystring: { state?: string } }>('/upstream/demo/login', (request, reply) => {
    const state = String(request.query.state ?? '');
    const action = `/upstream/demo/login?state=${encodeURIComponent(state)}`;
    return sendPage(reply, 200, views.demoLogin({ action, csrfToken: reply.generateCsrf() }));
  });
  app.post<{ Querystring: { state?: string }; Body: { email?: string; name?: string } }>(
    '/upstream/demo/login',
    { preHandler: app.csrfProtection },
    (request, reply) => {
      const state = String(request.query.state ?? '');
      const email = String(request.body?.email ?? '').trim();
      const name = String(request.body?.name ?? '').trim();
      if (!/^[^\s@]{1,64}@[^\s@]{1,190}\.[^\s@]{2,63}$/.test(email) || name.length > 100 || !state) {
        const action = `/upstream/demo/login?state=${encodeURIComponent(state)}`;
        return sendPage(
          reply,
          400,
          views.demoLogin({
            action,
            csrfToken: reply.generateCsrf(),
            email,
            name,
            error: 'Enter a valid email address (and a name of at most 100 characters).',
          }),
        );
      }
      const code = demo.issueCode(state, email, name);
      return reply.redirect(`/upstream/demo/callback?code=${encodeURIComponent(code)}&state=${encodeURIComponent(state)}`, 303);
    },
  );
}
