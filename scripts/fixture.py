#!/usr/bin/env python3
"""Make a sandbox project for monitor-workers: the orchestrator layout, real
SQLite databases with the Task Copilot and Memory Copilot schemas, and the
worker files (logs, PID files) of a chosen mix of stream states.

    fixture.py --home H --project P --streams N [--initiative-id ID]
               [--mix bench|demo] [--live-pid PID] [--journal wal|delete] [--force]

Creates P/.claude/orchestrator/{pids,logs/archive,state}, P/.claude/worktrees/,
copies templates/worker-wrapper.sh to P/.claude/orchestrator/worker-wrapper.sh,
and writes H/.claude/tasks/<basename P>/tasks.db and
H/.claude/memory/<basename P>/memory.db: one IN PROGRESS initiative (the active
one) and an older COMPLETE one, one PRD each, five tasks per stream.

--mix bench (default): N streams Stream-1..Stream-N, by index modulo 10:
  1-4 running   PID file naming --live-pid (written after it started), log, work under way
  5-6 complete  every task completed, one cancelled; plus a leftover pending task
                of the old initiative with the same stream id (must not count)
  7-8 dead      log > 100 bytes, no PID file, tasks open
  9   waiting   log, but depends on stream 8 of its ten, which is not complete
  10  never-ran tasks open, no log
--mix demo: six named streams (healthy, crashed, zombie, reused-pid, complete,
  waiting); only the database rows and the logs of zombie, reused-pid,
  complete and waiting are written: scripts/demo starts the processes.

Prints one summary line: fixture: streams=N running=.. complete=.. ...
"""

import argparse
import hashlib
import json
import os
import shutil
import sqlite3
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WRAPPER = REPO / "templates" / "worker-wrapper.sh"
DEFAULT_INITIATIVE = "3f2a9c1e-7b4d-4e8a-9c6f-1d2e3f4a5b6c"
OLD_INITIATIVE = "0b1c2d3e-4f50-4a61-8b72-93a4b5c6d7e8"
KINDS = ("running", "complete", "dead", "waiting", "never-ran")

TASKS_SCHEMA = """
CREATE TABLE prds (
  id TEXT PRIMARY KEY,
  initiative_id TEXT NOT NULL,
  title TEXT NOT NULL,
  description TEXT,
  content TEXT NOT NULL,
  metadata TEXT DEFAULT '{}',
  status TEXT DEFAULT 'active',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE tasks (
  id TEXT PRIMARY KEY,
  prd_id TEXT,
  parent_id TEXT,
  title TEXT NOT NULL,
  description TEXT,
  assigned_agent TEXT,
  status TEXT DEFAULT 'pending' CHECK(status IN ('pending','in_progress','blocked','completed','cancelled')),
  blocked_reason TEXT,
  notes TEXT,
  metadata TEXT DEFAULT '{}',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE work_products (
  id TEXT PRIMARY KEY,
  task_id TEXT NOT NULL,
  type TEXT NOT NULL,
  title TEXT NOT NULL,
  content TEXT NOT NULL,
  metadata TEXT DEFAULT '{}',
  created_at TEXT NOT NULL
);
CREATE TABLE activity_log (
  id TEXT PRIMARY KEY,
  initiative_id TEXT NOT NULL,
  type TEXT NOT NULL,
  entity_id TEXT NOT NULL,
  summary TEXT NOT NULL,
  created_at TEXT NOT NULL
);
CREATE INDEX idx_prds_initiative ON prds(initiative_id);
CREATE INDEX idx_tasks_prd ON tasks(prd_id);
CREATE INDEX idx_tasks_parent ON tasks(parent_id);
CREATE INDEX idx_tasks_status ON tasks(status);
CREATE INDEX idx_work_products_task ON work_products(task_id);
-- added by a later migration, as in the real database
ALTER TABLE tasks ADD COLUMN archived INTEGER DEFAULT 0;
ALTER TABLE tasks ADD COLUMN archived_at TEXT DEFAULT NULL;
ALTER TABLE tasks ADD COLUMN archived_by_initiative_id TEXT DEFAULT NULL;
CREATE INDEX idx_tasks_archived ON tasks(archived);
"""

MEMORY_SCHEMA = """
CREATE TABLE memories (
  id TEXT PRIMARY KEY,
  project_id TEXT NOT NULL,
  content TEXT NOT NULL,
  type TEXT NOT NULL,
  tags TEXT DEFAULT '[]',
  metadata TEXT DEFAULT '{}',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE TABLE initiatives (
  id TEXT PRIMARY KEY,
  project_id TEXT NOT NULL UNIQUE,
  name TEXT NOT NULL,
  goal TEXT,
  status TEXT DEFAULT 'IN PROGRESS'
    CHECK(status IN ('NOT STARTED','IN PROGRESS','BLOCKED','READY FOR REVIEW','COMPLETE')),
  completed TEXT DEFAULT '[]',
  in_progress TEXT DEFAULT '[]',
  blocked TEXT DEFAULT '[]',
  resume_instructions TEXT,
  lessons TEXT DEFAULT '[]',
  decisions TEXT DEFAULT '[]',
  key_files TEXT DEFAULT '[]',
  created_at TEXT NOT NULL,
  updated_at TEXT NOT NULL
);
CREATE INDEX idx_memories_project ON memories(project_id);
"""

# Task statuses of the five tasks of a stream, by kind.
STATUSES = {
    "running": ("completed", "completed", "in_progress", "pending", "pending"),
    "complete": ("completed", "completed", "completed", "completed", "cancelled"),
    "dead": ("completed", "in_progress", "pending", "pending", "pending"),
    "waiting": ("pending",) * 5,
    "never-ran": ("pending",) * 5,
}

DEMO_STREAMS = (
    # id, name, kind, dependencies, log written here
    ("healthy", "Healthy worker", "running", [], False),
    ("crashed", "Crashed worker", "dead", [], False),
    ("zombie", "Zombie worker", "dead", [], True),
    ("reused-pid", "Worker whose PID was reused", "dead", [], True),
    ("complete", "Finished stream", "complete", [], True),
    ("waiting", "Waits on crashed", "waiting", ["crashed"], True),
)


def iso(t):
    """JavaScript's toISOString(), as Task Copilot writes it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + ".%03dZ" % (int(t * 1000) % 1000)


def bench_streams(n):
    """(id, name, kind, dependencies) of stream i = 1..n, deterministic."""
    out = []
    for i in range(1, n + 1):
        slot = (i - 1) % 10
        kind = ("running",) * 4 + ("complete",) * 2 + ("dead",) * 2 + ("waiting", "never-ran")
        kind = kind[slot]
        decade = (i - 1) // 10 * 10
        if kind == "waiting":
            deps = [f"Stream-{decade + 8}"]  # a dead stream of the same ten
        elif kind == "complete" or decade == 0:
            deps = []
        else:
            deps = [f"Stream-{decade - 10 + 5}"]  # a complete stream of the previous ten
        out.append((f"Stream-{i}", f"Stream {i} work", kind, deps))
    return out


def log_text(stream, initiative, pid, workdir):
    return (
        f"[wrapper] 2025-01-15T09:00:00+0000 stream={stream} initiative={initiative} "
        f"pid={pid} workdir={workdir} started\n"
        f"fake-claude: working on You are the worker for stream **{stream}**\n"
        "fake-claude: progress 1 (1000ms of 120000ms)\n"
        "fake-claude: progress 2 (2000ms of 120000ms)\n"
    )


def create_db(path, schema, journal):
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute(f"PRAGMA journal_mode={journal}")
    conn.executescript(schema)
    return conn


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--home", required=True, type=Path, help="stands in for $HOME (databases go under it)")
    ap.add_argument("--project", required=True, type=Path, help="project root; its folder name is the workspace id")
    ap.add_argument("--streams", type=int, help="number of streams (bench mix)")
    ap.add_argument("--initiative-id", default=DEFAULT_INITIATIVE)
    ap.add_argument("--mix", choices=("bench", "demo"), default="bench")
    ap.add_argument("--live-pid", type=int, help="a live process the running streams' PID files name (bench mix)")
    ap.add_argument("--journal", choices=("wal", "delete"), default="wal", help="journal mode of tasks.db (default wal)")
    ap.add_argument("--force", action="store_true", help="replace databases that already exist")
    args = ap.parse_args()

    if args.mix == "bench":
        if args.streams is None or args.streams < 0:
            ap.error("--mix bench needs --streams N (N >= 0)")
        if args.streams and args.live_pid is None:
            ap.error("--mix bench needs --live-pid PID: the running streams' PID files name it")
        streams = bench_streams(args.streams)
    else:
        streams = [s[:4] for s in DEMO_STREAMS]
    if args.live_pid is not None:
        try:
            os.kill(args.live_pid, 0)
        except ProcessLookupError:
            ap.error(f"--live-pid {args.live_pid}: no such process")
        except PermissionError:
            pass
    if len(args.initiative_id) < 1:
        ap.error("--initiative-id must not be empty")

    project = args.project.resolve()
    home = args.home.resolve()
    workspace = project.name
    orch = project / ".claude" / "orchestrator"
    tasks_db = home / ".claude" / "tasks" / workspace / "tasks.db"
    memory_db = home / ".claude" / "memory" / workspace / "memory.db"
    for db in (tasks_db, memory_db):
        if db.exists() and not args.force:
            sys.exit(f"fixture.py: {db} exists; pass --force to replace it")

    for d in (orch / "pids", orch / "logs" / "archive", orch / "state", project / ".claude" / "worktrees",
              tasks_db.parent, memory_db.parent):
        d.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(WRAPPER, orch / "worker-wrapper.sh")
    os.chmod(orch / "worker-wrapper.sh", 0o755)

    init = args.initiative_id
    init8 = init[:8]
    now = time.time()
    old_t, new_t = now - 30 * 86400, now - 86400
    project_hash = hashlib.sha256(str(project).encode()).hexdigest()[:16]

    mem = create_db(memory_db, MEMORY_SCHEMA, "wal")
    mem.execute("BEGIN")
    mem.executemany(
        "INSERT INTO initiatives (id, project_id, name, goal, status, resume_instructions, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?)",
        [
            (OLD_INITIATIVE, f"{project_hash}-previous", "Earlier initiative", "Done and dusted",
             "COMPLETE", None, iso(old_t), iso(old_t + 3600)),
            (init, project_hash, f"{workspace} initiative", "Ship the streams", "IN PROGRESS",
             "Run the stream workers", iso(new_t), iso(now)),
        ],
    )
    mem.execute(
        "INSERT INTO memories (id, project_id, content, type, created_at, updated_at) VALUES (?,?,?,?,?,?)",
        ("mem-1", project_hash, "Streams run in .claude/worktrees/<stream>", "context", iso(new_t), iso(new_t)),
    )
    mem.execute("COMMIT")
    mem.close()

    prd, old_prd = f"prd-{init8}", f"prd-{OLD_INITIATIVE[:8]}"
    tasks = []
    for i, (sid, name, kind, deps) in enumerate(streams):
        meta = json.dumps({"streamId": sid, "streamName": name, "dependencies": deps,
                           "files": [f"src/{sid.lower()}/"]})
        for j, status in enumerate(STATUSES[kind]):
            t = iso(new_t + i + j)
            tasks.append((f"task-{i:05d}-{j}", prd, None, f"{name}: step {j + 1}", f"Step {j + 1} of {sid}",
                          "me", status, None, None, meta, t, t, 0, None, None))
        if kind == "complete":
            # Leftover of the earlier initiative with the same stream id: must not make it look open.
            old_meta = json.dumps({"streamId": sid, "streamName": name, "dependencies": []})
            t = iso(old_t + i)
            tasks.append((f"task-old-{i:05d}", old_prd, None, f"{name}: leftover", None, "me", "pending",
                          None, None, old_meta, t, t, 0, None, None))

    db = create_db(tasks_db, TASKS_SCHEMA, args.journal)
    db.execute("BEGIN")
    db.executemany(
        "INSERT INTO prds (id, initiative_id, title, description, content, metadata, status, created_at, updated_at)"
        " VALUES (?,?,?,?,?,?,?,?,?)",
        [
            (old_prd, OLD_INITIATIVE, "Earlier PRD", None, "# Earlier work", "{}", "completed",
             iso(old_t), iso(old_t)),
            (prd, init, f"{workspace} PRD", "The streams of this initiative", "# Streams", "{}", "active",
             iso(new_t), iso(new_t)),
        ],
    )
    db.executemany("INSERT INTO tasks VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", tasks)
    db.execute(
        "INSERT INTO activity_log VALUES (?,?,?,?,?,?)",
        ("act-1", init, "prd_created", prd, "PRD created", iso(new_t)),
    )
    db.execute("COMMIT")
    db.close()

    # Worker files.
    logs = orch / "logs"
    pids = orch / "pids"
    demo_logs = {s[0] for s in DEMO_STREAMS if s[4]}
    counts = dict.fromkeys(KINDS, 0)
    for sid, _name, kind, _deps in streams:
        counts[kind] += 1
        workdir = project / ".claude" / "worktrees" / sid
        if args.mix == "demo":
            write_log = sid in demo_logs
            write_pid = False
        else:
            write_log = kind in ("running", "complete", "dead", "waiting")
            write_pid = kind == "running"
        if write_log:
            pid = args.live_pid if write_pid else 4242
            (logs / f"{sid}_{init8}.log").write_text(log_text(sid, init, pid, workdir))
        if write_pid:
            (pids / f"{sid}.pid").write_text(f"{args.live_pid}\n")

    summary = " ".join(f"{k}={counts[k]}" for k in KINDS)
    print(f"fixture: mix={args.mix} streams={len(streams)} {summary} tasks={len(tasks)} "
          f"initiative={init} project={project} tasks_db={tasks_db} memory_db={memory_db}")


if __name__ == "__main__":
    main()
