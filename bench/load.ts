import autocannon from 'autocannon';

/** One HTTP request as autocannon sends it. */
export interface LoadRequest {
  method: 'GET' | 'POST';
  path: string;
  headers: Record<string, string>;
  body?: string;
}

export interface LoadOptions {
  url: string;
  /** A fixed request, or a builder called once per request (fresh JSON-RPC id, unused refresh token). */
  request: LoadRequest | (() => LoadRequest);
  /** Every response must have this status; others are counted as failures. */
  expectStatus: number;
  /** With `checkEveryBody`, a response with the right status whose body lacks this counts as a failure too. */
  bodyIncludes?: string;
  /** For answers that fail in the body with a 200 (an MCP tool's `isError` result): check each one, not only the probe. */
  checkEveryBody?: boolean;
  seconds: number;
  connections: number;
}

export interface LoadResult {
  requestsPerSecond: number;
  p50Ms: number;
  p99Ms: number;
  responses: number;
  /** Responses with another status, plus socket errors and timeouts. */
  failures: number;
}

/**
 * Runs autocannon for a fixed time. Latency percentiles come from every response's own timing
 * (autocannon's histogram has 1 ms resolution, too coarse for sub-millisecond routes).
 */
export async function runLoad(options: LoadOptions): Promise<LoadResult> {
  const { request, bodyIncludes } = options;
  let failures = 0;
  const check =
    options.checkEveryBody && bodyIncludes !== undefined
      ? {
          onResponse: (status: number, body: string) => {
            if (status === options.expectStatus && !body.includes(bodyIncludes)) failures++;
          },
        }
      : {};
  const requests =
    typeof request === 'function'
      ? // setupRequest rebuilds the request buffer every time; only dynamic requests pay for it.
        [{ ...check, setupRequest: (base: object) => ({ ...base, ...request() }) }]
      : [{ ...request, ...check }];
  const latencies: number[] = [];
  let started = process.hrtime.bigint();
  const result = await new Promise<autocannon.Result>((resolve, reject) => {
    const instance = autocannon(
      { url: options.url, connections: options.connections, duration: options.seconds, requests: requests as autocannon.Request[] },
      (error, done) => (error ? reject(error) : resolve(done)),
    );
    instance.on('start', () => {
      started = process.hrtime.bigint();
    });
    instance.on('response', (_client, statusCode, _bytes, responseTime) => {
      latencies.push(responseTime);
      if (statusCode !== options.expectStatus) failures++;
    });
  });
  const elapsedSeconds = Number(process.hrtime.bigint() - started) / 1e9;
  latencies.sort((a, b) => a - b);
  const at = (q: number) => latencies[Math.min(latencies.length - 1, Math.floor(q * latencies.length))] ?? Number.NaN;
  return {
    requestsPerSecond: latencies.length / elapsedSeconds,
    p50Ms: at(0.5),
    p99Ms: at(0.99),
    responses: latencies.length,
    failures: failures + result.errors + result.timeouts,
  };
}

/** Sends one request and checks it does what the load run will count as success, so a benchmark never measures errors. */
export async function probe(url: string, request: LoadRequest, expect: { status: number; bodyIncludes?: string }): Promise<string> {
  const response = await fetch(new URL(request.path, url), {
    method: request.method,
    headers: request.headers,
    ...(request.body === undefined ? {} : { body: request.body }),
  });
  const body = await response.text();
  if (response.status !== expect.status || (expect.bodyIncludes && !body.includes(expect.bodyIncludes))) {
    throw new Error(`probe ${request.method} ${request.path}: expected ${expect.status}, got ${response.status}: ${body.slice(0, 300)}`);
  }
  return body;
}
