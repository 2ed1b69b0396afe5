import type { FastifyReply, FastifyRequest } from 'fastify';

/** Sends one of our HTML pages; the login plugin's hooks add the security headers. */
export function sendPage(reply: FastifyReply, status: number, html: string): FastifyReply {
  return reply.code(status).type('text/html; charset=utf-8').send(html);
}

/** The value of a signed cookie, or undefined when it is missing or its signature does not verify. */
export function unsignCookie(request: FastifyRequest, name: string): string | undefined {
  const raw = request.cookies[name];
  if (!raw) return undefined;
  const result = request.unsignCookie(raw);
  return result.valid && result.value ? result.value : undefined;
}
