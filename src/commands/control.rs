//! Operator commands on one stream (`pause`, `resume`, `reset`, `stop`,
//! `restart STREAM`): each goes through the lifecycle state machine and the
//! same locks as the daemon (`tick::operator`), so it is safe while a daemon
//! runs, and each is recorded in monitor.log and the event log with who asked.

use std::time::Duration;

use crate::cli::Cli;
use crate::layout::StreamId;
use crate::report::events::operator as who;
use crate::supervise::assess::Verdict;
use crate::supervise::lifecycle::{Event, Lifecycle};
use crate::tick::act::{ActError, Actor};
use crate::tick::operator::{self, Stopped};
use crate::{Failure, Outcome};

use super::Context;

fn failed(e: ActError) -> Failure {
    Failure::CouldNotRun(e.to_string())
}

pub fn pause(cli: &Cli, raw: &str) -> Result<Outcome, Failure> {
    pause_in(&Context::new(cli)?, cli, raw)
}

/// `pause` in a context made by the caller (the dashboard's says `via: web`).
pub fn pause_in(ctx: &Context, cli: &Cli, raw: &str) -> Result<Outcome, Failure> {
    let id = ctx.known_stream(cli, raw)?;
    let by = who();
    let recorder = ctx.recorder();
    operator::apply(
        &ctx.store,
        &recorder,
        &id,
        Event::Pause { by: by.clone() },
        "pause",
    )
    .map_err(failed)?;
    operator::note(
        &recorder,
        &id,
        "pause",
        &by,
        &format!("Worker {id} paused by {by}: it will not be restarted until resumed"),
    );
    Ok(Outcome::Healthy)
}

/// `resume STREAM`, or `resume --all` (every paused or stopped stream).
pub fn resume(cli: &Cli, raw: Option<&str>) -> Result<Outcome, Failure> {
    resume_in(&Context::new(cli)?, cli, raw)
}

pub fn resume_in(ctx: &Context, cli: &Cli, raw: Option<&str>) -> Result<Outcome, Failure> {
    let ids = match raw {
        Some(raw) => vec![ctx.known_stream(cli, raw)?],
        None => held_streams(ctx),
    };
    let by = who();
    let recorder = ctx.recorder();
    if ids.is_empty() {
        recorder
            .logger
            .info("No paused or stopped stream to resume");
    }
    for id in &ids {
        operator::apply(&ctx.store, &recorder, id, Event::Resume, "resume").map_err(failed)?;
        operator::note(
            &recorder,
            id,
            "resume",
            &by,
            &format!("Worker {id} resumed by {by}: supervised again"),
        );
    }
    Ok(Outcome::Healthy)
}

/// The streams an operator paused or stopped, by the state file.
fn held_streams(ctx: &Context) -> Vec<StreamId> {
    let (state, _) = ctx.store.read_only();
    state
        .streams
        .iter()
        .filter(|(_, st)| {
            matches!(
                st.lifecycle,
                Lifecycle::Paused { .. } | Lifecycle::Stopped { .. }
            )
        })
        .filter_map(|(id, _)| StreamId::parse(id).ok())
        .collect()
}

/// `reset STREAM` (and the global breaker if that stream's failures opened
/// it), or `reset --all`: every stream the state knows, and the breaker.
pub fn reset(cli: &Cli, raw: Option<&str>) -> Result<Outcome, Failure> {
    reset_in(&Context::new(cli)?, cli, raw)
}

pub fn reset_in(ctx: &Context, cli: &Cli, raw: Option<&str>) -> Result<Outcome, Failure> {
    let ids = match raw {
        Some(raw) => vec![ctx.known_stream(cli, raw)?],
        None => {
            let (state, _) = ctx.store.read_only();
            state
                .streams
                .keys()
                .filter_map(|id| StreamId::parse(id).ok())
                .collect()
        }
    };
    let by = who();
    let recorder = ctx.recorder();
    for id in &ids {
        operator::reset(&ctx.store, &recorder, id).map_err(failed)?;
        operator::note(
            &recorder,
            id,
            "reset",
            &by,
            &format!("Reset restart history of worker {id} (by {by})"),
        );
    }
    let only_for = raw.and(ids.first());
    operator::lift_breaker(&ctx.store, &recorder, only_for, &by).map_err(failed)?;
    Ok(Outcome::Healthy)
}

/// `stop STREAM` / `stop --all`.
pub fn stop(cli: &Cli, raw: Option<&str>, all: bool, grace: Duration) -> Result<Outcome, Failure> {
    stop_in(&Context::new(cli)?, cli, raw, all, grace)
}

pub fn stop_in(
    ctx: &Context,
    cli: &Cli,
    raw: Option<&str>,
    all: bool,
    grace: Duration,
) -> Result<Outcome, Failure> {
    let snapshot = ctx.snapshot(cli)?;
    let ids: Vec<StreamId> = match (raw, all) {
        (Some(raw), _) => vec![ctx.known_stream(cli, raw)?],
        // Complete streams and those waiting on dependencies have nothing to
        // stop; marking them stopped would hold them once they are due.
        (None, true) => snapshot
            .streams
            .iter()
            .filter(|o| !matches!(o.verdict, Verdict::Complete | Verdict::WaitingOnDeps { .. }))
            .map(|o| o.view.id.clone())
            .collect(),
        (None, false) => return Err(Failure::Usage("name a stream or pass --all".into())),
    };
    let by = who();
    let recorder = ctx.recorder();
    let mut settings = ctx.resolved.tick.clone();
    settings.grace = grace;
    let actor = Actor::new(
        &ctx.layout,
        &settings,
        &ctx.store,
        &recorder,
        &snapshot.initiative,
    )
    .with_tc(snapshot.tc.as_ref());
    let mut failures = Vec::new();
    for id in &ids {
        let stopped = operator::stop(&actor, id, &by);
        // A tc stream's session is stopped only through session_stop.
        let session = match operator::stop_session(&actor, &snapshot, id, &by) {
            Ok(session) => session,
            Err(e) => {
                failures.push(format!("{id} ({})", e.detail()));
                continue;
            }
        };
        match stopped {
            Ok(Stopped::NothingRan) if session.is_some() => {}
            Ok(Stopped::NothingRan) if raw.is_some() => operator::note(
                &recorder,
                id,
                "stop_requested",
                &by,
                &format!("Worker {id} was not running; marked stopped"),
            ),
            Ok(_) => {}
            Err(e @ ActError::Illegal { .. }) => return Err(failed(e)),
            Err(e @ ActError::Locked { .. }) => {
                failures.push(format!("{id} (locked by another monitor)"));
                let _ = e;
            }
            Err(e) => failures.push(format!("{id} ({})", e.detail())),
        }
    }
    if failures.is_empty() {
        Ok(Outcome::Healthy)
    } else {
        Err(Failure::CouldNotRun(format!(
            "could not stop: {}",
            failures.join(", ")
        )))
    }
}

pub fn restart(cli: &Cli, raw: &str, grace: Duration) -> Result<Outcome, Failure> {
    restart_in(&Context::new(cli)?, cli, raw, grace).map(|_| Outcome::Healthy)
}

/// `restart STREAM`; returns the wrapper's `Child` when this process spawned
/// it, for a long-lived caller to reap.
pub fn restart_in(
    ctx: &Context,
    cli: &Cli,
    raw: &str,
    grace: Duration,
) -> Result<Option<crate::process::detach::Child>, Failure> {
    let id = ctx.known_stream(cli, raw)?;
    let snapshot = ctx.snapshot(cli)?;
    let recorder = ctx.recorder();
    let mut settings = ctx.resolved.tick.clone();
    settings.grace = grace;
    let mut actor = Actor::new(
        &ctx.layout,
        &settings,
        &ctx.store,
        &recorder,
        &snapshot.initiative,
    )
    .with_tc(snapshot.tc.as_ref());
    let restarted = operator::restart(&mut actor, &snapshot, &id);
    // A start that failed for good gives the stream up, announced as a
    // check would (event, notify hook).
    let give_ups = std::mem::take(actor.gave_up.get_mut().unwrap_or_else(|e| e.into_inner()));
    let hooks = crate::tick::record::gave_up(
        &recorder,
        &mut crate::tick::TickMemory::default(),
        &settings,
        &give_ups,
    );
    for hook in hooks {
        let _ = hook.join();
    }
    let launched = restarted.map_err(failed)?;
    Ok(launched.child)
}

/// Lets every worker be restarted again at once: the global breaker that
/// holds all restarts after a wave of failures is lifted early (as
/// `reset --all` does).
pub fn lift_breaker_in(ctx: &Context) -> Result<Outcome, Failure> {
    let by = who();
    let recorder = ctx.recorder();
    let was_open = operator::lift_breaker(&ctx.store, &recorder, None, &by).map_err(failed)?;
    if !was_open {
        return Err(Failure::Usage("the restart breaker is not open".into()));
    }
    Ok(Outcome::Healthy)
}
