#!/usr/bin/env bash
# install.sh — puts monitor-workers into a project's .claude/orchestrator/.
#
#   scripts/install.sh [--binary FILE] <project-dir>
#
# Builds the release binary (or takes --binary / MONITOR_WORKERS_BINARY) and
# installs, under <project-dir>/.claude/orchestrator/:
#   monitor-workers            the binary (always replaced: it is ours)
#   worker-wrapper.sh          from templates/
#   worker-prompt.md           from templates/
#   monitor.toml.example       from templates/monitor.toml, when it exists
#   service/                   systemd units, launchd plist and cron line,
#                              rendered for this project
# then prints how to run the monitor from systemd, launchd or cron.
#
# A file the user changed is never overwritten: the new version goes beside
# it as <file>.new. install.sh tells "changed by the user" from "installed by
# an earlier install.sh" with a manifest of what it wrote
# (.claude/orchestrator/.install-manifest, cksum per file), so an upgrade
# replaces files nobody edited. A second run changes nothing and says so.
#
# Exit codes: 0 done; 2 bad usage; 3 could not install (build failed, a
# template missing, a directory not writable).
set -euo pipefail
# Bash 5.2 gives '&' a meaning in ${var//pattern/replacement}; paths may hold one.
shopt -u patsub_replacement 2>/dev/null || true

usage() {
  cat <<'EOF'
usage: scripts/install.sh [--binary FILE] <project-dir>

Installs monitor-workers into <project-dir>/.claude/orchestrator/: the binary
(built with `cargo build --release`), worker-wrapper.sh, worker-prompt.md, an
example monitor.toml (as monitor.toml.example) and service files for systemd,
launchd and cron (in service/), then prints how to enable them.

Files you changed are never overwritten: the new version is written beside
yours as <file>.new. The binary is always replaced. Running install.sh again
changes nothing.

Options:
  --binary FILE   install FILE instead of building
                  (same as MONITOR_WORKERS_BINARY=FILE)
  -h, --help      show this help

Exit codes: 0 done, 2 bad usage, 3 could not install.
EOF
}

say() { printf 'install.sh: %s\n' "$*"; }
die() {
  local code=$1
  shift
  printf 'install.sh: error: %s\n' "$*" >&2
  exit "$code"
}

binary=${MONITOR_WORKERS_BINARY:-}
project_arg=
while [ "$#" -gt 0 ]; do
  case $1 in
    -h | --help)
      usage
      exit 0
      ;;
    --binary)
      [ "$#" -ge 2 ] || die 2 "--binary needs a file; see --help"
      binary=$2
      shift 2
      ;;
    --binary=*)
      binary=${1#--binary=}
      shift
      ;;
    --)
      shift
      break
      ;;
    -*) die 2 "unknown option $1; see --help" ;;
    *)
      [ -z "$project_arg" ] || die 2 "more than one project given ($project_arg, $1); see --help"
      project_arg=$1
      shift
      ;;
  esac
done
if [ "$#" -gt 0 ]; then
  [ -z "$project_arg" ] && [ "$#" -eq 1 ] || die 2 "more than one project given; see --help"
  project_arg=$1
fi
[ -n "$project_arg" ] || {
  usage >&2
  die 2 "no project given: pass the project's root directory"
}
[ -d "$project_arg" ] || die 2 "project directory $project_arg does not exist; pass the project's root directory"
case $project_arg in
  *$'\n'*) die 2 "the project path contains a newline; move the project to a plainer path" ;;
esac

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)
templates=$repo/templates
project=$(cd "$project_arg" && pwd -P)
orch=$project/.claude/orchestrator
manifest=$orch/.install-manifest
# A name for service units and the launchd label: the project folder's name,
# reduced to the characters those names allow.
slug=$(basename "$project" | LC_ALL=C tr -c 'A-Za-z0-9_.\n-' '-')

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mw-install.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

# ----- the binary -------------------------------------------------------------

if [ -n "$binary" ]; then
  [ -f "$binary" ] && [ -x "$binary" ] || die 3 "binary $binary is not an executable file"
else
  command -v cargo >/dev/null 2>&1 || die 3 "cargo not found: install Rust (https://rustup.rs) or pass --binary FILE"
  say "building the release binary (cargo build --release)"
  (cd "$repo" && cargo build --release --bin monitor-workers) || die 3 "cargo build --release failed; see the messages above"
  binary=${CARGO_TARGET_DIR:-$repo/target}/release/monitor-workers
  [ -x "$binary" ] || die 3 "the build left no binary at $binary"
fi
for t in worker-wrapper.sh worker-prompt.md monitor-workers.service monitor-workers-check.service \
  monitor-workers-check.timer com.monitor-workers.plist cron.txt; do
  [ -f "$templates/$t" ] || die 3 "template $templates/$t is missing; is this a complete checkout?"
done

if [ ! -d "$orch" ]; then
  mkdir -p "$orch" || die 3 "cannot create $orch"
  say "created $orch"
fi
mkdir -p "$orch/service" || die 3 "cannot create $orch/service"

# ----- installing one file ----------------------------------------------------

changed=0
# No associative arrays: macOS still ships bash 3.2.
: >"$scratch/manifest"

sum_of() { cksum <"$1" | awk '{ print $1 "-" $2 }'; }

# What the manifest says install.sh last wrote to $1 (relative path), if anything.
recorded_sum() {
  [ -f "$manifest" ] || return 0
  awk -v rel="$1" '{ sum = $1; sub(/^[^ ]+ /, ""); if ($0 == rel) print sum }' "$manifest"
}

remember() { printf '%s %s\n' "$2" "$1" >>"$scratch/manifest"; }

# Copies $1 to $2 with mode $3 atomically (temp file beside it, then rename),
# so a running monitor or wrapper never sees half a file.
put() {
  local tmp
  tmp=$(mktemp "$(dirname "$2")/.install.XXXXXX") || die 3 "cannot write in $(dirname "$2")"
  cp "$1" "$tmp" && chmod "$3" "$tmp" && mv -f "$tmp" "$2" || {
    rm -f "$tmp"
    die 3 "cannot install $2"
  }
}

# install_file SRC DEST MODE [always]: installs SRC as DEST unless the user
# changed DEST; "always" replaces DEST whatever it holds (the binary).
install_file() {
  local src=$1 dest=$2 mode=$3 always=${4:-}
  local rel=${dest#"$orch"/}
  local before
  before=$(recorded_sum "$rel")
  if [ ! -e "$dest" ]; then
    put "$src" "$dest" "$mode"
    say "installed $rel"
    changed=$((changed + 1))
  elif cmp -s "$src" "$dest"; then
    say "unchanged $rel"
  elif [ -n "$always" ] || [ "$before" = "$(sum_of "$dest")" ]; then
    # Ours, or exactly what an earlier install.sh wrote: safe to replace.
    put "$src" "$dest" "$mode"
    say "updated $rel"
    changed=$((changed + 1))
  else
    if [ -e "$dest.new" ] && cmp -s "$src" "$dest.new"; then
      say "kept your changed $rel; $rel.new already holds the new version"
    else
      put "$src" "$dest.new" "$mode"
      say "kept your changed $rel; wrote the new version to $rel.new (compare: diff $(printf '%q' "$dest") $(printf '%q' "$dest.new"))"
      changed=$((changed + 1))
    fi
    # The manifest keeps what install.sh wrote before: DEST is the user's.
    if [ -n "$before" ]; then remember "$rel" "$before"; fi
    return 0
  fi
  remember "$rel" "$(sum_of "$src")"
}

# ----- rendering templates ----------------------------------------------------

# The project path escaped for each kind of file it is written into.
escape_for() {
  local text=$project
  case $1 in
    systemd) text=${text//%/%%} ;;
    plist)
      text=${text//&/&amp;}
      text=${text//</&lt;}
      text=${text//>/&gt;}
      ;;
    cron)
      text=${text//\'/\'\\\'\'}
      text=${text//%/\\%}
      ;;
  esac
  printf '%s' "$text"
}

# render TEMPLATE KIND OUT: the template with @PROJECT@ and @SLUG@ filled in.
render() {
  local text
  text=$(
    cat "$1"
    printf x
  )
  text=${text%x}
  local escaped
  escaped=$(escape_for "$2")
  text=${text//@PROJECT@/$escaped}
  text=${text//@SLUG@/$slug}
  printf '%s' "$text" >"$3"
}

case $project in
  *'"'* | *\\*) say "note: the project path holds a quote or backslash; check the systemd units in $orch/service before using them" ;;
esac

had_binary=
[ -e "$orch/monitor-workers" ] && had_binary=yes
changed_before=$changed
install_file "$binary" "$orch/monitor-workers" 755 always
if [ -n "$had_binary" ] && [ "$changed" -gt "$changed_before" ]; then
  say "note: a monitor already running keeps the old binary until restarted ($(printf '%q' "$orch/monitor-workers") restart)"
fi
install_file "$templates/worker-wrapper.sh" "$orch/worker-wrapper.sh" 755
install_file "$templates/worker-prompt.md" "$orch/worker-prompt.md" 644
if [ -f "$templates/monitor.toml" ]; then
  install_file "$templates/monitor.toml" "$orch/monitor.toml.example" 644
else
  say "note: templates/monitor.toml does not exist in this checkout; no example config installed"
fi

daemon_unit=monitor-workers-$slug.service
check_unit=monitor-workers-check-$slug.service
check_timer=monitor-workers-check-$slug.timer
label=com.monitor-workers.$slug
render "$templates/monitor-workers.service" systemd "$scratch/daemon.service"
render "$templates/monitor-workers-check.service" systemd "$scratch/check.service"
render "$templates/monitor-workers-check.timer" systemd "$scratch/check.timer"
render "$templates/com.monitor-workers.plist" plist "$scratch/launchd.plist"
render "$templates/cron.txt" cron "$scratch/cron.txt"
install_file "$scratch/daemon.service" "$orch/service/$daemon_unit" 644
install_file "$scratch/check.service" "$orch/service/$check_unit" 644
install_file "$scratch/check.timer" "$orch/service/$check_timer" 644
install_file "$scratch/launchd.plist" "$orch/service/$label.plist" 644
install_file "$scratch/cron.txt" "$orch/service/cron.txt" 644

# The manifest is rewritten only when it would change, so a second run
# touches nothing at all.
LC_ALL=C sort "$scratch/manifest" >"$scratch/manifest.sorted"
if ! { [ -f "$manifest" ] && cmp -s "$scratch/manifest.sorted" "$manifest"; }; then
  put "$scratch/manifest.sorted" "$manifest" 644
fi

if [ "$changed" -eq 0 ]; then
  say "nothing changed: $orch is up to date"
else
  say "done: $changed file(s) written in $orch"
fi

# ----- how to run it ----------------------------------------------------------

q() { printf '%q' "$1"; }
service_dir=$orch/service
cat <<EOF

How to keep the monitor running for $project (pick one):

  systemd (Linux), the daemon as a user service:
    mkdir -p ~/.config/systemd/user
    cp $(q "$service_dir/$daemon_unit") ~/.config/systemd/user/
    systemctl --user daemon-reload
    systemctl --user enable --now $daemon_unit
    loginctl enable-linger "\$USER"   # keeps it, and the workers, running after you log out
  systemd (Linux), a one-shot check every 5 minutes instead:
    cp $(q "$service_dir/$check_unit") $(q "$service_dir/$check_timer") ~/.config/systemd/user/
    systemctl --user daemon-reload
    systemctl --user enable --now $check_timer

  launchd (macOS), the daemon as a user agent:
    cp $(q "$service_dir/$label.plist") ~/Library/LaunchAgents/
    launchctl bootstrap gui/\$(id -u) ~/Library/LaunchAgents/$label.plist
    # to stop it: launchctl bootout gui/\$(id -u)/$label

  cron (anywhere), a one-shot check every 5 minutes; add with \`crontab -e\`:
EOF
grep -v '^#' "$service_dir/cron.txt" | sed 's/^/    /'
cat <<EOF

  Status and logs: $(q "$orch/monitor-workers") status --verbose
                   tail -f $(q "$orch/logs/monitor.log")
EOF
