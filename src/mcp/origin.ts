/**
 * MCP Streamable HTTP transport: servers must validate `Origin` to stop DNS rebinding. Allowed: our own
 * origin, loopback origins (MCP Inspector runs on localhost), and the operator's list. Requests without
 * an Origin (native clients, server-side connectors) are not browser requests and pass.
 */
export function createOriginCheck(publicUrl: string, allowedOrigins: readonly string[]): (origin: string) => boolean {
  const own = new URL(publicUrl).origin;
  return (origin) =>
    origin === own || allowedOrigins.includes(origin) || /^http:\/\/(localhost|127\.0\.0\.1|\[::1\])(:\d{1,5})?$/.test(origin);
}
