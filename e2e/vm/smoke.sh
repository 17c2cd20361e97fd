#!/usr/bin/env bash
# smoke.sh - data-plane smoke test of the kernel VM lab. Runs INSIDE the VM:
#
#   e2e/vm/run.sh -- e2e/vm/smoke.sh
#
# Two network namespaces joined by a veth pair, a kernel GRE tunnel between
# them (mtu 1400, /30 inner addresses) protected by a transport-mode ESP SA
# that two strongSwan charon daemons (one per namespace) negotiate with
# IKEv2/PSK; then netem, nftables NAT/MSS clamping and module loading checks.
# Prints PASS/FAIL lines and a final "smoke: N passed, M failed"; exits
# non-zero if anything failed. If MESHWAN_LAB_OUT is set, the charon logs and
# xfrm state are copied there.
#
# Addresses are documentation ranges (192.0.2.0/24 underlay, 198.51.100.0/30
# GRE inner); all traffic stays inside the two namespaces.
set -euo pipefail

if [ "${MESHWAN_LAB_GUEST:-0}" != 1 ] && [ "${MESHWAN_SMOKE_ANYWHERE:-0}" != 1 ]; then
	echo "smoke.sh: run it in the lab VM: e2e/vm/run.sh -- e2e/vm/smoke.sh" >&2
	echo "          (MESHWAN_SMOKE_ANYWHERE=1 runs it here: needs GRE, ESP, netem)" >&2
	exit 2
fi
[ "$(id -u)" -eq 0 ] || { echo "smoke.sh: must run as root" >&2; exit 2; }

NSA=mwsmoke-a
NSB=mwsmoke-b
A_UL=192.0.2.1
B_UL=192.0.2.2
A_GRE=198.51.100.1
B_GRE=198.51.100.2
PSK="meshwan-smoke-$$-$RANDOM$RANDOM"
W="$(mktemp -d /run/meshwan-smoke.XXXXXX)" # tmpfs: vici sockets cannot live on 9p
T0=$(date +%s%N)

passed=0 failed=0
ms() { echo $((($(date +%s%N) - T0) / 1000000)); }
pass() {
	passed=$((passed + 1))
	printf 'PASS: %s [%s ms]\n' "$1" "$(ms)"
}
fail() {
	failed=$((failed + 1))
	printf 'FAIL: %s [%s ms]\n' "$1" "$(ms)"
	shift
	[ $# -gt 0 ] && printf '      %s\n' "$@"
	return 0
}

# shellcheck disable=SC2317 # called from the EXIT trap
save_artifacts() {
	[ -n "${MESHWAN_LAB_OUT:-}" ] || return 0
	local d="$MESHWAN_LAB_OUT/smoke"
	mkdir -p "$d"
	cp "$W"/a/charon.log "$d/charon-a.log" 2>/dev/null || true
	cp "$W"/b/charon.log "$d/charon-b.log" 2>/dev/null || true
	ip -n "$NSA" -s xfrm state >"$d/xfrm-state-a.txt" 2>&1 || true
	ip -n "$NSA" xfrm policy >"$d/xfrm-policy-a.txt" 2>&1 || true
}

# shellcheck disable=SC2317 # called from the EXIT trap
cleanup() {
	set +e
	save_artifacts
	local n pid
	for n in a b; do
		pid="$(cat "$W/$n/charon.pid" 2>/dev/null)"
		[ -n "$pid" ] && kill "$pid" 2>/dev/null
	done
	sleep 0.2
	ip netns del "$NSA" 2>/dev/null
	ip netns del "$NSB" 2>/dev/null
	rm -rf "$W"
}
trap cleanup EXIT

finish() {
	printf 'smoke: %d passed, %d failed\n' "$passed" "$failed"
	[ "$failed" -eq 0 ]
	exit
}

# Start a command in namespace N (a|b) with that instance's directory
# (charon.pid, vici socket, log) bind-mounted over /run. `ip netns exec`
# already gives the command a private (slave) mount namespace.
in_run() {
	local n="$1"
	shift
	local ns="$NSA"
	[ "$n" = b ] && ns="$NSB"
	# shellcheck disable=SC2016 # expanded by the inner sh
	ip netns exec "$ns" sh -c 'mount --bind "$0" /run && exec "$@"' "$W/$n" "$@"
}

# swanctl needs no namespace: the vici socket is a path on tmpfs.
swanctl_n() {
	local n="$1"
	shift
	STRONGSWAN_CONF="$W/$n/strongswan.conf" swanctl "$@" --uri "unix://$W/$n/charon.vici"
}

echo "smoke: kernel $(uname -r), $(nproc) CPUs"

# --- topology -------------------------------------------------------------------
ip netns del "$NSA" 2>/dev/null || true
ip netns del "$NSB" 2>/dev/null || true
if ip netns add "$NSA" && ip netns add "$NSB" &&
	ip link add va netns "$NSA" type veth peer name vb netns "$NSB" &&
	ip -n "$NSA" addr add "$A_UL/24" dev va && ip -n "$NSB" addr add "$B_UL/24" dev vb &&
	ip -n "$NSA" link set lo up && ip -n "$NSB" link set lo up &&
	ip -n "$NSA" link set va up && ip -n "$NSB" link set vb up &&
	ip netns exec "$NSA" ping -c 1 -W 5 "$B_UL" >/dev/null; then
	pass "netns + veth underlay ($A_UL <-> $B_UL)"
else
	fail "netns + veth underlay"
	finish
fi

gre_up() {
	local ns="$1" local_ul="$2" remote_ul="$3" addr="$4"
	ip -n "$ns" link add gre1 type gre local "$local_ul" remote "$remote_ul" ttl 64 &&
		ip -n "$ns" link set gre1 mtu 1400 &&
		ip -n "$ns" link set gre1 addrgenmode none &&
		ip -n "$ns" addr add "$addr/30" dev gre1 &&
		ip -n "$ns" link set gre1 up
}
if err="$(gre_up "$NSA" "$A_UL" "$B_UL" "$A_GRE" 2>&1 && gre_up "$NSB" "$B_UL" "$A_UL" "$B_GRE" 2>&1)"; then
	pass "kernel GRE tunnel (mtu 1400, $A_GRE/30 <-> $B_GRE/30)"
else
	fail "kernel GRE tunnel" "$err"
	finish
fi

# --- strongSwan -------------------------------------------------------------------
write_conf() {
	local n="$1" me="$2" peer="$3"
	mkdir -p "$W/$n"
	cat >"$W/$n/strongswan.conf" <<EOF
charon {
	load = random nonce openssl pem pkcs1 x509 pubkey kdf aes sha1 sha2 hmac gcm gmp kernel-netlink socket-default vici updown
	install_routes = no
	retransmit_timeout = 2.0
	filelog {
		charon {
			path = /run/charon.log
			default = 1
			ike = 2
			cfg = 2
			flush_line = yes
			time_add_ms = yes
			time_format = %H:%M:%S
		}
	}
	syslog {
		daemon {
			default = -1
		}
	}
	plugins {
		vici {
			socket = unix:///run/charon.vici
		}
	}
}
swanctl {
	# Only what PSK configs need: loading every plugin costs seconds under TCG.
	load = random pem pkcs1 x509 pubkey openssl
}
EOF
	cat >"$W/$n/swanctl.conf" <<EOF
connections {
	gre {
		version = 2
		local_addrs = $me
		remote_addrs = $peer
		proposals = aes256gcm16-prfsha256-x25519
		local {
			auth = psk
			id = $n.smoke.meshwan.test
		}
		remote {
			auth = psk
			id = $([ "$n" = a ] && echo b || echo a).smoke.meshwan.test
		}
		children {
			gre {
				mode = transport
				local_ts = dynamic[gre]
				remote_ts = dynamic[gre]
				esp_proposals = aes256gcm16
				start_action = none
			}
		}
	}
}
secrets {
	ike-smoke {
		id-a = a.smoke.meshwan.test
		id-b = b.smoke.meshwan.test
		secret = "$PSK"
	}
}
EOF
}
write_conf a "$A_UL" "$B_UL"
write_conf b "$B_UL" "$A_UL"

start_charon() {
	local n="$1"
	in_run "$n" env STRONGSWAN_CONF=/run/strongswan.conf /usr/lib/ipsec/charon \
		>"$W/$n/charon.stdout" 2>&1 </dev/null &
}
start_charon a
start_charon b
ok=1
for n in a b; do
	i=0
	while [ ! -S "$W/$n/charon.vici" ]; do
		i=$((i + 1))
		if [ "$i" -gt 300 ]; then
			ok=0
			break
		fi
		sleep 0.1
	done
done
if [ "$ok" = 1 ]; then
	pass "two charon instances up (vici on tmpfs)"
else
	fail "charon did not create its vici socket in 30 s" "$(tail -n 20 "$W"/*/charon.log "$W"/*/charon.stdout 2>/dev/null)"
	finish
fi

ok=1
for n in a b; do
	if ! out="$(swanctl_n "$n" --load-all --noprompt --file "$W/$n/swanctl.conf" 2>&1)"; then
		ok=0
		fail "swanctl --load-all ($n)" "$out"
	fi
done
[ "$ok" = 1 ] && pass "swanctl config loaded in both instances"
[ "$ok" = 1 ] || finish

ike_start=$(date +%s%N)
if out="$(swanctl_n a --initiate --child gre --timeout 60 2>&1)"; then
	pass "IKEv2 PSK + transport child SA (dynamic[gre], aes256gcm16) initiated in $((($(date +%s%N) - ike_start) / 1000000)) ms"
else
	fail "swanctl --initiate --child gre" "$(printf '%s\n' "$out" | tail -n 15)"
	finish
fi

sas="$(swanctl_n a --list-sas 2>&1 || true)"
if grep -q 'INSTALLED, TRANSPORT' <<<"$sas" && grep -q 'AES_GCM_16-256' <<<"$sas"; then
	pass "child SA INSTALLED, TRANSPORT, AES_GCM_16-256"
else
	fail "child SA state" "$sas"
fi

# --- traffic across GRE, encrypted --------------------------------------------------
esp_packets() { # sum of packets over the namespace's ESP states
	ip -n "$1" -s xfrm state 2>/dev/null | awk '
		/^src / {esp = 0}
		/^[ \t]+proto esp / {esp = 1}
		esp && /^[ \t]+[0-9]+\(bytes\), [0-9]+\(packets\)/ {
			sub(/^[ \t]+[0-9]+\(bytes\), /, ""); sub(/\(packets\).*/, ""); n += $0
		}
		END {print n + 0}'
}
before="$(esp_packets "$NSA")"
if out="$(ip netns exec "$NSA" ping -c 5 -i 0.2 -W 5 "$B_GRE" 2>&1)"; then
	pass "ping across GRE ($A_GRE -> $B_GRE): $(grep -o '[0-9]* received' <<<"$out")"
else
	fail "ping across GRE" "$out"
fi
after="$(esp_packets "$NSA")"
after_b="$(esp_packets "$NSB")"
xs="$(ip -n "$NSA" -s xfrm state 2>&1 || true)"
if grep -q 'proto esp' <<<"$xs" && grep -q 'mode transport' <<<"$xs" &&
	[ "$after" -ge $((before + 10)) ] && [ "$after_b" -ge 10 ]; then
	pass "ESP SA counters rose (ns a: $before -> $after packets, ns b: $after_b)"
else
	fail "ESP SA counters (ns a: $before -> $after, ns b: $after_b)" "$xs"
fi

# --- netem ----------------------------------------------------------------------------
if err="$(ip netns exec "$NSA" tc qdisc add dev va root netem delay 50ms 2>&1)"; then
	rtt="$(ip netns exec "$NSA" ping -c 3 -i 0.2 -W 5 "$B_UL" 2>/dev/null | sed -n 's|.* = \([0-9.]*\)/.*|\1|p')"
	if [ -n "$rtt" ] && awk -v r="$rtt" 'BEGIN {exit !(r >= 49)}'; then
		pass "tc netem delay 50ms on veth (min rtt $rtt ms)"
	else
		fail "netem delay not applied (min rtt '${rtt}')"
	fi
	ip netns exec "$NSA" tc qdisc del dev va root 2>/dev/null || true
else
	fail "tc qdisc add netem" "$err"
fi

# --- nftables -------------------------------------------------------------------------
if err="$(ip netns exec "$NSA" nft -f - 2>&1 <<'EOF'
table ip meshwan_smoke_nat {
	chain postrouting {
		type nat hook postrouting priority srcnat; policy accept;
		oifname "va" masquerade
	}
}
table inet meshwan_smoke_mangle {
	chain forward {
		type filter hook forward priority mangle; policy accept;
		tcp flags syn tcp option maxseg size set rt mtu
	}
}
EOF
)" && ruleset="$(ip netns exec "$NSA" nft list ruleset 2>&1)" &&
	grep -q masquerade <<<"$ruleset" && grep -q 'maxseg size set rt mtu' <<<"$ruleset"; then
	pass "nftables: masquerade + TCP MSS clamp (rt mtu) rules created"
else
	fail "nftables rules" "$err" "${ruleset:-}"
fi
if ip netns exec "$NSA" ping -c 1 -W 5 "$B_GRE" >/dev/null 2>&1; then
	pass "GRE/ESP traffic still flows with the nft tables loaded"
else
	fail "GRE/ESP ping with nft tables loaded"
fi

# --- module loading inside the chroot -----------------------------------------------
if modprobe -q sch_netem && modprobe -n -q wireguard; then
	pass "modprobe works inside the chroot (/lib/modules/$(uname -r))"
else
	fail "modprobe inside the chroot"
fi
if ! grep -q '^ipip ' /proc/modules; then
	if ip -n "$NSA" link add ipip9 type ipip local "$A_UL" remote "$B_UL" 2>/dev/null &&
		grep -q '^ipip ' /proc/modules; then
		pass "kernel on-demand module loading (rtnl-link-ipip)"
	else
		fail "kernel on-demand module loading (ipip)"
	fi
	ip -n "$NSA" link del ipip9 2>/dev/null || true
fi

finish
