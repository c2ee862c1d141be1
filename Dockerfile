# ggbroker: a static binary on a minimal image, run as a non-root user.
#   docker build -t ggbroker .
#   docker run -p 8883:8883 -v ggbroker-data:/data ggbroker
# Devices are created inside the container's state volume:
#   docker exec <container> ggbroker device create sensor-1 --out /data/devices/sensor-1
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
# mochi-mqtt, patched (third_party/mochi-server/PATCHES.md), is a replace directive in go.mod.
COPY third_party ./third_party
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/ggbroker ./cmd/ggbroker \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ggbroker /usr/local/bin/ggbroker
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
ENV GGBROKER_STATEDIR=/data \
    GGBROKER_MQTT_LISTEN=:8883
VOLUME ["/data"]
EXPOSE 8883 8443
USER 65532:65532
# /readyz on the loopback admin listener: serving, CA and server certificate valid for more than an hour.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["/usr/local/bin/ggbroker", "health"]
ENTRYPOINT ["/usr/local/bin/ggbroker"]
CMD ["serve"]
