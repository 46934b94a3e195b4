#!/usr/bin/env bash
# Installs what the real-server tests need: Dovecot (IMAP, POP3, submission)
# for internal/dovecottest, Redis (redis-server, which also runs the
# sentinels as redis-server --sentinel) for internal/redistest, PostgreSQL
# (initdb and postgres) for internal/pgtest, HAProxy for internal/haproxytest
# (which runs contrib/haproxy/haproxy.cfg), curl as a real command-line mail
# client, oathtool as an independent TOTP authenticator (otp), openssl and
# python3 to verify and read the Apple profiles (mailsetup), Chromium
# for the portal's browser end-to-end test (e2e), and Prometheus for its
# promtool, which checks and unit-tests contrib/prometheus/kanmon-rules.yml.
#
# As root with apt-get, missing packages are installed from Debian without
# starting the system Dovecot, Redis, PostgreSQL, HAProxy or Prometheus (the
# tests start private instances of their own, on their own ports). Otherwise
# it says which tests will be skipped, or, with CI=true, fail.
# Safe to run any number of times.
set -euo pipefail

LIBEXEC=/usr/lib/dovecot

find_dovecot() {
	command -v dovecot 2>/dev/null && return 0
	local p
	for p in /usr/sbin/dovecot /usr/local/sbin/dovecot; do
		if [ -x "$p" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# missing prints what is absent, one word a line.
missing() {
	find_dovecot >/dev/null || echo dovecot
	# The protocol binaries come with the three protocol packages.
	local b
	for b in imap pop3 submission; do
		[ -x "$LIBEXEC/$b" ] || echo "dovecot-$b"
	done
	find_redis >/dev/null || echo redis-server
	find_postgres >/dev/null || echo postgresql
	find_haproxy >/dev/null || echo haproxy
	command -v curl >/dev/null 2>&1 || echo curl
	command -v swaks >/dev/null 2>&1 || echo swaks
	perl -MNet::SSLeay -e1 >/dev/null 2>&1 || echo libnet-ssleay-perl # swaks's TLS
	[ -s /etc/ssl/certs/ca-certificates.crt ] || echo ca-certificates
	command -v oathtool >/dev/null 2>&1 || echo oathtool
	command -v openssl >/dev/null 2>&1 || echo openssl
	python3 -c 'import plistlib' >/dev/null 2>&1 || echo python3
	find_chromium >/dev/null || echo chromium
	command -v promtool >/dev/null 2>&1 || echo prometheus # Debian's prometheus ships /usr/bin/promtool
}

# find_redis prints the path of redis-server (Debian's redis-server package
# installs /usr/bin/redis-server).
find_redis() {
	command -v redis-server 2>/dev/null && return 0
	local p
	for p in /usr/bin/redis-server /usr/local/bin/redis-server; do
		if [ -x "$p" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# redis_version prints the version of redis-server, e.g. 7.0.15.
redis_version() {
	"$(find_redis)" --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'
}

# find_postgres prints the directory of PostgreSQL's initdb and postgres, as
# internal/pgtest looks for them: the highest version's
# /usr/lib/postgresql/VERSION/bin (where Debian's postgresql package puts
# them), else the directory of the initdb in PATH.
find_postgres() {
	local d p
	for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5 -V -r); do
		if [ -x "$d/initdb" ] && [ -x "$d/postgres" ]; then
			echo "$d"
			return 0
		fi
	done
	p=$(command -v initdb 2>/dev/null) || return 1
	d=$(dirname "$(readlink -f "$p")")
	[ -x "$d/postgres" ] || return 1
	echo "$d"
}

# postgres_version prints the version of PostgreSQL, e.g. 15.18.
postgres_version() {
	"$(find_postgres)/postgres" --version | cut -d' ' -f3
}

# find_haproxy prints the path of haproxy (Debian's haproxy package installs
# /usr/sbin/haproxy, often missing from an ordinary user's PATH).
find_haproxy() {
	command -v haproxy 2>/dev/null && return 0
	local p
	for p in /usr/sbin/haproxy /usr/local/sbin/haproxy; do
		if [ -x "$p" ]; then
			echo "$p"
			return 0
		fi
	done
	return 1
}

# haproxy_version prints the version of haproxy, e.g. 2.6.12.
haproxy_version() {
	"$(find_haproxy)" -v | sed -n 's/^HA-*Proxy version \([0-9.]*\).*/\1/p'
}

# find_chromium prints the path of a Chromium binary (Debian's package
# installs /usr/bin/chromium).
find_chromium() {
	local b
	for b in chromium chromium-browser; do
		command -v "$b" 2>/dev/null && return 0
	done
	return 1
}

# stop_system_service NAME PIDFILE SERVICE UNIT... stops a system-wide
# service that a package install may have started (when a policy-rc.d
# already present allowed it). It touches only the process of the system pid
# file, never the tests' private instances.
stop_system_service() {
	local name=$1 pidfile=$2 service=$3
	shift 3
	[ -s "$pidfile" ] || return 0
	local pid
	pid=$(cat "$pidfile")
	kill -0 "$pid" 2>/dev/null || return 0
	echo "test-deps: stopping the system $name (pid $pid) that the install started"
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl stop "$@" 2>/dev/null || true
	elif command -v service >/dev/null 2>&1; then
		service "$service" stop >/dev/null 2>&1 || true
	fi
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
	fi
}

stop_system_dovecot() {
	stop_system_service Dovecot /run/dovecot/master.pid dovecot dovecot.service dovecot.socket
}

# stop_system_redis stops the Debian package's Redis (port 6379) and, if the
# redis-sentinel package is there too, its sentinel (port 26379). The tests
# never use them.
stop_system_redis() {
	stop_system_service Redis /run/redis/redis-server.pid redis-server redis-server.service
	stop_system_service "Redis Sentinel" /run/sentinel/redis-sentinel.pid redis-sentinel redis-sentinel.service
}

# stop_system_postgres stops the clusters of Debian's postgresql package
# (15/main on port 5432, created by the install), each of which writes
# /run/postgresql/VERSION-CLUSTER.pid. The tests never use them.
stop_system_postgres() {
	local pidfile name
	for pidfile in /run/postgresql/*-*.pid; do
		[ -e "$pidfile" ] || continue
		name=$(basename "$pidfile" .pid)
		stop_system_service "PostgreSQL $name" "$pidfile" postgresql "postgresql@$name.service" postgresql.service
	done
}

# stop_system_haproxy stops the Debian package's HAProxy (its unit writes
# /run/haproxy.pid). The tests never use it.
stop_system_haproxy() {
	stop_system_service HAProxy /run/haproxy.pid haproxy haproxy.service
}

# stop_system_prometheus stops the Debian package's Prometheus (port 9090).
# Its init script writes /run/prometheus/prometheus.pid; its systemd unit
# writes no pid file, so under systemd the unit is asked whether it runs.
# The tests never use it.
stop_system_prometheus() {
	stop_system_service Prometheus /run/prometheus/prometheus.pid prometheus prometheus.service
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ] &&
		systemctl is-active --quiet prometheus.service 2>/dev/null; then
		echo "test-deps: stopping the system Prometheus that the install started"
		systemctl stop prometheus.service 2>/dev/null || true
	fi
}

# promtool_version prints the version of promtool, e.g. 2.42.0+ds.
promtool_version() {
	promtool --version | sed -n 's/^promtool, version \([^ ]*\).*/\1/p'
}

install_pkgs() {
	local policy=/usr/sbin/policy-rc.d made_policy=
	# Forbid service starts during the install unless a policy already
	# exists (Debian container images ship one that does the same).
	if [ ! -e "$policy" ]; then
		printf '#!/bin/sh\n# temporary, from kanmon scripts/test-deps.sh\nexit 101\n' >"$policy"
		chmod 755 "$policy"
		made_policy=1
	fi
	local ok=1 try
	export DEBIAN_FRONTEND=noninteractive
	for try in 1 2 3; do
		if apt-get -o DPkg::Lock::Timeout=300 update -qq; then
			ok=0
			break
		fi
		echo "test-deps: apt-get update failed (try $try of 3)" >&2
		sleep 5
	done
	if [ "$ok" -eq 0 ]; then
		local log
		log=$(mktemp)
		if ! apt-get -o DPkg::Lock::Timeout=300 install -y -q --no-install-recommends "$@" >"$log" 2>&1; then
			ok=1
			tail -n 30 "$log" >&2
		fi
		rm -f "$log"
	fi
	if [ -n "$made_policy" ]; then
		rm -f "$policy"
	fi
	stop_system_dovecot
	stop_system_redis
	stop_system_postgres
	stop_system_haproxy
	stop_system_prometheus
	return "$ok"
}

ci=false
case "${CI:-}" in true | TRUE | True | 1 | yes) ci=true ;; esac

absent=$(missing | tr '\n' ' ')
if [ -z "$absent" ]; then
	echo "test-deps: dovecot $("$(find_dovecot)" --version | cut -d' ' -f1), redis $(redis_version), postgresql $(postgres_version), haproxy $(haproxy_version), $(curl --version | head -n1 | cut -d' ' -f1-2), $(oathtool --version | head -n1), $("$(find_chromium)" --version 2>/dev/null | head -n1) and promtool $(promtool_version) present"
	exit 0
fi

echo "test-deps: missing: $absent"
if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
	pkgs=()
	for m in $absent; do
		case "$m" in
		dovecot) pkgs+=(dovecot-imapd dovecot-pop3d dovecot-submissiond) ;;
		dovecot-imap) pkgs+=(dovecot-imapd) ;;
		dovecot-pop3) pkgs+=(dovecot-pop3d) ;;
		dovecot-submission) pkgs+=(dovecot-submissiond) ;;
		*) pkgs+=("$m") ;;
		esac
	done
	mapfile -t pkgs < <(printf '%s\n' "${pkgs[@]}" | sort -u)
	echo "test-deps: apt-get install ${pkgs[*]}"
	if install_pkgs "${pkgs[@]}" && [ -z "$(missing)" ]; then
		echo "test-deps: dovecot $("$(find_dovecot)" --version | cut -d' ' -f1), redis $(redis_version), postgresql $(postgres_version), haproxy $(haproxy_version) and promtool $(promtool_version) installed (system services not started)"
		exit 0
	fi
	echo "test-deps: could not install: $(missing | tr '\n' ' ')" >&2
	if [ "$ci" = true ]; then
		exit 1
	fi
	echo "test-deps: the tests that need them will be skipped" >&2
	exit 0
fi

why="not root"
[ "$(id -u)" -eq 0 ] && why="no apt-get"
cat >&2 <<EOF
test-deps: cannot install ($why). Install as root:
    apt-get install dovecot-imapd dovecot-pop3d dovecot-submissiond redis-server postgresql haproxy curl swaks libnet-ssleay-perl ca-certificates oathtool chromium prometheus
EOF
what="tests that run curl, swaks, oathtool or chromium"
case " $absent" in *" prometheus"*) what="promtool tests (contrib/prometheus) and $what" ;; esac
case " $absent" in *" redis-server"*) what="real-Redis tests (internal/redistest and every test using it) and $what" ;; esac
case " $absent" in *" postgresql"*) what="real-PostgreSQL tests (internal/pgtest and every test using it) and $what" ;; esac
case " $absent" in *" haproxy"*) what="real-HAProxy tests (internal/haproxytest and every test using it) and $what" ;; esac
case " $absent" in *" dovecot"*) what="real-Dovecot tests (internal/dovecottest and every test using it) and $what" ;; esac
if [ "$ci" = true ]; then
	echo "test-deps: CI=true, so the $what will FAIL" >&2
else
	echo "test-deps: the $what will be skipped" >&2
fi
exit 0
