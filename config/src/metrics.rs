//! Counters and gauges in Prometheus' text exposition format, written as one
//! file per daemon into `metrics_dir` for node_exporter's textfile collector
//! (or anything that reads `*.prom` files; `chatmail-relay metrics` prints
//! them all).
//!
//! Each daemon owns its file (`chatmail-milter.prom`, …), so no two
//! processes ever write the same one, and counters restart at zero with
//! their daemon, as Prometheus expects of counters. The file is replaced by
//! a rename, so a reader never sees half of it.
//!
//! Label values come from fixed vocabularies (reasons, directions); a
//! family that would grow past [`MAX_SERIES_PER_FAMILY`] folds further
//! values into `other`, so a bug or an attacker cannot make the file grow
//! without bound. Counting never fails and never blocks mail for long: a
//! mutex held for a map update.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

/// Most label combinations one metric family keeps; later ones are counted
/// under every label set to `other`.
pub const MAX_SERIES_PER_FAMILY: usize = 200;
/// How often a daemon rewrites its file.
pub const WRITE_INTERVAL: Duration = Duration::from_secs(5);
/// Label value for what was folded away.
pub const OTHER: &str = "other";

/// What kind of number a family holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up (restarts at zero with the daemon).
    Counter,
    /// Goes up and down; set to the current value.
    Gauge,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
        }
    }
}

/// One documented metric family.
#[derive(Debug, Clone, Copy)]
pub struct FamilyDoc {
    pub name: &'static str,
    pub kind: Kind,
    /// Label names, in the order values are given.
    pub labels: &'static [&'static str],
    pub help: &'static str,
}

#[derive(Debug, Default)]
struct Family {
    series: BTreeMap<Vec<String>, f64>,
}

/// The metric families of one daemon and their current values.
#[derive(Debug)]
pub struct Registry {
    docs: &'static [FamilyDoc],
    families: Mutex<Vec<Family>>,
}

impl Registry {
    /// A registry for `docs`; families without samples still appear (with
    /// HELP and TYPE), so a reader can tell "zero" from "not running".
    pub fn new(docs: &'static [FamilyDoc]) -> Registry {
        Registry { docs, families: Mutex::new(docs.iter().map(|_| Family::default()).collect()) }
    }

    fn update(&self, name: &str, labels: &[&str], change: impl FnOnce(&mut f64)) {
        let Some(index) = self.docs.iter().position(|d| d.name == name) else {
            // A programming error (an undocumented name): counting must not
            // take a daemon down, and the unit tests of each daemon's
            // families catch it.
            debug_assert!(false, "metric {name} is not documented");
            return;
        };
        let doc = &self.docs[index];
        let mut key: Vec<String> = doc.labels.iter().enumerate().map(|(i, _)| sanitize(labels.get(i).copied().unwrap_or(""))).collect();
        let mut families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let family = &mut families[index];
        if !family.series.contains_key(&key) && family.series.len() >= MAX_SERIES_PER_FAMILY {
            key = doc.labels.iter().map(|_| OTHER.to_owned()).collect();
        }
        change(family.series.entry(key).or_insert(0.0));
    }

    /// Adds one to the counter `name` with `labels` (values in the family's
    /// label order).
    pub fn inc(&self, name: &str, labels: &[&str]) {
        self.add(name, labels, 1.0);
    }

    /// Adds `amount` to the counter `name` with `labels`.
    pub fn add(&self, name: &str, labels: &[&str], amount: f64) {
        self.update(name, labels, |v| *v += amount);
    }

    /// Sets the gauge `name` with `labels` to `value`.
    pub fn set(&self, name: &str, labels: &[&str], value: f64) {
        self.update(name, labels, |v| *v = value);
    }

    /// The current value of `name` with `labels` (tests, summaries).
    pub fn get(&self, name: &str, labels: &[&str]) -> Option<f64> {
        let index = self.docs.iter().position(|d| d.name == name)?;
        let key: Vec<String> = labels.iter().map(|l| sanitize(l)).collect();
        self.families.lock().unwrap_or_else(PoisonError::into_inner)[index].series.get(&key).copied()
    }

    /// Everything in the text exposition format (version 0.0.4).
    pub fn render(&self) -> String {
        let families = self.families.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = String::new();
        for (doc, family) in self.docs.iter().zip(families.iter()) {
            let _ = writeln!(out, "# HELP {} {}", doc.name, escape_help(doc.help));
            let _ = writeln!(out, "# TYPE {} {}", doc.name, doc.kind.name());
            for (values, value) in &family.series {
                out.push_str(doc.name);
                if !doc.labels.is_empty() {
                    out.push('{');
                    for (i, (label, v)) in doc.labels.iter().zip(values).enumerate() {
                        if i > 0 {
                            out.push(',');
                        }
                        let _ = write!(out, "{label}=\"{}\"", escape_label(v));
                    }
                    out.push('}');
                }
                let _ = writeln!(out, " {}", format_value(*value));
            }
        }
        out
    }
}

/// Label values are short words: anything else is cut and replaced, so one
/// odd value (an error text) cannot make a series per message.
fn sanitize(value: &str) -> String {
    let mut clean: String = value
        .chars()
        .take(64)
        .map(|c| if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@') { c } else { '_' })
        .collect();
    if clean.is_empty() {
        clean.push_str("none");
    }
    clean
}

fn escape_help(text: &str) -> String {
    text.replace('\\', "\\\\").replace('\n', "\\n")
}

fn escape_label(text: &str) -> String {
    text.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

fn format_value(value: f64) -> String {
    if value.fract() == 0.0 && value.abs() < 1e15 {
        format!("{}", value as i64)
    } else {
        format!("{value}")
    }
}

/// Where a daemon's metrics go: `{dir}/{stem}.prom`.
#[derive(Debug, Clone)]
pub struct MetricsFile {
    pub dir: PathBuf,
    pub stem: String,
}

impl MetricsFile {
    /// `None` when `metrics_dir` is empty (metrics off).
    pub fn new(dir: Option<&Path>, stem: &str) -> Option<MetricsFile> {
        dir.map(|dir| MetricsFile { dir: dir.to_owned(), stem: stem.to_owned() })
    }

    pub fn path(&self) -> PathBuf {
        self.dir.join(format!("{}.prom", self.stem))
    }

    /// Replaces the file with `registry`'s current values; the directory
    /// must exist (the package makes it). The temporary
    /// name does not end in `.prom`, so the textfile collector never reads
    /// a half-written file. Not synced: losing the last values at a crash
    /// costs nothing (counters restart anyway).
    pub fn write(&self, registry: &Registry) -> io::Result<()> {
        let text = registry.render();
        let tmp = self.dir.join(format!(".{}.prom.{}.tmp", self.stem, std::process::id()));
        let context = |e: io::Error, what: &str, p: &Path| io::Error::new(e.kind(), format!("{what} {}: {e}", p.display()));
        std::fs::write(&tmp, text).map_err(|e| context(e, "writing", &tmp))?;
        std::fs::rename(&tmp, self.path()).map_err(|e| {
            let _ = std::fs::remove_file(&tmp);
            context(e, "renaming", &tmp)
        })
    }
}

/// Rewrites `file` every [`WRITE_INTERVAL`] from a thread of its own (so it
/// works the same under tokio and in plain threads). A failing write is
/// logged once with `program`'s prefix, and again only after it worked in
/// between; it never stops the daemon. Returns at once.
pub fn write_periodically(program: &'static str, registry: Arc<Registry>, file: MetricsFile) {
    let spawned = std::thread::Builder::new().name("metrics".into()).spawn(move || {
        let mut failing = false;
        loop {
            match file.write(&registry) {
                Ok(()) => failing = false,
                Err(e) if !failing => {
                    eprintln!("{program}: warning: metrics not written: {e} (check metrics_dir in chatmail.ini)");
                    failing = true;
                }
                Err(_) => {}
            }
            std::thread::sleep(WRITE_INTERVAL);
        }
    });
    if let Err(e) = spawned {
        eprintln!("{program}: warning: metrics writer not started: {e}");
    }
}

/// One daemon's file as found in `metrics_dir`.
#[derive(Debug)]
pub struct FoundFile {
    /// File name without `.prom` (the daemon's name).
    pub stem: String,
    pub text: String,
    /// Time since it was last written.
    pub age: Duration,
}

impl FoundFile {
    /// Whether its writer seems to have stopped: a daemon rewrites its file
    /// every [`WRITE_INTERVAL`], the expiry sweep once a day.
    pub fn stale(&self) -> bool {
        let limit = if self.stem == "chatmail-expire" { Duration::from_secs(2 * 86_400) } else { WRITE_INTERVAL * 12 };
        self.age > limit
    }
}

/// Every `*.prom` file in `dir`, by name.
pub fn gather(dir: &Path) -> io::Result<Vec<FoundFile>> {
    let context = |e: io::Error, p: &Path| io::Error::new(e.kind(), format!("{}: {e}", p.display()));
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| context(e, dir))? {
        let entry = entry.map_err(|e| context(e, dir))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(stem) = name.strip_suffix(".prom").filter(|s| !s.starts_with('.')) else { continue };
        let path = entry.path();
        let text = std::fs::read_to_string(&path).map_err(|e| context(e, &path))?;
        let modified = entry.metadata().and_then(|m| m.modified()).map_err(|e| context(e, &path))?;
        let age = std::time::SystemTime::now().duration_since(modified).unwrap_or_default();
        found.push(FoundFile { stem: stem.to_owned(), text, age });
    }
    found.sort_by(|a, b| a.stem.cmp(&b.stem));
    Ok(found)
}

#[cfg(test)]
mod tests {
    use super::*;

    const DOCS: &[FamilyDoc] = &[
        FamilyDoc { name: "t_messages_total", kind: Kind::Counter, labels: &["direction", "reason"], help: "Messages.\nSecond line" },
        FamilyDoc { name: "t_accounts", kind: Kind::Gauge, labels: &[], help: "Accounts." },
    ];

    #[test]
    fn renders_help_type_and_samples_in_label_order() {
        let r = Registry::new(DOCS);
        r.inc("t_messages_total", &["incoming", "encrypted"]);
        r.inc("t_messages_total", &["incoming", "encrypted"]);
        r.inc("t_messages_total", &["outgoing", "cleartext"]);
        r.set("t_accounts", &[], 2.5);
        r.set("t_accounts", &[], 7.0);
        assert_eq!(
            r.render(),
            "# HELP t_messages_total Messages.\\nSecond line\n# TYPE t_messages_total counter\n\
             t_messages_total{direction=\"incoming\",reason=\"encrypted\"} 2\n\
             t_messages_total{direction=\"outgoing\",reason=\"cleartext\"} 1\n\
             # HELP t_accounts Accounts.\n# TYPE t_accounts gauge\nt_accounts 7\n"
        );
        assert_eq!(r.get("t_messages_total", &["incoming", "encrypted"]), Some(2.0));
    }

    #[test]
    fn empty_families_still_show_help_and_type() {
        let text = Registry::new(DOCS).render();
        assert!(text.contains("# TYPE t_messages_total counter\n# HELP t_accounts"));
    }

    #[test]
    fn label_values_are_cleaned() {
        let cases = [
            ("encrypted", "encrypted"),
            ("", "none"),
            ("a\"b\\c\nd e", "a_b_c_d_e"),
            ("dkim-pass:example.org", "dkim-pass_example.org"),
        ];
        for (input, expected) in cases {
            assert_eq!(sanitize(input), expected, "{input:?}");
        }
        assert_eq!(sanitize(&"x".repeat(500)).len(), 64);
    }

    #[test]
    fn too_many_series_fold_into_other() {
        let r = Registry::new(DOCS);
        for i in 0..MAX_SERIES_PER_FAMILY + 50 {
            r.inc("t_messages_total", &["incoming", &format!("r{i}")]);
        }
        assert_eq!(r.get("t_messages_total", &[OTHER, OTHER]), Some(50.0));
        assert_eq!(r.render().lines().filter(|l| l.starts_with("t_messages_total")).count(), MAX_SERIES_PER_FAMILY + 1);
    }

    #[test]
    fn fractions_and_integers() {
        assert_eq!(format_value(3.0), "3");
        assert_eq!(format_value(0.25), "0.25");
        assert_eq!(format_value(1e20), "100000000000000000000");
    }

    #[test]
    fn file_is_replaced_whole_and_no_prom_temp_is_left() {
        let dir = tempfile::tempdir().expect("works");
        let r = Registry::new(DOCS);
        let file = MetricsFile::new(Some(dir.path()), "chatmail-test").expect("works");
        file.write(&r).expect("works");
        r.inc("t_messages_total", &["incoming", "encrypted"]);
        file.write(&r).expect("works");
        let names: Vec<String> = std::fs::read_dir(dir.path()).expect("works").map(|e| e.expect("works").file_name().to_string_lossy().into_owned()).collect();
        assert_eq!(names, ["chatmail-test.prom"]);
        assert!(std::fs::read_to_string(file.path()).expect("works").contains("reason=\"encrypted\"} 1"));
        assert!(MetricsFile::new(None, "x").is_none());
    }

    #[test]
    fn unwritable_dir_is_an_error_naming_the_file() {
        let file = MetricsFile::new(Some(Path::new("/nonexistent/metrics")), "chatmail-test").expect("works");
        let e = file.write(&Registry::new(DOCS)).expect_err("fails");
        assert!(e.to_string().contains("/nonexistent/metrics"), "{e}");
    }

    #[test]
    fn gather_reads_prom_files_by_name_and_skips_temporaries() {
        let dir = tempfile::tempdir().expect("works");
        std::fs::write(dir.path().join("chatmail-milter.prom"), "m 1\n").expect("works");
        std::fs::write(dir.path().join("chatmail-auth.prom"), "a 1\n").expect("works");
        std::fs::write(dir.path().join(".chatmail-auth.prom.5.tmp"), "half").expect("works");
        std::fs::write(dir.path().join("notes.txt"), "x").expect("works");
        let found = gather(dir.path()).expect("works");
        let names: Vec<&str> = found.iter().map(|f| f.stem.as_str()).collect();
        assert_eq!(names, ["chatmail-auth", "chatmail-milter"]);
        assert_eq!(found[1].text, "m 1\n");
        assert!(!found[0].stale());
        let old = FoundFile { stem: "chatmail-milter".into(), text: String::new(), age: Duration::from_secs(3600) };
        let sweep = FoundFile { stem: "chatmail-expire".into(), text: String::new(), age: Duration::from_secs(3600) };
        assert!(old.stale() && !sweep.stale());
        assert!(gather(Path::new("/nonexistent/metrics")).expect_err("fails").to_string().contains("/nonexistent/metrics"));
    }
}
