//! The milter glue: collects what Postfix tells about a message, streams the
//! body through the checks, and turns the policy's decision into a reply.
//!
//! Logging policy: one line per decision on stderr, `key=value` words an
//! operator can grep and count (`decision=`, `reason=`, `direction=`,
//! `queue_id=`). Internal errors tempfail the message and are logged the
//! same way with `decision=tempfail`. DKIM outcomes are part of `reason=`
//! (`+signed`, `+dkim-pass:DOMAIN`, `dkim-missing`, `dkim-invalid:…`,
//! `dkim-dns-failure:…`).

use std::ffi::CString;
use std::future::Future;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use chatmail_config::metrics::{FamilyDoc, Kind, Registry};
use chatmail_config::Config;
use indymilter::{
    Actions, Callbacks, Context, ContextActions, EomContext, Listener, MacroStage, NegotiateContext, ProtoOpts,
    SetErrorReply, Status,
};

use crate::dkim::{self, DkimVerdict};
use crate::dkim_io::{self, IncomingCheck, MessageSigning};
use crate::dkim_keys::{self, KeySource, Signers};
use crate::lines::LineSplitter;
use crate::mime::{parse_content_type, EncryptedBodyChecker};
use crate::policy::{self, Body, Decision, Direction, Envelope, MessageFacts, Passthrough, Reply, CLEARTEXT_KEEP_LIMIT};
use crate::rate::{AccountFacts, Rate, RatingRules, SendRateLimiter};

/// Which mail a milter listener sees: Postfix's `smtpd_milters` (mail from
/// SMTP clients: submissions and other servers) or `non_smtpd_milters`
/// (mail made on the relay, such as bounces). Postfix cannot tell the
/// milter which one it is, so each gets its own socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MailOrigin {
    Smtp,
    Local,
}

/// The DKIM side of the milter: the keys outgoing mail is signed with, and
/// the resolver that fetches the keys of incoming mail's signers.
#[derive(Clone)]
pub struct DkimSettings {
    /// Loaded once and kept for the life of the process (signing streams
    /// borrow them while a message passes).
    pub signers: &'static Signers,
    pub authenticator: mail_auth::MessageAuthenticator,
}

impl std::fmt::Debug for DkimSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DkimSettings").field("signers", self.signers).finish_non_exhaustive()
    }
}

impl DkimSettings {
    /// Loads the keys and sets up the resolver named in `config`. Must run
    /// inside a tokio runtime (the resolver belongs to it).
    pub fn from_config(config: &Config) -> Result<DkimSettings, String> {
        let signers = dkim_keys::load_signers(
            &config.mail_domain,
            KeySource { path: &config.dkim_key_file, selector: &config.dkim_selector },
            config.dkim_ed25519_key_file.as_deref().map(|path| KeySource { path, selector: &config.dkim_ed25519_selector }),
        )?;
        let authenticator = dkim_io::authenticator(&config.dns_servers, Duration::from_secs(u64::from(config.dns_timeout)))?;
        Ok(DkimSettings { signers: Box::leak(Box::new(signers)), authenticator })
    }
}

/// Settings of a running milter, derived from chatmail.ini.
#[derive(Debug, Clone)]
pub struct MilterSettings {
    pub origin: MailOrigin,
    /// The relay's domain: the `d=` of its signatures.
    pub mail_domain: String,
    /// `None`: no signing and no checking (`--no-dkim`).
    pub dkim: Option<DkimSettings>,
    pub max_message_size: u64,
    pub max_recipients: usize,
    pub mailboxes_dir: PathBuf,
    pub passthrough: Passthrough,
    pub rating: RatingRules,
    /// Where decisions are counted; the SMTP and the local milter of one
    /// daemon share it.
    pub metrics: Arc<Registry>,
}

impl MilterSettings {
    pub fn from_config(config: &Config, origin: MailOrigin, dkim: Option<DkimSettings>) -> MilterSettings {
        MilterSettings {
            origin,
            mail_domain: config.mail_domain.clone(),
            dkim,
            max_message_size: config.max_message_size,
            max_recipients: config.max_recipients_per_message as usize,
            mailboxes_dir: config.mailboxes_dir.clone(),
            passthrough: Passthrough {
                senders: config.passthrough_senders.iter().map(|s| s.to_ascii_lowercase()).collect(),
                recipients: config.passthrough_recipients.iter().map(|s| s.to_ascii_lowercase()).collect(),
            },
            rating: RatingRules {
                full: Rate { per_minute: config.max_user_send_per_minute, burst: config.max_user_send_burst_size },
                reduced: Rate { per_minute: config.reduced_send_per_minute, burst: config.reduced_send_burst_size },
                new_account_ms: u64::from(config.reduced_rate_new_account_hours) * 3_600_000,
                cleartext_penalty_ms: u64::from(config.reduced_rate_after_cleartext_minutes) * 60_000,
            },
            metrics: Arc::new(Registry::new(METRICS)),
        }
    }
}

struct Shared {
    settings: MilterSettings,
    limiter: Mutex<SendRateLimiter>,
    clock_start: Instant,
}

impl Shared {
    fn now_ms(&self) -> u64 {
        u64::try_from(self.clock_start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Account age from its mailbox directory's creation time; unknown
    /// (e.g. no mailbox yet, or no birth time on this file system) is `None`.
    fn account_facts(&self, addr: &str) -> AccountFacts {
        let created = std::fs::metadata(self.settings.mailboxes_dir.join(addr)).and_then(|m| m.created()).ok();
        let age_ms = created
            .and_then(|c| SystemTime::now().duration_since(c).ok())
            .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX));
        AccountFacts { age_ms }
    }

    /// Whether `rcpt`'s mailbox has the `enforceE2EEincoming` marker. An
    /// error other than "not there" (say, no permission to look) is an
    /// error, not a "no": guessing "no" would let cleartext through.
    fn enforces_encryption(&self, rcpt: &str) -> std::io::Result<bool> {
        // Only plain account addresses can name a mailbox directory.
        if rcpt.contains('/') || rcpt.starts_with('.') || rcpt.is_empty() {
            return Ok(false);
        }
        let marker = self.settings.mailboxes_dir.join(rcpt).join(chatmail_config::layout::ENFORCE_E2EE_MARKER);
        match std::fs::metadata(&marker) {
            Ok(_) => Ok(true),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
            // A recipient of another domain has no directory: ENOTDIR etc.
            // cannot happen for plain names, so anything else is a real fault.
            Err(e) => Err(std::io::Error::new(e.kind(), format!("{}: {e}", marker.display()))),
        }
    }
}

enum BodyState {
    Encrypted(EncryptedBodyChecker),
    Broken(String),
    Cleartext { why: String },
}

/// Per-message state.
struct Message {
    envelope: Envelope,
    header_from: Option<String>,
    from_headers: u32,
    content_type: Option<String>,
    /// Raw message while it may be a small cleartext exception.
    kept: Option<Vec<u8>>,
    /// The header section as it will be signed or verified (CRLF line
    /// ends), until the body starts.
    header_section: Vec<u8>,
    /// Incoming: its DKIM signatures, checked as the body streams by.
    incoming_check: Option<IncomingCheck>,
    /// Outgoing and local: the signatures, hashed as the body streams by.
    signing: Option<MessageSigning>,
    body: Option<BodyState>,
    lines: LineSplitter,
    size: u64,
}

impl Message {
    fn keep(&mut self, bytes: &[u8]) {
        if let Some(kept) = &mut self.kept {
            if kept.len() + bytes.len() > CLEARTEXT_KEEP_LIMIT {
                self.kept = None;
            } else {
                kept.extend_from_slice(bytes);
            }
        }
    }
}

/// Per-connection state.
#[derive(Default)]
struct Session {
    message: Option<Message>,
}

/// The milter's metric families (see the operator guide's metrics section).
pub const METRICS: &[FamilyDoc] = &[FamilyDoc {
    name: "chatmail_milter_messages_total",
    kind: Kind::Counter,
    labels: &["direction", "decision", "reason"],
    help: "Messages the milter decided on: direction incoming/outgoing/local (- when unknown), decision accept/reject/tempfail/ratelimit, reason as in the log line's reason= up to its first detail.",
}];

/// The reason of a log line as a metric label: its first word, without the
/// details (addresses, error texts) that would make a series per message.
fn reason_label(reason: &str) -> &str {
    reason.split([':', '+', ' ', '_']).next().unwrap_or(reason)
}

/// Logs a decision (one greppable line) and counts it.
fn log_decision(metrics: &Registry, queue_id: &str, direction: &str, from: &str, rcpts: usize, decision: &str, reason: &str) {
    eprintln!("chatmail-milter: queue_id={queue_id} direction={direction} from=<{from}> rcpts={rcpts} decision={decision} reason={reason}");
    metrics.inc("chatmail_milter_messages_total", &[direction, decision, reason_label(reason)]);
}

fn unbracket(arg: &CString) -> String {
    let text = String::from_utf8_lossy(arg.as_bytes());
    text.trim().trim_start_matches('<').trim_end_matches('>').to_ascii_lowercase()
}

fn macro_value(macros: &indymilter::Macros, name: &str) -> Option<String> {
    let name = CString::new(name).ok()?;
    macros.get(&name).map(|v| v.to_string_lossy().into_owned()).filter(|v| !v.is_empty())
}

fn reply_status(reply: &mut indymilter::SmtpReply, r: &Reply) -> Status {
    match reply.set_error_reply(r.code, r.xcode, [r.text.as_str()]) {
        Ok(()) if r.code.starts_with('4') => Status::Tempfail,
        Ok(()) => Status::Reject,
        Err(_) => Status::Tempfail,
    }
}

fn tempfail(metrics: &Registry, reply: &mut indymilter::SmtpReply, queue_id: &str, why: &str) -> Status {
    log_decision(metrics, queue_id, "-", "", 0, "tempfail", why);
    let _ = reply.set_error_reply("451", Some("4.3.0"), ["Temporary failure in the mail filter, try again later"]);
    Status::Tempfail
}

/// The milter's callbacks over shared state built from `settings`.
fn callbacks(settings: MilterSettings) -> Callbacks<Session> {
    let shared = Arc::new(Shared {
        limiter: Mutex::new(SendRateLimiter::new(settings.rating)),
        settings,
        clock_start: Instant::now(),
    });
    let on_mail = Arc::clone(&shared);
    let on_header = Arc::clone(&shared);
    let on_body = Arc::clone(&shared);
    let on_eom = Arc::clone(&shared);
    Callbacks::new()
        .on_negotiate(|cx, _, _| Box::pin(negotiate(cx)))
        .on_mail(move |cx, args| Box::pin(mail(Arc::clone(&on_mail), cx, args)))
        .on_rcpt(|cx, args| Box::pin(rcpt(cx, args)))
        .on_header(move |cx, name, value| Box::pin(header(Arc::clone(&on_header), cx, name, value)))
        .on_body(move |cx, chunk| Box::pin(body(Arc::clone(&on_body), cx, chunk)))
        .on_eom(move |cx| Box::pin(eom(Arc::clone(&on_eom), cx)))
        .on_abort(|cx| Box::pin(abort(cx)))
}

async fn negotiate(cx: &mut NegotiateContext<Session>) -> Status {
    cx.requested_actions |= Actions::CHANGE_SENDER | Actions::ADD_HEADER;
    // Recipients, headers and body chunks never get an answer of their own
    // (decisions come at MAIL and at the end of the message), so Postfix need
    // not wait for one: this saves a round trip per recipient, header and
    // body chunk.
    cx.requested_opts |= ProtoOpts::NOREPLY_RCPT | ProtoOpts::NOREPLY_HEADER | ProtoOpts::NOREPLY_BODY;
    // Header values exactly as sent, whitespace after the colon included:
    // "simple" header canonicalization signs those bytes.
    cx.requested_opts |= ProtoOpts::LEADING_SPACE;
    if let Ok(macros) = CString::new("{auth_authen}") {
        cx.requested_macros.insert(MacroStage::Mail, macros);
    }
    if let Ok(macros) = CString::new("i") {
        cx.requested_macros.insert(MacroStage::Eom, macros);
    }
    cx.data = Some(Session::default());
    Status::Continue
}

async fn mail(shared: Arc<Shared>, cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    let mail_from = args.first().map(unbracket).unwrap_or_default();
    let direction = match (shared.settings.origin, macro_value(&cx.macros, "{auth_authen}")) {
        (MailOrigin::Local, _) => Direction::Local,
        (MailOrigin::Smtp, Some(login)) => Direction::Outgoing { login: login.to_ascii_lowercase() },
        (MailOrigin::Smtp, None) => Direction::Incoming,
    };
    if let Direction::Outgoing { login } = &direction {
        let now = shared.now_ms();
        let facts = shared.account_facts(login);
        let checked = match shared.limiter.lock() {
            Ok(mut limiter) => limiter.check(login, facts, now),
            Err(_) => return tempfail(&shared.settings.metrics, &mut cx.reply, "-", "rate-limiter-poisoned"),
        };
        if let Err(limited) = checked {
            log_decision(&shared.settings.metrics, "-", "outgoing", &mail_from, 0, "ratelimit", limited.rating);
            let r = Reply { code: "450", xcode: Some("4.7.1"), text: format!(": Too much mail from {login}") };
            return reply_status(&mut cx.reply, &r);
        }
    }
    let session = cx.data.get_or_insert_with(Session::default);
    session.message = Some(Message {
        envelope: Envelope { direction, mail_from, rcpts: Vec::new() },
        header_from: None,
        from_headers: 0,
        content_type: None,
        kept: Some(Vec::new()),
        header_section: Vec::new(),
        incoming_check: None,
        signing: None,
        body: None,
        lines: LineSplitter::default(),
        size: 0,
    });
    Status::Continue
}

async fn rcpt(cx: &mut Context<Session>, args: Vec<CString>) -> Status {
    // No reply at RCPT (one round trip less per recipient): Postfix enforces
    // the recipient limit itself (`smtpd_recipient_limit`, set from
    // max_recipients_per_message); the end of message only checks it again.
    if let Some(message) = cx.data.as_mut().and_then(|s| s.message.as_mut()) {
        message.envelope.rcpts.push(args.first().map(unbracket).unwrap_or_default());
    }
    Status::Noreply
}

async fn header(shared: Arc<Shared>, cx: &mut Context<Session>, name: CString, value: CString) -> Status {
    let Some(message) = cx.data.as_mut().and_then(|s| s.message.as_mut()) else { return Status::Noreply };
    let name = String::from_utf8_lossy(name.as_bytes()).into_owned();
    let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
    if name.eq_ignore_ascii_case("From") {
        message.from_headers += 1;
        message.header_from = policy::from_address(&value);
    } else if name.eq_ignore_ascii_case("Content-Type") && message.content_type.is_none() {
        message.content_type = Some(value.trim_start().to_owned());
    }
    // The header line as it travels: the value keeps its leading space
    // (negotiated), folded lines come with bare LF and get their CR back.
    let mut line = Vec::with_capacity(name.len() + value.len() + 4);
    line.extend_from_slice(name.as_bytes());
    line.push(b':');
    line.extend_from_slice(value.replace("\r\n", "\n").replace('\n', "\r\n").as_bytes());
    line.extend_from_slice(b"\r\n");
    message.keep(&line);
    // Headers past the size limit are not worth keeping: the message is refused.
    if (message.header_section.len() as u64) < shared.settings.max_message_size {
        message.header_section.extend_from_slice(&line);
    }
    Status::Noreply
}

/// Chooses how the body is checked, once all headers are known (at the
/// first body chunk or the end of the message: no end-of-headers stage is
/// negotiated, which saves Postfix a packet per message).
fn start_body(message: &mut Message, dkim: Option<&DkimSettings>) {
    if message.body.is_some() {
        return;
    }
    message.keep(b"\r\n");
    let mut head = std::mem::take(&mut message.header_section);
    head.extend_from_slice(b"\r\n");
    match (&message.envelope.direction, dkim) {
        (_, None) => {}
        (Direction::Incoming, Some(_)) => message.incoming_check = Some(IncomingCheck::start(head)),
        (Direction::Outgoing { .. } | Direction::Local, Some(dkim)) => {
            let mut signing = MessageSigning::start(dkim.signers);
            signing.write(&head);
            message.signing = Some(signing);
        }
    }
    let content_type = message.content_type.as_deref().and_then(parse_content_type);
    message.body = Some(match content_type {
        Some(ct) if ct.mime_type == "multipart/encrypted" => match EncryptedBodyChecker::new(&ct) {
            Ok(checker) => {
                // An encrypted message is never a cleartext exception.
                message.kept = None;
                BodyState::Encrypted(checker)
            }
            Err(problem) => BodyState::Broken(problem.to_string()),
        },
        Some(ct) => BodyState::Cleartext { why: format!("content type {}", ct.mime_type) },
        None => BodyState::Cleartext { why: "no content type (text/plain)".into() },
    });
}

fn feed_body(message: &mut Message, chunk: &[u8], last: bool) {
    let Some(state) = message.body.as_mut() else { return };
    let BodyState::Encrypted(checker) = state else { return };
    let mut handle = |line: &[u8], complete: bool| -> Result<(), String> {
        if !complete {
            return Err("line too long for an armored message".into());
        }
        checker.line(line).map_err(|p| p.to_string())
    };
    let result = if last { message.lines.finish(&mut handle) } else { message.lines.feed(chunk, &mut handle) };
    if let Err(why) = result {
        message.body = Some(BodyState::Broken(why));
    }
}

async fn body(shared: Arc<Shared>, cx: &mut Context<Session>, chunk: Bytes) -> Status {
    let Some(message) = cx.data.as_mut().and_then(|s| s.message.as_mut()) else { return Status::Noreply };
    message.size += chunk.len() as u64;
    if message.size > shared.settings.max_message_size {
        // Refused at the end of the message (body chunks get no reply);
        // nothing more is kept or checked meanwhile.
        message.kept = None;
        message.body = None;
        message.incoming_check = None;
        message.signing = None;
        return Status::Noreply;
    }
    start_body(message, shared.settings.dkim.as_ref());
    message.keep(&chunk);
    if let Some(check) = &mut message.incoming_check {
        check.write(&chunk);
    }
    if let Some(signing) = &mut message.signing {
        signing.write(&chunk);
    }
    feed_body(message, &chunk, false);
    Status::Noreply
}

async fn eom(shared: Arc<Shared>, cx: &mut EomContext<Session>) -> Status {
    let queue_id = macro_value(&cx.macros, "i").unwrap_or_else(|| "-".into());
    let Some(mut message) = cx.data.as_mut().and_then(|s| s.message.take()) else {
        return tempfail(&shared.settings.metrics, &mut cx.reply, &queue_id, "eom-without-message");
    };
    if message.size > shared.settings.max_message_size {
        let envelope = &message.envelope;
        log_decision(&shared.settings.metrics, &queue_id, envelope.direction.name(), &envelope.mail_from, envelope.rcpts.len(), "reject", "too-big");
        let r = Reply { code: "552", xcode: Some("5.3.4"), text: "Message too big".into() };
        return reply_status(&mut cx.reply, &r);
    }
    if message.envelope.rcpts.len() > shared.settings.max_recipients {
        // Postfix's smtpd_recipient_limit should have stopped this already.
        let envelope = &message.envelope;
        log_decision(&shared.settings.metrics, &queue_id, envelope.direction.name(), &envelope.mail_from, envelope.rcpts.len(), "reject", "too-many-recipients");
        let r = Reply { code: "550", xcode: Some("5.5.3"), text: "Too many recipients".into() };
        return reply_status(&mut cx.reply, &r);
    }
    // A message without body still gets its headers judged.
    start_body(&mut message, shared.settings.dkim.as_ref());
    feed_body(&mut message, &[], true);
    let body = match message.body.take() {
        Some(BodyState::Encrypted(checker)) => match checker.finish() {
            Ok(summary) => Body::Encrypted(summary),
            Err(problem) => Body::NotEncrypted { why: problem.to_string() },
        },
        Some(BodyState::Broken(why)) => Body::NotEncrypted { why },
        Some(BodyState::Cleartext { why }) => Body::NotEncrypted { why },
        None => Body::NotEncrypted { why: "no body".into() },
    };
    let header_from = if message.from_headers == 1 { message.header_from.clone() } else { None };
    let facts = MessageFacts { header_from: header_from.as_deref(), body: &body, cleartext: message.kept.as_deref() };
    let envelope = &message.envelope;
    // Look the markers up before deciding (only incoming cleartext needs them),
    // so a failing lookup tempfails instead of counting as "no marker".
    let mut enforcing: Vec<&str> = Vec::new();
    if envelope.direction == Direction::Incoming && matches!(body, Body::NotEncrypted { .. }) {
        for rcpt in &envelope.rcpts {
            match shared.enforces_encryption(rcpt) {
                Ok(true) => enforcing.push(rcpt),
                Ok(false) => {}
                Err(e) => return tempfail(&shared.settings.metrics, &mut cx.reply, &queue_id, &format!("marker-lookup-failed:{e}").replace(' ', "_")),
            }
        }
    }
    let decision = policy::decide(envelope, facts, &shared.settings.passthrough, &|rcpt| enforcing.contains(&rcpt));
    let direction = envelope.direction.name();
    match decision {
        Decision::Accept { reason, reset_sender } => {
            let mut reason = reason.name().to_owned();
            let from_domain = header_from.as_deref().and_then(|f| f.rsplit_once('@')).map(|(_, d)| d);
            // DKIM after the encryption policy: the cheaper refusal first.
            match (&envelope.direction, &shared.settings.dkim) {
                (_, None) => {}
                (Direction::Incoming, Some(dkim)) => {
                    let checks = match message.incoming_check.take() {
                        Some(check) => check.finish(&dkim.authenticator).await,
                        None => Vec::new(),
                    };
                    let verdict = dkim::judge(from_domain, &checks);
                    if let Some(reply) = verdict.reply() {
                        let decision = if matches!(verdict, DkimVerdict::TempFail { .. }) { "tempfail" } else { "reject" };
                        log_decision(&shared.settings.metrics, &queue_id, direction, &envelope.mail_from, envelope.rcpts.len(), decision, &verdict.log_name());
                        return reply_status(&mut cx.reply, &reply);
                    }
                    reason = format!("{reason}+{}", verdict.log_name());
                }
                (Direction::Outgoing { .. } | Direction::Local, Some(_)) => {
                    let ours = from_domain.is_some_and(|d| d.eq_ignore_ascii_case(&shared.settings.mail_domain));
                    match message.signing.take() {
                        // Outgoing mail always has our From (the policy checked
                        // it); local mail with another domain's From is not ours to sign.
                        Some(signing) if ours => {
                            let values = match signing.finish() {
                                Ok(values) => values,
                                Err(e) => return tempfail(&shared.settings.metrics, &mut cx.reply, &queue_id, &format!("dkim-signing-failed:{e}").replace(' ', "_")),
                            };
                            for value in values {
                                // Leading space: negotiated, so Postfix adds none.
                                if let Err(e) = cx.actions.insert_header(0, "DKIM-Signature", format!(" {value}")).await {
                                    return tempfail(&shared.settings.metrics, &mut cx.reply, &queue_id, &format!("add-header-failed:{e:?}"));
                                }
                            }
                            reason.push_str("+signed");
                        }
                        _ => reason.push_str("+unsigned-foreign-from"),
                    }
                }
            }
            if reset_sender {
                if let Err(e) = cx.actions.change_sender("<>", None::<CString>).await {
                    return tempfail(&shared.settings.metrics, &mut cx.reply, &queue_id, &format!("change-sender-failed:{e:?}"));
                }
                reason.push_str("+sender-reset");
            }
            log_decision(&shared.settings.metrics, &queue_id, direction, &envelope.mail_from, envelope.rcpts.len(), "accept", &reason);
            Status::Continue
        }
        Decision::Reject { reply, reason } => {
            if reply.code == "523" {
                if let Direction::Outgoing { login } = &envelope.direction {
                    if let Ok(mut limiter) = shared.limiter.lock() {
                        limiter.note_cleartext_attempt(login, shared.now_ms());
                    }
                }
            }
            log_decision(&shared.settings.metrics, &queue_id, direction, &envelope.mail_from, envelope.rcpts.len(), "reject", &reason.replace(' ', "_"));
            reply_status(&mut cx.reply, &reply)
        }
    }
}

async fn abort(cx: &mut Context<Session>) -> Status {
    if let Some(session) = cx.data.as_mut() {
        session.message = None;
    }
    Status::Continue
}

/// Runs the milter on `listener` until `shutdown` completes.
pub async fn run(listener: impl Listener, settings: MilterSettings, shutdown: impl Future) -> std::io::Result<()> {
    let config = indymilter::Config {
        actions: Actions::CHANGE_SENDER | Actions::ADD_HEADER,
        connection_timeout: Duration::from_secs(600),
        ..Default::default()
    };
    indymilter::run(listener, callbacks(settings), config, shutdown).await
}

#[cfg(test)]
mod tests {
    use super::reason_label;

    #[test]
    fn reasons_become_bounded_labels() {
        let cases = [
            ("encrypted", "encrypted"),
            ("encrypted+dkim-pass:example.org+signed", "encrypted"),
            ("cleartext:_no_body", "cleartext"),
            ("cleartext_to_2_enforcing_recipient(s):_x", "cleartext"),
            ("marker-lookup-failed:Permission_denied", "marker-lookup-failed"),
            ("dkim-invalid:bad signature", "dkim-invalid"),
            ("envelope-sender-mismatch", "envelope-sender-mismatch"),
            ("", ""),
        ];
        for (reason, label) in cases {
            assert_eq!(reason_label(reason), label, "{reason}");
        }
    }
}
