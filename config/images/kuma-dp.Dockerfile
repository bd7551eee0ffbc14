# kuma-dp with Envoy 1.40 (the sidecar the injector adds). Build from the
# repository root:
#   docker build -f config/images/kuma-dp.Dockerfile -t ghcr.io/kuma-rs/kuma-dp:0.1.0 .
# Runs as 5678 (the UID the transparent proxy exempts from redirection).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kuma-dp --bin kuma-dp

FROM envoyproxy/envoy:v1.40.0 AS envoy

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kuma-dp /usr/bin/kuma-dp
COPY --from=envoy /usr/local/bin/envoy /usr/bin/envoy
USER 5678:5678
ENTRYPOINT ["/usr/bin/kuma-dp"]
CMD ["run"]
