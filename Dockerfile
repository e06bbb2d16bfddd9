# Build stage: compiles offline from the committed .sqlx/ query data (no database needed).
# The toolchain of rust-toolchain.toml.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
ENV SQLX_OFFLINE=true
RUN cargo build --release --locked --bin latchkey

# Runtime stage: a small image with just the binary.
FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* && useradd --system --uid 10001 latchkey
COPY --from=build /src/target/release/latchkey /usr/local/bin/latchkey
USER latchkey
ENV LATCHKEY_BIND=0.0.0.0:8080
EXPOSE 8080
# Healthy when GET /readyz on LATCHKEY_BIND answers 200 (the service serves, the database
# answers); the slim image has no curl, the binary does the GET.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["latchkey", "healthcheck", "--timeout-secs", "3"]
ENTRYPOINT ["latchkey"]
CMD ["serve"]
