# syntax=docker/dockerfile:1
# One image with every Commcenter binary: commcenter-api, commcenter-workers,
# commcenterctl, and commcenter-fakes (the fake providers, for compose's `fakes`
# profile). compose.yaml picks the binary per service with `command`.
# Migrations are compiled into the binaries (sqlx::migrate!), so nothing else is copied.

FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# Cache mounts keep the registry and the build between image builds; the binaries are
# copied out of the cached target/ within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p commcenter-api -p commcenter-ctl -p commcenter-workers -p commcenter-fakes \
 && mkdir -p /out \
 && cp target/release/commcenter-api target/release/commcenter-workers target/release/commcenterctl target/release/commcenter-fakes /out/

FROM debian:bookworm-slim AS runtime
# ca-certificates for TLS to providers (later issues); curl for the healthcheck.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home commcenter
COPY --from=build /out/ /usr/local/bin/
USER commcenter
ENV API_ADDR=0.0.0.0:8001 \
    LOG_FORMAT=json
EXPOSE 8001
# Processes stop on SIGTERM: the api finishes open requests, the workers drain
# in-flight jobs (SHUTDOWN_GRACE_SECS), so give `docker stop` at least that long.
STOPSIGNAL SIGTERM
CMD ["commcenter-api"]
