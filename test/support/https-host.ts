import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createServer, request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface HttpsHost {
  origin: string;
  /** Serves `document` as JSON at `path` (with `cache-control: max-age=60`). */
  serve(path: string, document: unknown): void;
  hits(path: string): number;
  /** A fetch that trusts only this host's self-signed certificate, standing in for the real one in tests. */
  fetch: typeof fetch;
  close(): Promise<void>;
}

/**
 * An HTTPS server on 127.0.0.1 with a throwaway self-signed certificate for `localhost`, hosting
 * Client ID Metadata Documents (which the draft requires to be https URLs).
 */
export async function startHttpsHost(): Promise<HttpsHost> {
  const dir = mkdtempSync(join(tmpdir(), 'gatehouse-tls-'));
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:P-256',
      '-nodes',
      '-days',
      '1',
      '-subj',
      '/CN=localhost',
      '-addext',
      'subjectAltName=DNS:localhost',
      '-keyout',
      join(dir, 'key.pem'),
      '-out',
      join(dir, 'cert.pem'),
    ],
    { stdio: 'ignore' },
  );
  const key = readFileSync(join(dir, 'key.pem'));
  const cert = readFileSync(join(dir, 'cert.pem'));
  rmSync(dir, { recursive: true, force: true });

  const documents = new Map<string, string>();
  const counts = new Map<string, number>();
  const server = createServer({ key, cert }, (req, res) => {
    const path = req.url ?? '/';
    counts.set(path, (counts.get(path) ?? 0) + 1);
    const body = documents.get(path);
    if (body === undefined) return void res.writeHead(404).end();
    res.writeHead(200, { 'content-type': 'application/json', 'cache-control': 'max-age=60' }).end(body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;

  const trustingFetch = ((input: string | URL | Request, init?: RequestInit) =>
    new Promise<Response>((resolve, reject) => {
      const url = new URL(input instanceof Request ? input.url : input);
      const outgoing = httpsRequest(
        url,
        {
          method: init?.method ?? 'GET',
          ca: cert,
          headers: Object.fromEntries(new Headers(init?.headers)),
          signal: init?.signal ?? undefined,
        },
        (incoming) => {
          const chunks: Buffer[] = [];
          incoming.on('data', (chunk: Buffer) => chunks.push(chunk));
          incoming.on('end', () => {
            const headers = new Headers();
            for (const [name, value] of Object.entries(incoming.headers)) if (typeof value === 'string') headers.set(name, value);
            resolve(new Response(Buffer.concat(chunks), { status: incoming.statusCode ?? 500, headers }));
          });
        },
      );
      outgoing.on('error', reject);
      outgoing.end();
    })) as typeof fetch;

  return {
    origin: `https://localhost:${port}`,
    serve: (path, document) => documents.set(path, JSON.stringify(document)),
    hits: (path) => counts.get(path) ?? 0,
    fetch: trustingFetch,
    close: () => new Promise<void>((resolve) => server.close(() => resolve())),
  };
}
