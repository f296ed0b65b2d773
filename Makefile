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
#   make run             boot a guest and show the balloon working
#   make bench           compare with the in-tree virtio_balloon

KDIR ?= /lib/modules/$(shell uname -r)/build
KVER := $(shell sed -n 's/^#define UTS_RELEASE "\(.*\)"/\1/p' $(KDIR)/include/generated/utsrelease.h 2>/dev/null)
TOP := $(CURDIR)
OUT := $(TOP)/build/$(KVER)
VB_CACHE ?= /var/cache/vballoon
SOURCES := Kbuild $(wildcard src/*.c include/*.h)

.PHONY: all modules lint check run bench clean deps guest

all: modules

modules: $(OUT)/vballoon.ko

$(OUT)/vballoon.ko: $(SOURCES) scripts/probe-api.sh
	@test -n "$(KVER)" || { echo "no kernel headers at KDIR=$(KDIR)" >&2; exit 1; }
	@mkdir -p $(OUT)/src $(OUT)/include $(OUT)/gen
	@cp -p Kbuild $(OUT)/
	@cp -p src/*.c $(OUT)/src/
	@cp -p include/*.h $(OUT)/include/
	@scripts/probe-api.sh $(KDIR) $(OUT)/gen/vb_autoconf.h
	$(MAKE) -C $(KDIR) M=$(OUT) W=1 $(if $(C),C=$(C)) modules

deps:
	bash scripts/deps.sh

guest:
	$(MAKE) -C tests/guest

lint:
	bash scripts/lint.sh

check:
	bash scripts/check.sh

run:
	bash scripts/run.sh

bench:
	bash scripts/bench.sh

clean:
	rm -rf build
