//! The prompt a restarted worker gets: `templates/worker-prompt.md` (compiled
//! in) unless the project has its own `<ORCH>/worker-prompt.md`, with the
//! stream's facts filled into its `{{placeholders}}`. A tc project's worker
//! gets upstream's dispatch text instead (`templates/tc-worker-prompt.md`,
//! overridable by `<ORCH>/tc-worker-prompt.md`): "Work on stream <id>. Run:
//! tc task list --stream <id> --json", which is also how a session started
//! by anyone names its stream. A retry context follows either.

use std::path::Path;

pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/worker-prompt.md");

/// Upstream's dispatch text, the prompt of a tc stream's worker.
pub const TC_DISPATCH_TEMPLATE: &str = include_str!("../templates/tc-worker-prompt.md");

/// The file name of a project's own tc dispatch template, in `<ORCH>`.
pub const TC_DISPATCH_OVERRIDE: &str = "tc-worker-prompt.md";

/// A tc stream's prompt: the dispatch template with the stream's id (and
/// name) filled in, then the retry context of a restart, if any.
pub fn tc_dispatch(
    template: &str,
    stream_id: &str,
    stream_name: &str,
    retry_context: Option<&str>,
) -> String {
    let mut prompt = template
        .replace("{{stream_id}}", stream_id)
        .replace("{{stream_name}}", stream_name)
        .trim_end()
        .to_string();
    if let Some(context) = retry_context {
        prompt.push_str("\n\n");
        prompt.push_str(context);
    }
    prompt
}

/// What the template can mention.
#[derive(Debug, Clone)]
pub struct PromptFacts<'a> {
    pub stream_id: &'a str,
    pub stream_name: &'a str,
    pub dependencies: &'a [String],
    pub initiative_id: &'a str,
    pub work_dir: &'a Path,
}

/// The project's template if it has one, else the built-in one (a FIFO or
/// symlink in its place is not read: a restart never waits on it).
pub fn load_template(override_path: &Path) -> String {
    crate::process::safe_file::read_capped(override_path, 1 << 20)
        .ok()
        .and_then(|bytes| String::from_utf8(bytes).ok())
        .unwrap_or_else(|| DEFAULT_TEMPLATE.to_string())
}

pub fn render(template: &str, facts: &PromptFacts<'_>) -> String {
    let deps = if facts.dependencies.is_empty() {
        "none".to_string()
    } else {
        facts.dependencies.join(", ")
    };
    template
        .replace("{{stream_id}}", facts.stream_id)
        .replace("{{stream_name}}", facts.stream_name)
        .replace("{{dependencies}}", &deps)
        .replace("{{initiative_id}}", facts.initiative_id)
        .replace("{{work_dir}}", &facts.work_dir.display().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tc_dispatch_is_upstreams_text_plus_the_retry_context() {
        assert_eq!(
            tc_dispatch(TC_DISPATCH_TEMPLATE, "3", "backend", None),
            "Work on stream 3. Run: tc task list --stream 3 --json"
        );
        let retried = tc_dispatch(
            TC_DISPATCH_TEMPLATE,
            "3",
            "backend",
            Some("Attempt 2: crashed."),
        );
        assert!(retried.starts_with("Work on stream 3. Run:"));
        assert!(retried.ends_with("\n\nAttempt 2: crashed."));
    }

    #[test]
    fn fills_every_placeholder() {
        let deps = vec!["Stream-A".to_string(), "Stream-B".to_string()];
        let facts = PromptFacts {
            stream_id: "Stream-C",
            stream_name: "Frontend",
            dependencies: &deps,
            initiative_id: "init-1",
            work_dir: Path::new("/p/.claude/worktrees/Stream-C"),
        };
        let out = render(DEFAULT_TEMPLATE, &facts);
        assert!(!out.contains("{{"), "unfilled placeholder in: {out}");
        assert!(
            out.contains("Stream-C")
                && out.contains("Stream-A, Stream-B")
                && out.contains("init-1")
        );
        let none = render(
            "deps: {{dependencies}}",
            &PromptFacts {
                dependencies: &[],
                ..facts
            },
        );
        assert_eq!(none, "deps: none");
    }
}
