# wechat-miniprogram-exporter: a static-enough release build, then a distroless runtime
# (glibc, CA certificates, a non-root user, no shell). Orchestrators probe /healthz and
# /readyz; the image has no HEALTHCHECK on purpose.

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
RUN cargo build --release --locked \
    && strip target/release/wechat-miniprogram-exporter \
    && mkdir -p /state

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/wechat-miniprogram-exporter /usr/local/bin/wechat-miniprogram-exporter
# The state (--storage.path), owned by the runtime user: mount a volume here to keep it.
COPY --from=build --chown=65532:65532 /state /var/lib/wechat-miniprogram-exporter
# 65532 is distroless's "nonroot"; numeric, so that Kubernetes can verify runAsNonRoot.
USER 65532:65532
EXPOSE 10050
ENTRYPOINT ["/usr/local/bin/wechat-miniprogram-exporter"]
CMD ["--config", "/etc/wechat-miniprogram-exporter/config.toml", "--storage.path", "/var/lib/wechat-miniprogram-exporter"]
