# kuma-cp. Build from the repository root:
#   docker build -f config/images/kuma-cp.Dockerfile -t ghcr.io/kuma-rs/kuma-cp:0.1.0 .
# Runs as 5678, the user Kuma's control-plane image and config/manager use.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p kuma-operator --bin kuma-cp

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/kuma-cp /usr/bin/kuma-cp
USER 5678:5678
ENTRYPOINT ["/usr/bin/kuma-cp"]
CMD ["run"]
