# fanguard — make targets a newcomer can guess.
#   make deps    install what is missing (libyara-dev, pkg-config, systemd-analyze via apt-get; Go modules)
#   make build   build bin/fanguard
#   make run     build and run the daemon in the foreground with configs/ (whole machine protected)
#   make test    go vet, staticcheck and every test with -race (root tests need root)
#   make fuzz    run each fuzz target for FUZZTIME
#   make install install the binary, the default config and rules, the systemd unit
#   make uninstall remove the binary, the unit and the shipped rules (keeps /etc, /var/lib)
#   make bench   build, then test/bench/bench.sh: on-access cost vs no daemon and vs yara,
#                writes BENCHMARKS.md; needs root; BENCHFLAGS="-n 2000 -k 5" to change it

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 20s
PREFIX    ?= /usr
UNITDIR   ?= /usr/lib/systemd/system
STATICCHECK_VERSION ?= v0.7.0
BENCHFLAGS ?=

export CGO_ENABLED := 1

.PHONY: all deps build run test vet staticcheck fuzz install uninstall bench clean

all: build

deps:
	@if ! pkg-config --exists yara 2>/dev/null || ! command -v mount >/dev/null || ! command -v systemd-analyze >/dev/null; then \
		echo "installing libyara-dev, pkg-config, mount and systemd (systemd-analyze)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libyara-dev pkg-config mount systemd; \
	fi
	$(GO) mod download

build: deps
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/fanguard ./cmd/fanguard

run: build
	./bin/fanguard daemon --config configs/fanguard.toml --rules-dir configs/rules.d

vet: deps
	$(GO) vet ./...

staticcheck: deps
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

test: vet staticcheck
	$(GO) test -race -count=1 -timeout 12m ./...

fuzz: deps
	$(GO) test -run '^$$' -fuzz '^FuzzParseEvent$$' -fuzztime $(FUZZTIME) ./fan/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMountInfo$$' -fuzztime $(FUZZTIME) ./fan/
	$(GO) test -run '^$$' -fuzz '^FuzzReaderBatch$$' -fuzztime $(FUZZTIME) ./daemon/
	$(GO) test -run '^$$' -fuzz '^FuzzParseCgroup$$' -fuzztime $(FUZZTIME) ./daemon/
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzMerge$$' -fuzztime $(FUZZTIME) ./scanner/
	$(GO) test -run '^$$' -fuzz '^FuzzLoad$$' -fuzztime $(FUZZTIME) ./scanner/
	$(GO) test -run '^$$' -fuzz '^FuzzPartition$$' -fuzztime $(FUZZTIME) ./scanner/
	$(GO) test -run '^$$' -fuzz '^FuzzRecordRoundTrip$$' -fuzztime $(FUZZTIME) ./quarantine/
	$(GO) test -run '^$$' -fuzz '^FuzzUnpack$$' -fuzztime $(FUZZTIME) ./feeds/
	$(GO) test -run '^$$' -fuzz '^FuzzVerifyMinisign$$' -fuzztime $(FUZZTIME) ./feeds/
	$(GO) test -run '^$$' -fuzz '^FuzzParseMD5Sums$$' -fuzztime $(FUZZTIME) ./feeds/

# install: the binary, the shipped rules, the systemd units (the daemon,
# and fanguard-update.service + .timer for the rule feeds), an empty
# /etc/fanguard/rules.d for the administrator's rules, and the default config
# unless one is there already. The unit runs /usr/sbin/fanguard: keep
# PREFIX=/usr for a system install. Then: systemctl daemon-reload &&
# systemctl enable --now fanguard fanguard-update.timer.
install: build
	install -D -m 0755 bin/fanguard $(DESTDIR)$(PREFIX)/sbin/fanguard
	install -d -m 0755 $(DESTDIR)$(PREFIX)/lib/fanguard/rules.d $(DESTDIR)/etc/fanguard/rules.d
	install -m 0644 configs/rules.d/*.yar $(DESTDIR)$(PREFIX)/lib/fanguard/rules.d/
	install -D -m 0644 configs/fanguard.service $(DESTDIR)$(UNITDIR)/fanguard.service
	install -m 0644 configs/fanguard-update.service configs/fanguard-update.timer $(DESTDIR)$(UNITDIR)/
	test -e $(DESTDIR)/etc/fanguard/fanguard.toml || install -m 0644 configs/fanguard.toml $(DESTDIR)/etc/fanguard/fanguard.toml

# uninstall: stop and disable the service (only on a running systemd and
# without DESTDIR), then remove the binary, the unit and the shipped rules.
# It leaves /etc/fanguard (the administrator's config and rules) and
# /var/lib/fanguard (state and quarantine: detected files and their record)
# in place; remove those by hand if you mean it.
uninstall:
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then \
		systemctl disable --now fanguard.service fanguard-update.timer || true; \
	fi
	rm -f $(DESTDIR)$(PREFIX)/sbin/fanguard $(DESTDIR)$(UNITDIR)/fanguard.service
	rm -f $(DESTDIR)$(UNITDIR)/fanguard-update.service $(DESTDIR)$(UNITDIR)/fanguard-update.timer
	rm -rf $(DESTDIR)$(PREFIX)/lib/fanguard
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then \
		systemctl daemon-reload; \
	fi

bench: build
	./test/bench/bench.sh -b bin/fanguard $(BENCHFLAGS)

clean:
	rm -rf bin
