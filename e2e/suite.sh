#!/usr/bin/env bash
# Runs inside the lab VM (see `make e2e`): every privileged package test
# binary (GRE, ESP and strongSwan tests skip on the build host's kernel and
# run here), then the end-to-end scenarios. Exits non-zero if any failed.
set -uo pipefail
cd "$(dirname "$0")/.."
# MESHWAN_TEST_BIN: the test binaries (default bin/test; may be absolute).
bin=$(cd "${MESHWAN_TEST_BIN:-bin/test}" && pwd -P) || exit 1
fail=0
for t in "$bin"/*.test; do
	name=$(basename "$t" .test)
	[ "$name" = e2e ] && continue
	echo "=== package tests: $name"
	dir=$(cat "$bin/$name.dir")
	if ! (cd "$dir" && "$t" -test.run 'Privileged' -test.v -test.timeout 10m 2>&1 | grep -E '^(=== RUN|--- |PASS|FAIL|ok|panic|\s+\S+_test.go)'); then
		fail=1
	fi
done
echo "=== end-to-end scenarios"
(cd e2e && "$bin/e2e.test" -test.v -test.timeout 25m) || fail=1
exit $fail
