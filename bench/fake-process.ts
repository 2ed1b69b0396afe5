/**
 * The upstreams of benches 8 and 9 in their own process, so they share no event loop with Gatehouse
 * or autocannon: the test suite's own fakes (`test/support/`), not bench-only stand-ins.
 *
 * - `fake-google`: the fake Google IdP (oidc-provider) and the fake Calendar API, which authenticates
 *   every bearer by asking that IdP's userinfo endpoint (one more loopback hop per call, as a resource
 *   server that introspects would). The bench user has three calendars.
 * - `fake-backend`: the SDK backend MCP server of the proxy-mode tests (stateful sessions, SSE answers).
 * - `forwarder`: not a fake but a bare Node HTTP forwarder to `FORWARD_TO` (`forwarder.ts`), standing
 *   where Gatehouse stands, to show what the extra hop alone costs.
 */
import { startBackendMcp } from '../test/support/backend-mcp.ts';
import { startFakeGoogleApi } from '../test/support/fake-google-api.ts';
import { startFakeOidc } from '../test/support/fake-oidc.ts';
import { GOOGLE_CLIENT } from '../test/support/federation.ts';
import { BENCH_CALENDARS, BENCH_USER } from './bench-user.ts';
import { serveParent } from './child-ipc.ts';
import { startForwarder } from './forwarder.ts';

export type FakeKind = 'fake-google' | 'fake-backend' | 'forwarder';
/** Every access and refresh token the fake IdP issued (the bench finds the upstream access token among them). */
export type FakeRequest = { type: 'issued-tokens' };

/** The fakes record every call for the tests' assertions; in a bench run that list would only grow. */
const forgetEverySecond = (list: unknown[]) => setInterval(() => void list.splice(0), 1000).unref();

const kind = process.argv[2] as FakeKind;
if (kind === 'fake-google') {
  const idp = await startFakeOidc({ shape: 'google', clientId: GOOGLE_CLIENT.id, clientSecret: GOOGLE_CLIENT.secret });
  idp.user = BENCH_USER;
  const api = await startFakeGoogleApi({ issuer: idp.issuer });
  api.setCalendars(BENCH_USER.email, BENCH_CALENDARS);
  forgetEverySecond(api.served);
  serveParent<FakeRequest>(
    api.url,
    { issuer: idp.issuer },
    () => Promise.all([api.close(), idp.close()]).then(() => undefined),
    async () => idp.issuedTokens(),
  );
} else if (kind === 'forwarder') {
  const { env } = JSON.parse(process.argv[3] ?? '{}') as { env: { FORWARD_TO?: string } };
  if (!env.FORWARD_TO) throw new Error('the forwarder needs FORWARD_TO');
  const forwarder = await startForwarder(env.FORWARD_TO);
  serveParent<FakeRequest>(forwarder.url, {}, forwarder.close, async () => {
    throw new Error('the forwarder issues no tokens');
  });
} else {
  const backend = await startBackendMcp();
  forgetEverySecond(backend.seen);
  serveParent<FakeRequest>(new URL(backend.url).origin, { mcpPath: new URL(backend.url).pathname }, backend.close, async () => {
    throw new Error('the backend issues no tokens');
  });
}
