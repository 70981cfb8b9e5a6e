#!/bin/sh
# Runs every test of inferq: the cmocka unit tests, then the integration
# tests (pytest) against the real server binary, then the SDK conformance
# and dashboard suites (node). Ends with one line
# "N passed, N failed" that sums them all. Exits 1 when any test failed.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
passed=0
failed=0

for t in "$BUILD"/tests/test_*; do
	[ -x "$t" ] || continue
	out=$("$t" 2>&1)
	rc=$?
	printf '%s\n' "$out"
	p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
	f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		echo "$t exited with status $rc" >&2
		f=1
	fi
	passed=$((passed + p))
	failed=$((failed + f))
done

PYTHON=${PYTHON:-/usr/bin/python3}
INFERQ_BIN="$PWD/$BUILD/inferq" "$PYTHON" -m pytest -q -p no:cacheprovider tests/integration \
	>"$BUILD/pytest.log" 2>&1
rc=$?
cat "$BUILD/pytest.log"
summary=$(tail -n 1 "$BUILD/pytest.log")
count() {
	printf '%s\n' "$summary" | grep -oE "[0-9]+ $1" | grep -oE '[0-9]+' | head -n 1
}
p=$(count passed)
f=$(count failed)
e=$(count error)
p=${p:-0}
f=$(( ${f:-0} + ${e:-0} ))
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
	echo "pytest exited with status $rc" >&2
	f=1
fi
passed=$((passed + p))
failed=$((failed + f))

# The Together SDK conformance tests need Node.js 20 or later and npm; their TAP
# summary ends with "# pass N", "# fail N" and "# cancelled N" lines.
INFERQ_BIN="$PWD/$BUILD/inferq" sh tests/compat/run.sh >"$BUILD/compat.log" 2>&1
rc=$?
cat "$BUILD/compat.log"
tap_count() {
	sed -n "s/^# $1 \([0-9][0-9]*\)\$/\1/p" "$BUILD/compat.log" | tail -n 1
}
p=$(tap_count pass)
f=$(tap_count fail)
c=$(tap_count cancelled)
p=${p:-0}
f=$(( ${f:-0} + ${c:-0} ))
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
	echo "tests/compat/run.sh exited with status $rc" >&2
	f=1
fi
passed=$((passed + p))
failed=$((failed + f))

# The dashboard tests drive the web page in headless Chromium (Debian's chromium package)
# with playwright-core from npm; their TAP summary has the same lines.
INFERQ_BIN="$PWD/$BUILD/inferq" INFERQ_ARTIFACTS="$PWD/$BUILD/artifacts" sh tests/dashboard/run.sh \
	>"$BUILD/dashboard.log" 2>&1
rc=$?
cat "$BUILD/dashboard.log"
p=$(sed -n 's/^# pass \([0-9][0-9]*\)$/\1/p' "$BUILD/dashboard.log" | tail -n 1)
f=$(sed -n 's/^# fail \([0-9][0-9]*\)$/\1/p' "$BUILD/dashboard.log" | tail -n 1)
c=$(sed -n 's/^# cancelled \([0-9][0-9]*\)$/\1/p' "$BUILD/dashboard.log" | tail -n 1)
p=${p:-0}
f=$(( ${f:-0} + ${c:-0} ))
if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
	echo "tests/dashboard/run.sh exited with status $rc" >&2
	f=1
fi
passed=$((passed + p))
failed=$((failed + f))

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
