#!/bin/sh
# `make bench`: installs the peer queues, builds inferq and the peer driver,
# then runs bench/run.py (inferq against nginx, BullMQ, beanstalkd and
# PostgreSQL on this machine). Pass --quick for a smoke run of about a
# minute. Every server listens on 127.0.0.1 or a Unix socket.
set -eu
cd "$(dirname "$0")/.."

PEERS="redis-server beanstalkd nginx postgresql gnuplot-nox eatmydata"
missing=""
for p in $PEERS; do
	dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' ||
		missing="$missing $p"
done
if [ -n "$missing" ]; then
	if [ "$(id -u)" -ne 0 ]; then
		echo "bench/run.sh needs:$missing; install them with: sudo apt-get install -y$missing" >&2
		exit 1
	fi
	echo "installing:$missing" >&2
	DEBIAN_FRONTEND=noninteractive apt-get update -qq
	# shellcheck disable=SC2086
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing
fi
# Debian starts the packaged services; the benchmark runs its own copies.
for s in redis-server beanstalkd nginx postgresql; do
	if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
		echo "note: the system's $s service is running; it is left alone" >&2
	fi
done

# BullMQ and ioredis at the versions in bench/peers/package-lock.json.
if [ ! -d bench/peers/node_modules/bullmq ] ||
	[ bench/peers/package-lock.json -nt bench/peers/node_modules/.package-lock.json ]; then
	(cd bench/peers && npm ci --no-audit --no-fund)
fi

make -j2 all
mkdir -p build/bench
cc -O2 -Wall -Wextra -Werror -pthread -I"$(pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)" \
	-o build/bench/peerbench bench/peers/peerbench.c -lpq

# 10,000 idle long-poll connections need as many descriptors in the client and the server.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 20500 ]; then
	echo "note: the open-file limit is $(ulimit -n); the 10,000 idle workers measure needs" \
		"about 10,100 in each process" >&2
fi
exec python3 bench/run.py "$@"
