# kanmon container image: a static binary on distroless, run as non-root.
#
#   docker build -t kanmon .
#   docker run -d --name kanmon \
#     -v /srv/kanmon/etc:/etc/kanmon:ro -v kanmon-state:/var/lib/kanmon \
#     -p 993:993 -p 143:143 -p 995:995 -p 110:110 -p 465:465 -p 587:587 \
#     kanmon
#   docker exec kanmon /kanmon passcode add -config /etc/kanmon/kanmon.toml alice Thunderbird
#   docker kill -s HUP kanmon        # or: docker exec kanmon /kanmon reload -config /etc/kanmon/kanmon.toml
#
# The build downloads nothing but Go modules, from the Go module proxy
# (GOPROXY, https://proxy.golang.org by default; go.sum pins every one, so
# the checksum database is not consulted). GOTOOLCHAIN=local keeps the go
# command from fetching another toolchain.
#
# Configuration: /etc/kanmon/kanmon.toml (see contrib/config/ and
# docs/config.md). Keep state_dir and accounts in /var/lib/kanmon, the
# writable volume: state_dir = "/var/lib/kanmon",
# accounts = "/var/lib/kanmon/accounts.toml". The process runs as UID/GID
# 65532 ("nonroot"): a bind-mounted state directory must be writable by it
# (chown 65532:65532), and the config and master password file readable.
#
# Ports: the EXPOSEd ports are the standard ones, but kanmon listens only
# where the [[listener]] addresses in the config say, e.g.
# address = "0.0.0.0:993". Ports below 1024 normally need
# CAP_NET_BIND_SERVICE, which this non-root process does not have. Docker
# Engine 20.10 and later set net.ipv4.ip_unprivileged_port_start=0 in a
# container's own network namespace, so binding 993 inside the container
# works there; with --network host, rootless engines or other runtimes it
# may not. Then listen on high ports in the config (0.0.0.0:10993) and map
# them (-p 993:10993), or grant the capability in your runtime.

FROM golang:1.26 AS build
ENV CGO_ENABLED=0 GOTOOLCHAIN=local
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN go build -trimpath -ldflags '-s -w' -o /out/kanmon ./cmd/kanmon \
 && mkdir -p /out/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kanmon /kanmon
# A fresh named volume takes this directory's owner: the nonroot user.
COPY --from=build --chown=65532:65532 /out/state /var/lib/kanmon
USER 65532:65532
VOLUME ["/etc/kanmon", "/var/lib/kanmon"]
# IMAPS, IMAP (STARTTLS), POP3S, POP3 (STLS), submissions, submission (STARTTLS)
EXPOSE 993 143 995 110 465 587
ENTRYPOINT ["/kanmon"]
CMD ["serve", "-config", "/etc/kanmon/kanmon.toml"]
