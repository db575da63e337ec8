#!/usr/bin/env bash
# HTTP and TCP benchmark: pacer against HAProxy 2.6 and straight to nginx,
# side by side in one run, rounds interleaved.
#
# Backend: Debian's nginx, one worker, `return 200 "ok"` on /, and a
# BULK_MB file on /bulk. Front ends: HAProxy with nbthread 1 (mode http, and
# mode tcp on a second port), and pacer at GOMAXPROCS=1 (bench/http: the
# HTTP plane on an HTTP-mode service port, the TCP plane on a TCP-mode one).
#
# HAProxy in mode http does the header work pacer's HTTP plane does on every
# request: X-Forwarded-For, -Proto, -Host and -Port, as marathon-lb's
# default HTTP backend does most of it (option forwardfor, X-Forwarded-Port).
# The request nginx gets is then the same through both (192 bytes for curl's
# request, against 79 bare), and so is the work of parsing it. HAProxy
# without the headers runs too (haproxy-http-bare), and pacer's HTTP rows
# print their ratio to it as well.
# Each round runs, in turn against every target (reversed every other round):
#   keep-alive  wrk -t1 -c50 -d${SECONDS_PER_RUN}s --latency
#   close       the same with -H 'Connection: close' (one request per connection),
#               also against HAProxy with `defer-accept` on its bind line, as
#               pacer's HTTP listeners defer accepts (TCP_DEFER_ACCEPT)
#   paced       keep-alive with each connection pausing 1 ms (wrk's delay) after
#               every answer: the same moderate, bursty load for every target
#               (25-30k req/s here), where keep-alive saturates the cores and
#               a faster proxy drives wrk and nginx harder, which moves
#               their queues into its p99
#   bulk        wrk -t1 -c4 on /bulk (bytes/s; TCP targets and direct)
# and the table prints req/s, p99 and the proxy's CPU time per request
# (median over rounds) and the ratios the targets are stated in:
# pacer/HAProxy (>= 1.0, p99 no worse) and bulk pacer-tcp/direct (>= 0.9),
# with the range of the rate's per-round ratio in brackets, and the p99
# ratio of every round's requests pooled; then p1-p99.9 of each pool.
# CPU per request is the steadier figure on a shared machine: the rates
# move with whatever else runs, for both proxies alike.
#
# Needs nginx-light, haproxy, wrk (apt-get install -y nginx-light haproxy wrk) and Go.
# Usage: bench/http/run.sh   (env: ROUNDS=3 SECONDS_PER_RUN=10 BULK_MB=64 CONNS=50)
#
# A/B of two builds: PACER_B=path runs a second bench/http binary (built
# from another commit: `go build -o /tmp/b ./bench/http`) beside this
# tree's, as targets pacerb-http and pacerb-tcp, interleaved with the rest,
# and prints it against HAProxy and against this tree's build.
# MODES="keepalive paced close bulk" picks the modes (default all four).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
BULK_MB=${BULK_MB:-64}
CONNS=${CONNS:-50}
MODES=${MODES:-keepalive paced close bulk}
PACER_B=${PACER_B:-}

root=$(cd "$(dirname "$0")/../.." && pwd)
# shellcheck source=../lib.sh
source "$root/bench/lib.sh"
need "apt-get install -y nginx-light haproxy wrk iproute2" go nginx haproxy wrk ss
start_work httpbench

# pick_ports sets PORTS to n distinct ports free on 127.0.0.1 in any state,
# below the usual ephemeral range (32768+) so a busy client cannot hold them.
pick_ports() {
	PORTS=()
	local p tries=0
	while ((${#PORTS[@]} < $1)); do
		((tries++ < 500)) || { echo "bench/http: no free ports found" >&2; exit 1; }
		p=$((20000 + RANDOM % 12000))
		[[ " ${PORTS[*]} " == *" $p "* ]] && continue
		ss -Htan "( sport = :$p )" | grep -q . && continue
		PORTS+=("$p")
	done
}

wait_port() { # host port
	for _ in $(seq 200); do
		if (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	echo "bench/http: nothing listens on $1:$2" >&2
	tail -n 5 "$work"/*.out >&2 || true
	exit 1
}

pick_ports 11
NGINX=${PORTS[0]} HA_HTTP=${PORTS[1]} HA_TCP=${PORTS[2]} P_VHOST=${PORTS[3]} P_HTTP=${PORTS[4]} P_TCP=${PORTS[5]} HA_HTTP_DA=${PORTS[6]}
HA_HTTP_BARE=${PORTS[10]}
PB_VHOST=${PORTS[7]} PB_HTTP=${PORTS[8]} PB_TCP=${PORTS[9]}

echo "building bench/http ..."
(cd "$root" && go build -o "$work/pacer-bench" ./bench/http)

mkdir -p "$work/nginx/www"
head -c "$((BULK_MB << 20))" /dev/zero >"$work/nginx/www/bulk"
chmod -R a+rX "$work" # nginx workers run as nobody when started by root
cat >"$work/nginx/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $work/nginx/nginx.pid;
error_log $work/nginx/error.log warn;
events { worker_connections 4096; }
http {
	access_log off;
	keepalive_requests 1000000;
	keepalive_timeout 75s;
	sendfile on;
	client_body_temp_path $work/nginx/tmp;
	proxy_temp_path $work/nginx/tmp;
	fastcgi_temp_path $work/nginx/tmp;
	uwsgi_temp_path $work/nginx/tmp;
	scgi_temp_path $work/nginx/tmp;
	server {
		listen 127.0.0.1:$NGINX;
		location = / { return 200 "ok"; }
		location = /bulk { root $work/nginx/www; }
	}
}
CONF
mkdir -p "$work/nginx/tmp"
mkdir -p "$work/nginx/tmp"
nginx -c "$work/nginx/nginx.conf" -p "$work/nginx" >"$work/nginx.out" 2>&1 &
pids+=($!)

cat >"$work/haproxy.cfg" <<CONF
global
	nbthread 1
	maxconn 4000
defaults
	timeout connect 5s
	timeout client 60s
	timeout server 60s
	option http-keep-alive
frontend fe_http
	mode http
	bind 127.0.0.1:$HA_HTTP
	bind 127.0.0.1:$HA_HTTP_DA defer-accept
	default_backend be_http
backend be_http
	mode http
	http-reuse always
	option forwardfor
	http-request set-header X-Forwarded-Proto http
	http-request set-header X-Forwarded-Host %[req.hdr(host)]
	http-request set-header X-Forwarded-Port %[dst_port]
	server nginx 127.0.0.1:$NGINX
frontend fe_http_bare
	mode http
	bind 127.0.0.1:$HA_HTTP_BARE
	default_backend be_http_bare
backend be_http_bare
	mode http
	http-reuse always
	server nginx 127.0.0.1:$NGINX
frontend fe_tcp
	mode tcp
	bind 127.0.0.1:$HA_TCP
	default_backend be_tcp
backend be_tcp
	mode tcp
	server nginx 127.0.0.1:$NGINX
CONF
haproxy -f "$work/haproxy.cfg" -db >"$work/haproxy.out" 2>&1 &
pids+=($!)
ha_pid=$!

GOMAXPROCS=1 "$work/pacer-bench" -backend "127.0.0.1:$NGINX" -http "127.0.0.1:$P_VHOST" \
	-http-port "$P_HTTP" -tcp-port "$P_TCP" >"$work/pacer.out" 2>&1 &
pids+=($!)
pacer_pid=$!
listening=("$NGINX" "$HA_HTTP" "$HA_HTTP_DA" "$HA_HTTP_BARE" "$HA_TCP" "$P_VHOST" "$P_HTTP" "$P_TCP")
if [[ -n $PACER_B ]]; then
	GOMAXPROCS=1 "$PACER_B" -backend "127.0.0.1:$NGINX" -http "127.0.0.1:$PB_VHOST" \
		-http-port "$PB_HTTP" -tcp-port "$PB_TCP" >"$work/pacerb.out" 2>&1 &
	pids+=($!)
	pacerb_pid=$!
	listening+=("$PB_VHOST" "$PB_HTTP" "$PB_TCP")
fi

for p in "${listening[@]}"; do wait_port 127.0.0.1 "$p"; done

# target name -> port
declare -A port=([direct]=$NGINX [haproxy-http]=$HA_HTTP [haproxy-http-da]=$HA_HTTP_DA [haproxy-http-bare]=$HA_HTTP_BARE [pacer-http]=$P_HTTP [haproxy-tcp]=$HA_TCP [pacer-tcp]=$P_TCP)
targets=(direct haproxy-http haproxy-http-bare pacer-http haproxy-tcp pacer-tcp)
# close mode also runs HAProxy with defer-accept (haproxy-http-da)
close_targets=(direct haproxy-http haproxy-http-da haproxy-http-bare pacer-http haproxy-tcp pacer-tcp)
# target name -> the proxy process whose CPU time each run reads
declare -A proc=([haproxy-http]=$ha_pid [haproxy-http-da]=$ha_pid [haproxy-http-bare]=$ha_pid [haproxy-tcp]=$ha_pid [pacer-http]=$pacer_pid [pacer-tcp]=$pacer_pid)
if [[ -n $PACER_B ]]; then
	port[pacerb-http]=$PB_HTTP port[pacerb-tcp]=$PB_TCP
	proc[pacerb-http]=$pacerb_pid proc[pacerb-tcp]=$pacerb_pid
	targets+=(pacerb-http pacerb-tcp)
	close_targets+=(pacerb-http pacerb-tcp)
fi
bulk_targets=(direct haproxy-tcp pacer-tcp)
[[ -n $PACER_B ]] && bulk_targets+=(pacerb-tcp)
# reversed prints its arguments in reverse order.
reversed() {
	local i out=()
	for ((i = $#; i > 0; i--)); do out+=("${!i}"); done
	echo "${out[@]}"
}
# cpu_ns prints the CPU time a process's threads have run, in nanoseconds:
# the scheduler's own account (/proc/PID/task/*/schedstat), exact, where
# /proc/PID/stat's user and system times are sampled at each clock tick
# (10 ms), a few percent off over a 10 s run. Threads that exited are not
# counted; the proxies here keep theirs.
cpu_ns() { cat "/proc/$1"/task/*/schedstat | awk '{s += $1} END {printf "%.0f", s}'; }

# to_us converts wrk's latency ("1.23ms", "850.00us", "1.02s") to microseconds.
to_us() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /us$/) { sub(/us$/, "", v); printf "%.0f", v }
		else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.0f", v * 1000 }
		else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.0f", v * 1000000 }
		else print 0 }'
}
# to_mbs converts wrk's Transfer/sec ("1.23GB", "512.00MB") to MB/s.
to_mbs() {
	awk -v v="$1" 'BEGIN {
		if (v ~ /GB$/) { sub(/GB$/, "", v); printf "%.0f", v * 1024 }
		else if (v ~ /MB$/) { sub(/MB$/, "", v); printf "%.0f", v }
		else if (v ~ /KB$/) { sub(/KB$/, "", v); printf "%.2f", v / 1024 }
		else print 0 }'
}

results=$work/results.txt
: >"$results"
# wrk's latency histogram, every distinct value (µs) and its count, printed
# by a done script (wrk calls no Lua per request for a script with only
# done), so that percentiles can be taken over all rounds' requests pooled:
# one round's p99 of HTTP keep-alive moved by a fifth between rounds.
hists=$work/hists
mkdir -p "$hists"
cat >"$work/hist.lua" <<'LUA'
done = function(summary, latency, requests)
	for i = 1, #latency do
		local v, n = latency(i)
		io.write(string.format("hist %d %d\n", v, n))
	end
end
LUA
# paced.lua is hist.lua with a pause of 1 ms before each connection's next
# request (wrk's delay, whole milliseconds).
{
	echo 'delay = function() return 1 end'
	cat "$work/hist.lua"
} >"$work/paced.lua"
run_wrk() { # mode target (in round $round)
	local mode=$1 t=$2 out t0=0 t1=0 pid=${proc[$2]:-}
	[[ -n $pid ]] && t0=$(cpu_ns "$pid")
	case $mode in
	keepalive) out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$work/hist.lua" -H 'Host: bench.test' "http://127.0.0.1:${port[$t]}/") ;;
	paced) out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$work/paced.lua" -H 'Host: bench.test' "http://127.0.0.1:${port[$t]}/") ;;
	close) out=$(wrk -t1 -c"$CONNS" -d"${SECONDS_PER_RUN}s" --latency -s "$work/hist.lua" -H 'Host: bench.test' -H 'Connection: close' "http://127.0.0.1:${port[$t]}/") ;;
	bulk) out=$(wrk -t1 -c4 -d"${SECONDS_PER_RUN}s" -H 'Host: bench.test' "http://127.0.0.1:${port[$t]}/bulk") ;;
	esac
	[[ -n $pid ]] && t1=$(cpu_ns "$pid")
	local rps p99 mbs errs reqs cpu=0
	rps=$(awk '/^Requests\/sec:/ {printf "%.0f", $2}' <<<"$out")
	reqs=$(awk '/ requests in / {print $1}' <<<"$out")
	if [[ -n $pid && ${reqs:-0} -gt 0 ]]; then
		cpu=$(awk -v a="$t0" -v b="$t1" -v n="$reqs" 'BEGIN {printf "%.2f", (b - a) / 1e3 / n}')
	fi
	p99=$(to_us "$(awk '$1 == "99%" {print $2}' <<<"$out")")
	mbs=$(to_mbs "$(awk '/^Transfer\/sec:/ {print $2}' <<<"$out")")
	errs=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out" | tr '\n' ' ')
	echo "$mode $t $rps ${p99:-0} $mbs $cpu $round" >>"$results"
	awk '$1 == "hist" {print $2, $3}' <<<"$out" >>"$hists/$mode.$t"
	printf '  %-9s %-13s %8s req/s  p99 %6s us  %7s MB/s  cpu %6s us/req %s\n' "$mode" "$t" "$rps" "${p99:-0}" "$mbs" "$cpu" "$errs"
}

# Every other round runs the targets in reverse order. Order is not neutral:
# each close-mode run leaves tens of thousands of TIME_WAIT sockets for the
# next minute, which slow every connect after it (direct close: 20k req/s
# with none, 17.6-19k with 14k of them), and a shared machine drifts; in one
# fixed order the same target would always run second.
for round in $(seq "$ROUNDS"); do
	echo "round $round/$ROUNDS"
	order=("${targets[@]}") corder=("${close_targets[@]}") bulk=("${bulk_targets[@]}")
	if ((round % 2 == 0)); then
		read -ra order <<<"$(reversed "${order[@]}")"
		read -ra corder <<<"$(reversed "${corder[@]}")"
		read -ra bulk <<<"$(reversed "${bulk[@]}")"
	fi
	[[ " $MODES " == *" keepalive "* ]] && for t in "${order[@]}"; do run_wrk keepalive "$t"; done
	[[ " $MODES " == *" paced "* ]] && for t in "${order[@]}"; do run_wrk paced "$t"; done
	[[ " $MODES " == *" close "* ]] && for t in "${corder[@]}"; do run_wrk close "$t"; done
	[[ " $MODES " == *" bulk "* ]] && for t in "${bulk[@]}"; do run_wrk bulk "$t"; done
done

# median of column $3 (col) for mode/target
median() { # mode target col
	awk -v m="$1" -v t="$2" -v c="$3" '$1 == m && $2 == t {print $c}' "$results" | sort -n |
		awk '{a[NR] = $1} END {if (NR == 0) print 0; else if (NR % 2) print a[(NR + 1) / 2]; else printf "%.6g", (a[NR / 2] + a[NR / 2 + 1]) / 2}'
}
# pooled prints the given percentiles (µs) of every round's requests to
# mode/target together, from wrk's histograms, on one line.
pooled() { # mode target pct...
	local f=$hists/$1.$2
	shift 2
	[[ -s $f ]] || { printf '0 %.0s' "$@"; echo; return; }
	sort -n "$f" | awk -v ps="$*" '{v[NR] = $1; n[NR] = $2; tot += $2}
		END {k = split(ps, p, " "); j = 1
			for (i = 1; i <= NR && j <= k; i++) { c += n[i]; while (j <= k && c >= tot * p[j] / 100) out[j++] = v[i] }
			for (j = 1; j <= k; j++) printf "%s%s", out[j], (j < k ? " " : "\n") }'
}
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b == 0) print "-"; else printf "%.2fx", a / b }'; }
# spread prints the lowest and highest of the per-round ratios of column col
# between two targets (each round runs both, minutes apart at most): how far
# one round's verdict could fall from the medians' on this machine.
spread() { # mode target-a target-b col
	awk -v m="$1" -v a="$2" -v b="$3" -v c="$4" '$1 == m && $2 == a {x[$7] = $c} $1 == m && $2 == b {y[$7] = $c}
		END {lo = 0; for (r in x) if (y[r] > 0) { v = x[r] / y[r]; if (!lo || v < lo) lo = v; if (v > hi) hi = v }
			if (lo) printf "%.2f-%.2f", lo, hi; else print "-"}' "$results"
}

echo
echo "medians over $ROUNDS round(s), wrk -t1 -c$CONNS -d${SECONDS_PER_RUN}s; pacer GOMAXPROCS=1, HAProxy nbthread 1, nginx 1 worker"
echo "cpu: the proxy's CPU time per request, all threads (/proc/PID/task/*/schedstat)"
printf '| %-9s | %-17s | %9s | %8s | %10s | %-46s |\n' mode target "req/s" "p99 us" "cpu us/req" "vs HAProxy (same mode)"
printf '|%s|%s|%s|%s|%s|%s|\n' ----------- ------------------- ----------- ---------- ------------ ------------------------------------------------
vs() { # mode pacer-target haproxy-target
	echo "$(ratio "$(median "$1" "$2" 3)" "$(median "$1" "$3" 3)") req/s ($(spread "$1" "$2" "$3" 3)), p99 $(ratio "$(median "$1" "$2" 4)" "$(median "$1" "$3" 4)") (pooled $(ratio "$(pooled "$1" "$2" 99)" "$(pooled "$1" "$3" 99)")), cpu $(ratio "$(median "$1" "$2" 6)" "$(median "$1" "$3" 6)")"
}
for mode in keepalive paced close; do
	[[ " $MODES " == *" $mode "* ]] || continue
	list=("${targets[@]}")
	[[ $mode == close ]] && list=("${close_targets[@]}")
	for t in "${list[@]}"; do
		rps=$(median "$mode" "$t" 3); p99=$(median "$mode" "$t" 4); cpu=$(median "$mode" "$t" 6); vs=""
		case $t in
		pacer-*) vs=$(vs "$mode" "$t" "haproxy-${t#pacer-}") ;;
		pacerb-*) vs=$(vs "$mode" "$t" "haproxy-${t#pacerb-}") ;;
		esac
		[[ $t == direct ]] && cpu=""
		printf '| %-9s | %-17s | %9s | %8s | %10s | %-46s |\n' "$mode" "$t" "$rps" "$p99" "$cpu" "$vs"
		if [[ $mode == close && $t == pacer*-http ]]; then
			printf '| %-9s | %-17s | %9s | %8s | %10s | %-46s |\n' "" "" "" "" "" "vs haproxy-http-da: $(vs close "$t" haproxy-http-da)"
		fi
		if [[ $t == pacer*-http ]]; then
			printf '| %-9s | %-17s | %9s | %8s | %10s | %-46s |\n' "" "" "" "" "" "vs haproxy-http-bare: $(vs "$mode" "$t" haproxy-http-bare)"
		fi
		if [[ $t == pacerb-* ]]; then
			printf '| %-9s | %-17s | %9s | %8s | %10s | %-46s |\n' "" "" "" "" "" "vs pacer-${t#pacerb-}: $(vs "$mode" "$t" "pacer-${t#pacerb-}")"
		fi
	done
done
echo
echo "latency percentiles (us) over every round's requests pooled (wrk's histograms)"
printf '| %-9s | %-17s | %6s | %6s | %6s | %6s | %7s |\n' mode target p1 p50 p90 p99 p99.9
printf '|%s|%s|%s|%s|%s|%s|%s|\n' ----------- ------------------- -------- -------- -------- -------- ---------
for mode in keepalive paced close; do
	[[ " $MODES " == *" $mode "* ]] || continue
	list=("${targets[@]}")
	[[ $mode == close ]] && list=("${close_targets[@]}")
	for t in "${list[@]}"; do
		read -ra pct <<<"$(pooled "$mode" "$t" 1 50 90 99 99.9)"
		printf '| %-9s | %-17s | %6s | %6s | %6s | %6s | %7s |\n' "$mode" "$t" "${pct[@]}"
	done
done
# Which of pacer's HTTP answers, over the whole run (Connection: close
# ones included), the poller gave itself (bench/http prints it on SIGUSR1;
# PACER_B may be a build without that handler, so only pacer is asked).
if [[ " $MODES " =~ " "(keepalive|paced|close)" " ]]; then
	kill -USR1 "$pacer_pid"
	for _ in 1 2 3 4 5 6 7 8 9 10; do
		grep -q 'in the poller' "$work/pacer.out" && break
		sleep 0.1
	done
	echo
	echo "pacer-http, the whole run: $(grep 'in the poller' "$work/pacer.out" | tail -1)"
fi
[[ " $MODES " == *" bulk "* ]] || exit 0
for t in "${bulk_targets[@]}"; do
	mbs=$(median bulk "$t" 5) cpu=""
	[[ $t != direct ]] && cpu=$(awk -v c="$(median bulk "$t" 6)" -v mb="$BULK_MB" 'BEGIN {printf "%.1f/MB", c / mb}')
	printf '| %-9s | %-17s | %4s MB/s | %8s | %10s | %-46s |\n' bulk "$t" "$mbs" "" "$cpu" "$(ratio "$mbs" "$(median bulk direct 5)") of direct"
done
