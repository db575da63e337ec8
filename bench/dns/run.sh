#!/usr/bin/env bash
# DNS benchmark: pacer's dnsserver against NSD serving the same records.
#
# Builds bench/dns (pacer's dnsserver on a generated table of APPS apps with
# TASKS routable tasks each), writes NSD's zone from pacer's own answers,
# then runs `dnsperf -c 4 -q 200 -l 10` with SRV queries against each,
# interleaved ROUNDS times: pacer at GOMAXPROCS=1 (one UDP socket), NSD with
# server-count 1 and rrl-ratelimit 0. Prints q/s, lost queries and the ratio
# pacer / NSD (target: at least 0.8, no queries lost).
#
# Needs Debian's dnsperf and nsd (apt-get install -y dnsperf nsd) and Go.
# Usage: bench/dns/run.sh     (env: APPS=100 TASKS=3 ROUNDS=3 SECONDS_PER_RUN=10)
set -euo pipefail

APPS=${APPS:-100}
TASKS=${TASKS:-3}
ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
source "$root/bench/lib.sh"
need "apt-get install -y dnsperf nsd bind9-dnsutils" go dnsperf nsd dig
start_work dnsbench

# free_port prints a port that is free for UDP and TCP on 127.0.0.1 right now.
free_port() {
	local p
	for _ in $(seq 50); do
		p=$((20000 + RANDOM % 40000))
		if ! ss -Hlun "sport = :$p" | grep -q . && ! ss -Hltn "sport = :$p" | grep -q .; then
			echo "$p"
			return
		fi
	done
	echo "bench/dns: no free port found" >&2
	exit 1
}

echo "building bench/dns ..."
(cd "$root" && go build -o "$work/pacer-dns" ./bench/dns)

# pacer: one P, so one UDP socket and one goroutine reading it.
GOMAXPROCS=1 "$work/pacer-dns" -addr 127.0.0.1:0 -apps "$APPS" -tasks "$TASKS" -out "$work" >"$work/pacer.out" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
	grep -q '^listening' "$work/pacer.out" 2>/dev/null && break
	if ! kill -0 "${pids[0]}" 2>/dev/null; then
		cat "$work/pacer.out" >&2
		exit 1
	fi
	sleep 0.1
done
pacer_port=$(awk '/^listening/ {n = split($2, a, ":"); print a[n]}' "$work/pacer.out")
[[ -n $pacer_port ]] || { echo "bench/dns: pacer did not start" >&2; cat "$work/pacer.out" >&2; exit 1; }

nsd_port=$(free_port)
cat >"$work/nsd.conf" <<EOF
server:
  ip-address: 127.0.0.1
  port: $nsd_port
  server-count: 1
  rrl-ratelimit: 0
  round-robin: yes
  minimal-responses: no
  username: ""
  chroot: ""
  zonesdir: "$work"
  zonelistfile: "$work/zone.list"
  database: ""
  pidfile: "$work/nsd.pid"
  xfrdfile: "$work/xfrd.state"
  logfile: "$work/nsd.log"
  verbosity: 0
  hide-version: yes
remote-control:
  control-enable: no
zone:
  name: "mesos"
  zonefile: "mesos.zone"
EOF
nsd -d -c "$work/nsd.conf" >"$work/nsd.out" 2>&1 &
pids+=($!)
probe=$(awk 'NR==1 {print $1}' "$work/queries.txt")
for _ in $(seq 100); do
	dig @127.0.0.1 -p "$nsd_port" +tries=1 +time=1 "$probe" SRV 2>/dev/null | grep -q 'status: NOERROR' && break
	if ! kill -0 "${pids[1]}" 2>/dev/null; then
		echo "bench/dns: nsd exited" >&2
		cat "$work/nsd.out" "$work/nsd.log" >&2 2>/dev/null || true
		exit 1
	fi
	sleep 0.1
done

# Same question, same records: show both answers' shape.
for s in "pacer $pacer_port" "nsd $nsd_port"; do
	set -- $s
	out=$(dig @127.0.0.1 -p "$2" +tries=1 "$probe" SRV)
	printf '%-6s %s, %s\n' "$1" "$(grep -o 'ANSWER: [0-9]*, AUTHORITY: [0-9]*, ADDITIONAL: [0-9]*' <<<"$out")" \
		"$(grep -o 'MSG SIZE  rcvd: [0-9]*' <<<"$out")"
done

# run_dnsperf NAME PORT ROUND: one run; appends "NAME ROUND QPS LOST" to results.
run_dnsperf() {
	local out qps lost
	out=$(dnsperf -s 127.0.0.1 -p "$2" -d "$work/queries.txt" -c 4 -q 200 -l "$SECONDS_PER_RUN" 2>&1)
	qps=$(awk '/Queries per second:/ {print $4}' <<<"$out")
	lost=$(awk '/Queries lost:/ {print $3}' <<<"$out")
	if [[ -z $qps ]]; then
		echo "bench/dns: dnsperf failed against $1:" >&2
		echo "$out" >&2
		exit 1
	fi
	printf '%-6s round %d: %12.0f q/s, %s lost\n' "$1" "$3" "$qps" "$lost"
	echo "$1 $3 $qps $lost" >>"$work/results"
}

echo "dnsperf -c 4 -q 200 -l $SECONDS_PER_RUN, $APPS SRV names x $TASKS tasks, $ROUNDS rounds interleaved"
for round in $(seq "$ROUNDS"); do
	run_dnsperf pacer "$pacer_port" "$round"
	run_dnsperf nsd "$nsd_port" "$round"
done

echo
awk '
	{ qps[$1] += $3; n[$1]++; lost[$1] += $4
	  if (!($1 in min) || $3 < min[$1]) min[$1] = $3
	  if ($3 > max[$1]) max[$1] = $3 }
	END {
		printf "%-8s %12s %12s %12s %8s\n", "server", "mean q/s", "min q/s", "max q/s", "lost"
		for (s in n) printf "%-8s %12.0f %12.0f %12.0f %8d\n", s, qps[s]/n[s], min[s], max[s], lost[s]
		printf "\nratio pacer/nsd (mean q/s): %.2f (target >= 0.80, no queries lost)\n", (qps["pacer"]/n["pacer"]) / (qps["nsd"]/n["nsd"])
	}' "$work/results"
