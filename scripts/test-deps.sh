#!/usr/bin/env bash
# Installs the programs pacer's tests run for real: dig (DNS integration
# tests), promtool (checks /metrics with Prometheus's own parser), chromium
# (renders the status page), ZooKeeper (discovery/zookeeper's tests) and
# systemd-analyze (checks deploy/pacer.service).
# Debian packages, through apt-get when run as root; otherwise it says what
# to install and fails, because a test that cannot run must not pass.
set -euo pipefail

need=()
command -v dig >/dev/null 2>&1 || need+=(bind9-dnsutils)
if [[ ! -f /usr/share/java/zookeeper.jar ]] || ! command -v java >/dev/null 2>&1; then
	need+=(zookeeper)
fi
command -v promtool >/dev/null 2>&1 || need+=(prometheus)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v systemd-analyze >/dev/null 2>&1 || need+=(systemd)

if ((${#need[@]} == 0)); then
	exit 0
fi
if [[ $(id -u) -ne 0 ]]; then
	echo "tests need these Debian packages: ${need[*]}" >&2
	echo "install them with: sudo apt-get install -y ${need[*]}" >&2
	exit 1
fi
echo "installing test dependencies: ${need[*]}"
export DEBIAN_FRONTEND=noninteractive
if ! apt-get install -y --no-install-recommends "${need[@]}" >/tmp/pacer-apt.log 2>&1; then
	apt-get update >>/tmp/pacer-apt.log 2>&1
	apt-get install -y --no-install-recommends "${need[@]}" >>/tmp/pacer-apt.log 2>&1 || {
		cat /tmp/pacer-apt.log >&2
		exit 1
	}
fi
# Debian's prometheus package also enables and starts the Prometheus server,
# which listens on :9090, pacer's admin port: `make run` would then stop with
# "address already in use". The tests want only its promtool.
if [[ " ${need[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
	echo "disabling the Prometheus server the prometheus package started (it holds :9090; the tests use only promtool)"
	systemctl disable --now prometheus.service >>/tmp/pacer-apt.log 2>&1 || true
fi
