# Build stage: compiles offline from the committed .sqlx/ query data (no database needed).
FROM rust:1-bookworm AS build
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
# Argon2 frees its 19 MiB per login hash, but with glibc's adaptive mmap threshold the freed
# buffers stay resident (120-200 MiB after 16 logins). Allocations of 4 MiB or more get their
# own mapping and are returned when freed; hugetlb=1 puts them on transparent huge pages (host
# THP `madvise` or `always`), so the fresh mapping costs no more CPU than reuse.
# See docs/BENCHMARKS.md (memory).
ENV GLIBC_TUNABLES=glibc.malloc.mmap_threshold=4194304:glibc.malloc.hugetlb=1
ENV LATCHKEY_BIND=0.0.0.0:8080
EXPOSE 8080
ENTRYPOINT ["latchkey"]
CMD ["serve"]
