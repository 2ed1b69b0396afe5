# Gatehouse container image. Node 24 runs src/server.ts directly (built-in TypeScript type stripping),
# so there is no build step: the build stage only installs production dependencies.

FROM node:24-bookworm-slim AS build
# Toolchain for node-gyp, in case better-sqlite3 has no prebuilt addon for this platform.
RUN apt-get update \
  && apt-get install -y --no-install-recommends python3 make g++ \
  && rm -rf /var/lib/apt/lists/*
WORKDIR /app
# Build native addons against this image's own Node headers instead of downloading them.
ENV npm_config_nodedir=/usr/local
COPY package.json package-lock.json ./
# npm ci can reject a lockfile that was written against a registry which does not serve every
# optional platform package (npm/cli#9846); npm install then still takes the locked versions.
RUN npm ci --omit=dev --no-audit --no-fund \
  || npm install --omit=dev --no-audit --no-fund
RUN node -e "new (require('better-sqlite3'))(':memory:').close()"

FROM node:24-bookworm-slim
ENV NODE_ENV=production HOST=0.0.0.0 PORT=3000 DATABASE_PATH=/data/gatehouse.db
WORKDIR /app
# Code and dependencies stay owned by root: the node user can read them but not change them.
COPY --from=build /app/node_modules ./node_modules
COPY package.json ./
COPY src ./src
COPY views ./views
COPY drizzle ./drizzle
# The only writable place: SQLite database (WAL files beside it).
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME /data
EXPOSE 3000
HEALTHCHECK --interval=30s --timeout=5s --start-period=15s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PORT || 3000) + '/healthz', { signal: AbortSignal.timeout(4000) }).then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
CMD ["node", "src/server.ts"]
