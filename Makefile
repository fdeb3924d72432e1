# fanguard — make targets a newcomer can guess.
#   make deps    install what is missing (libyara-dev, pkg-config, systemd-analyze, promtool via apt-get; Go modules)
#   make build   build bin/fanguard
#   make run     build and run the daemon in the foreground with configs/ (whole machine protected)
#   make test    go vet, staticcheck, promtool check rules and every test with -race (root tests need root)
#   make fuzz    run each fuzz target for FUZZTIME
#   make man     build, then write the manual pages (fanguard(8), one per subcommand,
#                fanguard.toml(5)) and the bash and zsh completions to build/
#   make install install the binary, the default config and rules, the systemd unit,
#                the manual pages and the completions
#   make uninstall remove the binary, the unit and the shipped rules (keeps /etc, /var/lib)
#   make package build/pkg/fanguard_<version>_amd64.deb and fanguard-<version>-1.x86_64.rpm
#                (nfpm; PKG_VERSION=1.2.3 to set the version), then lintian on the
#                .deb when lintian is installed
#   make package-lint  lintian --fail-on error on the .deb built by make package
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

.PHONY: all deps build man run test vet staticcheck promrules fuzz install uninstall package package-lint bench clean

all: build

deps:
	@if ! pkg-config --exists yara 2>/dev/null || ! command -v mount >/dev/null || ! command -v systemd-analyze >/dev/null || ! command -v man >/dev/null; then \
		echo "installing libyara-dev, pkg-config, mount, systemd (systemd-analyze) and man-db (man, to check the pages)"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libyara-dev pkg-config mount systemd man-db groff-base; \
	fi
	@# promtool and prometheus, for the tests of configs/prometheus/ and of the
	@# metrics listener (a real scrape): Debian's prometheus package (~100 MB,
	@# without its recommends). Its postinst starts the service through
	@# invoke-rc.d, and fails when that fails (no systemd as PID 1, in a
	@# container): a policy-rc.d that refuses every start (exit 101) is put in
	@# place for the install when there is none. The tests run prometheus
	@# themselves; on a systemd machine the package still enables
	@# prometheus.service for the next boot (systemctl disable prometheus).
	@if ! command -v promtool >/dev/null || ! command -v prometheus >/dev/null; then \
		echo "installing prometheus (promtool), without starting its service"; \
		policy=; if [ ! -e /usr/sbin/policy-rc.d ]; then \
			policy=/usr/sbin/policy-rc.d; printf '#!/bin/sh\nexit 101\n' > $$policy && chmod 755 $$policy; fi; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus; \
		rc=$$?; [ -z "$$policy" ] || rm -f $$policy; exit $$rc; \
	fi
	$(GO) mod download

build: deps
	$(GO) build -trimpath -ldflags "$(LDFLAGS)" -o bin/fanguard ./cmd/fanguard

# man: the manual pages, from the commands and from configs/fanguard.toml's
# comments, and the shell completions, from the commands.
man: build
	rm -rf build/man build/completion
	./bin/fanguard man --config-file configs/fanguard.toml build/man
	mkdir -p build/completion
	./bin/fanguard completion bash > build/completion/fanguard
	./bin/fanguard completion zsh > build/completion/_fanguard

run: build
	./bin/fanguard daemon --config configs/fanguard.toml --rules-dir configs/rules.d

vet: deps
	$(GO) vet ./...

staticcheck: deps
	$(GO) run honnef.co/go/tools/cmd/staticcheck@$(STATICCHECK_VERSION) ./...

# promrules: the shipped alert rules (the test package checks them too,
# and lints a real scrape with promtool check metrics).
promrules: deps
	promtool check rules configs/prometheus/*.rules.yml

test: vet staticcheck promrules
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
	$(GO) test -run '^$$' -fuzz '^FuzzConfig$$' -fuzztime $(FUZZTIME) ./internal/manpage/

# install: the binary, the shipped rules, the systemd units (the daemon,
# and fanguard-update.service + .timer for the rule feeds), an empty
# /etc/fanguard/rules.d for the administrator's rules, and the default config
# unless one is there already. The unit runs /usr/sbin/fanguard: keep
# PREFIX=/usr for a system install. Then: systemctl daemon-reload &&
# systemctl enable --now fanguard fanguard-update.timer.
install: build man
	install -D -m 0755 bin/fanguard $(DESTDIR)$(PREFIX)/sbin/fanguard
	install -d -m 0755 $(DESTDIR)$(PREFIX)/share/man/man8 $(DESTDIR)$(PREFIX)/share/man/man5
	install -m 0644 build/man/*.8 $(DESTDIR)$(PREFIX)/share/man/man8/
	install -m 0644 build/man/*.5 $(DESTDIR)$(PREFIX)/share/man/man5/
	install -D -m 0644 build/completion/fanguard $(DESTDIR)$(PREFIX)/share/bash-completion/completions/fanguard
	install -D -m 0644 build/completion/_fanguard $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_fanguard
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
	rm -f $(DESTDIR)$(PREFIX)/share/man/man8/fanguard.8 $(DESTDIR)$(PREFIX)/share/man/man8/fanguard-*.8
	rm -f $(DESTDIR)$(PREFIX)/share/man/man5/fanguard.toml.5
	rm -f $(DESTDIR)$(PREFIX)/share/bash-completion/completions/fanguard $(DESTDIR)$(PREFIX)/share/zsh/vendor-completions/_fanguard
	rm -f $(DESTDIR)$(UNITDIR)/fanguard-update.service $(DESTDIR)$(UNITDIR)/fanguard-update.timer
	rm -rf $(DESTDIR)$(PREFIX)/lib/fanguard
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then \
		systemctl daemon-reload; \
	fi

# package: the .deb and the .rpm in build/pkg/ (packaging/build.sh: the
# hardened binary, the packaged configuration in audit mode, copyright and
# changelog, then nfpm), and lintian on the .deb when it is installed.
package: man
	GO="$(GO)" packaging/build.sh
	@if command -v lintian >/dev/null; then $(MAKE) --no-print-directory package-lint; \
	else echo "lintian not installed: the .deb was not checked (apt-get install lintian)"; fi

package-lint:
	lintian --fail-on error --display-info build/pkg/fanguard_*.deb

bench: build
	./test/bench/bench.sh -b bin/fanguard $(BENCHFLAGS)

clean:
	rm -rf bin build
