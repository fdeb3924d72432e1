# fanguard — make targets a newcomer can guess.
#   make deps    install what is missing (libyara-dev, pkg-config via apt-get; Go modules)
#   make build   build bin/fanguard
#   make run     build and run the daemon in the foreground with configs/ (whole machine protected)
#   make test    go vet, staticcheck and every test with -race (root tests need root)
#   make fuzz    run each fuzz target for FUZZTIME
#   make install install the binary, the default config and rules
#   make bench   build, then test/bench/bench.sh: on-access cost vs no daemon and vs yara,
#                writes BENCHMARKS.md; needs root; BENCHFLAGS="-n 2000 -k 5" to change it

GO        ?= go
VERSION   ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)
LDFLAGS   := -X main.version=$(VERSION)
FUZZTIME  ?= 20s
PREFIX    ?= /usr
STATICCHECK_VERSION ?= v0.7.0
BENCHFLAGS ?=

export CGO_ENABLED := 1

.PHONY: all deps build run test vet staticcheck fuzz install bench clean

all: build

deps:
	@if ! pkg-config --exists yara 2>/dev/null || ! command -v mount >/dev/null; then \
		echo "installing libyara-dev and pkg-config"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libyara-dev pkg-config mount; \
	fi
	$(GO) mod download

build: deps
	$(GO) build -ldflags "$(LDFLAGS)" -o bin/fanguard ./cmd/fanguard

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
	$(GO) test -run '^$$' -fuzz '^FuzzParse$$' -fuzztime $(FUZZTIME) ./policy/
	$(GO) test -run '^$$' -fuzz '^FuzzMerge$$' -fuzztime $(FUZZTIME) ./scanner/

install: build
	install -D -m 0755 bin/fanguard $(DESTDIR)$(PREFIX)/sbin/fanguard
	install -d -m 0755 $(DESTDIR)$(PREFIX)/lib/fanguard/rules.d $(DESTDIR)/etc/fanguard/rules.d
	install -m 0644 configs/rules.d/*.yar $(DESTDIR)$(PREFIX)/lib/fanguard/rules.d/
	test -e $(DESTDIR)/etc/fanguard/fanguard.toml || install -m 0644 configs/fanguard.toml $(DESTDIR)/etc/fanguard/fanguard.toml

bench: build
	./test/bench/bench.sh -b bin/fanguard $(BENCHFLAGS)

clean:
	rm -rf bin
