# kanmon developer and CI targets. CI runs .ci/run, which runs `make vet`
# and `make test`.
#
#   make test [PKG=./internal/dovecottest/...] [TESTFLAGS='-run TestX']
#   make vet | cross | build | demo | bench
#   make deb [GOARCH=arm64]   dist/kanmon_<version>_<arch>.deb (scripts/deb-test.sh tests it)

SHELL := /bin/bash
GO ?= go
# Packages to vet, test and benchmark.
PKG ?= ./...
# Extra flags for go test, e.g. TESTFLAGS='-run TestIMAP'.
TESTFLAGS ?=
# Extra flags for the benchmarks, e.g. BENCHFLAGS='-benchtime 5s -count 5'.
BENCHFLAGS ?=

.PHONY: all test test-deps vet cross build demo bench deb

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

# The .deb. nfpm runs at a pinned version through go run, so that go.mod
# does not carry it. The version is the newest tag vX.Y.Z as X.Y.Z (with
# +git<n>.<hash> for the commits since), else 0.0~git<date>.<hash> of the
# last commit; `kanmon version` prints it, and the commit, from the
# link-time stamp (internal/buildinfo), whatever GOFLAGS says of -buildvcs.
NFPM ?= $(GO) run github.com/goreleaser/nfpm/v2/cmd/nfpm@v2.48.0
VERSION ?= $(shell v=$$(git describe --tags --match 'v[0-9]*' 2>/dev/null) \
	&& echo "$${v#v}" | sed -E 's/-([0-9]+)-g([0-9a-f]+)$$/+git\1.\2/' \
	|| git log -1 --date=format:%Y%m%d --format='0.0~git%cd.%h' 2>/dev/null || echo 0.0~unknown)
COMMIT ?= $(shell c=$$(git rev-parse HEAD 2>/dev/null) && { [ -z "$$(git status --porcelain)" ] \
	&& echo "$$c" || echo "$$c-dirty"; } || echo unknown)
GOARCH ?= $(shell $(GO) env GOARCH)
DEB_MAINTAINER ?= kanmon developers <kanmon@example.invalid>
BUILDINFO := github.com/kanmon-mail/kanmon/internal/buildinfo
STAGE := dist/stage

deb:
	rm -rf $(STAGE) dist/kanmon_*.deb && mkdir -p $(STAGE)
	CGO_ENABLED=0 GOOS=linux GOARCH=$(GOARCH) $(GO) build -trimpath \
		-ldflags '-s -w -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)' \
		-o $(STAGE)/kanmon ./cmd/kanmon
	@# contrib's unit, at the package's paths, without its manual install steps.
	sed -e '/^# Install:/,/^#$$/c\# Installed by the kanmon package: change it with `systemctl edit kanmon`.\n#' \
		-e 's|/usr/local/bin/kanmon|/usr/bin/kanmon|g' contrib/systemd/kanmon.service >$(STAGE)/kanmon.service
	! grep -n '/usr/local\|^#   install ' $(STAGE)/kanmon.service
	@# contrib's jail, shipped off: ignoreip must list the campus first.
	sed -e 's/^enabled  = true$$/# Off as packaged: first list your campus NATs, the webmail host and any load\n# balancer in ignoreip below, then set enabled = true and `fail2ban-client reload`.\nenabled  = false/' \
		contrib/fail2ban/jail.d/kanmon.conf >$(STAGE)/fail2ban-jail.conf
	grep -qx 'enabled  = false' $(STAGE)/fail2ban-jail.conf
	gzip -9n <docs/kanmon.8 >$(STAGE)/kanmon.8.gz
	VERSION='$(VERSION)' GOARCH='$(GOARCH)' DEB_MAINTAINER='$(DEB_MAINTAINER)' \
		$(NFPM) package -f packaging/nfpm.yaml -p deb -t dist/
