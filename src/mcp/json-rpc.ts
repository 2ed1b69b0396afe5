/** The tool a JSON-RPC `tools/call` names, if the message is one. */
export function toolCalled(message: unknown): string | undefined {
  const { method, params } = (typeof message === 'object' && message !== null ? message : {}) as {
    method?: unknown;
    params?: { name?: unknown };
  };
  return method === 'tools/call' && typeof params?.name === 'string' ? params.name : undefined;
}

export type JsonRpcKind = 'request' | 'notification' | 'result' | 'error';

const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value);
const isRequestId = (id: unknown): boolean => typeof id === 'string' || Number.isInteger(id);
const hasOnly = (message: object, keys: readonly string[]): boolean => Object.keys(message).every((key) => keys.includes(key));

/**
 * What a JSON-RPC 2.0 message is, or undefined when it is none: the shapes of the SDK's
 * `JSONRPCMessageSchema` (strict objects; `params` and `result` objects, integer or string ids), checked
 * without zod. Each request's own schema (`tools/call` arguments and all) is still checked by the SDK's
 * handler for its method.
 */
export function jsonRpcKind(message: unknown): JsonRpcKind | undefined {
  if (!isObject(message) || message.jsonrpc !== '2.0') return undefined;
  if ('method' in message) {
    if (typeof message.method !== 'string' || ('params' in message && !isObject(message.params))) return undefined;
    if (!('id' in message)) return hasOnly(message, ['jsonrpc', 'method', 'params']) ? 'notification' : undefined;
    return isRequestId(message.id) && hasOnly(message, ['jsonrpc', 'id', 'method', 'params']) ? 'request' : undefined;
  }
  if ('result' in message)
    return isRequestId(message.id) && isObject(message.result) && hasOnly(message, ['jsonrpc', 'id', 'result']) ? 'result' : undefined;
  const { error } = message;
  const validError = isObject(error) && Number.isInteger(error.code) && typeof error.message === 'string';
  return validError && (!('id' in message) || isRequestId(message.id)) && hasOnly(message, ['jsonrpc', 'id', 'error'])
    ? 'error'
    : undefined;
}
