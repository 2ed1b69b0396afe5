import type { FastifyError, FastifyInstance } from 'fastify';
import fp from 'fastify-plugin';
import { isOAuthError, OAuthError } from './errors.ts';

/**
 * The one exit for errors (leaks to every plugin via fastify-plugin; login/ overrides it with pages).
 * OAuthError → its status and RFC 6749 §5.2 body. Fastify's own 4xx (bad JSON, too large, wrong
 * content type) → `invalid_request` with that status. Anything else → an opaque 500, logged.
 */
export const errorHandler = fp(async (app: FastifyInstance) => {
  app.setErrorHandler((error: FastifyError, request, reply) => {
    if (isOAuthError(error))
      return reply
        .code(error.status)
        .headers({ ...error.headers, 'cache-control': 'no-store' })
        .send(error.toJSON());
    const status = error.statusCode;
    if (status && status >= 400 && status < 500) {
      const code = status === 429 ? 'rate_limited' : 'invalid_request';
      return reply
        .code(status)
        .header('cache-control', 'no-store')
        .send(new OAuthError(code, publicMessage(error)).toJSON());
    }
    request.log.error({ err: error }, 'request failed');
    return reply.code(500).send({ error: 'server_error', error_description: 'internal error' });
  });
  app.setNotFoundHandler((_request, reply) => reply.code(404).send({ error: 'not_found', error_description: 'no such endpoint' }));
});

/** Fastify's messages for its own errors are fixed strings; never echo request data back. */
function publicMessage(error: FastifyError): string {
  switch (error.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return 'the request body is too large';
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return 'unsupported content type';
    case 'FST_ERR_CTP_EMPTY_JSON_BODY':
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return 'the request body is not valid JSON';
    default:
      return error.statusCode === 429 ? 'too many requests, retry later' : 'the request is malformed';
  }
}
