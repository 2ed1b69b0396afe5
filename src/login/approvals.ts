import { createHash } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { unsignCookie } from './reply.ts';

/** Remembers, in this browser, which clients its user approved on our consent page. */
const APPROVALS_COOKIE = 'gatehouse_approved';
const MAX_REMEMBERED = 20;
const REMEMBER_SECONDS = 90 * 24 * 3600;

/** What was approved: a client and the exact scopes it asked for (a step-up asks for more, and is shown again). */
export interface Approval {
  clientId: string;
  scope: string;
}

// Client ids are public; hashing only keeps the cookie short. Domain-separated from the table's id hashes.
const fingerprint = ({ clientId, scope }: Approval): string =>
  createHash('sha256')
    .update(`approved-client\0${clientId}\0${scope.split(' ').filter(Boolean).sort().join(' ')}`)
    .digest('base64url')
    .slice(0, 22);

/**
 * Whether this browser approved this client, for these scopes, before. Only then may a login skip the
 * consent page and go straight upstream (with a single provider there is nothing else to choose):
 * consent is never skipped for a client, or for access, this browser has not seen on our page (MCP
 * "confused deputy" rule; a step-up always shows what it adds).
 */
export function wasApprovedHere(request: FastifyRequest, approval: Approval): boolean {
  return (unsignCookie(request, APPROVALS_COOKIE) ?? '').split('.').includes(fingerprint(approval));
}

/** Records an approval (most recent first, at most 20; the cookie is signed, so a page script cannot add one). */
export function rememberApproval(request: FastifyRequest, reply: FastifyReply, approval: Approval, secure: boolean): void {
  const current = (unsignCookie(request, APPROVALS_COOKIE) ?? '').split('.').filter(Boolean);
  const entry = fingerprint(approval);
  const next = [entry, ...current.filter((other) => other !== entry)].slice(0, MAX_REMEMBERED);
  reply.setCookie(APPROVALS_COOKIE, next.join('.'), {
    httpOnly: true,
    sameSite: 'lax',
    secure,
    signed: true,
    path: '/interaction',
    maxAge: REMEMBER_SECONDS,
  });
}
