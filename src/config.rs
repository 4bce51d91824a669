//! `<ORCH>/monitor.toml`: optional settings for the monitor, the workers'
//! probes, per-stream overrides and extra components (processes the daemon
//! owns, Docker containers). Unknown keys and bad values are rejected with
//! the key and the line; flags given on the command line override the file.
//! `templates/monitor.toml` documents every key.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::layout::StreamId;
use crate::probe::{CheckSpec, ProbeRole, ProbeSpec, Timing};
use crate::supervise::policy::RestartKind;

#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub monitor: MonitorSection,
    #[serde(default)]
    pub breaker: BreakerSection,
    /// Settings of every stream worker.
    #[serde(default)]
    pub workers: WorkerSection,
    /// Per-stream overrides of `[workers]`, keyed by stream id.
    #[serde(default)]
    pub streams: BTreeMap<String, WorkerSection>,
    /// Extra components, `[[component]]`.
    #[serde(default, rename = "component")]
    pub components: Vec<ComponentSection>,
}

/// `[monitor]`: defaults of the command-line flags.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MonitorSection {
    pub auto_restart: Option<bool>,
    pub interval: Option<u64>,
    pub max_restarts: Option<u32>,
    pub restart_policy: Option<RestartKind>,
    pub backoff_base: Option<f64>,
    pub backoff_max: Option<f64>,
    /// Seconds of health after which the backoff starts afresh.
    pub reset_after: Option<u64>,
    /// At most `rate_limit` restarts per worker within `rate_window` seconds.
    pub rate_limit: Option<u32>,
    pub rate_window: Option<u64>,
    pub busy_timeout: Option<f64>,
    /// Seconds between SIGTERM and SIGKILL when stopping a worker.
    pub grace: Option<f64>,
    /// Give up after this many restarts in a row failing the same way.
    pub same_failure_limit: Option<u32>,
    /// The startup window in seconds: dying sooner is a failed start.
    pub min_uptime: Option<f64>,
    /// Command run with the give-up event as JSON on stdin.
    pub on_give_up: Option<String>,
    /// Also send metrics as StatsD to this loopback address ("127.0.0.1:8125").
    pub statsd: Option<String>,
    /// Recover in-progress tasks of dead workers after this many seconds.
    pub recover_tasks_after: Option<u64>,
}

/// `[breaker]`: the global restart breaker.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BreakerSection {
    pub window: Option<u64>,
    pub min_failures: Option<usize>,
    pub cooldown: Option<u64>,
}

/// `[workers]` and `[streams.<id>]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkerSection {
    pub restart_policy: Option<RestartKind>,
    pub max_restarts: Option<u32>,
    pub grace: Option<f64>,
    /// How the worker is started: "wrapper" (legacy), "claude-bg" (a Claude
    /// Code background session, the default in a tc project) or "tc-worker".
    pub launcher: Option<LauncherKind>,
    /// The command that stops a Claude session, `{id}` standing for its id;
    /// without it the monitor never stops a session.
    pub session_stop: Option<Vec<String>>,
    /// `--max-budget-usd` of the tc-worker launcher.
    pub max_budget_usd: Option<f64>,
    /// Probes, `[[workers.probe]]`; a stream listing its own replaces these.
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeSection>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeSection {
    pub role: ProbeRole,
    pub check: CheckSpec,
    #[serde(default)]
    pub initial_delay: f64,
    #[serde(default = "default_period")]
    pub period: f64,
    #[serde(default = "default_timeout")]
    pub timeout: f64,
    #[serde(default = "one")]
    pub success_threshold: u32,
    #[serde(default = "three")]
    pub failure_threshold: u32,
}

fn default_period() -> f64 {
    10.0
}
fn default_timeout() -> f64 {
    1.0
}
fn one() -> u32 {
    1
}
fn three() -> u32 {
    3
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ComponentType {
    Process,
    Docker,
}

/// `[[component]]`: something supervised besides the stream workers.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ComponentSection {
    pub name: String,
    #[serde(rename = "type")]
    pub kind: ComponentType,
    /// process: the command and its arguments.
    pub command: Option<Vec<String>>,
    /// process: working directory (relative to the project root).
    pub cwd: Option<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// docker: the container name.
    pub container: Option<String>,
    pub restart_policy: Option<RestartKind>,
    pub max_restarts: Option<u32>,
    pub grace: Option<f64>,
    #[serde(default, rename = "probe")]
    pub probes: Vec<ProbeSection>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {message}")]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

/// The largest config file read; a bigger one is refused, not parsed.
const MAX_CONFIG_BYTES: u64 = 1 << 20;

/// Reads the config file; a missing file is an empty config. A FIFO or
/// symlink in its place is refused, never waited on nor followed.
pub fn load(path: &Path) -> Result<ConfigFile, ConfigError> {
    match crate::process::safe_file::read_capped(path, MAX_CONFIG_BYTES) {
        Ok(bytes) => {
            let text = String::from_utf8(bytes).map_err(|_| ConfigError {
                path: path.display().to_string(),
                message: "it is not UTF-8 text".into(),
            })?;
            parse(&text).map_err(|message| ConfigError {
                path: path.display().to_string(),
                message,
            })
        }
        Err(e) if e.is_missing() => Ok(ConfigFile::default()),
        Err(e) => Err(ConfigError {
            path: path.display().to_string(),
            message: format!("cannot read it: {e}"),
        }),
    }
}

fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Parses and validates; the error is one line naming the key and the line.
pub fn parse(text: &str) -> Result<ConfigFile, String> {
    let config: ConfigFile = toml::from_str(text).map_err(|e| {
        let message = e.message().replace('\n', " ");
        match e.span() {
            Some(span) => format!("line {}: {message}", line_of(text, span.start)),
            None => message,
        }
    })?;
    // Keys and names are quoted raw in messages: keep the error one line.
    validate(&config, text).map_err(|e| e.replace(['\n', '\r'], " "))?;
    Ok(config)
}

/// The line where `needle` first appears, to point at semantic errors.
fn locate(text: &str, needle: &str) -> String {
    text.find(needle)
        .map(|at| format!("line {}: ", line_of(text, at)))
        .unwrap_or_default()
}

fn validate(config: &ConfigFile, text: &str) -> Result<(), String> {
    let m = &config.monitor;
    let positive = [
        ("interval", m.interval.map(|v| v as f64)),
        ("backoff_max", m.backoff_max),
        ("rate_window", m.rate_window.map(|v| v as f64)),
    ];
    for (key, value) in positive {
        // `!(v > 0)` also refuses NaN; the upper bound refuses infinity.
        if value.is_some_and(|v| !(v > 0.0 && v <= 86_400.0 * 365.0)) {
            return Err(format!(
                "{}[monitor] {key} must be greater than 0 (and a finite number of seconds)",
                locate(text, key)
            ));
        }
    }
    for (key, value) in [
        ("backoff_base", m.backoff_base),
        ("busy_timeout", m.busy_timeout),
        ("grace", m.grace),
        ("min_uptime", m.min_uptime),
    ] {
        if value.is_some_and(|v| !(0.0..=86_400.0).contains(&v)) {
            return Err(format!(
                "{}[monitor] {key} must be between 0 and 86400 seconds",
                locate(text, key)
            ));
        }
    }
    if m.on_give_up.as_deref().is_some_and(|c| c.trim().is_empty()) {
        return Err(format!(
            "{}[monitor] on_give_up must not be empty",
            locate(text, "on_give_up")
        ));
    }
    validate_launch(&config.workers, "[workers]", text)?;
    for (id, section) in &config.streams {
        validate_launch(section, &format!("[streams.{id}]"), text)?;
    }
    let mut sections: Vec<(String, &[ProbeSection])> =
        vec![("[workers]".into(), &config.workers.probes)];
    for (id, section) in &config.streams {
        StreamId::parse(id).map_err(|why| {
            format!(
                "{}[streams.{id}] is not a valid stream id: {why}",
                locate(text, id)
            )
        })?;
        sections.push((format!("[streams.{id}]"), &section.probes));
    }
    let mut names = std::collections::BTreeSet::new();
    for c in &config.components {
        let at = locate(text, &format!("\"{}\"", c.name));
        StreamId::parse(&c.name)
            .map_err(|why| format!("{at}component name {:?} is not usable: {why}", c.name))?;
        if !names.insert(c.name.clone()) {
            return Err(format!("{at}component {} is declared twice", c.name));
        }
        match c.kind {
            ComponentType::Process if c.command.as_ref().is_none_or(|cmd| cmd.is_empty()) => {
                return Err(format!(
                    "{at}component {} (type process) needs command = [\"program\", \"arg\", ...]",
                    c.name
                ))
            }
            ComponentType::Docker if c.container.as_deref().is_none_or(str::is_empty) => {
                return Err(format!(
                    "{at}component {} (type docker) needs container = \"name\"",
                    c.name
                ))
            }
            _ => {}
        }
        sections.push((format!("component {}", c.name), &c.probes));
    }
    for (place, probes) in sections {
        for p in probes {
            let at = locate(text, "role");
            if p.success_threshold == 0 || p.failure_threshold == 0 {
                return Err(format!("{at}{place}: probe thresholds must be at least 1"));
            }
            let day = 86_400.0;
            let seconds_ok = |v: f64, min_exclusive: bool| {
                (if min_exclusive { v > 0.0 } else { v >= 0.0 }) && v <= day
            };
            if !(seconds_ok(p.period, true)
                && seconds_ok(p.timeout, true)
                && seconds_ok(p.initial_delay, false))
            {
                return Err(format!(
                    "{at}{place}: probe period and timeout must be > 0, initial_delay >= 0, each at most a day"
                ));
            }
            if matches!(p.check, CheckSpec::MinUptime { .. }) && p.role != ProbeRole::Startup {
                return Err(format!(
                    "{at}{place}: a min-uptime check only makes sense as a startup probe"
                ));
            }
            if let CheckSpec::Exec { command } = &p.check {
                if command.is_empty() {
                    return Err(format!(
                        "{at}{place}: an exec check needs command = [\"program\", ...]"
                    ));
                }
            }
        }
    }
    Ok(())
}

/// The launcher settings of `[workers]` or a `[streams.<id>]`.
fn validate_launch(section: &WorkerSection, place: &str, text: &str) -> Result<(), String> {
    if let Some(command) = &section.session_stop {
        if command.first().is_none_or(|p| p.trim().is_empty()) {
            return Err(format!(
                "{}{place} session_stop needs [\"program\", \"{{id}}\", ...]",
                locate(text, "session_stop")
            ));
        }
    }
    if let Some(budget) = section.max_budget_usd {
        if !(budget > 0.0 && budget.is_finite()) {
            return Err(format!(
                "{}{place} max_budget_usd must be a positive number of dollars",
                locate(text, "max_budget_usd")
            ));
        }
    }
    Ok(())
}

impl ProbeSection {
    pub fn spec(&self) -> ProbeSpec {
        ProbeSpec {
            role: self.role,
            check: self.check.clone(),
            timing: Timing {
                initial_delay_ms: (self.initial_delay * 1000.0) as u64,
                period_ms: (self.period * 1000.0) as u64,
                timeout_ms: (self.timeout * 1000.0) as u64,
                success_threshold: self.success_threshold,
                failure_threshold: self.failure_threshold,
            },
        }
    }
}

impl ConfigFile {
    /// The probes of a stream: its own if it lists any, else the workers'.
    pub fn stream_probes(&self, id: &str) -> Vec<ProbeSpec> {
        let own = self
            .streams
            .get(id)
            .map(|s| &s.probes)
            .filter(|p| !p.is_empty());
        own.unwrap_or(&self.workers.probes)
            .iter()
            .map(ProbeSection::spec)
            .collect()
    }

    /// A per-stream setting, else the `[workers]` one.
    pub fn stream_setting<T: Clone>(
        &self,
        id: &str,
        pick: impl Fn(&WorkerSection) -> Option<T>,
    ) -> Option<T> {
        self.streams
            .get(id)
            .and_then(&pick)
            .or_else(|| pick(&self.workers))
    }
}

/// Which launcher starts a stream's worker (`[workers] launcher`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LauncherKind {
    Wrapper,
    ClaudeBg,
    TcWorker,
}

impl LauncherKind {
    pub fn name(self) -> &'static str {
        match self {
            LauncherKind::Wrapper => "wrapper",
            LauncherKind::ClaudeBg => "claude-bg",
            LauncherKind::TcWorker => "tc-worker",
        }
    }

    /// The launcher of a stream: its own setting, else the `[workers]` one,
    /// else `claude-bg` in a tc project and `wrapper` in a legacy one.
    pub fn pick(stream: Option<Self>, workers: Option<Self>, tc_project: bool) -> Self {
        stream.or(workers).unwrap_or(if tc_project {
            LauncherKind::ClaudeBg
        } else {
            LauncherKind::Wrapper
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_config_parses() {
        let text = r#"
[monitor]
auto_restart = true
interval = 15
max_restarts = 4
restart_policy = "on-failure"
on_give_up = "notify-send gave-up"

[breaker]
min_failures = 2

[[workers.probe]]
role = "liveness"
check = { kind = "log-activity", idle_secs = 600 }
failure_threshold = 2

[[workers.probe]]
role = "startup"
check = { kind = "min-uptime", secs = 10 }

[streams.Stream-A]
max_restarts = 9

[[streams.Stream-A.probe]]
role = "readiness"
check = { kind = "tcp", address = "127.0.0.1:7000" }

[[component]]
name = "mcp-server"
type = "process"
command = ["node", "server.js"]
env = { PORT = "3000" }

[[component]]
name = "agent-runner"
type = "docker"
container = "agent-runner"
"#;
        let c = parse(text).unwrap();
        assert_eq!(c.monitor.max_restarts, Some(4));
        assert_eq!(c.monitor.restart_policy, Some(RestartKind::OnFailure));
        assert_eq!(c.workers.probes.len(), 2);
        assert_eq!(
            c.stream_probes("Stream-A").len(),
            1,
            "a stream's own probes replace the defaults"
        );
        assert_eq!(c.stream_probes("Stream-B").len(), 2);
        assert_eq!(c.stream_setting("Stream-A", |w| w.max_restarts), Some(9));
        assert_eq!(c.components.len(), 2);
        assert_eq!(c.workers.probes[0].spec().timing.failure_threshold, 2);
    }

    #[test]
    fn launcher_settings_parse_and_override_per_stream() {
        let c = parse(
            r#"
[workers]
launcher = "claude-bg"
session_stop = ["claude", "stop", "{id}"]
max_budget_usd = 3.0

[streams.s7]
launcher = "tc-worker"
"#,
        )
        .unwrap();
        assert_eq!(
            c.stream_setting("s7", |w| w.launcher),
            Some(LauncherKind::TcWorker)
        );
        assert_eq!(
            c.stream_setting("s8", |w| w.launcher),
            Some(LauncherKind::ClaudeBg)
        );
        assert_eq!(c.stream_setting("s7", |w| w.max_budget_usd), Some(3.0));
        assert_eq!(
            c.stream_setting("s7", |w| w.session_stop.clone()).unwrap(),
            ["claude", "stop", "{id}"]
        );
    }

    #[test]
    fn errors_name_the_key_and_the_line() {
        let cases = [
            ("[monitor]\nbogus = 1\n", "line 2", "bogus"),
            ("[monitor]\ninterval = \"soon\"\n", "line 2", "invalid type"),
            ("[monitor]\ninterval = 0\n", "line 2", "interval must be greater than 0"),
            ("[nonsense]\n", "line 1", "nonsense"),
            ("[[workers.probe]]\nrole = \"liveness\"\ncheck = { kind = \"telepathy\" }\n", "line 3", "telepathy"),
            ("[[workers.probe]]\nrole = \"liveness\"\ncheck = { kind = \"tcp\", adress = \"x\" }\n", "line 3", "adress"),
            ("[[workers.probe]]\nrole = \"sometimes\"\ncheck = { kind = \"tcp\", address = \"x\" }\n", "line 2", "sometimes"),
            ("[[workers.probe]]\nrole = \"liveness\"\ncheck = { kind = \"tcp\", address = \"x\" }\nfailure_threshold = 0\n", "line 2", "at least 1"),
            ("[[component]]\nname = \"x\"\ntype = \"process\"\n", "line 2", "needs command"),
            ("[[component]]\nname = \"../x\"\ntype = \"docker\"\ncontainer = \"c\"\n", "line 2", "not usable"),
            ("[streams.\"../evil\"]\nmax_restarts = 1\n", "line 1", "not a valid stream id"),
            ("[monitor]\ninterval = 5\ninterval = 6\n", "line 3", "duplicate"),
            ("[workers]\nlauncher = \"ssh\"\n", "line 2", "ssh"),
            ("[workers]\nsession_stop = []\n", "line 2", "session_stop needs"),
            ("[streams.s1]\nmax_budget_usd = -1.0\n", "line 2", "max_budget_usd must be"),
        ];
        for (text, line, fragment) in cases {
            let err = parse(text).unwrap_err();
            assert!(err.starts_with(line), "{text:?}: {err}");
            assert!(err.contains(fragment), "{text:?}: {err}");
            assert!(!err.contains('\n'), "one line: {err:?}");
        }
    }
}
