#!/bin/sh
# Checks for, or installs, the Debian packages that inferq builds and tests
# with. `deps.sh check [build|all]` exits 1 when one is missing;
# `deps.sh install [build|all]` installs them with apt-get when run as root,
# and otherwise prints the command to run. `build` is what `make` needs to
# build and run the server; `all` (the default) adds what the tests need.
set -eu

BUILD_PACKAGES="build-essential pkg-config libuv1-dev node-llhttp libjansson-dev libsqlite3-dev
libcurl4-openssl-dev libssl-dev libpq-dev python3"
TEST_PACKAGES="libcmocka-dev sqlite3 python3-pytest clang libclang-rt-14-dev imagemagick chromium
postgresql"

case "${2:-all}" in
build) PACKAGES=$BUILD_PACKAGES ;;
all) PACKAGES="$BUILD_PACKAGES $TEST_PACKAGES" ;;
*)
	echo "usage: $0 check|install [build|all]" >&2
	exit 2
	;;
esac

missing() {
	for p in $PACKAGES; do
		if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
			printf '%s ' "$p"
		fi
	done
}

case "${1:-check}" in
check)
	m=$(missing)
	if [ -n "$m" ]; then
		echo "missing packages: $m" >&2
		exit 1
	fi
	;;
install)
	m=$(missing)
	[ -z "$m" ] && exit 0
	if [ "$(id -u)" -ne 0 ]; then
		echo "inferq needs these Debian packages: $m" >&2
		echo "install them with: sudo apt-get install -y $m" >&2
		exit 1
	fi
	echo "installing: $m" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $m
	;;
*)
	echo "usage: $0 check|install [build|all]" >&2
	exit 2
	;;
esac
