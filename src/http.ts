import type { FastifyReply } from 'fastify';

/**
 * Hands the raw response to a library that writes it itself (oidc-provider, the MCP transport).
 * Headers set by hooks (CORS) live on the reply until send, which hijacking skips: copy them first.
 */
export function hijackReply(reply: FastifyReply, holdUntil?: () => Promise<void>): FastifyReply['raw'] {
  const res = reply.raw;
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(name, value);
  reply.hijack();
  if (holdUntil) holdResponse(res, holdUntil);
  return res;
}

/**
 * Delays the end of a response the library writes itself until `holdUntil` resolves (the writes it
 * acknowledges are durable). If that fails and nothing was sent yet, the client gets a 500 instead.
 */
function holdResponse(res: FastifyReply['raw'], holdUntil: () => Promise<void>): void {
  const end = res.end.bind(res) as (...args: unknown[]) => FastifyReply['raw'];
  res.end = ((...args: unknown[]) => {
    holdUntil().then(
      () => end(...args),
      () => {
        if (res.headersSent) return void res.destroy();
        const body = JSON.stringify({ error: 'server_error', error_description: 'the change could not be stored' });
        for (const name of res.getHeaderNames()) res.removeHeader(name);
        res.writeHead(500, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body), 'cache-control': 'no-store' });
        end(body);
      },
    );
    return res;
  }) as typeof res.end;
}
