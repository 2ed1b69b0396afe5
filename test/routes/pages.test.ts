import type { FastifyInstance } from 'fastify';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildTestApp } from '../support/gatehouse.ts';

describe('HTML pages and their assets', () => {
  let app: FastifyInstance;
  beforeAll(async () => {
    ({ app } = await buildTestApp());
  });
  afterAll(async () => app?.close());

  it('answers an unknown or expired interaction with an error page, never a redirect, and no caching', async () => {
    const response = await app.inject({ method: 'GET', url: '/interaction/not-a-real-uid' });
    expect(response.statusCode).toBe(400);
    expect(response.headers['content-type']).toMatch(/^text\/html/);
    expect(response.headers.location).toBeUndefined();
    expect(response.headers['cache-control']).toBe('no-store');
    expect(response.headers['content-security-policy']).toContain("frame-ancestors 'none'");
    expect(response.body).toContain('expired');
  });

  it('serves the stylesheet the pages link to, cacheable', async () => {
    const response = await app.inject({ method: 'GET', url: '/assets/gatehouse.css' });
    expect(response.statusCode).toBe(200);
    expect(response.headers['content-type']).toMatch(/^text\/css/);
    expect(response.headers['cache-control']).toBe('public, max-age=3600');
    expect(response.body.length).toBeGreaterThan(100);
  });

  it('refuses a form post without its CSRF token with a 403 page', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/interaction/anything/approve',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: 'provider=demo',
    });
    expect(response.statusCode).toBe(403);
    expect(response.headers['content-type']).toMatch(/^text\/html/);
  });

  it('answers an oversized form with a 413 page, not a 5xx', async () => {
    const response = await app.inject({
      method: 'POST',
      url: '/upstream/demo/login?state=x',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      payload: `email=${'a'.repeat(10_000)}`,
    });
    expect(response.statusCode).toBe(413);
    expect(response.headers['content-type']).toMatch(/^text\/html/);
  });
});
