#!/usr/bin/env bash
# prepare.sh - install and cache everything the meshwan kernel VM lab needs.
#
# Idempotent and non-interactive; run as root. A re-run with everything cached
# takes about one second (one apt-cache call). See e2e/vm/README.md.
#
#   - installs (apt, only what is missing; `apt-get update` only when a
#     package or the kernel cannot be resolved or downloaded) qemu-system-x86,
#     kmod, cpio, busybox-static, xz-utils, and the data-plane tools the VM
#     uses from the host root filesystem (strongswan-charon,
#     strongswan-swanctl, nftables, iproute2, iputils-ping);
#   - downloads the Debian kernel image that linux-image-amd64 currently
#     depends on (or MESHWAN_LAB_KERNEL_PKG), extracts it into the cache with
#     dpkg-deb -x, runs depmod -b on it and unpacks an ELF vmlinux from it for
#     qemu's PVH boot (no in-guest decompression: ~3 s faster per boot);
#   - builds a small initramfs (~5 MB): busybox-static, kmod (as modprobe)
#     with its shared libraries, and the modules needed to mount 9p. The full
#     module tree is not copied into it: the guest reads it from this cache
#     through the read-only 9p share of the host root;
#   - creates an empty /lib/modules on the host if missing (mount point for
#     the guest kernel's module tree inside the VM's chroot);
#   - removes cached older kernels (unless MESHWAN_LAB_KEEP_OLD=1).
#
# Environment:
#   MESHWAN_LAB_CACHE       cache directory (default /var/cache/meshwan-lab)
#   MESHWAN_LAB_KERNEL_PKG  kernel package to use, e.g. linux-image-6.1.0-56-amd64
#                           (default: whatever linux-image-amd64 depends on)
#   MESHWAN_LAB_NO_APT=1    never call apt-get (fail if something is missing)
#   MESHWAN_LAB_KEEP_OLD=1  keep previously cached kernel versions
set -euo pipefail

CACHE="${MESHWAN_LAB_CACHE:-/var/cache/meshwan-lab}"
export DEBIAN_FRONTEND=noninteractive
APT_OPTS=(-o DPkg::Lock::Timeout=600 -o APT::Sandbox::User=root -q)

# Packages the harness itself needs (on the host) and those smoke.sh uses
# inside the VM (host packages, visible in the VM through the 9p root share).
HOST_PKGS=(qemu-system-x86 seabios ipxe-qemu kmod cpio busybox-static xz-utils coreutils util-linux)
GUEST_PKGS=(strongswan-charon strongswan-swanctl nftables iproute2 iputils-ping procps iperf3 ethtool)

# Modules that must be in the initramfs: enough to mount the 9p shares. All
# other modules are loaded later from the full tree (over 9p).
INITRD_MODULES=(virtio_pci 9pnet_virtio 9p)

log() { printf 'prepare.sh: %s\n' "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root"

mkdir -p "$CACHE"
# Serialise concurrent prepare.sh runs on the same cache.
exec 9>"$CACHE/.lock"
flock -w 900 9 || die "could not lock $CACHE/.lock"

APT_UPDATED=0
apt_update() {
	[ "$APT_UPDATED" = 1 ] && return 0
	[ "${MESHWAN_LAB_NO_APT:-0}" = 1 ] && die "apt-get update needed but MESHWAN_LAB_NO_APT=1"
	log "apt-get update"
	# The lists lock does not honour DPkg::Lock::Timeout on every apt
	# version: retry while another apt holds it.
	local i
	for i in $(seq 1 60); do
		if apt-get "${APT_OPTS[@]}" update >&2; then
			APT_UPDATED=1
			return 0
		fi
		log "apt-get update failed (lock held by another apt?), retry $i/60 in 10 s"
		sleep 10
	done
	die "apt-get update kept failing"
}

is_installed() {
	[ "$(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true)" = installed ]
}

has_candidate() {
	local c
	c="$(apt-cache policy "$1" 2>/dev/null | awk '/Candidate:/ {print $2}')"
	[ -n "$c" ] && [ "$c" != "(none)" ]
}

apt_install() {
	local missing=() p
	for p in "$@"; do
		is_installed "$p" || missing+=("$p")
	done
	[ "${#missing[@]}" -eq 0 ] && return 0
	[ "${MESHWAN_LAB_NO_APT:-0}" = 1 ] && die "missing packages: ${missing[*]} (MESHWAN_LAB_NO_APT=1)"
	for p in "${missing[@]}"; do
		has_candidate "$p" || { apt_update; break; }
	done
	log "apt-get install ${missing[*]}"
	if ! apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}" >&2; then
		# Stale lists give 404s: refresh once and retry.
		APT_UPDATED=0
		apt_update
		apt-get "${APT_OPTS[@]}" install -y --no-install-recommends "${missing[@]}" >&2
	fi
}

apt_install "${HOST_PKGS[@]}" "${GUEST_PKGS[@]}"

# The guest mounts the kernel's module tree on /lib/modules/<kver> inside the
# chroot of the (read-only) host root: the mount point must exist on the host.
# An empty /lib/modules is harmless (the host kernel has no modules there).
mkdir -p /lib/modules

# --- resolve the kernel package -------------------------------------------
# Prints "PKG VERSION", e.g. "linux-image-6.1.0-56-amd64 6.1.192-2", from the
# Depends of linux-image-amd64 (one apt-cache call: ~1 s).
resolve_kernel() {
	local pkg ver
	if [ -n "${MESHWAN_LAB_KERNEL_PKG:-}" ]; then
		pkg="$MESHWAN_LAB_KERNEL_PKG"
	else
		read -r pkg ver < <(apt-cache show --no-all-versions linux-image-amd64 2>/dev/null |
			sed -n 's/^Depends: *//p' | tr ',' '\n' |
			sed -n 's/^ *\(linux-image-[0-9][^ ]*\) *\((= *\([^)]*\))\)\{0,1\}.*/\1 \3/p' | head -n1) || true
	fi
	[ -n "${pkg:-}" ] || return 1
	if [ -z "${ver:-}" ]; then
		ver="$(apt-cache show --no-all-versions "$pkg" 2>/dev/null | sed -n 's/^Version: *//p' | head -n1)"
	fi
	[ -n "$ver" ] || return 1
	printf '%s %s\n' "$pkg" "$ver"
}

# Downloads $KPKG=$KDEBVER into $KDIR/dl; fails on a 404 (stale lists).
download_kernel() {
	rm -rf "$KDIR"
	mkdir -p "$KDIR/dl"
	(cd "$KDIR/dl" && apt-get "${APT_OPTS[@]}" download "$KPKG=$KDEBVER" >&2)
}

# Resolve, and download unless cached. With stale package lists the resolved
# version may be gone from the archive: refresh the lists once and resolve
# again.
for attempt in 1 2; do
	KINFO="$(resolve_kernel || true)"
	if [ -z "$KINFO" ]; then
		[ "$attempt" = 1 ] && [ "$APT_UPDATED" = 0 ] && { apt_update; continue; }
		die "cannot resolve the kernel package (linux-image-amd64 / MESHWAN_LAB_KERNEL_PKG)"
	fi
	read -r KPKG KDEBVER <<<"$KINFO"
	KVER="${KPKG#linux-image-}"
	KDIR="$CACHE/${KPKG}_${KDEBVER}"
	ROOT="$KDIR/root"
	MODDIR="$ROOT/lib/modules/$KVER"
	[ -f "$KDIR/.extracted" ] && break
	[ "${MESHWAN_LAB_NO_APT:-0}" = 1 ] && die "$KPKG=$KDEBVER not cached (MESHWAN_LAB_NO_APT=1)"
	log "fetching $KPKG=$KDEBVER"
	if download_kernel; then
		break
	fi
	rm -rf "$KDIR"
	[ "$attempt" = 1 ] && [ "$APT_UPDATED" = 0 ] && { apt_update; continue; }
	die "apt-get download $KPKG=$KDEBVER failed"
done

# --- extract -------------------------------------------------------------------
if [ ! -f "$KDIR/.extracted" ]; then
	deb="$(find "$KDIR/dl" -maxdepth 1 -name '*.deb' | head -n1)"
	[ -n "$deb" ] || die "download of $KPKG produced no .deb"
	log "extracting $(basename "$deb")"
	dpkg-deb -x "$deb" "$ROOT"
	[ -f "$ROOT/boot/vmlinuz-$KVER" ] || die "no /boot/vmlinuz-$KVER in $deb"
	[ -d "$MODDIR" ] || die "no /lib/modules/$KVER in $deb"
	log "depmod -b $ROOT $KVER"
	depmod -b "$ROOT" "$KVER"
	rm -rf "$KDIR/dl"
	touch "$KDIR/.extracted"
fi

# --- uncompressed kernel for PVH boot ------------------------------------------
# qemu boots an ELF vmlinux that has a PVH entry point directly: no real-mode
# setup and no in-guest xz decompression, which saves ~3 s per boot under TCG.
# Falls back to the bzImage when the kernel has no PVH support.
KERNEL="$ROOT/boot/vmlinuz-$KVER"
if grep -q '^CONFIG_PVH=y' "$ROOT/boot/config-$KVER" 2>/dev/null; then
	if [ ! -f "$KDIR/vmlinux" ]; then
		log "extracting vmlinux (PVH boot)"
		off="$(LC_ALL=C grep -obUaP '\xfd7zXZ\x00' "$ROOT/boot/vmlinuz-$KVER" | head -n1 | cut -d: -f1 || true)"
		if [ -n "$off" ]; then
			# xz complains about the data after the stream: ignore its status
			# and check the result instead.
			tail -c +"$((off + 1))" "$ROOT/boot/vmlinuz-$KVER" | xz -dcq >"$KDIR/vmlinux.tmp" 2>/dev/null || true
			if [ "$(head -c 4 "$KDIR/vmlinux.tmp" | od -An -c | tr -d ' ')" = '177ELF' ]; then
				mv "$KDIR/vmlinux.tmp" "$KDIR/vmlinux"
			else
				rm -f "$KDIR/vmlinux.tmp"
				log "WARNING: could not extract vmlinux; booting the bzImage"
			fi
		fi
	fi
	[ -f "$KDIR/vmlinux" ] && KERNEL="$KDIR/vmlinux"
fi

# --- initramfs ---------------------------------------------------------------
# Rebuilt whenever this script changes (the stamp holds its hash).
STAMP="$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1) $KVER"
if [ ! -f "$KDIR/initrd.gz" ] || [ "$(cat "$KDIR/.initrd-stamp" 2>/dev/null || true)" != "$STAMP" ]; then
	log "building initramfs"
	IR="$(mktemp -d "$KDIR/initrd.XXXXXX")"
	trap 'rm -rf "$IR"' EXIT
	mkdir -p "$IR"/{bin,sbin,dev,proc,sys,run,tmp,mnt,host,orig,ctl,etc,lib64} \
		"$IR/lib/modules/$KVER"
	mknod -m 600 "$IR/dev/console" c 5 1
	mknod -m 666 "$IR/dev/null" c 1 3

	cp /bin/busybox "$IR/bin/busybox"
	for applet in $("$IR/bin/busybox" --list); do
		case "$applet" in
		busybox | modprobe | insmod | rmmod | lsmod | depmod | modinfo) ;;
		*) ln -s busybox "$IR/bin/$applet" ;;
		esac
	done

	# kmod as modprobe, with its shared libraries at the paths the dynamic
	# linker expects.
	cp /usr/bin/kmod "$IR/bin/kmod"
	for tool in modprobe insmod rmmod lsmod depmod modinfo; do
		ln -s ../bin/kmod "$IR/sbin/$tool"
		ln -s kmod "$IR/bin/$tool"
	done
	ldd /usr/bin/kmod | awk '/=>/ {print $3} /^[[:space:]]*\// {print $1}' | while read -r lib; do
		[ -n "$lib" ] || continue
		mkdir -p "$IR$(dirname "$lib")"
		cp -L "$lib" "$IR$lib"
	done

	# Boot modules (and their dependencies) + their own modules.dep.
	modprobe -d "$ROOT" -S "$KVER" --show-depends -a "${INITRD_MODULES[@]}" |
		awk '$1 == "insmod" {print $2}' | sort -u | while read -r ko; do
		rel="${ko#"$ROOT"}"
		mkdir -p "$IR$(dirname "$rel")"
		cp "$ko" "$IR$rel"
	done
	cp "$MODDIR"/modules.order "$MODDIR"/modules.builtin "$MODDIR"/modules.builtin.modinfo "$IR/lib/modules/$KVER/" 2>/dev/null || true
	depmod -b "$IR" "$KVER"

	printf '%s\n' "$KVER" >"$IR/etc/meshwan-lab-kver"
	cat >"$IR/init" <<'EOF'
#!/bin/sh
# meshwan kernel lab, stage 1: mount the control share and hand over to the
# stage-2 script run.sh put there (e2e/vm/guest-init.sh).
export PATH=/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo /sbin/modprobe >/proc/sys/kernel/modprobe
fail() {
	echo "meshwan-lab stage1: $*" >/dev/console
	poweroff -f
}
for m in virtio_pci 9pnet_virtio 9p; do
	modprobe "$m" || fail "modprobe $m failed"
done
i=0
until mount -t 9p -o trans=virtio,version=9p2000.L,msize=262144 mwlabctl /ctl 2>/dev/null; do
	i=$((i + 1))
	[ "$i" -lt 50 ] || fail "cannot mount the control share (tag mwlabctl)"
	sleep 0.1
done
[ -f /ctl/guest-init.sh ] || fail "/ctl/guest-init.sh missing"
exec /bin/sh /ctl/guest-init.sh
fail "exec of guest-init.sh failed"
EOF
	chmod 755 "$IR/init"
	(cd "$IR" && find . -print0 | cpio --quiet --null -o -H newc | gzip -1) >"$KDIR/initrd.gz.tmp"
	mv "$KDIR/initrd.gz.tmp" "$KDIR/initrd.gz"
	rm -rf "$IR"
	trap - EXIT
	printf '%s\n' "$STAMP" >"$KDIR/.initrd-stamp"
fi

# --- publish -----------------------------------------------------------------
cat >"$KDIR/lab.env.tmp" <<EOF
KPKG=$KPKG
KDEBVER=$KDEBVER
KVER=$KVER
KERNEL=$KERNEL
INITRD=$KDIR/initrd.gz
MODDIR=$MODDIR
EOF
mv "$KDIR/lab.env.tmp" "$KDIR/lab.env"
ln -sfn "$(basename "$KDIR")" "$CACHE/current.tmp"
mv -T "$CACHE/current.tmp" "$CACHE/current"

# Older kernels (~440 MB each) are removed unless MESHWAN_LAB_KEEP_OLD=1.
if [ "${MESHWAN_LAB_KEEP_OLD:-0}" != 1 ]; then
	for d in "$CACHE"/linux-image-*; do
		if [ ! -d "$d" ] || [ "$d" = "$KDIR" ]; then continue; fi
		log "removing old kernel $(basename "$d")"
		rm -rf "$d"
	done
fi
log "ready: $KPKG $KDEBVER ($CACHE/current/lab.env)"
