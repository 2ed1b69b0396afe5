import { cpSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { type ConsentView, createViews } from '../../src/login/views.ts';

const views = createViews();

const SCRIPT = '<script>alert(1)</script>';
const ATTRIBUTE_BREAKOUT = '"><img src=x onerror=alert(1)>';

function consentView(overrides: Partial<ConsentView> = {}): ConsentView {
  return {
    clientName: 'Claude',
    clientId: 'client-123',
    redirectHost: 'claude.ai',
    redirectUri: 'https://claude.ai/api/mcp/auth_callback',
    unverified: false,
    localhostOnly: false,
    scopes: [{ name: 'mcp', description: 'Use the tools on this server as you' }],
    providers: [
      { id: 'entra', label: 'Microsoft' },
      { id: 'google', label: 'Google' },
    ],
    action: '/interaction/uid-1/login',
    csrfToken: 'csrf-token-1',
    cancelAction: '/interaction/uid-1/abort',
    ...overrides,
  };
}

function allPages(): string[] {
  return [
    views.consent(consentView({ unverified: true, localhostOnly: true })),
    views.demoLogin({ action: '/upstream/demo/login', csrfToken: 't', error: 'Enter an email address.' }),
    views.error({ title: 'Something went wrong', message: 'Try again.', startAgainUrl: '/authorize?x=1' }),
  ];
}

/** The hostile string must appear only in its escaped form, never as markup. */
function expectOnlyEscaped(html: string, hostile: string): void {
  expect(html).not.toContain(hostile);
  expect(html).toContain(hostile.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;'));
}

describe('layout', () => {
  it('is a complete document with viewport, no-referrer policy and the self-hosted stylesheet', () => {
    for (const html of allPages()) {
      expect(html).toMatch(/^<!doctype html>/);
      expect(html).toContain('<meta name="viewport" content="width=device-width, initial-scale=1">');
      expect(html).toContain('<meta name="referrer" content="no-referrer">');
      expect(html).toContain('<link rel="stylesheet" href="/assets/gatehouse.css">');
    }
  });

  it('carries no script, inline style or external resource, so a strict CSP holds', () => {
    for (const html of allPages()) {
      expect(html).not.toMatch(/<script/i);
      expect(html).not.toMatch(/style=/i);
      expect(html).not.toMatch(/<style/i);
      expect(html).not.toMatch(/\son[a-z]+=/i);
      expect(html).not.toMatch(/(src|href)="(https?:)?\/\//i);
    }
  });
});

describe('consent page', () => {
  it('names the client and shows the redirect host prominently', () => {
    const html = views.consent(consentView());
    expect(html).toContain('<span class="client-name">Claude</span> wants to access your account');
    expect(html).toContain('It will send you back to');
    expect(html).toContain('<p class="destination-host">claude.ai</p>');
    expect(html).toContain('https://claude.ai/api/mcp/auth_callback');
    expect(html).toContain('client-123');
    expect(html).toContain('Use the tools on this server as you');
  });

  it('has one submit button per provider and a separate Cancel form, both carrying the CSRF token', () => {
    const html = views.consent(consentView());
    const buttons = html.match(/<button type="submit" name="provider" value="[^"]*"/g) ?? [];
    expect(buttons).toEqual([
      '<button type="submit" name="provider" value="entra"',
      '<button type="submit" name="provider" value="google"',
    ]);
    expect(html).toContain('Continue with Microsoft');
    expect(html).toContain('Continue with Google');
    expect(html).toContain('<form method="post" action="/interaction/uid-1/login"');
    expect(html).toContain('<form method="post" action="/interaction/uid-1/abort"');
    expect(html).toMatch(
      /<form method="post" action="\/interaction\/uid-1\/abort"[^>]*>\s*<input type="hidden" name="_csrf" value="csrf-token-1">\s*<button[^>]*>Cancel<\/button>/,
    );
    expect(html.match(/<input type="hidden" name="_csrf" value="csrf-token-1">/g)).toHaveLength(2);
  });

  it('marks the client unverified only when it is self-registered', () => {
    expect(views.consent(consentView({ unverified: true }))).toContain('Gatehouse has not verified this app');
    expect(views.consent(consentView({ unverified: false }))).not.toMatch(/unverified|not verified/i);
  });

  it('warns that only a program on this device receives access only for loopback redirects', () => {
    expect(views.consent(consentView({ localhostOnly: true }))).toContain('Only a program on this device will receive access');
    expect(views.consent(consentView({ localhostOnly: false }))).not.toContain('this device');
  });

  it('escapes a hostile client name, host, redirect URI, scope and provider label', () => {
    for (const hostile of [SCRIPT, ATTRIBUTE_BREAKOUT]) {
      const html = views.consent(
        consentView({
          clientName: hostile,
          clientId: hostile,
          redirectHost: hostile,
          redirectUri: hostile,
          scopes: [{ name: hostile, description: hostile }],
          providers: [{ id: hostile, label: hostile }],
          csrfToken: hostile,
        }),
      );
      expectOnlyEscaped(html, hostile);
      expect(html).not.toMatch(/<script|<img/i);
    }
  });

  it('renders without scopes or providers', () => {
    const html = views.consent(consentView({ scopes: [], providers: [] }));
    expect(html).not.toContain('It will be able to');
    expect(html).toContain('No sign-in method is configured');
    expect(html).toContain('>Cancel</button>');
  });

  it('refuses a form target that is not a local path or http(s) URL', () => {
    expect(() => views.consent(consentView({ action: 'javascript:alert(1)' }))).toThrow(TypeError);
    expect(() => views.consent(consentView({ cancelAction: '//evil.example/x' }))).toThrow(TypeError);
  });
});

describe('demo sign-in page', () => {
  it('is labelled development-only and has the email, name, CSRF and Sign in controls', () => {
    const html = views.demoLogin({ action: '/upstream/demo/login', csrfToken: 'csrf-2', name: undefined });
    expect(html).toContain('Demo sign-in (development only)');
    expect(html).toMatch(/<input id="email" name="email" type="email" required autocomplete="email"[^>]*>/);
    expect(html).toMatch(/<input id="name" name="name"[^>]*>/);
    expect(html).toContain('<input type="hidden" name="_csrf" value="csrf-2">');
    expect(html).toMatch(/<button type="submit"[^>]*>Sign in<\/button>/);
    expect(html).not.toContain('role="alert"');
    expect(html).not.toContain('undefined');
  });

  it('keeps what the user typed and shows the error, escaped', () => {
    const html = views.demoLogin({
      action: '/upstream/demo/login',
      csrfToken: 't',
      email: ATTRIBUTE_BREAKOUT,
      name: SCRIPT,
      error: SCRIPT,
    });
    expectOnlyEscaped(html, ATTRIBUTE_BREAKOUT);
    expectOnlyEscaped(html, SCRIPT);
    expect(html).toContain('role="alert"');
    expect(html).not.toMatch(/<script|<img/i);
  });
});

describe('error page', () => {
  it('shows the title and message, and a Start again link only when given one', () => {
    const withLink = views.error({ title: 'Link expired', message: 'Connect again from your app.', startAgainUrl: '/authorize?a=1&b=2' });
    expect(withLink).toContain('<h1>Link expired</h1>');
    expect(withLink).toContain('Connect again from your app.');
    expect(withLink).toContain('href="/authorize?a=1&amp;b=2">Start again</a>');

    const withoutLink = views.error({ title: 'Link expired', message: 'Connect again from your app.' });
    expect(withoutLink).not.toContain('Start again');
  });

  it('escapes a hostile title and message', () => {
    const html = views.error({ title: SCRIPT, message: ATTRIBUTE_BREAKOUT });
    expectOnlyEscaped(html, SCRIPT);
    expectOnlyEscaped(html, ATTRIBUTE_BREAKOUT);
    expect(html).not.toMatch(/<script|<img/i);
  });

  it('refuses a javascript: Start again link', () => {
    expect(() => views.error({ title: 't', message: 'm', startAgainUrl: 'javascript:alert(1)' })).toThrow(TypeError);
  });
});

describe('template cache', () => {
  it('reads each template from disk once', () => {
    const dir = mkdtempSync(join(tmpdir(), 'gatehouse-views-'));
    try {
      cpSync(fileURLToPath(new URL('../../views/', import.meta.url)), dir, { recursive: true });
      const cached = createViews(dir);
      const first = cached.error({ title: 'One', message: 'm' });
      writeFileSync(join(dir, 'error.eta'), 'changed on disk');
      expect(cached.error({ title: 'One', message: 'm' })).toBe(first);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
