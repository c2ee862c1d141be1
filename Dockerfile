# ggbroker: a static binary on a minimal image, run as a non-root user, configured by environment
# variables alone (GGBROKER_<KEY>, see configs/ggbroker.yaml).
#   docker build -t ggbroker .
#   docker run -p 8883:8883 -p 8443:8443 -p 9443:9443 -e GGBROKER_CONNECTIVITY_HOSTADDRESSES=ggbroker \
#     -v ggbroker-data:/data ggbroker
# Devices are created inside the container's state volume, or through the AWS IoT API on 9443:
#   docker exec <container> ggbroker device create sensor-1 --out /data/devices/sensor-1
# examples/docker-compose.yml runs a broker and a device container.
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# mochi-mqtt, patched (third_party/mochi-server/PATCHES.md), is a replace directive in go.mod.
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
# COMMIT, if not given, is read from the .git/HEAD and refs that .dockerignore lets into the context.
ARG COMMIT=
RUN c="$COMMIT"; \
    if [ -z "$c" ] && [ -f .git/HEAD ]; then \
      h=$(cat .git/HEAD); \
      case "$h" in \
        "ref: "*) r=${h#ref: }; c=$(cat ".git/$r" 2>/dev/null || grep " $r\$" .git/packed-refs 2>/dev/null | cut -d' ' -f1) ;; \
        *) c=$h ;; \
      esac; \
    fi; \
    CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION} -X main.commit=${c:-unknown}" -o /out/ggbroker ./cmd/ggbroker \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ggbroker /usr/local/bin/ggbroker
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
ENV GGBROKER_STATEDIR=/data \
    GGBROKER_MQTT_LISTEN=:8883
VOLUME ["/data"]
EXPOSE 8883 8443 9443
USER 65532:65532
# /readyz on the loopback admin listener: serving, CA and server certificate valid for more than an hour.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/ggbroker", "health"]
ENTRYPOINT ["/usr/local/bin/ggbroker"]
CMD ["serve"]
