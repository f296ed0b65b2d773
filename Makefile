# SPDX-License-Identifier: GPL-2.0
#
# vballoon: user entry points.  The kernel build itself is described in
# Kbuild; this file copies the sources into build/<kernel release>/ so one
# checkout builds for several kernels side by side, runs the compat probes
# for that kernel, then hands over to kbuild.
#
#   make                 build for the running kernel
#   make KDIR=<headers>  build for other headers
#   make lint            W=1, sparse (C=2) and checkpatch --strict, both test kernels
#   make check           everything the CI runs (installs what is missing)
#   make check-full      the whole matrix: every test on every kernel and
#                        QEMU (about 3 hours on 2 cores)
#   make run             boot a guest and show the balloon working
#                        (KVER=K612 or KVER=K73 make run: another kernel)
#   make bench           compare with the in-tree virtio_balloon
#   make k73             build for Debian's Linux 7.3 in a trixie root
#                        (scripts/trixie-root.sh; `make k73 C=2` with sparse)
#   make deps-k73        make the trixie root and unpack the 7.3 guest kernel
#   make deb             build/deb/vballoon-dkms_<version>_all.deb (debian/,
#                        dh-dkms) and run lintian on it

KDIR ?= /lib/modules/$(shell uname -r)/build
KREL := $(shell sed -n 's/^#define UTS_RELEASE "\(.*\)"/\1/p' $(KDIR)/include/generated/utsrelease.h 2>/dev/null)
TOP := $(CURDIR)
OUT := $(TOP)/build/$(KREL)
VB_CACHE ?= /var/cache/vballoon
SOURCES := Kbuild VERSION $(wildcard src/*.c include/*.h)
# The one place the version lives: MODULE_VERSION, dkms.conf and the
# Debian package (debian/rules checks debian/changelog against it) read it.
VERSION := $(shell cat $(TOP)/VERSION)

.PHONY: all modules stage lint check check-full run bench clean deps guest k73 K73 deps-k73 deb

all: modules

modules: $(OUT)/vballoon.ko

$(OUT)/vballoon.ko: $(SOURCES) scripts/probe-api.sh
	@$(MAKE) --no-print-directory stage
	$(MAKE) -C $(KDIR) M=$(OUT) W=1 $(if $(C),C=$(C)) modules

# What kbuild builds from, in $(OUT): the sources, the API probes' answers
# for KDIR and the version.  make lint stages its own copy (OUT=...).
stage:
	@test -n "$(KREL)" || { echo "no kernel headers at KDIR=$(KDIR)" >&2; exit 1; }
	@mkdir -p $(OUT)/src $(OUT)/include $(OUT)/gen
	@cp -p Kbuild $(OUT)/
	@cp -p src/*.c $(OUT)/src/
	@cp -p include/*.h $(OUT)/include/
	@scripts/probe-api.sh $(KDIR) $(OUT)/gen/vb_autoconf.h
	@printf '#define VB_VERSION "%s"\n' "$(VERSION)" >$(OUT)/gen/vb_version.h

deps:
	bash scripts/deps.sh

# Linux 7.3's headers need trixie's gcc-14 and kbuild: the same build as
# above, run by make inside $(VB_CACHE)/trixie-root (build/<7.3 release>/).
k73 K73:
	bash scripts/trixie-root.sh build $(if $(C),C=$(C))

deps-k73:
	VB_K73=1 bash scripts/deps.sh

guest:
	$(MAKE) -C tests/guest

lint:
	bash scripts/lint.sh

check:
	bash scripts/check.sh

check-full:
	VB_SLICE=full bash scripts/check.sh

run:
	bash scripts/run.sh

deb:
	bash scripts/deb.sh

bench:
	bash scripts/bench.sh $(BENCH_ARGS)

clean:
	rm -rf build
