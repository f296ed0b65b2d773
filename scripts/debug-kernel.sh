#!/usr/bin/env bash
# SPDX-License-Identifier: GPL-2.0
#
# debug-kernel.sh [build]
#
# The debug guest kernel: Debian's linux-source-6.1 (the source of the 6.1
# guest) built with scripts/debug-kernel.config (KASAN, lockdep, kmemleak,
# DEBUG_VM, DEBUG_PAGEALLOC, UBSAN, debug objects, KFENCE, fault
# injection) on top of `make allnoconfig`.
#
#   $VB_CACHE/debug/src            the unpacked source (one per version)
#   $VB_CACHE/debug/build          the O= build tree; KDIR for vballoon
#   $VB_CACHE/kernel/$REL          boot/vmlinuz-$REL and lib/modules/$REL,
#                                  as scripts/mkinitramfs.sh and vm.py want
#   KDBG=$REL in kernels.env       for `tests/run.py --kernel KDBG`
#
# The build is keyed by the configuration, the source version, the
# compiler and this recipe: a stamp holds the key, and a different key
# rebuilds in the same tree (kbuild redoes what changed).  Nothing is done
# when the stamp matches.  Prints how long the build took.
#
# Environment: VB_CACHE (/var/cache/vballoon), VB_DEBUG_JOBS (make -j,
# default the number of CPUs), VB_DEBUG_NICE (nice level of the build,
# default 0; make check builds at 19 beside the guests it runs).
set -euo pipefail

top=$(cd "$(dirname "$0")/.." && pwd)
VB_CACHE=${VB_CACHE:-/var/cache/vballoon}
base=$VB_CACHE/debug
frag=$top/scripts/debug-kernel.config
envf=$VB_CACHE/kernels.env
jobs=${VB_DEBUG_JOBS:-$(nproc)}
nice=${VB_DEBUG_NICE:-0}
# Bump when the steps below change what they produce.
recipe=2

log() { printf 'debug-kernel: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

tarball=$(find /usr/src -maxdepth 1 -name 'linux-source-6.1.tar.*' | head -n1)
[ -n "$tarball" ] || die "no /usr/src/linux-source-6.1.tar.* (run scripts/deps.sh)"
srcver=$(dpkg-query -W -f='${Version}' linux-source-6.1)
for t in flex bison bc gcc make; do
	command -v "$t" >/dev/null || die "$t missing (run scripts/deps.sh)"
done
key=$( (cat "$frag"; echo "source $srcver"; gcc --version | head -n1;
	echo "recipe $recipe") | sha256sum | cut -c1-16)

mkdir -p "$base"
exec 9>"$base/lock"
flock 9

src=$base/src
obj=$base/build
stamp=$base/stamp

rel_of() { cat "$obj/include/config/kernel.release" 2>/dev/null || true; }

record_env() {
	local rel=$1
	[ -f "$envf" ] || die "no $envf (run scripts/deps.sh)"
	grep -qx "KDBG=$rel" "$envf" && return 0
	sed -i '/^KDBG=/d' "$envf"
	echo "KDBG=$rel" >>"$envf"
}

rel=$(rel_of)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$key" ] && [ -n "$rel" ] &&
	[ -f "$VB_CACHE/kernel/$rel/boot/vmlinuz-$rel" ]; then
	record_env "$rel"
	log "up to date: $rel (key $key)"
	exit 0
fi

t0=$SECONDS
if [ "$(cat "$src/.vb-version" 2>/dev/null)" != "$srcver" ]; then
	log "unpacking linux-source-6.1 $srcver"
	rm -rf "$src" "$src.tmp" "$obj"
	mkdir -p "$src.tmp"
	tar -xf "$tarball" -C "$src.tmp" --strip-components=1
	echo "$srcver" >"$src.tmp/.vb-version"
	mv "$src.tmp" "$src"
fi
mkdir -p "$obj"
rm -f "$stamp"

run() { nice -n "$nice" "$@"; }

log "configuring (allnoconfig + ${frag#"$top"/}, key $key)"
run make -s -C "$src" O="$obj" KCONFIG_ALLCONFIG="$frag" allnoconfig
run make -s -C "$src" O="$obj" olddefconfig
# Every symbol of the fragment must have survived (a dependency that is
# off drops a symbol silently).
miss=$(grep -E '^CONFIG_[A-Z0-9_]+=' "$frag" | while IFS= read -r l; do
	grep -qxF "$l" "$obj/.config" || echo "$l"
done)
[ -z "$miss" ] || die "config symbols lost by olddefconfig: ${miss//$'\n'/ }"

log "building with make -j$jobs (nice $nice)"
run make -s -C "$src" O="$obj" -j"$jobs" bzImage modules >"$base/build.log" 2>&1 ||
	{ tail -n 40 "$base/build.log" >&2; die "build failed, see $base/build.log"; }
rel=$(rel_of)
[ -n "$rel" ] || die "no kernel.release"

kroot=$VB_CACHE/kernel/$rel
rm -rf "$kroot.tmp"
mkdir -p "$kroot.tmp/boot"
run make -s -C "$src" O="$obj" INSTALL_MOD_PATH="$kroot.tmp" \
	modules_install >>"$base/build.log" 2>&1 ||
	die "modules_install failed, see $base/build.log"
rm -f "$kroot.tmp/lib/modules/$rel/build" "$kroot.tmp/lib/modules/$rel/source"
cp "$obj/arch/x86/boot/bzImage" "$kroot.tmp/boot/vmlinuz-$rel"
cp "$obj/.config" "$kroot.tmp/boot/config-$rel"
cp "$obj/System.map" "$kroot.tmp/boot/System.map-$rel"
# Boot arguments scripts/vm.py adds for this kernel.  acpi=noirq: with
# KASAN, kmemleak and lockdep under TCG, evaluating the PCI interrupt
# routing method (_PRT) of QEMU's i440FX runs past ACPICA's 30 s loop
# timeout and leaves the devices without an interrupt; the BIOS routing
# table gives the same routing at once.  (pci=noacpi would too, but it
# also drops the host bridge windows, and a legacy device's I/O BAR then
# finds no room.)  Not on microvm: scripts/vm.py leaves it out there.
echo "acpi=noirq" >"$kroot.tmp/cmdline"
rm -rf "$kroot"
mv "$kroot.tmp" "$kroot"
echo "$key" >"$stamp"
record_env "$rel"
log "built $rel in $((SECONDS - t0)) s (key $key); KDIR=$obj"
