#!/bin/sh
# Runs the Together SDK conformance tests: installs the SDK version pinned in
# package-lock.json with `npm ci`, then runs node's test runner on every *.test.mjs
# here against the inferq binary in INFERQ_BIN (default: build/inferq of this
# repository). The TAP output ends with "# pass N" and "# fail N" lines. Exits
# non-zero when npm ci or a test failed.
set -eu

for tool in node npm; do
	if ! command -v "$tool" >/dev/null 2>&1; then
		echo "run.sh: $tool not found; install Node.js 20 or later with npm" >&2
		exit 1
	fi
done
if ! node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)'; then
	echo "run.sh: Node.js $(node --version) is too old; the tests need Node.js 20 or later" >&2
	exit 1
fi

# A relative INFERQ_BIN names a path from the caller's directory, not from tests/compat.
if [ -n "${INFERQ_BIN:-}" ]; then
	case $INFERQ_BIN in
	/*) ;;
	*) INFERQ_BIN="$PWD/$INFERQ_BIN" ;;
	esac
	export INFERQ_BIN
fi

cd "$(dirname "$0")"
npm ci --no-audit --no-fund
# Each test may take at most 60 s, so a hung server cannot stall the run.
exec node --test --test-reporter=tap --test-timeout=60000
