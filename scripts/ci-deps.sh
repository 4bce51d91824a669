#!/usr/bin/env bash
# scripts/ci-deps.sh — what the dashboard's browser and Prometheus tests
# need, from Debian's packages: chromium and chromium-driver (headless
# Chromium through WebDriver) and prometheus (promtool and a real server).
# Fails loudly when they cannot be installed: CI must never skip those tests.
set -euo pipefail

need=(chromium chromium-driver prometheus)
have_all() { command -v chromium >/dev/null && command -v chromedriver >/dev/null &&
  command -v promtool >/dev/null && command -v prometheus >/dev/null; }

if have_all; then
  echo "ci-deps: chromium, chromedriver, promtool and prometheus are installed"
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  SUDO=sudo
  command -v sudo >/dev/null || { echo "ci-deps: FAILED: need root (or sudo) to install ${need[*]}" >&2; exit 1; }
else
  SUDO=
fi
command -v apt-get >/dev/null || { echo "ci-deps: FAILED: no apt-get; install ${need[*]} by hand" >&2; exit 1; }
start=$SECONDS
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q || { echo "ci-deps: FAILED: apt-get update" >&2; exit 1; }
$SUDO apt-get install -y -q --no-install-recommends "${need[@]}" ||
  { echo "ci-deps: FAILED: apt-get install ${need[*]}" >&2; exit 1; }
have_all || { echo "ci-deps: FAILED: installed, but a program is still missing" >&2; exit 1; }
echo "ci-deps: installed ${need[*]} in $((SECONDS - start)) s"
