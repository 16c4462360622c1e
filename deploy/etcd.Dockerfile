# etcd from Debian's etcd-server package, for the compose stack and the Kubernetes StatefulSet:
#
#   docker build -f deploy/etcd.Dockerfile -t hubspoke/etcd:3.4 .
#
# BASE_IMAGE: a Debian bookworm image. Offline builds: put the .debs of etcd-server and
# etcd-client in deploy/debs/.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}
COPY deploy/debs/ /tmp/debs/
RUN set -eu; \
    if ls /tmp/debs/*.deb >/dev/null 2>&1; then \
        dpkg -i /tmp/debs/*.deb; \
    else \
        apt-get update; \
        DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends etcd-server etcd-client; \
    fi; \
    rm -rf /tmp/debs /var/lib/apt/lists/* /var/cache/apt/archives/*.deb; \
    install -d -o etcd -g etcd -m 0700 /var/lib/etcd/data; \
    etcd --version
USER etcd
WORKDIR /var/lib/etcd
VOLUME /var/lib/etcd/data
EXPOSE 2379 2380
ENV ETCD_DATA_DIR=/var/lib/etcd/data
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["etcdctl", "--endpoints=127.0.0.1:2379", "endpoint", "health"]
ENTRYPOINT ["etcd"]
