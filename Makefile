# webhookdb: `make run` brings the whole system up on this machine; `make test` runs every test against real
# PostgreSQL and Vault servers that the tests start themselves.
SHELL := /bin/bash
GO ?= go
GOFLAGS ?=
BIN := bin
# Packages where the race detector is affordable: all of them for now.
RACE_PKGS ?= ./...
TEST_TIMEOUT ?= 30m

.DEFAULT_GOAL := help

.PHONY: help
help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  %-8s %s\n", $$1, $$2}'

.PHONY: build
build: ## Build bin/webhookdb
	$(GO) build -o $(BIN)/webhookdb ./cmd/webhookdb

# The Vault server is built from the Go module proxy in its own module (tools/vault); it takes ~10 minutes the
# first time and is a no-op afterwards (make sees bin/vault newer than the pinned go.mod/go.sum).
$(BIN)/vault: tools/vault/go.mod tools/vault/go.sum
	@echo "building Vault from the Go module proxy into $(BIN)/vault (about 10 minutes the first time)..."
	cd tools/vault && $(GO) build -trimpath -ldflags='-s -w' -o ../../$(BIN)/vault github.com/hashicorp/vault
	@touch $@

.PHONY: vault
vault: $(BIN)/vault ## Build bin/vault (no-op when already built at the pinned version)

.PHONY: postgres-check
postgres-check:
	@test -x "$$(pg_config --bindir 2>/dev/null)/initdb" || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ echo "PostgreSQL server binaries are missing: sudo apt-get install -y postgresql"; exit 1; }

.PHONY: run
run: build vault postgres-check ## Run the whole system (Postgres, Vault, server) with data in .webhookdb/
	$(BIN)/webhookdb dev --dir .webhookdb

.PHONY: test
test: build vault postgres-check ## Run all tests (real Postgres and Vault; race detector on)
	$(GO) test -race -count=1 -timeout $(TEST_TIMEOUT) $(RACE_PKGS)

.PHONY: bench
bench: build vault postgres-check ## Run the benchmarks (ratios against baselines measured in the same run)
	$(BIN)/webhookdb bench all

.PHONY: lint
lint: ## gofmt and go vet
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...

.PHONY: clean
clean: ## Remove build output (keeps bin/vault, which is slow to rebuild) and the dev data in .webhookdb/
	rm -f $(BIN)/webhookdb
	rm -rf .webhookdb

.PHONY: distclean
distclean: clean ## Also remove bin/vault
	rm -rf $(BIN)
