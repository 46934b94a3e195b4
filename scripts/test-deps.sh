#!/usr/bin/env bash
# Installs what the real-server tests need: Dovecot (IMAP, POP3, submission)
# for internal/dovecottest, curl as a real command-line mail client, oathtool
# as an independent TOTP authenticator (otp), and Chromium for the portal's
# browser end-to-end test (e2e).
#
# As root with apt-get, missing packages are installed from Debian without
# starting the system Dovecot (the tests start private instances of their
# own). Otherwise it says which tests will be skipped, or, with CI=true, fail.
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
	command -v curl >/dev/null 2>&1 || echo curl
	command -v swaks >/dev/null 2>&1 || echo swaks
	perl -MNet::SSLeay -e1 >/dev/null 2>&1 || echo libnet-ssleay-perl # swaks's TLS
	[ -s /etc/ssl/certs/ca-certificates.crt ] || echo ca-certificates
	command -v oathtool >/dev/null 2>&1 || echo oathtool
	find_chromium >/dev/null || echo chromium
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

# stop_system_dovecot stops a system-wide Dovecot that a package install may
# have started. It touches only the instance of the system pid file, never the
# tests' private instances.
stop_system_dovecot() {
	local pidfile=/run/dovecot/master.pid
	[ -s "$pidfile" ] || return 0
	local pid
	pid=$(cat "$pidfile")
	kill -0 "$pid" 2>/dev/null || return 0
	echo "test-deps: stopping the system Dovecot (pid $pid) that the install started"
	if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
		systemctl stop dovecot.service dovecot.socket 2>/dev/null || true
	elif command -v service >/dev/null 2>&1; then
		service dovecot stop >/dev/null 2>&1 || true
	fi
	if kill -0 "$pid" 2>/dev/null; then
		kill "$pid" 2>/dev/null || true
	fi
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
	return "$ok"
}

ci=false
case "${CI:-}" in true | TRUE | True | 1 | yes) ci=true ;; esac

absent=$(missing | tr '\n' ' ')
if [ -z "$absent" ]; then
	echo "test-deps: dovecot $("$(find_dovecot)" --version | cut -d' ' -f1), $(curl --version | head -n1 | cut -d' ' -f1-2), $(oathtool --version | head -n1) and $("$(find_chromium)" --version 2>/dev/null | head -n1) present"
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
		echo "test-deps: dovecot $("$(find_dovecot)" --version | cut -d' ' -f1) installed (system service not started)"
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
    apt-get install dovecot-imapd dovecot-pop3d dovecot-submissiond curl swaks libnet-ssleay-perl ca-certificates oathtool chromium
EOF
what="tests that run curl, swaks, oathtool or chromium"
case " $absent" in *" dovecot"*) what="real-Dovecot tests (internal/dovecottest and every test using it) and $what" ;; esac
if [ "$ci" = true ]; then
	echo "test-deps: CI=true, so the $what will FAIL" >&2
else
	echo "test-deps: the $what will be skipped" >&2
fi
exit 0
