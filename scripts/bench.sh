#!/usr/bin/env bash
# Runs kanmon's benchmark: the load tool cmd/kanmon-bench against a private
# Dovecot, direct and through the real `kanmon serve`, in one run (login
# rate, FETCH throughput, idle memory, reload), and with BENCH_MICRO=1 the
# `go test -bench` benchmarks of the hot paths too. Loopback only; every
# loop is bounded, and the tool stops by itself (-max-time).
#
#   scripts/bench.sh                      # the full run, about 10 minutes
#   scripts/bench.sh -phases login,fetch  # any kanmon-bench flags
#   BENCH_MICRO=1 scripts/bench.sh        # also the go test benchmarks
#   BENCH_OUT=/tmp/b scripts/bench.sh     # where binaries and report go
#
# The report (Markdown) is printed at the end and kept in $BENCH_OUT.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ -x /usr/local/go/bin/go ]; then
	export PATH="/usr/local/go/bin:$PATH"
fi
out="${BENCH_OUT:-$(mktemp -d /tmp/kanmon-bench.XXXXXX)}"
mkdir -p "$out"

# 5,000 IDLE sessions per mode, two modes at once: the tool holds 10,000
# sockets, each kanmon 10,000, and Dovecot one process per session. The
# tool raises RLIMIT_NOFILE itself too (setrlimit); children inherit it.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

bash scripts/test-deps.sh

echo "== machine"
echo "nproc: $(nproc)"
grep -m1 'model name' /proc/cpuinfo || true
grep -m1 'cpu MHz' /proc/cpuinfo || true
grep MemTotal /proc/meminfo
uname -sr
go version
"$(command -v dovecot || echo /usr/sbin/dovecot)" --version
echo "ulimit -n: $(ulimit -n); load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (with local changes)')"

echo "== build ($out)"
go build -o "$out/kanmon" ./cmd/kanmon
go build -o "$out/kanmon-bench" ./cmd/kanmon-bench

if [ "${BENCH_MICRO:-0}" = 1 ]; then
	echo "== go test -bench: hot paths"
	go test -run '^$' -bench 'BenchmarkVerifyPasscode|BenchmarkDecide' -benchmem -count 3 ./auth
	go test -run '^$' -bench 'BenchmarkReadCommand' -benchmem -count 3 ./proxy/imapwire
	go test -run '^$' -bench 'BenchmarkIMAPBoundaryFeed|BenchmarkGatedFetch' -benchmem -count 3 ./proxy
	go test -run '^$' -bench 'BenchmarkFailure$|BenchmarkCheck' -benchtime 2s -count 3 ./lockout
fi

echo "== kanmon-bench"
set -x
timeout 1200 "$out/kanmon-bench" -kanmon "$out/kanmon" -out "$out/report.md" "$@" \
	2> >(grep -v '^[0-9][0-9]:[0-9][0-9]:[0-9][0-9] ' >&2)
