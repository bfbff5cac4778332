# syntax=docker/dockerfile:1
# Multi-stage build: compile static binaries in the Rust image, ship only them
# on an empty base (no shell, no package manager: a small image and little to
# attack).
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
# Static glibc binaries (the server resolves no host names, so no NSS is needed),
# as the target's own flags: RUSTFLAGS would replace those of
# .cargo/config.toml, which these join.
ENV CARGO_TARGET_X86_64_UNKNOWN_LINUX_GNU_RUSTFLAGS="-C target-feature=+crt-static"
# The Cargo profile: `release` as the image ships; CI checks the image with
# `ci-image` (Cargo.toml), which builds faster and ships nowhere.
ARG PROFILE=release
# Symbols stripped: an image's binaries are not debugged in place, and the
# symbol tables are a sixth of their size (4.7 MB of the two, measured).
RUN cargo build --profile "$PROFILE" --config "profile.$PROFILE.strip='symbols'" --locked \
        --target x86_64-unknown-linux-gnu -p echo-server -p echo-cli --bins \
    && mkdir /out \
    && cp "target/x86_64-unknown-linux-gnu/$PROFILE/echo-server" "target/x86_64-unknown-linux-gnu/$PROFILE/echo-client" /out/

FROM scratch
COPY --from=build /out/echo-server /out/echo-client /
USER 10001:10001
ENV ECHO_LISTEN=0.0.0.0:50051 \
    ECHO_LOG_FORMAT=json
# HTTP/3 on the same port over UDP, with TLS and ECHO_HTTP3=true.
EXPOSE 50051 50051/udp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["/echo-client", "--addr", "127.0.0.1:50051", "--timeout", "2s", "health"]
ENTRYPOINT ["/echo-server"]
