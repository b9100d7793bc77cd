# syntax=docker/dockerfile:1
#
# pgferry container image: a static binary on distroless, running as the
# non-root user (uid 65532).
#
#   docker build -t pgferry .
#   docker run --rm -p 6432:6432 -p 9127:9127 \
#     -v "$PWD/pgferry.toml:/etc/pgferry/pgferry.toml:ro" pgferry
#
# Mount the config (and any auth_file, password_file, TLS key/cert/CA
# files it names) under /etc/pgferry; relative paths in the config resolve
# against that directory. In the config, listen on an address reachable from
# outside the container (listen_addr = "*" or "0.0.0.0") unless pgferry is a
# sidecar reached over 127.0.0.1, and set metrics_listen = "0.0.0.0:9127"
# (its default is off) so the health check and Prometheus can reach it. See
# docs/operations.md and deploy/.

ARG GO_VERSION=1.26.8

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
# Dependencies first, so code changes do not invalidate the module cache layer.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# VERSION (docker build --build-arg VERSION=v1.4.0) is what pgferry -version,
# SHOW VERSION and pgferry_build_info{version} report; without it, the git
# "(devel)" (.dockerignore keeps .git out of the build context).
ARG VERSION=""
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath \
      -ldflags "-s -w -X github.com/pgferry/pgferry/internal/version.Version=${VERSION}" \
      -o /out/pgferry ./cmd/pgferry && \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o /out/pgferry-healthcheck ./cmd/pgferry-healthcheck

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/pgferry /pgferry
COPY --from=build /out/pgferry-healthcheck /pgferry-healthcheck
# distroless/static ships CA certificates (/etc/ssl/certs) and tzdata, which
# server_tls_sslmode = "verify-full" and Entra ID token requests need.
USER nonroot:nonroot
WORKDIR /etc/pgferry
# 6432: PostgreSQL clients (listen_port). 9127: /metrics, /healthz, /readyz
# (metrics_listen; must be enabled in the config).
EXPOSE 6432 9127
# The image has no shell or curl: a tiny Go client GETs /healthz on the
# default metrics_listen port and exits 0 or 1. Override the URL with
# PGFERRY_HEALTHCHECK_URL if metrics_listen uses another port. Kubernetes
# ignores HEALTHCHECK; use httpGet probes on /healthz and /readyz there
# (deploy/kubernetes/sidecar.yaml).
HEALTHCHECK --interval=10s --timeout=4s --start-period=10s --retries=3 \
    CMD ["/pgferry-healthcheck"]
# SIGTERM drains: transactions in flight finish for up to shutdown_timeout
# (default 30s). Give "docker stop" at least that long: docker stop -t 35.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/pgferry", "-config", "/etc/pgferry/pgferry.toml"]
