# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, ship only the two binaries.
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p echo-server -p echo-client --bins

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin echo
COPY --from=build /src/target/release/echo-server /src/target/release/echo-client /usr/local/bin/
USER 10001:10001
ENV ECHO_LISTEN=0.0.0.0:50051 \
    ECHO_LOG_FORMAT=json
EXPOSE 50051
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s \
    CMD ["echo-client", "--addr", "127.0.0.1:50051", "--timeout", "2s", "health"]
ENTRYPOINT ["echo-server"]
