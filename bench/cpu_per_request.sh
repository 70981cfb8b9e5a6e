#!/bin/bash
# CPU time per request of each inferq server thread under one `inferq bench` run.
#
# Starts BINARY serve on 127.0.0.1 (a free port, a fresh data directory, --auth none), reads
# the CPU time of each of its threads from /proc/PID/task/*/stat before and after
# `BINARY bench SCENARIO ARGS...`, and prints the rate, the p50 and the microseconds of CPU per
# request of each thread (the loop thread is the process's main thread). The run is bounded
# by the bench arguments (-d or -n); the server is stopped at the end. When the scenario counts
# jobs or hand-offs, each thread's CPU time is also given per job or hand-off.
#
#   bench/cpu_per_request.sh build/inferq status -c 50 -d 5
#   bench/cpu_per_request.sh build/inferq submit -c 50 -d 5
#
# SPDX-License-Identifier: MIT
set -eu
if [ $# -lt 2 ]; then
	echo "usage: $0 BINARY SCENARIO [bench options...]" >&2
	exit 2
fi
BIN=$1
SCENARIO=$2
shift 2
DIR=$(mktemp -d "${TMPDIR:-/tmp}/inferq-cpu.XXXXXX")
PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
"$BIN" serve --listen "127.0.0.1:$PORT" --data-dir "$DIR/data" --auth none \
	--max-connections 12000 >"$DIR/server.log" 2>&1 &
PID=$!
trap 'kill "$PID" 2>/dev/null; wait "$PID" 2>/dev/null; rm -rf "$DIR"' EXIT
for _ in $(seq 100); do
	grep -q "listening on" "$DIR/server.log" && break
	sleep 0.1
done

cpu() {
	for t in /proc/"$PID"/task/*; do
		awk -v tid="${t##*/}" '{print tid, $14 + $15}' "$t/stat"
	done
}
cpu >"$DIR/cpu0"
"$BIN" bench "$SCENARIO" --server "http://127.0.0.1:$PORT" --json "$@" >"$DIR/bench.json"
cpu >"$DIR/cpu1"

python3 - "$DIR" "$PID" <<'PY'
import json, os, sys
d, pid = sys.argv[1], sys.argv[2]
result = json.load(open(f"{d}/bench.json"))
before = dict(line.split() for line in open(f"{d}/cpu0"))
after = dict(line.split() for line in open(f"{d}/cpu1"))
hz = os.sysconf("SC_CLK_TCK")
n = result["requests"]
# The rate counts the unit that `inferq bench` reports for the scenario (requests, jobs or
# hand-offs), so CPU time is also given per unit when that unit is not the request.
unit, units = result["unit"], result["units"]
print(f"rate {result['rate']:.0f} {unit}/s, {n} requests, p50 {result['latency_ms']['p50']:.3f} ms")
for tid, ticks in after.items():
    seconds = (int(ticks) - int(before.get(tid, 0))) / hz
    if seconds > 0:
        name = "loop thread" if tid == pid else f"thread {tid}"
        line = f"  {name}: {seconds:.2f} s CPU, {seconds * 1e6 / n:.2f} us per request"
        if unit != "requests" and units > 0:
            line += f", {seconds * 1e6 / units:.2f} us per {unit.rstrip('s')}"
        print(line)
PY
