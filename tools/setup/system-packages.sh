#!/usr/bin/env bash
# Installs the Debian packages the local stack needs (mosquitto, influxdb) when they are missing;
# with --tests also victoria-metrics, the real server the tests write to through the InfluxDB v2 API,
# and chromium with its chromedriver, the real browser the dashboard's test drives headless.
set -euo pipefail

need=()
command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || need+=(mosquitto)
command -v influxd >/dev/null 2>&1 || need+=(influxdb)
if [ "${1:-}" = "--tests" ]; then
  command -v victoria-metrics >/dev/null 2>&1 || need+=(victoria-metrics)
  command -v chromium >/dev/null 2>&1 || need+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || need+=(chromium-driver)
fi
[ ${#need[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1; then
  echo "fieldlink needs ${need[*]}, and this system has no apt-get." >&2
  echo "Install Mosquitto 2.x and InfluxDB 1.6+ with your package manager, then run make again." >&2
  exit 1
fi
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then sudo="sudo"; else
    echo "fieldlink needs the Debian packages ${need[*]}; run as root: apt-get install ${need[*]}" >&2
    exit 1
  fi
fi
export DEBIAN_FRONTEND=noninteractive
# One line per step; apt-get's output into the setup log, named (with its end) if a step fails.
log=${SETUP_LOG:-.venv/setup.log}
step="$(dirname "$0")/step.sh"
bash "$step" "$log" "package lists (apt-get update)" $sudo apt-get update
bash "$step" "Debian packages: ${need[*]}" $sudo apt-get install -y --no-install-recommends "${need[@]}"
