import type { FastifyReply } from 'fastify';
import type { Commits } from './db/commits.ts';

/**
 * Hands the raw response to a library that writes it itself (oidc-provider, the MCP transport).
 * Headers set by hooks (CORS) live on the reply until send, which hijacking skips: copy them first.
 * With `commits`, the response ends only once every write made so far is durable (db/commits.ts).
 */
export function hijackReply(reply: FastifyReply, commits?: Pick<Commits, 'pending' | 'durable'>): FastifyReply['raw'] {
  const res = reply.raw;
  for (const [name, value] of Object.entries(reply.getHeaders())) if (value !== undefined) res.setHeader(name, value);
  reply.hijack();
  if (commits) holdResponse(res, commits);
  return res;
}

/**
 * Delays the end of a response the library writes itself until pending writes are durable. If their
 * commit fails and nothing was sent yet, the client gets a 500 instead. Only `end` is held: this suits
 * oidc-provider, which sends each body in one `end(body)`, not a library that `write`s the body first
 * (the MCP transport does; an MCP tool that writes must await `commits.durable()` before it returns).
 */
function holdResponse(res: FastifyReply['raw'], commits: Pick<Commits, 'pending' | 'durable'>): void {
  const end = res.end.bind(res) as (...args: unknown[]) => FastifyReply['raw'];
  res.end = ((...args: unknown[]) => {
    if (!commits.pending()) return end(...args);
    commits.durable().then(
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
