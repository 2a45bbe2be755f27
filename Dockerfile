# wechat-miniprogram-exporter: a static-enough release build, then a distroless runtime
# (glibc, CA certificates, a non-root user, no shell). Orchestrators probe /healthz and
# /readyz; the image has no HEALTHCHECK on purpose.
#
#   docker build --build-arg REVISION="$(git rev-parse HEAD)" -t wechat-miniprogram-exporter .
#
# REVISION names the commit in `--version` and in the image's labels (the context holds no .git).

FROM rust:1.95-slim-bookworm AS build
ARG REVISION=""
WORKDIR /src
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
RUN SOURCE_REVISION="$REVISION" cargo build --release --locked \
    && strip target/release/wechat-miniprogram-exporter \
    && mkdir -p /state

FROM gcr.io/distroless/cc-debian12:nonroot
ARG REVISION=""
# org.opencontainers.image.version is the crate's version, as `--version` prints it.
LABEL org.opencontainers.image.title="wechat-miniprogram-exporter" \
      org.opencontainers.image.description="WeChat Mini Program analytics as Prometheus metrics" \
      org.opencontainers.image.version="0.1.0" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/target/release/wechat-miniprogram-exporter /usr/local/bin/wechat-miniprogram-exporter
# The state (--storage.path), owned by the runtime user: mount a volume here to keep it.
COPY --from=build --chown=65532:65532 /state /var/lib/wechat-miniprogram-exporter
# 65532 is distroless's "nonroot"; numeric, so that Kubernetes can verify runAsNonRoot.
USER 65532:65532
EXPOSE 10050
ENTRYPOINT ["/usr/local/bin/wechat-miniprogram-exporter"]
CMD ["--config", "/etc/wechat-miniprogram-exporter/config.toml", "--storage.path", "/var/lib/wechat-miniprogram-exporter"]
