//! The probing part of an observation: the probes configured for a stream,
//! the running worker's records and their verdict, kept apart from the rest
//! of [`Observed`] because most streams have no probes.

use std::time::SystemTime;

use super::Observed;
use crate::probe::{ProbeSet, ProbeSpec, ProbeVerdict};

/// How a stream with probes configured is probed this tick. Boxed in
/// [`Observed`]: most streams have no probes, and inline these fields were
/// 144 of every observation's 368 bytes.
#[derive(Debug)]
pub struct Probing {
    /// The probes configured for it.
    pub specs: Vec<ProbeSpec>,
    /// The running worker's probe records (after this tick's probes).
    pub set: Option<ProbeSet>,
    pub verdict: ProbeVerdict,
    /// When the running worker started.
    pub started_at: Option<SystemTime>,
}

impl Probing {
    /// The probing of a stream with `specs` configured; `None` without any.
    pub fn of(
        specs: Vec<ProbeSpec>,
        set: Option<ProbeSet>,
        started_at: Option<SystemTime>,
    ) -> Option<Box<Probing>> {
        (!specs.is_empty()).then(|| {
            Box::new(Probing {
                specs,
                set,
                verdict: ProbeVerdict::default(),
                started_at,
            })
        })
    }
}

/// The verdict of a stream without probes.
static NO_PROBE_VERDICT: ProbeVerdict = ProbeVerdict {
    starting: false,
    failing: None,
    not_ready: None,
};

impl Observed {
    pub fn probe_specs(&self) -> &[ProbeSpec] {
        self.probing.as_ref().map_or(&[], |p| &p.specs)
    }

    /// The running worker's probe records, when it has probes.
    pub fn probes(&self) -> Option<&ProbeSet> {
        self.probing.as_ref()?.set.as_ref()
    }

    pub fn probe_verdict(&self) -> &ProbeVerdict {
        self.probing
            .as_ref()
            .map_or(&NO_PROBE_VERDICT, |p| &p.verdict)
    }
}
