/**
 * A scripted browser for flow tests: a cookie jar, manual redirects, and form posts. It does what a
 * person's browser does on the consent and demo sign-in pages, without rendering them.
 */
export class UserAgent {
  /** Cookies per host name, as a browser scopes them (not per port): Gatehouse and the fake IdPs both set `_session`. */
  private readonly jars = new Map<string, Map<string, string>>();

  private jar(url: string): Map<string, string> {
    const host = new URL(url).hostname;
    const jar = this.jars.get(host) ?? new Map<string, string>();
    this.jars.set(host, jar);
    return jar;
  }

  async request(url: string, init: RequestInit = {}): Promise<Response> {
    const jar = this.jar(url);
    const headers = new Headers(init.headers);
    if (jar.size > 0) headers.set('cookie', [...jar].map(([name, value]) => `${name}=${value}`).join('; '));
    const response = await fetch(url, { ...init, headers, redirect: 'manual' });
    for (const line of response.headers.getSetCookie()) {
      const [pair] = line.split(';');
      const index = pair?.indexOf('=') ?? -1;
      if (!pair || index < 1) continue;
      const name = pair.slice(0, index).trim();
      const value = pair.slice(index + 1).trim();
      if (/max-age=0|expires=thu, 01 jan 1970/i.test(line) || value === '') jar.delete(name);
      else jar.set(name, value);
    }
    return response;
  }

  /** Follows redirects on any origin until `stop(url)` says so or a response is not a redirect (a page). */
  async followUntil(url: string, stop: (url: string) => boolean, init: RequestInit = {}): Promise<{ response: Response; url: string }> {
    let current = url;
    let response = await this.request(current, init);
    for (let hops = 0; hops < 30 && response.status >= 300 && response.status < 400; hops++) {
      const location = response.headers.get('location');
      if (!location) break;
      current = new URL(location, current).href;
      if (stop(current)) return { response, url: current };
      response = await this.request(current);
    }
    return { response, url: current };
  }

  /** Follows redirects within `origin` and stops at the first response that is not one, or that leaves it. */
  async follow(url: string, origin: string, init: RequestInit = {}): Promise<{ response: Response; url: string }> {
    let current = url;
    let response = await this.request(current, init);
    for (let hops = 0; hops < 20 && response.status >= 300 && response.status < 400; hops++) {
      const location = response.headers.get('location');
      if (!location) break;
      current = new URL(location, current).href;
      if (!current.startsWith(origin)) return { response, url: current };
      response = await this.request(current);
    }
    return { response, url: current };
  }

  async submitForm(url: string, origin: string, fields: Record<string, string>): Promise<{ response: Response; url: string }> {
    return this.follow(url, origin, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: new URLSearchParams(fields).toString(),
    });
  }

  /** Every cookie the browser holds, by name, all hosts (for canary greps). */
  cookieEntries(): [string, string][] {
    return [...this.jars.values()].flatMap((jar) => [...jar]);
  }

  /** Drops the cookies whose names match, as when a session cookie expires and others stay. */
  forgetCookies(pattern: RegExp): void {
    for (const jar of this.jars.values()) for (const name of [...jar.keys()]) if (pattern.test(name)) jar.delete(name);
  }

  clearCookies(): void {
    this.jars.clear();
  }
}

/** The value of a hidden input in a page. */
export function hiddenField(html: string, name: string): string {
  const match = new RegExp(`name="${name}" value="([^"]*)"`).exec(html);
  if (!match?.[1]) throw new Error(`no hidden field ${name} in page`);
  return match[1].replaceAll('&amp;', '&');
}

/** The action of the form that contains `marker` (or the first form). */
export function formAction(html: string, marker = ''): string {
  const forms = [...html.matchAll(/<form[^>]*action="([^"]*)"[^>]*>([\s\S]*?)<\/form>/g)];
  const form = forms.find((candidate) => candidate[2]?.includes(marker)) ?? forms[0];
  if (!form?.[1]) throw new Error('no form in page');
  return form[1].replaceAll('&amp;', '&');
}
