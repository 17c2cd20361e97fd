#!/usr/bin/env bash
# Runs inside the lab VM (see `make bench-failover`, `make bench-dataplane`):
# the opt-in benchmarks (TestBench* in e2e/bench_test.go and
# e2e/bench_dataplane_test.go; the data-plane one only with
# MESHWAN_BENCH_DATAPLANE=1), then prints the markdown tables they wrote to
# $MESHWAN_LAB_OUT. MESHWAN_BENCH_REPS, MESHWAN_BENCH_PROFILES,
# MESHWAN_BENCH_SOAK, MESHWAN_BENCH_SOAK_LOSS, MESHWAN_BENCH_SOAK_PROFILE and
# MESHWAN_BENCH_DP_* tune them (see the test files); MESHWAN_BENCH_RUN
# picks the tests (default ^TestBench); MESHWAN_TEST_BIN (default bin/test)
# holds e2e.test and MESHWAN_EDGE_BIN names the edge binary (default
# bin/meshwan-edge).
set -uo pipefail
cd "$(dirname "$0")/.."
bin=$(cd "${MESHWAN_TEST_BIN:-bin/test}" && pwd -P) || exit 1
export MESHWAN_BENCH=1
(cd e2e && "$bin/e2e.test" -test.v -test.run "${MESHWAN_BENCH_RUN:-^TestBench}" -test.timeout 85m)
rc=$?
echo "=== benchmark tables (also in ${MESHWAN_LAB_OUT:-<no --out>})"
for f in "${MESHWAN_LAB_OUT:-/nonexistent}"/bench-*.md; do
	[ -f "$f" ] && { echo; cat "$f"; }
done
exit $rc
