#!/usr/bin/env bash
# make bench: every side-by-side benchmark, one after the other so that none
# of them shares the CPU with another. Output goes to the terminal and to
# bench/out/<name>.txt; bench/RESULTS.md records the figures by hand, with the
# machine and the date.
#
# Usage: bench/run.sh [spine] [scale] [dns] [http] [churn] [nested]   (default: all)
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
mkdir -p bench/out

suites=("$@")
if ((${#suites[@]} == 0)); then
	suites=(spine scale dns http churn nested)
fi

make -s build # always: a stale bin/lb would measure old code

for s in "${suites[@]}"; do
	echo "=== $s ($(date -u +%FT%TZ), $(nproc) CPUs, load $(cut -d' ' -f1-3 /proc/loadavg))"
	case $s in
	spine) go run ./bench/spine -lb bin/lb ;;
	scale) go run ./bench/scale -lb bin/lb ;;
	dns) bench/dns/run.sh ;;
	http) bench/http/run.sh ;;
	churn) go run ./bench/churn -lb bin/lb ;;
	nested) go run ./bench/nested ;;
	*)
		echo "unknown suite $s (spine, scale, dns, http, churn, nested)" >&2
		exit 2
		;;
	esac 2>&1 | tee "bench/out/$s.txt"
done
