import { type Browser, chromium, type Page } from 'playwright-core';

/**
 * Headless Chromium (Debian's package; playwright-core brings no browser). Background networking,
 * component updates and sync are off so the browser talks only to the servers a test starts.
 */
export async function launchBrowser(): Promise<Browser> {
  return chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      '--no-first-run',
    ],
  });
}

/**
 * Answers every request to `origin` (a client's redirect URI host, which does not exist) with 200 "ok",
 * so a test can read the URL the browser was sent to. Playwright's `page.route` cannot do this: it never
 * fires for a request that follows a redirect (microsoft/playwright#2617), and every authorization
 * response is a redirect. Chromium's Fetch domain pauses redirected requests too.
 */
export async function answerRequestsTo(page: Page, origin: string): Promise<void> {
  const cdp = await page.context().newCDPSession(page);
  cdp.on('Fetch.requestPaused', ({ requestId }) => {
    const body = Buffer.from('ok').toString('base64');
    const headers = [{ name: 'content-type', value: 'text/plain' }];
    // The context may close while a request is paused; nothing is left to answer then.
    cdp.send('Fetch.fulfillRequest', { requestId, responseCode: 200, responseHeaders: headers, body }).catch(() => {});
  });
  await cdp.send('Fetch.enable', { patterns: [{ urlPattern: `${origin}/*`, requestStage: 'Request' }] });
}
