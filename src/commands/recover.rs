//! `recover-tasks [--dry-run] [--older-than SECS] [STREAM...]`: tasks of
//! dead or given-up streams left `in_progress` longer than the timeout go
//! back to `pending` (SPEC 3.7), one line and one event per task. Without
//! STREAM every dead or given-up stream is taken; a named stream that is
//! neither is left alone with a note. `--dry-run` lists and writes nothing.

use std::time::Duration;

use crate::cli::Cli;
use crate::layout::StreamId;
use crate::tick::recover::{self, Scope};
use crate::tick::{take_snapshot, ProbeMode};
use crate::{Failure, Outcome};

use super::Context;

pub fn run(cli: &Cli, raw_streams: &[String], dry_run: bool) -> Result<Outcome, Failure> {
    let ctx = Context::new(cli)?;
    let settings = &ctx.resolved.tick;
    let older_than = Duration::from_secs(
        cli.check
            .older_than
            .unwrap_or(super::check::DEFAULT_OLDER_THAN),
    );
    let state = ctx.store.load();
    let probes = ProbeMode::Recorded(&settings.config);
    let snapshot = match take_snapshot(&ctx.layout, settings.busy_timeout, &state, probes) {
        Ok(Some(snapshot)) => snapshot,
        Ok(None) => {
            ctx.logger
                .warning("No active initiative found; no task to recover");
            return Ok(Outcome::Healthy);
        }
        Err(e) => return Err(Failure::CouldNotRun(e.to_string())),
    };
    // A tc stream may be named by its id, its name or a metadata streamId.
    let named: Vec<StreamId> = raw_streams
        .iter()
        .map(|raw| match super::resolve_tc_name(&snapshot, raw) {
            Some(id) => Ok(id),
            None => StreamId::parse(raw)
                .map_err(|why| Failure::Usage(format!("invalid stream id {raw:?}: {why}"))),
        })
        .collect::<Result<_, _>>()?;
    let unknown: Vec<&StreamId> = named
        .iter()
        .filter(|id| !snapshot.streams.iter().any(|o| &o.view.id == *id))
        .collect();
    if !unknown.is_empty() {
        let known: Vec<String> = snapshot
            .streams
            .iter()
            .map(|o| o.view.id.to_string())
            .collect();
        let unknown: Vec<String> = unknown.iter().map(|id| id.to_string()).collect();
        return Err(Failure::Usage(format!(
            "unknown stream(s) {}: not in the active initiative (known: {})",
            unknown.join(", "),
            if known.is_empty() {
                "none".to_string()
            } else {
                known.join(", ")
            }
        )));
    }

    let scope = Scope {
        source: &snapshot.source,
        initiative: &snapshot.initiative,
        observed: &snapshot.streams,
    };
    let selection = recover::select(
        scope.candidates(),
        &state,
        (!named.is_empty()).then_some(named.as_slice()),
    );
    for (id, what) in &selection.skipped {
        ctx.logger
            .info(&format!("Stream {id} is {what}; its tasks are left alone"));
    }
    if selection.streams.is_empty() {
        ctx.logger
            .info("No dead or given-up stream: no task to recover");
        return Ok(Outcome::Healthy);
    }
    let recovery = recover::recover(
        &scope,
        &selection.streams,
        &ctx.recorder(),
        older_than,
        settings.busy_timeout,
        dry_run,
    )
    .map_err(|e| Failure::CouldNotRun(format!("task recovery failed, nothing was changed: {e}")))?;
    let streams: Vec<String> = selection.streams.iter().map(|s| s.to_string()).collect();
    let n = recovery.tasks.len();
    if n == 0 {
        ctx.logger.info(&format!(
            "No task of {} has been in_progress for more than {}",
            streams.join(", "),
            recover::idle_text(older_than.as_secs())
        ));
    } else if dry_run {
        ctx.logger.info(&format!(
            "Dry run: {n} task(s) would go back to pending; nothing was written"
        ));
    } else {
        ctx.logger.info(&format!(
            "{n} task(s) of {} back to pending",
            streams.join(", ")
        ));
    }
    Ok(Outcome::Healthy)
}
