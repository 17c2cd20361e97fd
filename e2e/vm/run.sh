#!/usr/bin/env bash
# run.sh - run one command inside the meshwan kernel VM lab.
#
#   e2e/vm/run.sh [OPTIONS] -- COMMAND [ARGS...]
#
# Boots the Debian kernel cached by e2e/vm/prepare.sh under qemu (TCG), with
# the host root filesystem shared read-only at /host, and runs COMMAND under
# `chroot /host` in the same working directory as on the host. The command's
# stdout and stderr (merged) appear on this script's stdout; run.sh exits with
# the command's exit status.
#
# Options (environment variable in brackets):
#   --timeout SECONDS   kill the VM after SECONDS (default 600) [MESHWAN_LAB_TIMEOUT]
#   --net               user-mode network: guest eth0 10.0.2.15/24, host at
#                       10.0.2.2 (default route) [MESHWAN_LAB_NET=1]
#   --mem MB            guest memory (default 2048) [MESHWAN_LAB_MEM]
#   --smp N             guest CPUs (default 2) [MESHWAN_LAB_SMP]
#   --out DIR           writable host directory, mounted at the same path in
#                       the guest; created if missing [MESHWAN_LAB_OUT]
#   --env NAME[=VALUE]  pass NAME (from this environment, or with VALUE) to the
#                       command; repeatable [MESHWAN_LAB_ENV="NAME ..."]
#   --modules "M ..."   extra modules to load before COMMAND [MESHWAN_LAB_MODULES]
#   --debug             harness timings and kernel messages on the console
#                       [MESHWAN_LAB_DEBUG=1]
#   -h, --help
#
# Other environment:
#   MESHWAN_LAB_CACHE        prepare.sh cache (default /var/cache/meshwan-lab)
#   MESHWAN_LAB_PRELOAD      replaces the default list of preloaded modules
#                            ("" = preload nothing; all still load on demand)
#   MESHWAN_LAB_CRYPTO_TESTS=1  keep the kernel crypto self-tests (slow)
#   MESHWAN_LAB_APPEND       extra kernel command line
#   MESHWAN_LAB_QEMU_ARGS    extra qemu arguments (split on blanks)
#   MESHWAN_LAB_9P_CACHE     9p cache mode of the host root (default loose)
#   MESHWAN_LAB_KEEP=1       keep the per-run control directory
#
# The command gets a fresh environment: PATH (standard + /usr/local/go/bin),
# HOME=/tmp/meshwan-lab-home, USER/LOGNAME=root, LANG=C.UTF-8, TERM=dumb,
# MESHWAN_LAB_GUEST=1, MESHWAN_LAB_KVER, every MESHWAN_* variable of this
# environment, GOTRACEBACK GODEBUG GOMAXPROCS GOMEMLIMIT GOGC CI TZ when set,
# and whatever --env / MESHWAN_LAB_ENV name. stdin is /dev/null.
#
# Exit status: the command's; 124 when the VM was killed at the timeout; 125
# when the harness failed (VM did not start, crashed, or reported no status).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
CACHE="${MESHWAN_LAB_CACHE:-/var/cache/meshwan-lab}"
TIMEOUT="${MESHWAN_LAB_TIMEOUT:-600}"
NET="${MESHWAN_LAB_NET:-0}"
MEM="${MESHWAN_LAB_MEM:-2048}"
SMP="${MESHWAN_LAB_SMP:-2}"
OUT="${MESHWAN_LAB_OUT:-}"
DEBUG="${MESHWAN_LAB_DEBUG:-0}"
EXTRA_MODULES="${MESHWAN_LAB_MODULES:-}"
read -r -a EXTRA_ENV <<<"${MESHWAN_LAB_ENV:-}"

# Modules loaded before the command runs (anything else still loads on
# demand). nft_exthdr/nft_rt (TCP MSS clamping) and nft_counter are part of
# nf_tables.ko in this kernel; crypto_null is built in.
DEFAULT_MODULES="ip_gre gre ip_tunnel esp4 xfrm_user xfrm_algo xfrm_interface
 veth dummy bridge tun vxlan
 aesni_intel gcm seqiv echainiv ghash_generic ghash_clmulni_intel ctr authenc authencesn
 sch_netem sch_htb sch_tbf sch_prio sch_ingress ifb cls_u32 act_mirred
 nf_tables nf_conntrack nf_nat nft_chain_nat nft_ct nft_nat nft_masq nft_compat
 nft_reject_inet nft_fib_inet nft_limit
 xt_TCPMSS xt_tcpmss xt_MASQUERADE xt_conntrack xt_mark xt_comment xt_statistic xt_policy"
BASE_MODULES="${MESHWAN_LAB_PRELOAD-$DEFAULT_MODULES}"

# Variables passed through to the command (besides MESHWAN_*).
PASS_VARS="GOTRACEBACK GODEBUG GOMAXPROCS GOMEMLIMIT GOGC CI TZ"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
die() {
	printf 'run.sh: ERROR: %s\n' "$*" >&2
	exit 125
}

while [ $# -gt 0 ]; do
	case "$1" in
	--timeout) TIMEOUT="${2:?--timeout needs a value}"; shift 2 ;;
	--timeout=*) TIMEOUT="${1#*=}"; shift ;;
	--net) NET=1; shift ;;
	--mem) MEM="${2:?}"; shift 2 ;;
	--smp) SMP="${2:?}"; shift 2 ;;
	--out) OUT="${2:?}"; shift 2 ;;
	--env) EXTRA_ENV+=("${2:?}"); shift 2 ;;
	--modules) EXTRA_MODULES="$EXTRA_MODULES ${2:?}"; shift 2 ;;
	--debug) DEBUG=1; shift ;;
	-h | --help) usage; exit 0 ;;
	--) shift; break ;;
	*) usage >&2; die "unknown option $1 (the command goes after --)" ;;
	esac
done
[ $# -gt 0 ] || { usage >&2; die "no command given"; }
if ! [[ "$TIMEOUT" =~ ^[1-9][0-9]*$ ]]; then die "bad --timeout $TIMEOUT"; fi
[ "$(id -u)" -eq 0 ] || die "must run as root (the guest shares the host root filesystem)"
command -v qemu-system-x86_64 >/dev/null || die "qemu-system-x86_64 missing: run e2e/vm/prepare.sh"
[ -f "$CACHE/current/lab.env" ] || die "no kernel in $CACHE: run e2e/vm/prepare.sh first"

KVER='' KERNEL='' INITRD='' MODDIR=''
# shellcheck disable=SC1091
. "$CACHE/current/lab.env"
if ! [ -f "$KERNEL" ] || ! [ -f "$INITRD" ] || ! [ -d "$MODDIR" ]; then
	die "incomplete cache in $CACHE: run e2e/vm/prepare.sh"
fi

CWD="$(pwd -P)"
if [ -n "$OUT" ]; then
	mkdir -p "$OUT"
	OUT="$(cd "$OUT" && pwd -P)"
	export MESHWAN_LAB_OUT="$OUT"
fi

CTL="$(mktemp -d "${TMPDIR:-/tmp}/meshwan-lab.XXXXXX")"
QPID='' SPID=''
# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	set +e
	[ -n "$QPID" ] && kill -KILL "$QPID" 2>/dev/null
	[ -n "$SPID" ] && kill "$SPID" 2>/dev/null
	if [ "${MESHWAN_LAB_KEEP:-0}" = 1 ]; then
		printf 'run.sh: control directory kept: %s\n' "$CTL" >&2
	else
		rm -rf "$CTL"
	fi
}
trap cleanup EXIT
trap 'printf "run.sh: interrupted\n" >&2; exit 130' INT
trap 'printf "run.sh: terminated\n" >&2; exit 143' TERM
trap 'printf "run.sh: hangup\n" >&2; exit 129' HUP

# --- control share: config + job ------------------------------------------------
q() { printf '%q' "$1"; }
cp "$HERE/guest-init.sh" "$CTL/guest-init.sh"
{
	echo "LAB_KVER=$(q "$KVER")"
	echo "LAB_MODDIR=$(q "$MODDIR")"
	echo "LAB_CWD=$(q "$CWD")"
	echo "LAB_OUT=$(q "$OUT")"
	echo "LAB_NET=$(q "$NET")"
	echo "LAB_DEBUG=$(q "$DEBUG")"
	echo "LAB_9P_CACHE=$(q "${MESHWAN_LAB_9P_CACHE:-loose}")"
	mods="$BASE_MODULES $EXTRA_MODULES"
	echo "LAB_MODULES=$(q "${mods//[[:space:]]/ }")"
} >"$CTL/config"

{
	echo '#!/bin/bash'
	echo '# generated by e2e/vm/run.sh'
	echo 'export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:/usr/local/go/bin'
	echo 'export HOME=/tmp/meshwan-lab-home USER=root LOGNAME=root SHELL=/bin/bash'
	echo 'export LANG=C.UTF-8 TERM=dumb'
	echo 'export MESHWAN_LAB_GUEST=1'
	echo "export MESHWAN_LAB_KVER=$(q "$KVER")"
	# MESHWAN_* from this environment (MESHWAN_LAB_OUT included).
	while IFS= read -r name; do
		case "$name" in MESHWAN_LAB_GUEST | MESHWAN_LAB_KVER) continue ;; esac
		echo "export $name=$(q "${!name}")"
	done < <(compgen -e | grep '^MESHWAN_' || true)
	for name in $PASS_VARS; do
		[ -n "${!name+x}" ] && echo "export $name=$(q "${!name}")"
	done
	for spec in "${EXTRA_ENV[@]}"; do
		case "$spec" in
		*=*) name="${spec%%=*}" value="${spec#*=}" ;;
		*) name="$spec"; [ -n "${!name+x}" ] || continue; value="${!name}" ;;
		esac
		[[ "$name" =~ ^[A-Za-z_][A-Za-z0-9_]*$ ]] || die "bad --env name: $name"
		echo "export $name=$(q "$value")"
	done
	# shellcheck disable=SC2016 # expanded in the guest
	echo 'mkdir -p "$HOME"'
	echo "cd -- $(q "$CWD") || { echo \"run.sh (guest): cannot cd to $(q "$CWD")\" >&2; exit 125; }"
	printf 'exec'
	printf ' %q' "$@"
	printf '\n'
} >"$CTL/job.sh"

# --- qemu ------------------------------------------------------------------------
if [ "$DEBUG" = 1 ]; then
	APPEND="console=ttyS0 loglevel=6"
else
	# loglevel=5: warnings and worse reach the console, so a kernel
	# problem (soft lockup, RCU stall, oops) comes with its stack trace.
	APPEND="console=ttyS0 quiet loglevel=5"
fi
# mitigations=off: no page-table isolation etc. (costly under TCG).
# cryptomgr.notests: skip the crypto self-tests run for every algorithm a
# module registers (seconds per crypto module under TCG);
# MESHWAN_LAB_CRYPTO_TESTS=1 keeps them. lpj/no_timer_check: skip delay-loop
# calibration and timer checks that fail or stall under emulation.
# dummy/ifb: do not create dummy0/ifb0/ifb1 when the modules load.
# softlockup_panic: a CPU stuck for the watchdog's 20 s ends the VM at once
# (with every CPU's backtrace) instead of hanging until --timeout; a frozen
# guest (seen: both CPUs looping in GRE's GRO cells under probe traffic,
# see the package comment of edge/dataplane/link) then costs seconds, not
# the whole CI budget.
APPEND="$APPEND panic=-1 oops=panic softlockup_panic=1 softlockup_all_cpu_backtrace=1"
APPEND="$APPEND mitigations=off lpj=8000000 no_timer_check"
APPEND="$APPEND dummy.numdummies=0 ifb.numifbs=0"
[ "${MESHWAN_LAB_CRYPTO_TESTS:-0}" = 1 ] || APPEND="$APPEND cryptomgr.notests=1"
APPEND="$APPEND ${MESHWAN_LAB_APPEND:-}"

# shellcheck disable=SC2054 # commas belong to qemu option values
QEMU=(qemu-system-x86_64
	-name meshwan-lab
	-machine pc,accel=tcg -cpu max -m "$MEM" -smp "$SMP"
	-nodefaults -no-user-config -display none -no-reboot
	-chardev stdio,id=con0,signal=off -serial chardev:con0
	-kernel "$KERNEL" -initrd "$INITRD" -append "$APPEND"
	-virtfs "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap"
	-virtfs "local,path=$CTL,mount_tag=mwlabctl,security_model=none,multidevs=remap"
)
if [ -n "$OUT" ]; then
	QEMU+=(-virtfs "local,path=$OUT,mount_tag=mwlabout,security_model=none,multidevs=remap")
fi
if [ "$NET" = 1 ]; then
	# romfile=: no iPXE option ROM (not needed with -kernel; faster start).
	# shellcheck disable=SC2054
	QEMU+=(-netdev user,id=n0 -device virtio-net-pci,netdev=n0,romfile=)
fi
if [ -n "${MESHWAN_LAB_QEMU_ARGS:-}" ]; then
	read -r -a qextra <<<"$MESHWAN_LAB_QEMU_ARGS"
	QEMU+=("${qextra[@]}")
fi

start=$SECONDS
# stdin from /dev/null: qemu must neither read the terminal nor change its
# mode (CI has no stdin; it also keeps qemu from being stopped by SIGTTOU).
"${QEMU[@]}" </dev/null &
QPID=$!
sleep "$TIMEOUT" &
SPID=$!

qrc=0
wait -n "$QPID" "$SPID" || true
if kill -0 "$QPID" 2>/dev/null; then
	printf '\nrun.sh: TIMEOUT: the VM ran for more than %s s; killing it\n' "$TIMEOUT" >&2
	kill -TERM "$QPID" 2>/dev/null || true
	for _ in 1 2 3 4 5; do kill -0 "$QPID" 2>/dev/null || break; sleep 1; done
	kill -KILL "$QPID" 2>/dev/null || true
	wait "$QPID" 2>/dev/null || true
	QPID='' SPID=''
	exit 124
fi
wait "$QPID" || qrc=$?
QPID=''
kill "$SPID" 2>/dev/null || true
wait "$SPID" 2>/dev/null || true
SPID=''
elapsed=$((SECONDS - start))

if [ -n "$OUT" ] && [ -f "$CTL/dmesg.txt" ]; then
	cp "$CTL/dmesg.txt" "$OUT/vm-dmesg.txt"
fi

if [ ! -f "$CTL/status" ]; then
	printf 'run.sh: ERROR: the VM stopped (qemu exit %s after %s s) without reporting the command'"'"'s exit status (kernel panic or harness failure?)\n' "$qrc" "$elapsed" >&2
	exit 125
fi
rc="$(cat "$CTL/status")"
[[ "$rc" =~ ^[0-9]+$ ]] || die "bad status from guest: $rc"
if [ "$DEBUG" = 1 ]; then
	printf 'run.sh: command exit status %s; VM wall time %s s; guest ready at %s s guest uptime\n' \
		"$rc" "$elapsed" "$(cat "$CTL/ready-uptime" 2>/dev/null || echo '?')" >&2
fi
exit "$rc"
