# kuma-init: `kumactl install transparent-proxy` with iptables (nft and
# legacy backends), the init container the injector adds. Build from the
# repository root:
#   docker build -f config/images/kuma-init.Dockerfile -t ghcr.io/kuma-rs/kuma-init:0.1.0 .
# Runs as root with NET_ADMIN and NET_RAW, as Kuma's kuma-init does.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kumactl --bin kumactl

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/kumactl /usr/bin/kumactl
ENTRYPOINT ["/usr/bin/kumactl"]
