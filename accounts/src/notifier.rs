//! `chatmail-metadata`'s push side: turns the plugin's arrival files into
//! queue entries (one per device token of the account) and POSTs each token
//! to the notification service, with the retry rules of [`crate::push_queue`].
//!
//! Every step is on disk before the next: an arrival file is claimed
//! (renamed into `tmp/`), its entries written, and only then removed; an
//! entry file goes only once its POST is done with. So a restart of the
//! daemon (or of Dovecot) loses no notification; at worst one is sent twice.
//! Arrivals come with a datagram on `nudge`; a rescan every
//! [`RESCAN_INTERVAL`] catches any that came while nothing listened.

use std::collections::HashMap;
use std::future::Future;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use chatmail_config::files::write_atomically;
use chatmail_config::metrics::{FamilyDoc, Kind, Registry};
use chatmail_config::push::{valid_account_name, ARRIVED_DIR, NUDGE_SOCKET, QUEUE_DIR, TMP_DIR};
use http_body_util::Full;
use tokio::net::UnixDatagram;
use tokio::sync::{mpsc, Semaphore};

use crate::https_client::{https_tls_config, HttpsClient};
use crate::metadata::{unix_now, MetadataService};
use crate::push_queue::{after, token_label, Entry, Next, Outcome, REQUEST_TIMEOUT_SECS};

/// How often the spool is scanned even without a nudge.
pub const RESCAN_INTERVAL: Duration = Duration::from_secs(30);
/// Most POSTs in flight at once.
pub const MAX_PARALLEL_POSTS: usize = 64;
/// Prefix of an arrival file claimed by the daemon (in `tmp/`).
const CLAIMED_PREFIX: &str = "claimed.";
/// Largest response body read (and thrown away) so the connection can be reused.
const MAX_RESPONSE_BODY: usize = 64 * 1024;

/// The HTTPS client for the notification service: one pool of kept-alive
/// connections, certificates checked against the system's CAs (and an
/// optional extra CA file).
#[derive(Debug, Clone)]
pub struct PushClient {
    client: HttpsClient,
    url: hyper::Uri,
}

impl PushClient {
    pub fn new(url: &str, extra_ca: Option<&Path>) -> Result<PushClient, String> {
        let url: hyper::Uri = url.parse().map_err(|e| format!("push_notification_url {url:?}: {e}"))?;
        let tls = https_tls_config(extra_ca).map_err(|e| format!("push notifications: {e}"))?;
        Ok(PushClient { client: HttpsClient::new(tls, Duration::from_secs(REQUEST_TIMEOUT_SECS)), url })
    }

    /// POSTs `token` (the whole body); the status, or `Failed` with the reason.
    pub async fn post(&self, token: &str) -> (Outcome, Option<String>) {
        let request = match hyper::Request::post(self.url.clone())
            .header(hyper::header::USER_AGENT, concat!("chatmail-metadata/", env!("CARGO_PKG_VERSION")))
            .body(Full::new(Bytes::copy_from_slice(token.as_bytes())))
        {
            Ok(request) => request,
            Err(e) => return (Outcome::Failed, Some(e.to_string())),
        };
        // The (small) answer is read so that the connection can be reused;
        // only its status matters.
        match self.client.send(request, MAX_RESPONSE_BODY).await {
            Ok(answer) => (Outcome::Status(answer.status), None),
            Err(e) => (Outcome::Failed, Some(e)),
        }
    }
}

/// What `chatmail-metadata status` reports about the push spool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStatus {
    /// Accounts whose mail is not yet turned into queue entries.
    pub arrivals: usize,
    /// Notifications queued (due now or waiting for a retry).
    pub queued: usize,
    /// Of those, the ones that failed at least once.
    pub retrying: usize,
    /// Age in seconds of the oldest queued notification.
    pub oldest_secs: Option<u64>,
    /// Queue files that cannot be read.
    pub unreadable: usize,
}

/// Reads the push spool (for operators; the daemon need not run).
pub fn spool_status(spool_dir: &Path, now: u64) -> io::Result<SpoolStatus> {
    let mut status = SpoolStatus::default();
    let count = |dir: &Path, keep: &dyn Fn(&str) -> bool| -> io::Result<usize> {
        match std::fs::read_dir(dir) {
            Ok(listing) => Ok(listing.flatten().filter(|e| keep(&e.file_name().to_string_lossy())).count()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
            Err(e) => Err(io::Error::new(e.kind(), format!("reading {}: {e}", dir.display()))),
        }
    };
    status.arrivals = count(&spool_dir.join(ARRIVED_DIR), &|_| true)? + count(&spool_dir.join(TMP_DIR), &|n| n.starts_with(CLAIMED_PREFIX))?;
    for (_, entry) in read_queue(spool_dir) {
        match entry {
            Some(entry) => {
                status.queued += 1;
                status.retrying += usize::from(entry.attempts > 0);
                let age = now.saturating_sub(entry.created);
                status.oldest_secs = Some(status.oldest_secs.map_or(age, |o| o.max(age)));
            }
            None => status.unreadable += 1,
        }
    }
    Ok(status)
}

/// The queue's files, each with its entry; `None` for one that cannot be
/// read or does not hold the entry its name says.
fn read_queue(spool_dir: &Path) -> Vec<(PathBuf, Option<Entry>)> {
    let Ok(listing) = std::fs::read_dir(spool_dir.join(QUEUE_DIR)) else { return Vec::new() };
    listing
        .flatten()
        .map(|item| {
            let entry = std::fs::read_to_string(item.path())
                .ok()
                .and_then(|text| Entry::parse(&text).ok())
                .filter(|entry| entry.id() == item.file_name().to_string_lossy());
            (item.path(), entry)
        })
        .collect()
}

/// A queue entry known to the loop.
#[derive(Debug)]
struct Slot {
    entry: Entry,
    in_flight: bool,
    /// Mail arrived while the POST was in flight: send once more after it.
    again: bool,
}

/// What a scan of the arrivals found for one token.
#[derive(Debug)]
enum Found {
    /// A new entry (its file is written).
    New(Entry),
    /// An entry already queued (pending or in flight).
    Existing(String),
}

/// The notifier: owns `{push_spool_dir}/queue` and consumes `arrived/`.
#[derive(Debug)]
pub struct Notifier {
    spool_dir: PathBuf,
    service: Arc<MetadataService>,
    /// `None`: push is off; arrivals are consumed and nothing is sent.
    client: Option<PushClient>,
    metrics: Arc<Registry>,
}

/// The notifier's metric families (see the operator guide's metrics section).
pub const METRICS: &[FamilyDoc] = &[FamilyDoc {
    name: "chatmail_push_notifications_total",
    kind: Kind::Counter,
    labels: &["result"],
    help: "POSTs to push_notification_url by result: sent (2xx), gone (410: the token is forgotten), retry (error or other status; tried again later), dropped (gave up after the last retry).",
}];

fn log(line: &str) {
    eprintln!("chatmail-metadata: {line}");
}

impl Notifier {
    pub fn new(spool_dir: PathBuf, service: Arc<MetadataService>, client: Option<PushClient>) -> Notifier {
        Notifier { spool_dir, service, client, metrics: Arc::new(Registry::new(METRICS)) }
    }

    /// The notifier's counters (written to `metrics_dir` by the daemon).
    pub fn metrics(&self) -> Arc<Registry> {
        Arc::clone(&self.metrics)
    }

    fn queue_path(&self, id: &str) -> PathBuf {
        self.spool_dir.join(QUEUE_DIR).join(id)
    }

    fn write_entry(&self, entry: &Entry) -> io::Result<()> {
        write_atomically(&self.spool_dir.join(TMP_DIR), &self.queue_path(&entry.id()), entry.to_text().as_bytes(), 0o600)
    }

    fn remove_entry(&self, id: &str) {
        if let Err(e) = std::fs::remove_file(self.queue_path(id)) {
            if e.kind() != io::ErrorKind::NotFound {
                log(&format!("op=queue result=error problem={:?}", format!("removing entry {id}: {e}")));
            }
        }
    }

    /// Creates the spool's directories.
    pub fn prepare(&self) -> io::Result<()> {
        for dir in [ARRIVED_DIR, QUEUE_DIR, TMP_DIR] {
            let path = self.spool_dir.join(dir);
            std::fs::create_dir_all(&path).map_err(|e| io::Error::new(e.kind(), format!("creating {}: {e}", path.display())))?;
        }
        Ok(())
    }

    /// The entries on disk (at start). Unreadable files are logged and moved aside.
    fn load_queue(&self) -> Vec<Entry> {
        let mut entries = Vec::new();
        for (path, entry) in read_queue(&self.spool_dir) {
            match entry {
                Some(entry) => entries.push(entry),
                None => {
                    let name = path.file_name().map_or_else(String::new, |n| n.to_string_lossy().into_owned());
                    let aside = self.spool_dir.join(TMP_DIR).join(format!("bad.{name}"));
                    log(&format!("op=queue result=error problem={:?}", format!("unreadable entry {} moved to {}", path.display(), aside.display())));
                    let _ = std::fs::rename(&path, &aside);
                }
            }
        }
        entries
    }

    /// Claims every arrival file and turns it into entries. An arrival whose
    /// account cannot be read stays claimed (in `tmp/`) and is tried again
    /// at the next scan.
    fn take_arrivals(&self, now: u64) -> Vec<Found> {
        let (arrived, tmp) = (self.spool_dir.join(ARRIVED_DIR), self.spool_dir.join(TMP_DIR));
        if let Ok(listing) = std::fs::read_dir(&arrived) {
            for item in listing.flatten() {
                let account = item.file_name().to_string_lossy().into_owned();
                if valid_account_name(&account) {
                    let _ = std::fs::rename(item.path(), tmp.join(format!("{CLAIMED_PREFIX}{account}")));
                } else {
                    log(&format!("op=arrival result=error problem={:?}", format!("{} does not name an account; removed", item.path().display())));
                    let _ = std::fs::remove_file(item.path());
                }
            }
        }
        let mut found = Vec::new();
        let Ok(listing) = std::fs::read_dir(&tmp) else { return found };
        for item in listing.flatten() {
            let name = item.file_name().to_string_lossy().into_owned();
            let Some(account) = name.strip_prefix(CLAIMED_PREFIX) else { continue };
            match self.expand(account, now, &mut found) {
                Ok(()) => {
                    let _ = std::fs::remove_file(item.path());
                }
                Err(e) => log(&format!("op=arrival account={account} result=error problem={:?}", e.to_string())),
            }
        }
        found
    }

    /// The entries for a delivery to `account`: one per live token (none
    /// while push is off: the arrival is consumed and nothing is queued).
    fn expand(&self, account: &str, now: u64, found: &mut Vec<Found>) -> io::Result<()> {
        if self.client.is_none() {
            return Ok(());
        }
        for token in self.service.tokens(account, now)? {
            let entry = Entry::new(account, &token, now);
            let id = entry.id();
            if self.queue_path(&id).exists() {
                found.push(Found::Existing(id));
            } else {
                self.write_entry(&entry)?;
                found.push(Found::New(entry));
            }
        }
        Ok(())
    }

    /// Runs until `shutdown` completes: binds the nudge socket, loads the
    /// queue, then sends what is due as arrivals come.
    pub async fn run(self, shutdown: impl Future) -> io::Result<()> {
        self.prepare()?;
        let nudge_path = self.spool_dir.join(NUDGE_SOCKET);
        let _ = std::fs::remove_file(&nudge_path);
        let nudge = UnixDatagram::bind(&nudge_path).map_err(|e| io::Error::new(e.kind(), format!("binding {}: {e}", nudge_path.display())))?;
        // The plugin runs as the mail user, as this daemon does.
        let _ = std::fs::set_permissions(&nudge_path, std::os::unix::fs::PermissionsExt::from_mode(0o660));

        let this = Arc::new(self);
        let mut slots: HashMap<String, Slot> = HashMap::new();
        // While push is off, queued entries stay on disk for when it is on again.
        if this.client.is_some() {
            for entry in this.load_queue() {
                slots.insert(entry.id(), Slot { entry, in_flight: false, again: false });
            }
        }
        if !slots.is_empty() {
            log(&format!("op=queue result=loaded entries={}", slots.len()));
        }
        let (done_tx, mut done_rx) = mpsc::unbounded_channel::<(String, Outcome, Option<String>, Duration)>();
        let parallel = Arc::new(Semaphore::new(MAX_PARALLEL_POSTS));
        let mut scan_due = true;
        let mut last_scan = Instant::now();
        tokio::pin!(shutdown);
        let mut buf = [0u8; 64];
        loop {
            if scan_due || last_scan.elapsed() >= RESCAN_INTERVAL {
                scan_due = false;
                last_scan = Instant::now();
                let worker = Arc::clone(&this);
                let found = tokio::task::spawn_blocking(move || worker.take_arrivals(unix_now())).await.unwrap_or_default();
                for item in found {
                    match item {
                        Found::New(entry) => {
                            slots.insert(entry.id(), Slot { entry, in_flight: false, again: false });
                        }
                        Found::Existing(id) => {
                            if let Some(slot) = slots.get_mut(&id) {
                                slot.again |= slot.in_flight;
                            }
                        }
                    }
                }
            }
            // Start what is due.
            let now = unix_now();
            let mut wait = RESCAN_INTERVAL.saturating_sub(last_scan.elapsed());
            // (Slots exist only while push is on.)
            for (id, slot) in slots.iter_mut().filter(|(_, s)| !s.in_flight) {
                let Some(client) = this.client.clone() else { break };
                if slot.entry.next > now {
                    wait = wait.min(Duration::from_secs(slot.entry.next - now));
                    continue;
                }
                slot.in_flight = true;
                let (id, token, done, parallel) = (id.clone(), slot.entry.token.clone(), done_tx.clone(), Arc::clone(&parallel));
                tokio::spawn(async move {
                    let _permit = parallel.acquire_owned().await;
                    let started = Instant::now();
                    let (outcome, problem) = client.post(&token).await;
                    let _ = done.send((id, outcome, problem, started.elapsed()));
                });
            }
            tokio::select! {
                _ = &mut shutdown => return Ok(()),
                _ = nudge.recv(&mut buf) => scan_due = true,
                _ = tokio::time::sleep(wait) => {}
                Some((id, outcome, problem, took)) = done_rx.recv() => {
                    let worker = Arc::clone(&this);
                    if let Some(slot) = slots.remove(&id) {
                        let kept = tokio::task::spawn_blocking(move || worker.finish(slot, outcome, problem, took, unix_now())).await.ok().flatten();
                        if let Some(slot) = kept {
                            slots.insert(id, slot);
                        }
                    }
                }
            }
        }
    }

    /// Records the outcome of a POST; the slot if the entry stays queued.
    fn finish(&self, slot: Slot, outcome: Outcome, problem: Option<String>, took: Duration, now: u64) -> Option<Slot> {
        let entry = &slot.entry;
        let id = entry.id();
        let status = match outcome {
            Outcome::Status(code) => code.to_string(),
            Outcome::Failed => "none".into(),
        };
        // The outcome's log line; each outcome makes exactly one, so it is
        // counted here too.
        let line = |result: &str| {
            self.metrics.inc("chatmail_push_notifications_total", &[result]);
            let mut text = format!(
                "op=push account={} token={} result={result} status={status} attempts={} ms={}",
                entry.account,
                token_label(&id),
                entry.attempts + 1,
                took.as_millis()
            );
            if let Some(problem) = &problem {
                text.push_str(&format!(" problem={problem:?}"));
            }
            text
        };
        match after(entry, outcome, now) {
            Next::Sent => {
                log(&line("sent"));
                if slot.again {
                    // Mail came while this POST was under way: tell the device again.
                    let fresh = Entry::new(&entry.account, &entry.token, now);
                    if let Err(e) = self.write_entry(&fresh) {
                        log(&format!("op=queue result=error problem={:?}", e.to_string()));
                    }
                    return Some(Slot { entry: fresh, in_flight: false, again: false });
                }
                self.remove_entry(&id);
                None
            }
            Next::Gone => {
                log(&line("gone"));
                match self.service.forget_token(&entry.account, &entry.token, now) {
                    Ok(_) => {}
                    Err(e) => log(&format!("op=forget-token account={} result=error problem={:?}", entry.account, e.to_string())),
                }
                self.remove_entry(&id);
                None
            }
            Next::Retry(next) => {
                log(&format!("{} retry_in={}", line("retry"), next.next.saturating_sub(now)));
                if let Err(e) = self.write_entry(&next) {
                    log(&format!("op=queue result=error problem={:?}", e.to_string()));
                }
                Some(Slot { entry: next, in_flight: false, again: false })
            }
            Next::Dropped => {
                log(&line("dropped"));
                self.remove_entry(&id);
                None
            }
        }
    }
}
