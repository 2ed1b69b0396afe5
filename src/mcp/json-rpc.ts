/** The tool a JSON-RPC `tools/call` names, if the message is one. */
export function toolCalled(message: unknown): string | undefined {
  const { method, params } = (typeof message === 'object' && message !== null ? message : {}) as {
    method?: unknown;
    params?: { name?: unknown };
  };
  return method === 'tools/call' && typeof params?.name === 'string' ? params.name : undefined;
}
