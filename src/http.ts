import type { FastifyReply } from 'fastify';

/**
 * Hands the raw response to a library that writes it itself (oidc-provider, the MCP transport).
 * Headers set by hooks (CORS) live on the reply until send, which hijacking skips: copy them first.
 */
export function hijackReply(reply: FastifyReply): FastifyReply['raw'] {
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) reply.raw.setHeader(name, value);
  reply.hijack();
  return reply.raw;
}
