#!/usr/bin/env bash
# Tests the Debian package for real: builds it with `make deb`, installs it
# with dpkg -i, runs the installed `kanmon version` and, as the kanmon user,
# `kanmon check` on the shipped /etc/kanmon/kanmon.toml once a throwaway
# certificate is where it expects one, then purges the package and checks
# that nothing of it is left but the state directory /var/lib/kanmon, which
# Debian policy keeps.
#
#   bash scripts/deb-test.sh
#
# It needs root and dpkg. Without them it skips (exit 0), unless CI is set:
# CI (.ci/run) runs it as root on Debian 12, where a skip would hide a broken
# package. It refuses to run while a kanmon package is installed, and leaves
# the machine as it found it: the state directory and the kanmon user are
# removed at the end when this test made them.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

say() { echo "deb-test: $*"; }
fail() {
	echo "deb-test: FAIL: $*" >&2
	exit 1
}
unavailable() {
	if [ -n "${CI:-}" ]; then
		fail "$* (CI is set, so this is a failure, not a skip)"
	fi
	say "SKIP: $*"
	exit 0
}

[ "$(id -u)" -eq 0 ] || unavailable "needs root, to install and purge the package"
if ! command -v openssl >/dev/null && command -v apt-get >/dev/null; then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends openssl
fi
for tool in dpkg dpkg-deb dpkg-query openssl runuser make; do
	command -v "$tool" >/dev/null || unavailable "needs $tool"
done
if ! command -v go >/dev/null && [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
command -v go >/dev/null || unavailable "needs go, to build the package"

status=$(dpkg-query -W -f='${db:Status-Status}' kanmon 2>/dev/null || true)
if [ -n "$status" ] && [ "$status" != not-installed ]; then
	fail "a kanmon package is on this machine ($status); this test installs and purges its own: dpkg --purge kanmon first"
fi

tmp=$(mktemp -d)
# What the test made, for the clean-up.
state_was_there=no
[ -e /var/lib/kanmon ] && state_was_there=yes
user_was_there=no
getent passwd kanmon >/dev/null && user_was_there=yes
installed=no
cleanup() {
	if [ "$installed" = yes ]; then
		say "purging the package after a failure"
		rm -rf /etc/kanmon/tls
		dpkg --purge kanmon >/dev/null || true
	fi
	[ "$state_was_there" = yes ] || rm -rf /var/lib/kanmon
	if [ "$user_was_there" = no ] && getent passwd kanmon >/dev/null; then
		userdel kanmon 2>/dev/null || true
		getent group kanmon >/dev/null && groupdel kanmon 2>/dev/null || true
	fi
	rm -rf "$tmp"
}
trap cleanup EXIT

# Files named after kanmon outside the state directory, where a package,
# its maintainer scripts or systemctl enable could leave one.
kanmon_paths() {
	find /etc /usr /var/lib/systemd /var/lib/dpkg/info -name '*kanmon*' 2>/dev/null | sort
}

# excluded reports whether a dpkg path-exclude (as in slim container
# images: /usr/share/man/*, /usr/share/doc/*) keeps path from being unpacked.
excluded() {
	local pattern
	while read -r pattern; do
		# shellcheck disable=SC2053 # a glob match is meant
		[[ $1 == $pattern ]] && return 0
	done < <(sed -n 's/^path-exclude[= ]*//p' /etc/dpkg/dpkg.cfg.d/* 2>/dev/null)
	return 1
}

say "make deb"
commit=$(git rev-parse HEAD 2>/dev/null || true) # what make deb stamps
make deb
debs=(dist/kanmon_*.deb)
[ "${#debs[@]}" -eq 1 ] && [ -f "${debs[0]}" ] || fail "make deb made ${debs[*]}, want one dist/kanmon_*.deb"
deb=${debs[0]}
version=$(dpkg-deb -f "$deb" Version)
dpkg-deb -c "$deb"

# The package's paths, and which of them exist before it is installed
# (/etc, /usr/bin, ...: they stay after the purge).
dpkg-deb --fsys-tarfile "$deb" | tar -t | sed 's|^\./|/|; s|/$||' | grep -v '^$' | sort >"$tmp/paths"
while read -r p; do
	if [ -e "$p" ]; then echo "$p"; fi
done <"$tmp/paths" >"$tmp/existed"
kanmon_paths >"$tmp/before"

say "dpkg -i $deb"
installed=yes
dpkg -i "$deb"
dpkg -L kanmon | sort >"$tmp/listed"
diff -u "$tmp/paths" <(grep -vx '/\.' "$tmp/listed") || fail "dpkg -L kanmon is not the package's contents"
while read -r p; do
	[ -e "$p" ] || excluded "$p" || fail "$p: listed by dpkg -L, not on disk"
done <"$tmp/listed"
grep -qx /etc/kanmon/kanmon.toml /var/lib/dpkg/info/kanmon.conffiles || fail "/etc/kanmon/kanmon.toml is not a conffile"

# owner, group and mode of a path, as stat prints them
want_stat() { # path "owner group mode"
	local have
	have=$(stat -c '%U %G %a' "$1")
	[ "$have" = "$2" ] || fail "$1: $have, want $2"
}
getent passwd kanmon >/dev/null || fail "no kanmon user"
[ "$(getent passwd kanmon | cut -d: -f6)" = /var/lib/kanmon ] || fail "kanmon's home: $(getent passwd kanmon)"
[ "$(id -u kanmon)" -lt 1000 ] || fail "kanmon is not a system user: uid $(id -u kanmon)"
want_stat /var/lib/kanmon "kanmon kanmon 700"
want_stat /etc/kanmon "root kanmon 750"
want_stat /etc/kanmon/kanmon.toml "root kanmon 640"
want_stat /etc/kanmon/master.pw "root kanmon 640"
[ -s /etc/kanmon/master.pw ] || fail "/etc/kanmon/master.pw is empty"
grep -qx 'enabled  = false' /etc/fail2ban/jail.d/kanmon.conf || fail "the packaged fail2ban jail is not off"
grep -qx 'ExecReload=/usr/bin/kanmon reload -config /etc/kanmon/kanmon.toml' /usr/lib/systemd/system/kanmon.service ||
	fail "the unit has no ExecReload running /usr/bin/kanmon"
if command -v systemd-analyze >/dev/null; then
	out=$(systemd-analyze verify /usr/lib/systemd/system/kanmon.service 2>&1) || fail "systemd-analyze verify: $out"
	[ -z "$out" ] || fail "systemd-analyze verify: $out"
fi
if [ -e /usr/share/man/man8/kanmon.8.gz ]; then
	zcat /usr/share/man/man8/kanmon.8.gz | grep -q '^\.TH KANMON 8' || fail "kanmon.8.gz is not kanmon(8)"
fi

say "kanmon version"
/usr/bin/kanmon version | tee "$tmp/version"
grep -qx "kanmon $version" "$tmp/version" || fail "kanmon version does not say the package's version $version"
grep -q '^go     go1\.' "$tmp/version" || fail "kanmon version does not say the Go version"
if [ -n "$commit" ]; then
	grep -q "^commit $commit" "$tmp/version" || fail "kanmon version does not say the commit $commit"
fi

say "kanmon check, as the kanmon user, with a certificate where the sample expects it"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 90 -subj /CN=kanmon.test \
	-keyout "$tmp/privkey.pem" -out "$tmp/fullchain.pem" 2>/dev/null
install -d -m 0750 -o root -g kanmon /etc/kanmon/tls
install -m 0640 -o root -g kanmon "$tmp/fullchain.pem" "$tmp/privkey.pem" /etc/kanmon/tls/
runuser -u kanmon -- /usr/bin/kanmon check -config /etc/kanmon/kanmon.toml >"$tmp/check" 2>"$tmp/check.err" ||
	fail "kanmon check: $(cat "$tmp/check" "$tmp/check.err")"
cat "$tmp/check" "$tmp/check.err"
grep -q '^ok: 6 listeners' "$tmp/check" || fail "kanmon check did not say ok"
[ ! -s "$tmp/check.err" ] || fail "kanmon check warned about the shipped config"

# An enabled unit: the purge must remove its links too. systemctl enable
# works without a running systemd; where it does not, this part is skipped.
if command -v systemctl >/dev/null && systemctl enable kanmon.service 2>"$tmp/enable"; then
	[ -L /etc/systemd/system/multi-user.target.wants/kanmon.service ] || fail "systemctl enable made no link"
else
	say "systemctl enable kanmon did not work here; the purge of its links is not tested: $(cat "$tmp/enable" 2>/dev/null)"
fi

say "dpkg --purge kanmon"
rm -rf /etc/kanmon/tls # the admin's, not the package's
dpkg --purge kanmon
installed=no
left=()
while read -r p; do
	if [ -e "$p" ] || [ -L "$p" ]; then
		grep -qxF "$p" "$tmp/existed" || left+=("$p")
	fi
done <"$tmp/listed"
[ "${#left[@]}" -eq 0 ] || fail "left after the purge: ${left[*]}"
kanmon_paths >"$tmp/after"
diff -u "$tmp/before" "$tmp/after" || fail "the purge left files named after kanmon (+ above)"
[ -d /var/lib/kanmon ] || fail "the purge removed /var/lib/kanmon, which Debian policy keeps"
getent passwd kanmon >/dev/null || fail "the purge removed the kanmon user, who still owns /var/lib/kanmon"

say "PASS ($deb)"
