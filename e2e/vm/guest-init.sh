#!/bin/sh
# shellcheck shell=sh
# meshwan kernel lab, stage 2 (runs as PID 1 in the guest, busybox sh from
# the initramfs). run.sh copies this file into the per-run control share
# (mounted at /ctl by the initramfs /init, see prepare.sh) together with
# /ctl/config and /ctl/job.sh.
#
# It mounts the host root (read-only 9p) at /host, prepares it as a chroot
# (proc, sys, dev, tmpfs on /run /tmp /var/tmp, the guest kernel's module tree
# at /lib/modules/<kver>), preloads modules, optionally configures eth0, runs
# /ctl/job.sh under `chroot /host`, writes its exit status to /ctl/status and
# powers the VM off.
export PATH=/sbin:/bin
H=/host

# Defaults; /ctl/config overrides them.
LAB_KVER=
LAB_MODDIR=
LAB_CWD=/
LAB_OUT=
LAB_NET=0
LAB_MSIZE=262144
LAB_9P_CACHE=loose
LAB_MODULES=
LAB_DEBUG=0
# shellcheck disable=SC1091
. /ctl/config

# The serial console is the command's stdout: no \n -> \r\n translation, so
# host-side logs get the bytes the command wrote.
stty -F /dev/console -onlcr 2>/dev/null

say() { echo "meshwan-lab: $*" >/dev/console; }
dbg() { [ "$LAB_DEBUG" = 1 ] && say "$*"; return 0; }
t0=$(cut -d' ' -f1 /proc/uptime)

finish() {
	echo "$1" >/ctl/status.tmp && mv /ctl/status.tmp /ctl/status
	dmesg >/ctl/dmesg.txt 2>/dev/null
	sync
	# Keep "reboot: Power down" off the console.
	[ "$LAB_DEBUG" = 1 ] || echo 0 >/proc/sys/kernel/printk
	poweroff -f
	sleep 30
}
die() {
	say "ERROR: $*"
	finish 125
}

# --- host root ----------------------------------------------------------------
mount -t 9p -o "trans=virtio,version=9p2000.L,msize=$LAB_MSIZE,cache=$LAB_9P_CACHE,ro" hostroot $H ||
	die "cannot mount the host root share"
# Plain view of the host root, unaffected by the tmpfs mounts below; used to
# make host paths under /tmp, /run, ... visible again (see passthrough).
mount --bind $H /orig || die "bind /orig"

# Full module tree of the guest kernel (from the prepare.sh cache, over 9p)
# for the initramfs modprobe, which the kernel runs for on-demand loading.
[ -d "$H$LAB_MODDIR" ] || die "module tree $LAB_MODDIR not found (run e2e/vm/prepare.sh)"
mount --bind "$H$LAB_MODDIR" "/lib/modules/$LAB_KVER" || die "bind module tree"
echo /sbin/modprobe >/proc/sys/kernel/modprobe

if [ -n "$LAB_MODULES" ]; then
	# One modprobe for all: it keeps going after a failure.
	# shellcheck disable=SC2086
	modprobe -a $LAB_MODULES 2>/ctl/modprobe.err ||
		say "WARNING: some modules failed to load: $(tr '\n' ' ' </ctl/modprobe.err)"
fi
dbg "modules loaded at $(cut -d' ' -f1 /proc/uptime)"

# --- chroot ---------------------------------------------------------------------
mount -t proc proc $H/proc || die "mount proc"
mount -t sysfs sysfs $H/sys || die "mount sysfs"
mount -t devtmpfs devtmpfs $H/dev || die "mount devtmpfs"
mkdir -p $H/dev/pts $H/dev/shm
mount -t devpts -o gid=5,mode=620,ptmxmode=666 devpts $H/dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $H/dev/shm
mount -t bpf bpf $H/sys/fs/bpf 2>/dev/null
mount -t tmpfs -o mode=755,nosuid,nodev tmpfs $H/run || die "mount /run"
mkdir -p $H/run/lock $H/run/meshwan-lab
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $H/tmp || die "mount /tmp"
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs $H/var/tmp || die "mount /var/tmp"
if [ -d $H/lib/modules ]; then
	if ! { mount -t tmpfs -o mode=755 tmpfs $H/lib/modules &&
		mkdir -p "$H/lib/modules/$LAB_KVER" &&
		mount --bind "$H$LAB_MODDIR" "$H/lib/modules/$LAB_KVER"; }; then
		say "WARNING: could not mount the module tree in the chroot"
	fi
else
	say "WARNING: host has no /lib/modules (prepare.sh creates it): modprobe inside the chroot will not work"
fi

# Host paths hidden by the tmpfs mounts above (e.g. a checkout under /tmp)
# are bound back from the plain view (read-only).
passthrough() {
	p=$1
	for d in /tmp /var/tmp /run /dev /proc /sys; do
		case "$p" in
		"$d"/*)
			[ -d "/orig$p" ] || return 0
			if ! { mkdir -p "$H$p" && mount --bind "/orig$p" "$H$p"; }; then
				say "WARNING: could not make $p visible"
			fi
			return 0
			;;
		esac
	done
}
passthrough "$LAB_CWD"

if [ -n "$LAB_OUT" ]; then
	mkdir -p "$H$LAB_OUT" 2>/dev/null
	mount -t 9p -o "trans=virtio,version=9p2000.L,msize=$LAB_MSIZE,cache=none" mwlabout "$H$LAB_OUT" ||
		die "cannot mount the output share at $LAB_OUT"
fi

# --- network ----------------------------------------------------------------------
hostname meshwan-lab
ip link set lo up || die "loopback up"
if [ "$LAB_NET" = 1 ]; then
	modprobe virtio_net
	i=0
	while [ ! -e /sys/class/net/eth0 ] && [ "$i" -lt 50 ]; do
		sleep 0.1
		i=$((i + 1))
	done
	if ! { ip link set eth0 up &&
		ip addr add 10.0.2.15/24 dev eth0 &&
		ip route add default via 10.0.2.2 dev eth0; }; then
		die "eth0 setup failed"
	fi
	i=0
	while [ "$(cat /sys/class/net/eth0/operstate)" != up ] && [ "$i" -lt 30 ]; do
		sleep 0.1
		i=$((i + 1))
	done
fi

# --- run --------------------------------------------------------------------------
# Keep the kernel's netstamp static key on for the VM's whole life: every
# ping opens an SO_TIMESTAMP socket, and the first one in / last one out
# re-patches the receive path's code (jump labels) while the probes keep
# packets flowing through it. The guest froze three times in that state
# (both CPUs looping at the patched site in netif_receive_skb_list_internal,
# one taking int3 traps; README, "Pitfalls met"). One idle ping holds the
# key, so the test pings never toggle it.
chroot $H /usr/bin/env -i /bin/ping -q -i 30 127.0.0.1 </dev/null >/dev/null 2>&1 &
cp /ctl/job.sh $H/run/meshwan-lab/job.sh || die "copy job.sh"
dbg "boot $t0 s, ready to run at $(cut -d' ' -f1 /proc/uptime) s (guest uptime)"
cut -d' ' -f1 /proc/uptime >/ctl/ready-uptime
chroot $H /usr/bin/env -i /bin/bash --noprofile --norc /run/meshwan-lab/job.sh </dev/null >/dev/console 2>&1
rc=$?
dbg "command exited with status $rc at $(cut -d' ' -f1 /proc/uptime) s"
finish "$rc"
