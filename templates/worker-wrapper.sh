#!/usr/bin/env bash
# worker-wrapper.sh — runs one AI worker for one stream and keeps its books.
#
#   worker-wrapper.sh <stream> <pid-file> <log-dir> <work-dir> <initiative-id> <prompt>
#
# - moves earlier logs of this stream to <log-dir>/archive/ (timestamp suffix);
# - writes one log, <log-dir>/<stream>_<first 8 chars of initiative-id>.log,
#   holding the worker's stdout and stderr and the wrapper's own lines;
# - writes its own PID to <pid-file> atomically (temp file + rename);
# - touches <pid-file without .pid>.heartbeat every WORKER_HEARTBEAT_INTERVAL
#   seconds (default 10) while the worker runs;
# - runs `${MONITOR_WORKERS_CLAUDE:-claude} -p <prompt> --dangerously-skip-permissions`
#   in <work-dir> (created if missing) with stdin from /dev/null;
# - on SIGTERM, SIGINT or SIGHUP forwards SIGTERM to the worker and waits for it;
# - after the worker exits 0, commits what it changed when <work-dir> is a git
#   worktree of its own (see "Saving the worker's work" below);
# - on every exit: stops the heartbeat, removes the PID file if it still names
#   this wrapper, logs "exited with code <n>", and exits with the worker's code.
#
# Cron and launchd start jobs with a bare PATH (/usr/bin:/bin), where `claude`
# (npm, Homebrew or the native installer) is not found: /opt/homebrew/bin,
# /usr/local/bin and ~/.local/bin are put in front of PATH, each unless PATH
# already holds it, so an order the caller chose on purpose is kept.
#
# Environment: MONITOR_WORKERS_CLAUDE (the command, default claude),
# WORKER_HEARTBEAT_INTERVAL (seconds, default 10), MONITOR_WORKERS_COMMIT
# (0 turns the commit after a clean exit off).
#
# monitor-workers starts it in a new session, so the wrapper leads a process
# group holding the worker; stopping the group stops everything it started.
# Exit codes: the worker's own; 2 bad usage; 3 setup failed (dirs, log, PID file).
set -u

usage() {
  echo "usage: worker-wrapper.sh <stream> <pid-file> <log-dir> <work-dir> <initiative-id> <prompt>" >&2
}

if [ "$#" -ne 6 ]; then
  usage
  exit 2
fi

stream=$1
pid_file=$2
log_dir=$3
work_dir=$4
initiative_id=$5
prompt=$6

# The stream id becomes part of file names: refuse anything that could leave log_dir.
case $stream in
  '' | . | .. | -* | */* | *[[:cntrl:]]*)
    echo "worker-wrapper.sh: invalid stream id '$stream' (no '/', control characters, leading '-', '.' or '..')" >&2
    exit 2
    ;;
esac
for arg_name in pid_file log_dir work_dir initiative_id; do
  if [ -z "${!arg_name}" ]; then
    echo "worker-wrapper.sh: $arg_name must not be empty" >&2
    usage
    exit 2
  fi
done

# The wrapper changes into the work dir later: keep its own paths absolute.
case $pid_file in /*) ;; *) pid_file="$PWD/$pid_file" ;; esac
case $log_dir in /*) ;; *) log_dir="$PWD/$log_dir" ;; esac

claude_cmd=${MONITOR_WORKERS_CLAUDE:-claude}

for dir in "${HOME:+$HOME/.local/bin}" /usr/local/bin /opt/homebrew/bin; do
  [ -n "$dir" ] || continue
  case ":${PATH:-}:" in
    *":$dir:"*) ;;
    *) PATH="$dir${PATH:+:$PATH}" ;;
  esac
done
export PATH

init8=${initiative_id:0:8}
log_file="$log_dir/${stream}_${init8}.log"
archive_dir="$log_dir/archive"
heartbeat_file="${pid_file%.pid}.heartbeat"
wrapper_pid=$$

now() { date '+%Y-%m-%dT%H:%M:%S%z'; }

fail() {
  echo "worker-wrapper.sh: $*" >&2
  exit 3
}

mkdir -p -- "$log_dir" "$archive_dir" || fail "cannot create log directory $log_dir"
mkdir -p -- "$(dirname -- "$pid_file")" || fail "cannot create the directory of $pid_file"

# Archive earlier logs of this stream: <stream>_<init8>.log where <init8> is at
# most 8 characters. A suffix holding '_' is taken only when it is the current
# initiative's, so stream "a" never archives "a_b_1234.log" of stream "a_b",
# nor "ab_1234.log" of stream "ab".
stamp=$(date '+%Y%m%dT%H%M%S')
for old in "$log_dir/${stream}_"*.log; do
  [ -f "$old" ] || continue
  base=${old##*/}
  suffix=${base#"${stream}_"}
  suffix=${suffix%.log}
  if [ -z "$suffix" ] || [ "${#suffix}" -gt 8 ]; then
    continue
  fi
  if [[ $suffix == *_* ]] && [ "$suffix" != "$init8" ]; then
    continue
  fi
  target="$archive_dir/${base%.log}.$stamp.log"
  if [ -e "$target" ]; then
    target="$archive_dir/${base%.log}.$stamp.$wrapper_pid.log"
  fi
  mv -f -- "$old" "$target" || echo "worker-wrapper.sh: could not archive $old" >&2
done

# From here on everything the wrapper and the worker print goes to the one log.
exec >>"$log_file" 2>&1 </dev/null || fail "cannot open log $log_file"

echo "[wrapper] $(now) stream=$stream initiative=$initiative_id pid=$wrapper_pid workdir=$work_dir started"

heartbeat_interval=${WORKER_HEARTBEAT_INTERVAL:-10}
if ! [[ $heartbeat_interval =~ ^[0-9]+([.][0-9]+)?$ ]] || [[ $heartbeat_interval =~ ^0+([.]0+)?$ ]]; then
  echo "[wrapper] $(now) WORKER_HEARTBEAT_INTERVAL='$heartbeat_interval' is not a positive number of seconds; using 10"
  heartbeat_interval=10
fi

worker_pid=""
heartbeat_pid=""
forwarded=0

cleanup() {
  local code=$?
  trap - EXIT TERM INT HUP
  if [ -n "$heartbeat_pid" ]; then
    kill -TERM "$heartbeat_pid" 2>/dev/null
    wait "$heartbeat_pid" 2>/dev/null
  fi
  # Another wrapper may own the PID file by now (a restart): leave it alone then.
  if [ -f "$pid_file" ] && [ "$(head -n 1 -- "$pid_file" 2>/dev/null)" = "$wrapper_pid" ]; then
    rm -f -- "$pid_file"
  fi
  echo "[wrapper] $(now) exited with code $code"
  exit "$code"
}
trap cleanup EXIT

on_signal() {
  local sig=$1
  if [ -n "$worker_pid" ]; then
    forwarded=$((forwarded + 1))
    echo "[wrapper] $(now) received SIG$sig, sending SIGTERM to worker $worker_pid"
    kill -TERM "$worker_pid" 2>/dev/null
  else
    echo "[wrapper] $(now) received SIG$sig before the worker started"
    case $sig in
      HUP) exit 129 ;;
      INT) exit 130 ;;
      *) exit 143 ;;
    esac
  fi
}
trap 'on_signal TERM' TERM
trap 'on_signal INT' INT
trap 'on_signal HUP' HUP

pid_tmp="$(dirname -- "$pid_file")/.$(basename -- "$pid_file").$wrapper_pid.tmp"
if ! { printf '%s\n' "$wrapper_pid" >"$pid_tmp" && mv -f -- "$pid_tmp" "$pid_file"; }; then
  rm -f -- "$pid_tmp"
  echo "[wrapper] $(now) cannot write PID file $pid_file"
  exit 3
fi

heartbeat_loop() {
  local sleeper=""
  trap '[ -n "$sleeper" ] && kill "$sleeper" 2>/dev/null; exit 0' TERM
  # Ends by itself if the wrapper is gone (e.g. killed with SIGKILL).
  while kill -0 "$wrapper_pid" 2>/dev/null; do
    touch -- "$heartbeat_file" 2>/dev/null
    sleep "$heartbeat_interval" &
    sleeper=$!
    wait "$sleeper"
  done
}
heartbeat_loop &
heartbeat_pid=$!

if ! mkdir -p -- "$work_dir" || ! cd -- "$work_dir"; then
  echo "[wrapper] $(now) cannot enter work dir $work_dir"
  exit 3
fi

if ! command -v -- "$claude_cmd" >/dev/null 2>&1; then
  echo "[wrapper] $(now) command '$claude_cmd' not found on PATH=$PATH; install claude there or set MONITOR_WORKERS_CLAUDE to its full path"
  exit 127
fi

"$claude_cmd" -p "$prompt" --dangerously-skip-permissions </dev/null &
worker_pid=$!

# A trapped signal interrupts `wait` with a status > 128 while the worker still
# runs; keep waiting until the worker itself has ended.
while :; do
  wait "$worker_pid"
  code=$?
  if kill -0 "$worker_pid" 2>/dev/null; then
    continue
  fi
  # The worker may have ended between the signal and kill -0: collect its status.
  if [ "$forwarded" -gt 0 ] && [ "$code" -gt 128 ]; then
    wait "$worker_pid" 2>/dev/null
    last=$?
    [ "$last" -ne 127 ] && code=$last
  fi
  break
done

# ----- Saving the worker's work ------------------------------------------------
# A worker that exits 0 has finished its tasks, but its changes are only files
# in the work dir until someone commits them, and a worktree that is cleaned
# up or reset loses them. So, as the original kit's wrapper did, commit them
# here, while the PID file still names this wrapper.
#
# Only when the work dir is the top of a git work tree of its own (a stream's
# `git worktree`, or the project root for stream "main"): a plain folder
# inside the project's repository shares that repository's index, and
# `git add -A` there would sweep in every other stream's work. The monitor's
# own files and other streams' worktrees are never added.

# Appends one event to the monitor's event log (<log-dir>/events.jsonl), in
# its format, so `monitor-workers logs --events` shows it.
json_string() {
  local text=${1//\\/\\\\}
  text=${text//\"/\\\"}
  text=${text//[[:cntrl:]]/ }
  printf '"%s"' "$text"
}
record_event() {
  local event=$1 reason=$2 secs
  secs=$(date '+%s')
  printf '{"time":"%s","ts_ms":%s,"event":%s,"stream":%s,"reason":%s,"pid":%s}\n' \
    "$(date '+%Y-%m-%dT%H:%M:%S.000000')" "$((secs * 1000))" "$(json_string "$event")" \
    "$(json_string "$stream")" "$(json_string "$reason")" "$wrapper_pid" \
    >>"$log_dir/events.jsonl" 2>/dev/null
}

commit_failed() {
  echo "[wrapper] $(now) COMMIT FAILED: $1; the worker's changes are still uncommitted in $PWD"
  record_event commit_failed "$1; the changes are still uncommitted in $PWD" ||
    echo "[wrapper] $(now) could not record the failed commit in $log_dir/events.jsonl"
}

commit_work() {
  local top here out status hash
  local -a paths=(. ':(exclude).claude/orchestrator' ':(exclude).claude/worktrees' ':(exclude).worktrees')
  case ${MONITOR_WORKERS_COMMIT:-1} in
    0 | false | no | off)
      echo "[wrapper] $(now) not committing: MONITOR_WORKERS_COMMIT=$MONITOR_WORKERS_COMMIT"
      return 0
      ;;
  esac
  if ! command -v git >/dev/null 2>&1; then
    echo "[wrapper] $(now) not committing: git is not on PATH"
    return 0
  fi
  if ! top=$(git rev-parse --show-toplevel 2>&1) || [ -z "$top" ]; then
    # Usually "not a git repository"; git's own words also tell an unsafe
    # (other owner's) repository apart.
    echo "[wrapper] $(now) not committing: $PWD is not in a git work tree ($(printf '%s' "$top" | tail -n 1))"
    return 0
  fi
  here=$(pwd -P)
  top=$(cd -- "$top" 2>/dev/null && pwd -P) || top=""
  if [ "$top" != "$here" ]; then
    echo "[wrapper] $(now) not committing: $here is a folder inside the repository at $top, not a worktree of its own; committing there would sweep in other streams' work"
    return 0
  fi
  if ! out=$(git status --porcelain -- "${paths[@]}" 2>&1); then
    commit_failed "git status failed: $(printf '%s' "$out" | tail -n 1)"
    return 0
  fi
  if [ -z "$out" ]; then
    echo "[wrapper] $(now) no changes to commit"
    return 0
  fi
  if ! out=$(git add -A -- "${paths[@]}" 2>&1); then
    printf '%s\n' "$out"
    commit_failed "git add failed: $(printf '%s' "$out" | tail -n 1)"
    return 0
  fi
  out=$(git commit -q -m "feat($stream): Complete stream tasks

Committed by worker-wrapper.sh after the worker exited 0.
Stream: $stream
Initiative: $initiative_id" 2>&1)
  status=$?
  [ -z "$out" ] || printf '%s\n' "$out"
  if [ "$status" -ne 0 ]; then
    commit_failed "git commit exited with code $status: $(printf '%s' "$out" | grep -v '^[[:space:]]*$' | tail -n 1)"
    return 0
  fi
  hash=$(git rev-parse --short HEAD 2>/dev/null)
  echo "[wrapper] $(now) committed $hash on $(git rev-parse --abbrev-ref HEAD 2>/dev/null): feat($stream): Complete stream tasks"
}

if [ "$code" -eq 0 ]; then
  commit_work
fi

exit "$code"
