//! Settings the unit tests of act and record share: auto-restart on, the
//! default policy, short waits, no config, no hooks.

use std::time::Duration;

use crate::config::ConfigFile;
use crate::supervise::plan::PlanSettings;
use crate::supervise::policy::{BreakerPolicy, RestartPolicy};
use crate::tick::TickSettings;

pub(crate) fn settings() -> TickSettings {
    TickSettings {
        plan: PlanSettings {
            auto_restart: true,
            policy: RestartPolicy::default(),
            breaker: BreakerPolicy::default(),
            same_failure_limit: 0,
            min_uptime: Duration::ZERO,
        },
        busy_timeout: Duration::from_secs(1),
        spawn_wait: Duration::from_secs(1),
        hint_auto_restart: true,
        grace: Duration::from_secs(1),
        config: ConfigFile::default(),
        own_components: false,
        daemon: false,
        on_give_up: None,
        statsd: None,
        recover_tasks: None,
        start_ready: false,
    }
}
