# bench/lib.sh: what the shell benchmarks share. Source it from a bench's
# run.sh; it defines:
#   need HINT CMD...   exit with HINT (how to install) unless every CMD exists
#   start_work NAME    make $work, a temporary directory, and arrange that on
#                      exit every pid in $pids is killed and waited for and
#                      $work removed; append background pids to $pids

need() {
	local hint=$1 cmd
	shift
	for cmd in "$@"; do
		if ! command -v "$cmd" >/dev/null 2>&1; then
			echo "$0: $cmd not found; install with: $hint" >&2
			exit 1
		fi
	done
}

start_work() {
	work=$(mktemp -d "/tmp/pacer-$1.XXXXXX")
	pids=()
	trap _bench_cleanup EXIT INT TERM
}

_bench_cleanup() {
	local pid
	for pid in "${pids[@]}"; do
		kill "$pid" 2>/dev/null || true
	done
	for pid in "${pids[@]}"; do
		wait "$pid" 2>/dev/null || true
	done
	rm -rf "$work"
}
