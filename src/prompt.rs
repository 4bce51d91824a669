//! The prompt a restarted worker gets: `templates/worker-prompt.md` (compiled
//! in) unless the project has its own `<ORCH>/worker-prompt.md`, with the
//! stream's facts filled into its `{{placeholders}}`.

use std::path::Path;

pub const DEFAULT_TEMPLATE: &str = include_str!("../templates/worker-prompt.md");

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
