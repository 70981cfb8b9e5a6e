#!/bin/sh
# Runs the integration tests with every inferq process under valgrind memcheck.
#
# INFERQ_BIN points the tests at a wrapper that runs the binary under valgrind with
# --error-exitcode=99, so a memory error or a definite or indirect leak makes the process exit
# 99; the fixtures expect exit status 0 after SIGTERM, so that test fails. Each process writes
# its valgrind report to its own file, and this script prints every report that contains an
# error. The crash loop and the hostile-client tests are left out: they measure timing and
# memory, which valgrind distorts. The fault tests are left out too: their LD_PRELOAD shim
# would load into valgrind's launcher, not into the server it runs. Extra arguments go to
# pytest (e.g. -k test_worker).
#
# Environment: BUILD (default build), INFERQ_VALGRIND_BIN (binary to check, default
# $BUILD/inferq), PYTHON (default /usr/bin/python3, which has Debian's pytest).
# Exits 1 when a test failed or valgrind reported an error.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
BIN=${INFERQ_VALGRIND_BIN:-$PWD/$BUILD/inferq}
PYTHON=${PYTHON:-/usr/bin/python3}

if ! command -v valgrind >/dev/null 2>&1; then
	echo "valgrind not found; install it with: apt-get install valgrind" >&2
	exit 1
fi
if [ ! -x "$BIN" ]; then
	echo "server binary not found at $BIN; build it with make" >&2
	exit 1
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/inferq-valgrind.XXXXXX")
wrapper="$work/inferq"
cat >"$wrapper" <<EOF
#!/bin/sh
exec valgrind -q --error-exitcode=99 --leak-check=full \\
	--errors-for-leak-kinds=definite,indirect --show-leak-kinds=definite,indirect \\
	--track-fds=no \\
	--log-file="$work/valgrind.%p.log" "$BIN" "\$@"
EOF
chmod +x "$wrapper"

INFERQ_BIN="$wrapper" "$PYTHON" -m pytest -q -p no:cacheprovider tests/integration \
	-k "not crash_loop and not hostile and not faults" "$@"
rc=$?

reports=0
for log in "$work"/valgrind.*.log; do
	# Errors are the lines valgrind prefixes with ==PID==; its --PID-- lines are warnings
	# about valgrind itself (an unhandled system call, for one).
	grep -q '^==[0-9]*== ' "$log" || continue
	reports=$((reports + 1))
	echo "=== $log"
	cat "$log"
done
echo "valgrind: $reports process(es) with errors; pytest exit status $rc"
if [ "$reports" -eq 0 ] && [ "$rc" -eq 0 ]; then
	rm -rf "$work"
	exit 0
fi
echo "valgrind reports kept in $work"
exit 1
