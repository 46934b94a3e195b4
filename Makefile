# kanmon developer and CI targets. CI runs .ci/run, which runs `make vet`
# and `make test`.
#
#   make test [PKG=./internal/dovecottest/...] [TESTFLAGS='-run TestX']
#   make vet | cross | build | demo | bench

SHELL := /bin/bash
GO ?= go
# Packages to vet, test and benchmark.
PKG ?= ./...
# Extra flags for go test, e.g. TESTFLAGS='-run TestIMAP'.
TESTFLAGS ?=
# Extra flags for the benchmarks, e.g. BENCHFLAGS='-benchtime 5s -count 5'.
BENCHFLAGS ?=

.PHONY: all test test-deps vet cross build demo bench

# An awk program that prints each skipped test with the lines it logged.
# go test -v streams a test's log lines after "=== RUN/CONT/NAME <test>".
SKIP_REASONS = '/^=== (RUN|CONT|NAME) / { cur = $$3; next } \
	/^ *--- (PASS|FAIL|SKIP): / { if ($$2 == "SKIP:") printf "--- SKIP: %s\n%s", $$3, msg[$$3]; next } \
	/^(ok|FAIL|PASS|\?) / { cur = ""; next } \
	/^    / && cur != "" { msg[cur] = msg[cur] $$0 "\n" }'

all: vet build test

# Installs Dovecot, Redis, PostgreSQL, HAProxy, curl, swaks, oathtool and Chromium for the real-server
# and browser tests when run as root, or says which tests will be skipped.
test-deps:
	@bash scripts/test-deps.sh

# Runs the tests verbosely, then lists the skipped tests with their reasons
# and ends with one line of counts. The exit status is go test's.
test: test-deps
	@set -o pipefail; log=$$(mktemp); trap 'rm -f "$$log"' EXIT; \
	$(GO) test -race -count=1 -timeout 20m -v $(TESTFLAGS) $(PKG) 2>&1 | tee "$$log"; \
	status=$$?; \
	count() { grep -cE "$$1" "$$log" || true; }; \
	passed=$$(count '^ *--- PASS'); failed=$$(count '^ *--- FAIL'); skipped=$$(count '^ *--- SKIP'); \
	failed=$$((failed + $$(count '^FAIL.*\[(build|setup) failed\]'))); \
	if [ "$$status" -ne 0 ] && [ "$$failed" -eq 0 ]; then failed=1; fi; \
	if [ "$$skipped" -gt 0 ]; then \
		echo; echo "== $$skipped skipped test(s) and why =="; \
		awk $(SKIP_REASONS) "$$log"; \
	fi; \
	echo; echo "tests: $$passed passed, $$failed failed, $$skipped skipped"; \
	exit $$status

# Fails when gofmt would change a file, then runs go vet.
vet:
	@unformatted=$$(gofmt -l .); \
	if [ -n "$$unformatted" ]; then \
		echo "gofmt -l: these files need gofmt -w:"; echo "$$unformatted"; exit 1; \
	fi
	$(GO) vet $(PKG)

# Builds every package for the other systems kanmon must build on. Off
# Linux the relay copies through a buffer and never parks or splices.
# On Windows the accounts file is locked with LockFileEx; the test helpers
# that start Dovecot and the bench tool are unix-only (build-tagged).
CROSS_GOOS ?= darwin freebsd windows
cross:
	@for os in $(CROSS_GOOS); do \
		echo "GOOS=$$os go build ./..."; \
		GOOS=$$os $(GO) build ./... || exit 1; \
	done

build:
	$(GO) build ./...
	$(GO) build -o kanmon ./cmd/kanmon

demo:
	$(GO) run ./cmd/kanmon demo

bench: test-deps
	$(GO) test -run '^$$' -bench . -benchmem $(BENCHFLAGS) $(PKG)
