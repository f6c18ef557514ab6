# hutch: build, test, demo, install.
#   make build           debug build of the whole workspace
#   sudo make test       install deps, build, run every test (root-only e2e included)
#   sudo make demo       a confined login on a private sshd (scripts/demo.sh)
#   sudo make install    release build into PREFIX and the PAM module dir
#   sudo make uninstall  remove what install put there
#   make deb             Debian package (dpkg-buildpackage) into DEB_OUT
#   sudo make test-vm    the VM tier alone: install the .deb in a Debian 12 guest, log in (tests/vm)

CARGO        ?= cargo
PREFIX       ?= /usr/local
DESTDIR      ?=
MULTIARCH    := $(shell dpkg-architecture -qDEB_HOST_MULTIARCH 2>/dev/null || echo x86_64-linux-gnu)
PAMDIR       ?= /lib/$(MULTIARCH)/security
SBINDIR      ?= $(PREFIX)/sbin
LIBEXECDIR   ?= $(PREFIX)/libexec/hutch
TARGET_DIR   ?= $(or $(CARGO_TARGET_DIR),target)
TEST_THREADS ?= 2
# A hung test must fail CI, not stall it.
TEST_TIMEOUT ?= 80m

.PHONY: all build release deps test fuzz-smoke demo install uninstall clean deb test-vm

all: build

build:
	$(CARGO) build --workspace

# The module finds the keeper where install puts it.
release:
	HUTCH_KEEPER=$(LIBEXECDIR)/hutch-keeper $(CARGO) build --workspace --release

deps:
	scripts/deps.sh

# fmt and clippy first (cheap, and they fail fast); then the fuzz smoke run;
# then every test. The suites' tallies (hutch_tests::tally, e.g. the escape
# suite's `N attempts, M escapes`) are printed after cargo's summary, whether
# it passed or not.
TALLIES = $(TARGET_DIR)/debug/tallies
test: deps
	$(CARGO) fmt --all --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings
	$(CARGO) build --workspace
	$(MAKE) fuzz-smoke
	rm -rf $(TALLIES)
	timeout --kill-after=30s $(TEST_TIMEOUT) $(CARGO) test --workspace --no-fail-fast -- --test-threads=$(TEST_THREADS); \
		rc=$$?; echo "== tallies"; cat $(TALLIES)/*.txt 2>/dev/null || echo "(none written)"; exit $$rc

# A bounded fuzz run of the policy parser (skipped, saying so, without cargo-fuzz).
FUZZ_SECONDS ?= 60
fuzz-smoke:
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz-smoke.sh

demo: deps build
	scripts/demo.sh

install: release
	install -D -m 0755 $(TARGET_DIR)/release/hutchctl $(DESTDIR)$(SBINDIR)/hutchctl
	install -D -m 0755 $(TARGET_DIR)/release/hutch-shell $(DESTDIR)$(SBINDIR)/hutch-shell
	install -D -m 0755 $(TARGET_DIR)/release/hutch-keeper $(DESTDIR)$(LIBEXECDIR)/hutch-keeper
	install -D -m 0755 $(TARGET_DIR)/release/hutch $(DESTDIR)$(LIBEXECDIR)/hutch
	install -D -m 0644 $(TARGET_DIR)/release/libpam_hutch.so $(DESTDIR)$(PAMDIR)/pam_hutch.so

uninstall:
	rm -f $(DESTDIR)$(SBINDIR)/hutchctl $(DESTDIR)$(SBINDIR)/hutch-shell
	rm -f $(DESTDIR)$(LIBEXECDIR)/hutch-keeper $(DESTDIR)$(LIBEXECDIR)/hutch $(DESTDIR)$(PAMDIR)/pam_hutch.so
	-rmdir $(DESTDIR)$(LIBEXECDIR) 2>/dev/null

# The .deb (and .changes/.buildinfo) land in DEB_OUT, not in the parent
# directory where dpkg-buildpackage leaves them.
DEB_OUT      ?= $(abspath $(TARGET_DIR))/deb
DEB_VERSION   = $(shell dpkg-parsechangelog -SVersion)
DEB_ARCH      = $(shell dpkg-architecture -qDEB_HOST_ARCH)

deb:
	CARGO_TARGET_DIR=$(abspath $(TARGET_DIR)) dpkg-buildpackage -b -uc -us --no-sign
	mkdir -p $(DEB_OUT)
	mv ../hutch_$(DEB_VERSION)_$(DEB_ARCH).deb ../hutch_$(DEB_VERSION)_$(DEB_ARCH).changes \
		../hutch_$(DEB_VERSION)_$(DEB_ARCH).buildinfo $(DEB_OUT)/
	-mv ../hutch-dbgsym_$(DEB_VERSION)_$(DEB_ARCH).deb $(DEB_OUT)/ 2>/dev/null
	@echo "built $(DEB_OUT)/hutch_$(DEB_VERSION)_$(DEB_ARCH).deb"

test-vm: deb
	HUTCH_DEB=$(DEB_OUT)/hutch_$(DEB_VERSION)_$(DEB_ARCH).deb tests/vm/run.sh

clean:
	$(CARGO) clean
