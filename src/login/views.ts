import { fileURLToPath } from 'node:url';
import { Eta } from 'eta';

/** What the consent page needs: who is asking, where the browser goes afterwards, and how to sign in. */
export interface ConsentView {
  clientName: string;
  clientId: string;
  /** Host of the redirect URI, shown prominently: it is the one thing a phishing client cannot fake. */
  redirectHost: string;
  redirectUri: string;
  /** Self-registered (DCR) or metadata-document client: its name is its own claim, not ours. */
  unverified: boolean;
  /** Every redirect URI is a loopback address, so only a program on the user's device receives the grant. */
  localhostOnly: boolean;
  /** `added`: not in the grant the client already holds (a step-up); the page marks it. */
  scopes: { name: string; description: string; added?: boolean }[];
  /** One "Continue with <label>" submit button each, posted as `provider=<id>`. */
  providers: { id: string; label: string }[];
  action: string;
  csrfToken: string;
  cancelAction: string;
}

/** The embedded demo identity provider's sign-in form (development only). */
export interface DemoLoginView {
  action: string;
  csrfToken: string;
  email?: string;
  name?: string;
  error?: string;
}

/** A user-facing error page (phase 1 of the two-phase rule: nothing is trusted enough to redirect to). */
export interface ErrorView {
  title: string;
  message: string;
  startAgainUrl?: string;
}

export interface Views {
  consent(data: ConsentView): string;
  demoLogin(data: DemoLoginView): string;
  error(data: ErrorView): string;
}

const defaultViewsDir = fileURLToPath(new URL('../../views/', import.meta.url));

/**
 * Renders the only HTML pages Gatehouse shows. Eta escapes every `<%= %>` interpolation; templates use the
 * raw tag only for the layout's already-rendered body. Each template is read and compiled once, on first use.
 */
export function createViews(viewsDir: string = defaultViewsDir): Views {
  const eta = new Eta({ views: viewsDir, cache: true, autoEscape: true });

  return {
    consent: (data) =>
      eta.render('consent', { ...data, action: requireSafeUrl(data.action), cancelAction: requireSafeUrl(data.cancelAction) }),
    demoLogin: (data) =>
      eta.render('demo-login', { ...data, email: data.email ?? '', name: data.name ?? '', action: requireSafeUrl(data.action) }),
    error: (data) =>
      eta.render('error', { ...data, startAgainUrl: data.startAgainUrl === undefined ? undefined : requireSafeUrl(data.startAgainUrl) }),
  };
}

/**
 * Escaping keeps a URL inside its attribute but does not stop `javascript:` or a protocol-relative
 * `//evil` target. Every URL we put in `href`/`action` is ours, so anything else is a programming error.
 */
function requireSafeUrl(url: string): string {
  if (/^\/(?![/\\])/.test(url) || /^https?:\/\//i.test(url)) return url;
  throw new TypeError(`refusing to render a link or form target that is not an http(s) URL or a local path: ${JSON.stringify(url)}`);
}
