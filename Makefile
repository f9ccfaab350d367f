# recon build, test, demo and benchmark entry points.
# Every target uses one deno: the one on PATH, else the pinned npm package in .tools/.

DENO_VERSION := 2.9.6
TOOLS_DENO := .tools/node_modules/.bin/deno
DENO ?= $(shell command -v deno 2>/dev/null || echo $(TOOLS_DENO))
PERMISSIONS := $(shell cat bin/permissions)
TEST_PERMISSIONS := --allow-all

.PHONY: setup test check fmt build install bench bench-quick demo clean

setup: $(DENO) .tools/.deps-cached

$(TOOLS_DENO):
	@echo "installing deno $(DENO_VERSION) from the npm registry into .tools/" >&2
	@mkdir -p .tools
	@cd .tools && npm install --silent --no-audit --no-fund --no-save deno@$(DENO_VERSION) >/dev/null
	@$(TOOLS_DENO) --version | head -n 1 >&2

# npm dependencies pinned in deno.json and locked in deno.lock, fetched once.
.tools/.deps-cached: deno.json deno.lock $(DENO)
	@mkdir -p .tools
	@$(DENO) install --quiet --frozen
	@touch $@

# The Slurm tests run against the one-node test cluster of scripts/slurm-local (which
# installs Slurm with apt-get when missing): up before the tests, down after them, even
# when they fail or are interrupted. When it cannot start, the Slurm tests fail and say why.
test: setup
	@scripts/ensure-test-deps
	@scripts/slurm-local up || true
	@trap 'scripts/slurm-local down >&2' EXIT; trap 'exit 130' INT TERM; \
		scripts/run-tests "$(DENO)" $(TEST_PERMISSIONS)

# Type-checks what ships and what tests it: deno run (bin/, the e2e tests) does not.
check: setup
	$(DENO) check server.ts client.ts tests/ bench/
	$(DENO) lint
	$(DENO) fmt --check

fmt: setup
	$(DENO) fmt

build: setup
	@scripts/build "$(DENO)" $(PERMISSIONS)

# recon-server and recon-client on PATH: PREFIX/bin (compiled binaries when DENORT_BIN
# is set, else launchers for the tree installed in PREFIX/lib/recon).
PREFIX ?= /usr/local
install: setup
	@scripts/install "$(DENO)" "$(PREFIX)" "$(DESTDIR)"

bench: setup
	@scripts/ensure-test-deps
	@$(DENO) run $(TEST_PERMISSIONS) bench/run.ts --size-mib 1024

bench-quick: setup
	@scripts/ensure-test-deps
	@$(DENO) run $(TEST_PERMISSIONS) bench/run.ts --size-mib 64

# make demo DEMO_PACS=1: also delivers the images to a local Orthanc PACS (left running to browse).
DEMO_PACS ?= 0
demo: setup
	@DEMO_PACS=$(DEMO_PACS) examples/demo.sh

clean:
	@[ ! -f demo-work/orthanc/orthanc.pid ] || scripts/orthanc-local down demo-work/orthanc
	rm -rf dist bench/work demo-work
