# Build stage: compiles offline from the committed .sqlx/ query data (no database needed),
# with the toolchain of rust-toolchain.toml, which is this image's own.
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
ENV SQLX_OFFLINE=true

# The dependencies, in a layer of their own that only a change of the manifests rebuilds:
# every target Cargo.toml names (each `path = "…"`, each `[[example]]`) gets an empty
# stand-in, and the build compiles the crates of the lock file around them.
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
COPY Cargo.toml Cargo.lock rust-toolchain.toml ./
COPY .cargo .cargo
RUN { sed -n 's/^path = "\(.*\)"$/\1/p' Cargo.toml; \
      sed -n '/^\[\[example\]\]$/{n;s/^name = "\(.*\)"$/examples\/\1.rs/p;}' Cargo.toml; } \
    | while read -r target; do mkdir -p "$(dirname "$target")" && echo 'fn main() {}' > "$target"; done \
    && cargo build --release --locked --bin latchkey \
    && rm -rf src examples tests

# The sources: only latchkey itself compiles here. Their files can be older than the
# stand-ins, which would make cargo take the stand-ins' build as current: touch them.
COPY . .
RUN touch src/lib.rs src/main.rs \
    && cargo build --release --locked --bin latchkey

# Runtime stage: a small image with just the binary, run as an unprivileged user (numeric,
# so an orchestrator can check it is not root without reading /etc/passwd).
FROM debian:bookworm-slim
# ca-certificates unpinned: bookworm's security updates replace its versions on the mirror,
# and a pinned version that is gone fails the build.
# hadolint ignore=DL3008
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 latchkey \
    && useradd --system --uid 10001 --gid 10001 --no-create-home latchkey
COPY --from=build /src/target/release/latchkey /usr/local/bin/latchkey
USER 10001:10001
ENV LATCHKEY_BIND=0.0.0.0:8080
EXPOSE 8080
# Healthy when GET /readyz on LATCHKEY_BIND answers 200 (the service serves, the database
# answers); the slim image has no curl, the binary does the GET.
HEALTHCHECK --interval=10s --timeout=5s --start-period=30s --retries=3 \
    CMD ["latchkey", "healthcheck", "--timeout-secs", "3"]
ENTRYPOINT ["latchkey"]
CMD ["serve"]
