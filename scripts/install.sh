#!/usr/bin/env bash
# install.sh — puts monitor-workers into a project's .claude/orchestrator/.
#
#   scripts/install.sh [--binary FILE] <project-dir>
#   scripts/install.sh --uninstall <project-dir>
#
# Builds the release binary (or takes --binary / MONITOR_WORKERS_BINARY) and
# installs, under <project-dir>/.claude/orchestrator/:
#   monitor-workers            the binary (always replaced: it is ours)
#   worker-wrapper.sh          from templates/
#   worker-prompt.md           from templates/
#   monitor.toml.example       from templates/monitor.toml, when it exists
#   monitor-workers.py         a shim that runs the binary, so old cron lines
#                              (`python monitor-workers.py ...`) run it; an
#                              original monitor-workers.py is moved to
#                              monitor-workers.py.orig (an existing .orig is
#                              never overwritten)
#   service/                   systemd units, launchd plist and cron line,
#                              rendered for this project; unit and label names
#                              carry a short hash of the project path
#   logs/                      where the monitor and launchd write
# then prints how to run the monitor from systemd, launchd or cron.
#
# --uninstall undoes it: removes every file install.sh wrote that nobody
# changed since, moves monitor-workers.py.orig back into place, and removes the
# folders it created when they are empty. Files someone changed are kept.
#
# A file the user changed is never overwritten: the new version goes beside
# it as <file>.new. install.sh tells "changed by the user" from "installed by
# an earlier install.sh" with a manifest of what it wrote
# (.claude/orchestrator/.install-manifest: "<cksum> <file>" per file it wrote,
# "dir <folder>/" per folder it created), so an upgrade replaces files nobody
# edited. A file that was already there, identical, is not recorded: it is
# not install.sh's to remove. A second run changes nothing and says so.
#
# Exit codes: 0 done; 2 bad usage; 3 could not install (build failed, a
# template missing, a directory not writable).
set -euo pipefail
# Bash 5.2 gives '&' a meaning in ${var//pattern/replacement}; paths may hold one.
shopt -u patsub_replacement 2>/dev/null || true

usage() {
  cat <<'EOF'
usage: scripts/install.sh [--binary FILE] <project-dir>
       scripts/install.sh --uninstall <project-dir>

Installs monitor-workers into <project-dir>/.claude/orchestrator/: the binary
(built with `cargo build --release`), worker-wrapper.sh, worker-prompt.md, an
example monitor.toml (as monitor.toml.example), a monitor-workers.py shim that
runs the binary (so old `python monitor-workers.py ...` cron lines keep
working; an original is kept as monitor-workers.py.orig) and service files for
systemd, launchd and cron (in service/), then prints how to enable them.

Files you changed are never overwritten: the new version is written beside
yours as <file>.new. The binary is always replaced. Running install.sh again
changes nothing.

Options:
  --binary FILE   install FILE instead of building
                  (same as MONITOR_WORKERS_BINARY=FILE)
  --uninstall     remove what install.sh installed and nobody changed, and put
                  an original monitor-workers.py back
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
uninstall=
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
    --uninstall)
      uninstall=yes
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
# reduced to the characters those names allow, and 8 hex digits of the CRC of
# the project's path, so two projects both named "app" get two units.
path_hash=$(printf '%s' "$project" | cksum | awk '{ printf "%08x", $1 }')
slug=$(basename "$project" | LC_ALL=C tr -c 'A-Za-z0-9_.\n-' '-')-$path_hash

scratch=$(mktemp -d "${TMPDIR:-/tmp}/mw-install.XXXXXX")
trap 'rm -rf "$scratch"' EXIT

say_warning() { printf 'install.sh: warning: %s\n' "$*" >&2; }
q() { printf '%q' "$1"; }

daemon_unit=monitor-workers-$slug.service
check_unit=monitor-workers-check-$slug.service
check_timer=monitor-workers-check-$slug.timer
label=com.monitor-workers.$slug

# ----- the manifest -----------------------------------------------------------

sum_of() { cksum <"$1" | awk '{ print $1 "-" $2 }'; }

# What manifest $2 (default: the installed one) records for $1 (a path
# relative to the orchestrator dir), if anything: a cksum, or "dir".
recorded_sum() {
  local file=${2:-$manifest}
  [ -f "$file" ] || return 0
  awk -v rel="$1" '{ sum = $1; sub(/^[^ ]+ /, ""); if ($0 == rel) print sum }' "$file"
}

# ----- uninstall --------------------------------------------------------------

# Removes what the manifest records and nobody changed, puts an original
# monitor-workers.py back, then removes the folders install.sh created when
# they are empty.
uninstall() {
  if [ ! -f "$manifest" ]; then
    say "nothing to uninstall: $orch has no .install-manifest (install.sh did not install here, or it was uninstalled already)"
    return 0
  fi
  if [ -f "$orch/state/daemon.json" ]; then
    say_warning "a monitor daemon may still be running here (state/daemon.json exists); it keeps running without its files: stop it with $(q "$orch/monitor-workers") stop, or through the service that started it"
  fi
  local line sum rel path shim_gone='' removed=0
  while IFS= read -r line; do
    sum=${line%% *}
    rel=${line#* }
    [ "$sum" != dir ] || continue
    path=$orch/$rel
    if [ ! -e "$path" ] && [ ! -L "$path" ]; then
      [ "$rel" != monitor-workers.py ] || shim_gone=yes
      continue
    fi
    if [ -f "$path" ] && [ ! -L "$path" ] && [ "$(sum_of "$path")" = "$sum" ]; then
      rm -f "$path" || die 3 "cannot remove $path"
      say "removed $rel"
      removed=$((removed + 1))
      [ "$rel" != monitor-workers.py ] || shim_gone=yes
    else
      say "kept $rel: it changed since install.sh wrote it"
    fi
  done <"$manifest"

  local orig=$orch/monitor-workers.py.orig
  if [ -e "$orig" ]; then
    if [ -n "$shim_gone" ] && [ ! -e "$orch/monitor-workers.py" ]; then
      mv "$orig" "$orch/monitor-workers.py" || die 3 "cannot move $orig back to $orch/monitor-workers.py"
      say "restored the original monitor-workers.py (from monitor-workers.py.orig)"
    else
      say "kept monitor-workers.py.orig: monitor-workers.py is not the shim install.sh wrote; put the original back yourself if you want it"
    fi
  fi

  # Folders install.sh created, deepest first: the orchestrator dir's own,
  # then the orchestrator dir ("./"), then .claude ("../"); only when empty.
  local dirs
  dirs=$(awk '$1 == "dir" { sub(/^dir /, ""); print }' "$manifest")
  rm -f "$manifest" || die 3 "cannot remove $manifest"
  local inner
  inner=$(printf '%s\n' "$dirs" | { grep -v -x -e '\./' -e '\.\./' -e '' || true; } |
    awk '{ print length($0) " " $0 }' | sort -rn | cut -d' ' -f2-)
  local dir target
  while IFS= read -r dir; do
    case $dir in
      '') continue ;;
      ./) target=$orch ;;
      ../) target=$project/.claude ;;
      *) target=$orch/$dir ;;
    esac
    [ -d "$target" ] || continue
    if rmdir "$target" 2>/dev/null; then
      say "removed the folder $dir"
    else
      say "kept the folder $dir: it is not empty"
    fi
  done <<LIST
$inner
$(printf '%s\n' "$dirs" | grep -x '\./' || true)
$(printf '%s\n' "$dirs" | grep -x '\.\./' || true)
LIST
  say "done: $removed file(s) removed from $orch"
  cat <<HOWTO

If you enabled a service from it, turn that off too:
  systemd:  systemctl --user disable --now $daemon_unit $check_timer
            rm ~/.config/systemd/user/{$daemon_unit,$check_unit,$check_timer}
  launchd:  launchctl bootout gui/\$(id -u)/$label
            rm ~/Library/LaunchAgents/$label.plist
  cron:     remove the monitor-workers line with \`crontab -e\`
HOWTO
}

if [ -n "$uninstall" ]; then
  uninstall
  exit 0
fi

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
for t in worker-wrapper.sh worker-prompt.md monitor-workers.py monitor-workers.service \
  monitor-workers-check.service monitor-workers-check.timer com.monitor-workers.plist cron.txt; do
  [ -f "$templates/$t" ] || die 3 "template $templates/$t is missing; is this a complete checkout?"
done

# No associative arrays: macOS still ships bash 3.2.
: >"$scratch/manifest"
remember() { printf '%s %s\n' "$2" "$1" >>"$scratch/manifest"; }

# make_dir REL: creates $orch/REL ("./" is the orchestrator dir itself) and
# records it when install.sh created it, now or before, for --uninstall.
make_dir() {
  local rel=$1 dir=$orch/$1
  if [ ! -d "$dir" ]; then
    mkdir -p "$dir" || die 3 "cannot create $dir"
    remember "$rel" dir
  elif [ "$(recorded_sum "$rel")" = dir ]; then
    remember "$rel" dir
  fi
}

if [ ! -d "$project/.claude" ] || [ "$(recorded_sum ../)" = dir ]; then
  remember ../ dir
fi
if [ ! -d "$orch" ]; then
  make_dir ./
  say "created $orch"
else
  make_dir ./
fi
make_dir service/
# launchd does not create the folder of StandardOutPath; the monitor writes
# its own log there too.
make_dir logs/

# ----- installing one file ----------------------------------------------------

changed=0

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
    # There before install.sh ever wrote it: not install.sh's to remove.
    [ -n "$before" ] || return 0
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
      say "kept your changed $rel; wrote the new version to $rel.new (compare: diff $(q "$dest") $(q "$dest.new"))"
      changed=$((changed + 1))
    fi
    remember "$rel.new" "$(sum_of "$src")"
    # The manifest keeps what install.sh wrote before: DEST is the user's.
    if [ -n "$before" ]; then remember "$rel" "$before"; fi
    return 0
  fi
  remember "$rel" "$(sum_of "$src")"
}

# ----- rendering templates ----------------------------------------------------

# $2 escaped for the kind of file ($1) it is written into.
escape_for() {
  local text=$2
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

# render TEMPLATE KIND OUT: the template with @PROJECT@, @HOME@ and @SLUG@
# filled in.
render() {
  local text
  text=$(
    cat "$1"
    printf x
  )
  text=${text%x}
  local escaped
  escaped=$(escape_for "$2" "$project")
  text=${text//@PROJECT@/$escaped}
  escaped=$(escape_for "$2" "${HOME:-}")
  text=${text//@HOME@/$escaped}
  text=${text//@SLUG@/$slug}
  printf '%s' "$text" >"$3"
}

case $project in
  *'"'* | *\\*) say "note: the project path holds a quote or backslash; check the systemd units in $orch/service before using them" ;;
esac

# ----- what a kept wrapper lacks ----------------------------------------------

# Prints, one a line, what worker wrapper $1 lacks that monitor-workers relies
# on (nothing for ours).
wrapper_gaps() {
  # The kit's wrapper, known by the names of its variables.
  if grep -q 'SHORT_INIT_ID' "$1" && grep -q 'CLAUDE_EXIT' "$1"; then
    echo "it is the Claude Copilot kit's wrapper, which always exits 0: a failed worker looks like one that finished, so on-failure restarts and failure classes cannot see it"
    echo "it removes the PID file on exit even when a restarted worker's wrapper owns it by then"
  fi
  grep -q '\[wrapper\].*exited with code' "$1" ||
    echo "it writes no '[wrapper] ... exited with code N' line: the monitor cannot read a worker's exit code from its log"
  grep -q 'heartbeat' "$1" ||
    echo "it touches no pids/<stream>.heartbeat file: heartbeat probes (monitor.toml) see its workers as stalled"
  grep -q 'git commit' "$1" ||
    echo "it does not commit a worker's changes after a clean exit"
  grep -q '\.local/bin' "$1" ||
    echo "it does not put ~/.local/bin, /usr/local/bin and /opt/homebrew/bin on PATH: under cron or launchd claude may not be found"
}

# ----- installing -------------------------------------------------------------

had_binary=
[ -e "$orch/monitor-workers" ] && had_binary=yes
changed_before=$changed
install_file "$binary" "$orch/monitor-workers" 755 always
if [ -n "$had_binary" ] && [ "$changed" -gt "$changed_before" ]; then
  say "note: a monitor already running keeps the old binary until restarted ($(q "$orch/monitor-workers") restart)"
fi

install_file "$templates/worker-wrapper.sh" "$orch/worker-wrapper.sh" 755
if ! cmp -s "$templates/worker-wrapper.sh" "$orch/worker-wrapper.sh"; then
  gaps=$(wrapper_gaps "$orch/worker-wrapper.sh")
  if [ -n "$gaps" ]; then
    say_warning "the worker-wrapper.sh kept in $orch lacks what monitor-workers relies on:"
    printf '%s\n' "$gaps" | sed 's/^/  - /' >&2
    say_warning "to switch to the new one (keep a copy of yours first): mv $(q "$orch/worker-wrapper.sh.new") $(q "$orch/worker-wrapper.sh")"
  fi
fi

install_file "$templates/worker-prompt.md" "$orch/worker-prompt.md" 644
if [ -f "$templates/monitor.toml" ]; then
  install_file "$templates/monitor.toml" "$orch/monitor.toml.example" 644
else
  say "note: templates/monitor.toml does not exist in this checkout; no example config installed"
fi

# The shim for old `python monitor-workers.py ...` lines. Anything else in its
# place (the kit's original) moves to monitor-workers.py.orig, unless a .orig
# exists already: that one is never overwritten, and the shim goes to .new.
shim=$orch/monitor-workers.py
if [ -e "$shim" ] && ! cmp -s "$templates/monitor-workers.py" "$shim" &&
  [ "$(recorded_sum monitor-workers.py)" != "$(sum_of "$shim")" ]; then
  if [ ! -e "$shim.orig" ] && [ ! -L "$shim.orig" ]; then
    mv "$shim" "$shim.orig" || die 3 "cannot move $shim to $shim.orig"
    say "moved the original monitor-workers.py to monitor-workers.py.orig (scripts/install.sh --uninstall puts it back)"
    changed=$((changed + 1))
  else
    say_warning "monitor-workers.py is not the shim and monitor-workers.py.orig exists already, so both stay: old \`python monitor-workers.py\` lines still run the Python monitor; to switch, check the .orig, then: mv $(q "$shim.new") $(q "$shim")"
  fi
fi
install_file "$templates/monitor-workers.py" "$shim" 755

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

# Service files an earlier install.sh wrote under other names (before the
# names carried the path's hash): removed when nobody changed them.
if [ -f "$manifest" ]; then
  while IFS= read -r line; do
    sum=${line%% *}
    rel=${line#* }
    case $rel in service/?*) ;; *) continue ;; esac
    [ "$sum" != dir ] && [ -z "$(recorded_sum "$rel" "$scratch/manifest")" ] || continue
    [ -f "$orch/$rel" ] || continue
    if [ "$(sum_of "$orch/$rel")" = "$sum" ]; then
      rm -f "$orch/$rel" || die 3 "cannot remove $orch/$rel"
      say "removed $rel: its new name is in service/; if you enabled it, disable it and enable the new one"
      changed=$((changed + 1))
    else
      say "kept your changed $rel; install.sh no longer writes it (service names now carry a hash of the project path)"
    fi
  done <"$manifest"
fi

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
  Cron lines that already run \`python monitor-workers.py ...\` in the
  orchestrator dir run the binary now, through the monitor-workers.py shim.

  Status and logs: $(q "$orch/monitor-workers") status --verbose
                   tail -f $(q "$orch/logs/monitor.log")
  To undo:         scripts/install.sh --uninstall $(q "$project")
EOF
