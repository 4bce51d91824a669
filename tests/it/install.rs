//! `scripts/install.sh` and the service templates (SPEC 3.9): installing
//! into a project, idempotence, never overwriting a file the user changed,
//! upgrading a file nobody changed, and the rendered systemd units, launchd
//! plist and cron line being valid. The test's own debug binary is installed
//! (`MONITOR_WORKERS_BINARY`) instead of building a release one.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use crate::helpers::{BIN, MANIFEST};

struct Install {
    _tmp: tempfile::TempDir,
    project: PathBuf,
    orch: PathBuf,
}

#[derive(Debug)]
struct Out {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Install {
    fn new() -> Install {
        let tmp = tempfile::Builder::new()
            .prefix("mw-install-")
            .tempdir()
            .unwrap();
        let project = tmp.path().canonicalize().unwrap().join("my project");
        fs::create_dir_all(&project).unwrap();
        let orch = project.join(".claude").join("orchestrator");
        Install {
            _tmp: tmp,
            project,
            orch,
        }
    }

    fn run(&self, args: &[&str]) -> Out {
        let out = Command::new("bash")
            .arg(Path::new(MANIFEST).join("scripts/install.sh"))
            .args(args)
            .env("MONITOR_WORKERS_BINARY", BIN)
            .env_remove("CARGO_TARGET_DIR")
            .output()
            .expect("install.sh runs");
        Out {
            code: out.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    fn install(&self) -> Out {
        let out = self.run(&[self.project.to_str().unwrap()]);
        assert_eq!(out.code, 0, "{out:?}");
        out
    }

    /// The name of the project's units: its folder's name and a hash of its
    /// path, read back from the rendered launchd plist.
    fn slug(&self) -> String {
        let names: Vec<String> = fs::read_dir(self.orch.join("service"))
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter_map(|n| {
                n.strip_prefix("com.monitor-workers.")?
                    .strip_suffix(".plist")
                    .map(str::to_string)
            })
            .collect();
        assert_eq!(names.len(), 1, "one plist: {names:?}");
        let slug = names[0].clone();
        let hash = slug.strip_prefix("my-project-").unwrap_or_else(|| {
            panic!("{slug} starts with the folder's name");
        });
        assert!(
            hash.len() == 8 && hash.chars().all(|c| c.is_ascii_hexdigit()),
            "{slug} ends with 8 hex digits of the path's hash"
        );
        slug
    }

    fn service(&self, name: &str) -> PathBuf {
        self.orch.join("service").join(name)
    }

    /// Every file under the orchestrator dir with its contents and mtime.
    fn files(&self) -> BTreeMap<PathBuf, (Vec<u8>, SystemTime)> {
        fn walk(dir: &Path, out: &mut BTreeMap<PathBuf, (Vec<u8>, SystemTime)>) {
            for e in fs::read_dir(dir).unwrap().filter_map(Result::ok) {
                let path = e.path();
                if path.is_dir() {
                    walk(&path, out);
                } else {
                    let modified = e.metadata().unwrap().modified().unwrap();
                    out.insert(path.clone(), (fs::read(&path).unwrap(), modified));
                }
            }
        }
        let mut out = BTreeMap::new();
        walk(&self.orch, &mut out);
        out
    }
}

fn template(name: &str) -> String {
    fs::read_to_string(Path::new(MANIFEST).join("templates").join(name)).unwrap()
}

fn mode(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// First run installs everything, a second changes nothing, a changed
/// wrapper is kept with the new version beside it as `.new`.
#[test]
fn install_is_idempotent_and_keeps_the_users_changes() {
    let i = Install::new();
    let first = i.install();
    assert!(
        first.stdout.contains("installed monitor-workers"),
        "{first:?}"
    );
    let binary = i.orch.join("monitor-workers");
    assert_eq!(fs::read(&binary).unwrap(), fs::read(BIN).unwrap());
    assert_eq!(mode(&binary), 0o755);
    let wrapper = i.orch.join("worker-wrapper.sh");
    assert_eq!(
        fs::read_to_string(&wrapper).unwrap(),
        template("worker-wrapper.sh")
    );
    assert_eq!(mode(&wrapper), 0o755);
    assert_eq!(
        fs::read_to_string(i.orch.join("worker-prompt.md")).unwrap(),
        template("worker-prompt.md")
    );
    if Path::new(MANIFEST).join("templates/monitor.toml").exists() {
        assert_eq!(
            fs::read_to_string(i.orch.join("monitor.toml.example")).unwrap(),
            template("monitor.toml")
        );
    } else {
        assert!(first.stdout.contains("no example config installed"));
    }
    assert!(
        !i.orch.join("monitor.toml").exists(),
        "an example never becomes the live config"
    );
    for text in [
        "systemctl --user enable --now",
        "launchctl bootstrap",
        "*/5 * * * *",
    ] {
        assert!(
            first.stdout.contains(text),
            "no {text:?} in:\n{}",
            first.stdout
        );
    }
    // The installed binary runs from its drop-in place.
    let version = Command::new(&binary).arg("--version").output().unwrap();
    assert!(version.status.success());

    let before = i.files();
    let second = i.install();
    assert!(
        second.stdout.contains("nothing changed"),
        "{}",
        second.stdout
    );
    assert!(!second.stdout.contains("installed "), "{}", second.stdout);
    assert_eq!(i.files(), before, "a second run touches no file");

    let mine = format!("{}\n# my local change\n", template("worker-wrapper.sh"));
    fs::write(&wrapper, &mine).unwrap();
    let third = i.install();
    assert!(
        third.stdout.contains(
            "kept your changed worker-wrapper.sh; wrote the new version to worker-wrapper.sh.new"
        ),
        "{}",
        third.stdout
    );
    assert_eq!(
        fs::read_to_string(&wrapper).unwrap(),
        mine,
        "the user's file is kept"
    );
    let new = i.orch.join("worker-wrapper.sh.new");
    assert_eq!(
        fs::read_to_string(&new).unwrap(),
        template("worker-wrapper.sh")
    );
    assert_eq!(mode(&new), 0o755);

    let before = i.files();
    let fourth = i.install();
    assert!(
        fourth.stdout.contains("nothing changed"),
        "{}",
        fourth.stdout
    );
    assert!(fourth
        .stdout
        .contains("worker-wrapper.sh.new already holds the new version"));
    assert_eq!(i.files(), before);
}

/// A file an earlier install.sh wrote and nobody changed is upgraded in
/// place (no `.new`); the binary is always replaced.
#[test]
fn files_nobody_changed_are_upgraded_and_the_binary_is_replaced() {
    let i = Install::new();
    i.install();
    // Pretend an earlier version of the prompt was installed: the file and
    // the manifest's record of it agree, and differ from the template.
    let prompt = i.orch.join("worker-prompt.md");
    fs::write(&prompt, "an older prompt\n").unwrap();
    let sum = String::from_utf8(
        Command::new("cksum")
            .stdin(fs::File::open(&prompt).unwrap())
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let fields: Vec<&str> = sum.split_whitespace().collect();
    let manifest = i.orch.join(".install-manifest");
    let text = fs::read_to_string(&manifest).unwrap();
    let text: String = text
        .lines()
        .map(|l| {
            if l.ends_with(" worker-prompt.md") {
                format!("{}-{} worker-prompt.md\n", fields[0], fields[1])
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    fs::write(&manifest, text).unwrap();
    let binary = i.orch.join("monitor-workers");
    fs::write(&binary, "#!/bin/sh\necho an old build\n").unwrap();

    let out = i.install();
    assert!(
        out.stdout.contains("updated worker-prompt.md"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("updated monitor-workers"),
        "{}",
        out.stdout
    );
    assert!(
        out.stdout.contains("keeps the old binary until restarted"),
        "{}",
        out.stdout
    );
    assert_eq!(
        fs::read_to_string(&prompt).unwrap(),
        template("worker-prompt.md")
    );
    assert!(!i.orch.join("worker-prompt.md.new").exists());
    assert_eq!(fs::read(&binary).unwrap(), fs::read(BIN).unwrap());
    assert_eq!(mode(&binary), 0o755);
}

#[test]
fn install_usage_errors() {
    let i = Install::new();
    let help = i.run(&["--help"]);
    assert_eq!(help.code, 0);
    assert!(
        help.stdout.contains("usage: scripts/install.sh"),
        "{help:?}"
    );

    let none = i.run(&[]);
    assert_eq!(none.code, 2, "{none:?}");
    assert!(none.stderr.contains("no project given"), "{none:?}");

    let missing = i.run(&["/nonexistent/project/dir"]);
    assert_eq!(missing.code, 2, "{missing:?}");
    assert!(missing
        .stderr
        .contains("/nonexistent/project/dir does not exist"));

    let unknown = i.run(&["--frobnicate", i.project.to_str().unwrap()]);
    assert_eq!(unknown.code, 2, "{unknown:?}");
    assert!(unknown.stderr.contains("unknown option --frobnicate"));

    let bad_binary = i.run(&[
        "--binary",
        "/nonexistent/monitor-workers",
        i.project.to_str().unwrap(),
    ]);
    assert_eq!(bad_binary.code, 3, "{bad_binary:?}");
    assert!(bad_binary.stderr.contains("is not an executable file"));
    assert!(!i.orch.exists(), "nothing is installed after an error");
}

/// The templates carry placeholders; the rendered files carry the project.
#[test]
fn templates_have_placeholders_and_rendered_files_have_none() {
    for name in [
        "monitor-workers.service",
        "monitor-workers-check.service",
        "monitor-workers-check.timer",
        "com.monitor-workers.plist",
        "cron.txt",
    ] {
        assert!(template(name).contains("@PROJECT@"), "{name}");
    }
    for name in ["monitor-workers.service", "monitor-workers-check.service"] {
        let text = template(name);
        assert!(
            text.lines().any(|l| l == "KillMode=process"),
            "{name} must leave the workers running"
        );
    }
    assert!(template("monitor-workers.service").contains("Restart=on-failure"));
    assert!(
        template("monitor-workers.service")
            .lines()
            .any(|l| l == "RestartPreventExitStatus=2 3"),
        "a bad config (exit 2) or an uncheckable project (exit 3) must not restart forever"
    );
    for name in ["monitor-workers.service", "monitor-workers-check.service"] {
        let text = template(name);
        let path = text
            .lines()
            .find_map(|l| l.strip_prefix("Environment=PATH="))
            .unwrap_or_else(|| panic!("{name} sets no PATH"));
        for dir in [
            "/opt/homebrew/bin",
            "/usr/local/bin",
            "%h/.local/bin",
            "/usr/bin",
            "/bin",
        ] {
            assert!(
                path.split(':').any(|d| d == dir),
                "{name}: {dir} not in {path}"
            );
        }
    }
    assert!(template("monitor-workers.service").contains("--daemon --auto-restart"));

    let i = Install::new();
    i.install();
    let project = i.project.display().to_string();
    for e in fs::read_dir(i.orch.join("service")).unwrap() {
        let path = e.unwrap().path();
        let text = fs::read_to_string(&path).unwrap();
        assert!(
            !text.contains('@'),
            "{} keeps a placeholder:\n{text}",
            path.display()
        );
        assert!(text.contains(&project), "{}", path.display());
    }
}

/// `systemd-analyze verify` accepts the rendered units (when it exists).
#[test]
fn rendered_systemd_units_verify() {
    let has_systemd_analyze = Command::new("sh")
        .args(["-c", "command -v systemd-analyze"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_systemd_analyze {
        eprintln!("note: systemd-analyze not found; the systemd units are not verified");
        return;
    }
    let i = Install::new();
    i.install();
    let slug = i.slug();
    let units = [
        i.service(&format!("monitor-workers-{slug}.service")),
        i.service(&format!("monitor-workers-check-{slug}.service")),
        i.service(&format!("monitor-workers-check-{slug}.timer")),
    ];
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(&units)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "systemd-analyze verify failed:\n{stderr}"
    );
    for line in stderr.lines() {
        assert!(
            !line.contains("Unknown")
                && !line.contains("ignoring")
                && !line.contains(".service:")
                && !line.contains(".timer:"),
            "systemd-analyze complains: {line}"
        );
    }
}

/// The rendered plist loads with plistlib, keeps the daemon alive only after
/// a crash (never in a loop on exit 2 or 3), gives it a PATH where `claude`
/// lives, and writes its output into a folder that exists.
#[test]
fn rendered_launchd_plist_is_well_formed() {
    let i = Install::new();
    i.install();
    let plist = i.service(&format!("com.monitor-workers.{}.plist", i.slug()));
    let script = r#"
import json, plistlib, sys
with open(sys.argv[1], "rb") as f:
    p = plistlib.load(f)
print(json.dumps(p))
"#;
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&plist)
        .output()
        .expect("python3 runs");
    assert!(
        out.status.success(),
        "plistlib rejects {}: {}",
        plist.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let p: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(p["Label"], format!("com.monitor-workers.{}", i.slug()));
    assert_eq!(
        p["ProgramArguments"],
        serde_json::json!([
            i.orch.join("monitor-workers").display().to_string(),
            "--daemon",
            "--auto-restart"
        ])
    );
    assert_eq!(p["WorkingDirectory"], i.project.display().to_string());
    assert_eq!(p["RunAtLoad"], true);
    // launchd has no per-exit-code exemption; SuccessfulExit=false would
    // restart it after exit 2 or 3 forever.
    assert_eq!(p["KeepAlive"], serde_json::json!({ "Crashed": true }));
    let path = p["EnvironmentVariables"]["PATH"].as_str().unwrap();
    let home = std::env::var("HOME").unwrap();
    for dir in [
        "/opt/homebrew/bin".to_string(),
        "/usr/local/bin".to_string(),
        format!("{home}/.local/bin"),
        "/usr/bin".to_string(),
        "/bin".to_string(),
    ] {
        assert!(path.split(':').any(|d| d == dir), "{dir} not in {path}");
    }
    for key in ["StandardOutPath", "StandardErrorPath"] {
        let file = PathBuf::from(p[key].as_str().unwrap());
        assert_eq!(file.parent().unwrap(), i.orch.join("logs"), "{key}");
        assert!(
            file.parent().unwrap().is_dir(),
            "launchd does not create {}",
            file.parent().unwrap().display()
        );
    }
}

/// The cron line: five time fields, then a PATH for this command only and
/// the installed binary, one-shot with `--auto-restart --quiet`; the shell
/// reads the path back intact.
#[test]
fn rendered_cron_line_runs_the_binary_every_five_minutes() {
    let i = Install::new();
    i.install();
    let text = fs::read_to_string(i.service("cron.txt")).unwrap();
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .collect();
    assert_eq!(lines.len(), 1, "{text}");
    let fields: Vec<&str> = lines[0].split_whitespace().collect();
    let time_field =
        |f: &str| !f.is_empty() && f.chars().all(|c| c.is_ascii_digit() || "*/,-".contains(c));
    assert!(fields.len() > 5, "{}", lines[0]);
    assert!(fields[..5].iter().all(|f| time_field(f)), "{}", lines[0]);
    assert_eq!(fields[0], "*/5");
    let command = lines[0].splitn(6, ' ').nth(5).unwrap();
    assert!(command.contains("--auto-restart --quiet"), "{command}");
    assert!(!command.contains("--daemon"));
    // What cron's shell would run: a PATH assignment, then the binary.
    let out = Command::new("sh")
        .arg("-c")
        .arg(format!("set -- {command}; printf '%s\\n' \"$@\""))
        .env("HOME", "/home/someone")
        .env("PATH", "/usr/bin:/bin")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let words: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        words[0], "PATH=/opt/homebrew/bin:/usr/local/bin:/home/someone/.local/bin:/usr/bin:/bin",
        "{command}"
    );
    assert_eq!(
        words[1],
        i.orch.join("monitor-workers").display().to_string()
    );
}
