#!/bin/sh
# Runs the dashboard tests: installs playwright-core as pinned in package-lock.json with
# `npm ci`, then runs node's test runner on every *.test.mjs here, driving Debian's headless
# Chromium (/usr/bin/chromium, or INFERQ_CHROMIUM) against the inferq binary in INFERQ_BIN
# (default: build/inferq of this repository). The TAP output ends with "# pass N" and
# "# fail N" lines. Exits non-zero when a tool is missing, npm ci failed or a test failed.
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
chromium=${INFERQ_CHROMIUM:-/usr/bin/chromium}
if [ ! -x "$chromium" ]; then
	echo "run.sh: $chromium not found; install Debian's chromium package (scripts/deps.sh install)" >&2
	exit 1
fi

# Relative paths name files from the caller's directory, not from tests/dashboard.
absolute() {
	case $1 in
	/*) printf '%s' "$1" ;;
	*) printf '%s/%s' "$PWD" "$1" ;;
	esac
}
if [ -n "${INFERQ_BIN:-}" ]; then
	INFERQ_BIN=$(absolute "$INFERQ_BIN")
	export INFERQ_BIN
fi
if [ -n "${INFERQ_ARTIFACTS:-}" ]; then
	INFERQ_ARTIFACTS=$(absolute "$INFERQ_ARTIFACTS")
	export INFERQ_ARTIFACTS
fi

cd "$(dirname "$0")"
npm ci --no-audit --no-fund
# Each test may take at most 60 s, so a hung server or browser cannot stall the run.
exec node --test --test-reporter=tap --test-timeout=60000
