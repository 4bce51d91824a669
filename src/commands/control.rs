//! Operator commands on one stream (`pause`, `resume`, `reset`, `stop`,
//! `restart STREAM`): each goes through the lifecycle state machine and the
//! same locks as the daemon, so it is safe while a daemon runs, and each is
//! recorded in monitor.log and the event log with who asked.

use std::time::Duration;

use crate::cli::Cli;
use crate::layout::StreamId;
use crate::process::identity::Liveness;
use crate::process::lock;
use crate::report::events::{operator, EventRecord};
use crate::report::log::Level;
use crate::supervise::lifecycle::Event;
use crate::tick::{apply_operator_event, operator_restart, recheck, remove_if_stale, stop_running};
use crate::{Failure, Outcome};

use super::Context;

fn record(ctx: &Context, id: &StreamId, event: &str, by: &str, message: &str) {
    ctx.logger.action(Level::Info, message);
    ctx.recorder().event(EventRecord {
        by: Some(by.to_string()),
        ..EventRecord::new(event, Some(id.as_str()))
    });
}

fn transition(ctx: &Context, id: &StreamId, event: Event) -> Result<(), Failure> {
    let (from, to) = apply_operator_event(&ctx.store, id, event).map_err(Failure::CouldNotRun)?;
    if from.kind() != to.kind() {
        let line = format!(
            "Worker {id} state {} -> {}",
            from.kind().name(),
            to.kind().name()
        );
        ctx.logger.write_file(Level::Info, &line);
    }
    Ok(())
}

pub fn pause(cli: &Cli, raw: &str) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let id = ctx.known_stream(cli, raw)?;
    let by = operator();
    transition(&ctx, &id, Event::Pause { by: by.clone() })?;
    record(
        &ctx,
        &id,
        "pause",
        &by,
        &format!("Worker {id} paused by {by}: it will not be restarted until resumed"),
    );
    Ok(Outcome::Healthy)
}

pub fn resume(cli: &Cli, raw: &str) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let id = ctx.known_stream(cli, raw)?;
    let by = operator();
    transition(&ctx, &id, Event::Resume)?;
    record(
        &ctx,
        &id,
        "resume",
        &by,
        &format!("Worker {id} resumed by {by}: supervised again"),
    );
    Ok(Outcome::Healthy)
}

pub fn reset(cli: &Cli, raw: &str) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let id = ctx.known_stream(cli, raw)?;
    let by = operator();
    ctx.store
        .update(|s| {
            let st = s.streams.entry(id.to_string()).or_default();
            st.restarts = 0;
            st.streak = 0;
            st.next_attempt_ms = None;
            st.recent_restarts_ms.clear();
            st.completed_at_last_restart = None;
        })
        .map_err(|e| Failure::CouldNotRun(e.to_string()))?;
    transition(&ctx, &id, Event::Reset)?;
    record(
        &ctx,
        &id,
        "reset",
        &by,
        &format!("Reset restart history of worker {id} (by {by})"),
    );
    Ok(Outcome::Healthy)
}

/// `stop STREAM` / `stop --all`: mark stopped first (so no monitor restarts
/// it meanwhile), then stop the worker gracefully under its lock.
pub fn stop(cli: &Cli, raw: Option<&str>, all: bool, grace: Duration) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let ids: Vec<StreamId> = match (raw, all) {
        (Some(raw), _) => vec![ctx.known_stream(cli, raw)?],
        (None, true) => ctx
            .snapshot(cli)?
            .streams
            .into_iter()
            .map(|o| o.view.id)
            .collect(),
        (None, false) => return Err(Failure::Usage("name a stream or pass --all".into())),
    };
    let by = operator();
    let mut failed = Vec::new();
    for id in &ids {
        transition(&ctx, id, Event::Stop { by: by.clone() })?;
        let Some(_held) =
            lock::lock_within(&ctx.layout.stream_lock(id), Duration::from_secs(10))
                .map_err(|e| Failure::CouldNotRun(format!("cannot lock stream {id}: {e}")))?
        else {
            failed.push(format!("{id} (locked by another monitor)"));
            continue;
        };
        let (pid_file, liveness) = recheck(&ctx.layout, &ctx.store, id);
        match liveness {
            Liveness::Running { pid, start_ticks } => {
                record(
                    &ctx,
                    id,
                    "stop_requested",
                    &by,
                    &format!("Stopping worker {id} (PID {pid}) for {by}"),
                );
                if let Err(e) =
                    stop_running(&ctx.logger, &ctx.recorder(), id, pid, start_ticks, grace)
                {
                    failed.push(format!("{id} ({e})"));
                }
                let (pid_file, liveness) = recheck(&ctx.layout, &ctx.store, id);
                remove_if_stale(
                    &ctx.layout,
                    &ctx.logger,
                    &ctx.recorder().events,
                    id,
                    &pid_file,
                    &liveness,
                );
            }
            other => {
                remove_if_stale(
                    &ctx.layout,
                    &ctx.logger,
                    &ctx.recorder().events,
                    id,
                    &pid_file,
                    &other,
                );
                if raw.is_some() {
                    record(
                        &ctx,
                        id,
                        "stop_requested",
                        &by,
                        &format!("Worker {id} was not running; marked stopped"),
                    );
                }
            }
        }
    }
    if failed.is_empty() {
        Ok(Outcome::Healthy)
    } else {
        Err(Failure::CouldNotRun(format!(
            "could not stop: {}",
            failed.join(", ")
        )))
    }
}

pub fn restart(cli: &Cli, raw: &str, grace: Duration) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let id = ctx.known_stream(cli, raw)?;
    let snapshot = ctx.snapshot(cli)?;
    let settings = &ctx.resolved.tick;
    operator_restart(
        &ctx.layout,
        settings,
        &ctx.logger,
        &ctx.store,
        &snapshot,
        &id,
        grace,
    )
    .map_err(Failure::CouldNotRun)?;
    Ok(Outcome::Healthy)
}
