//! Postfix's chatmail wiring: main.cf settings, the milters added to the
//! operator's lists, and the master.cf services Delta Chat and the bot
//! daemon submit through.

use std::fmt::Write as _;
use std::path::Path;

use crate::Config;

/// The host's facts Postfix's wiring depends on.
#[derive(Debug, Clone)]
pub struct PostfixHost {
    /// Postfix's queue directory (`postconf -h queue_directory`): the bot
    /// service is made only for a bot_submission_socket in its public/.
    pub queue_dir: std::path::PathBuf,
    /// Dovecot's LMTP socket as Postfix names it (relative to the queue
    /// directory, or absolute).
    pub lmtp_socket: String,
    /// Dovecot's SASL socket as Postfix names it.
    pub sasl_socket: String,
    /// The milter's sockets for SMTP mail and for Postfix's own mail
    /// (bounces), e.g. `unix:/chatmail-milter/milter.sock`; `None`: no
    /// milter (the benchmarks' baseline).
    pub milter: Option<(String, String)>,
    /// master.cf service names of submission (STARTTLS) and submissions
    /// (implicit TLS): `submission`, or `127.0.0.1:PORT` for a test relay.
    pub submission_service: String,
    pub submissions_service: String,
    /// Whether the submission services run chrooted (Debian's default: yes).
    pub chroot: bool,
}

impl PostfixHost {
    /// Debian's Postfix: chrooted in /var/spool/postfix, Dovecot's sockets
    /// in its private/, the milter's sockets where its unit makes them.
    pub fn debian(queue_dir: &Path) -> PostfixHost {
        PostfixHost {
            queue_dir: queue_dir.to_path_buf(),
            lmtp_socket: "private/dovecot-lmtp".into(),
            sasl_socket: "private/auth".into(),
            milter: Some(("unix:/chatmail-milter/milter.sock".into(), "unix:/chatmail-milter/local.sock".into())),
            submission_service: "submission".into(),
            submissions_service: "submissions".into(),
            chroot: true,
        }
    }
}

/// One master.cf service.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MasterService {
    pub name: String,
    /// `inet` or `unix`.
    pub kind: &'static str,
    /// The whole entry on one line, as `postconf -M name/kind=ENTRY` takes it.
    pub entry: String,
}

/// What the relay sets in Postfix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PostfixWiring {
    /// main.cf `name = value` settings.
    pub settings: Vec<(&'static str, String)>,
    /// Words appended to list-valued main.cf settings (the operator's own
    /// milters stay).
    pub list_additions: Vec<(&'static str, String)>,
    pub services: Vec<MasterService>,
}

/// The master.cf name of the bots' submission service: bot_submission_socket's
/// file name when the socket is directly in the queue's public/ directory
/// (where Postfix makes `unix` services' sockets); otherwise `None` (the
/// service is the operator's to set up).
pub fn bots_service_name(queue_dir: &Path, socket: &Path) -> Option<String> {
    let name = socket.strip_prefix(queue_dir.join("public")).ok()?;
    let mut parts = name.components();
    match (parts.next(), parts.next()) {
        (Some(std::path::Component::Normal(only)), None) => only.to_str().map(str::to_owned),
        _ => None,
    }
}

pub fn render_postfix(config: &Config, host: &PostfixHost) -> PostfixWiring {
    // As on a chatmail relay: the mail domain is the local domain, and local
    // delivery goes to Dovecot over LMTP. Postfix does not check whether an
    // account exists; Dovecot refuses unknown ones.
    let mut settings = vec![
        ("myhostname", config.mail_domain.clone()),
        ("mydestination", config.mail_domain.clone()),
        ("local_recipient_maps", String::new()),
        ("local_transport", format!("lmtp:unix:{}", host.lmtp_socket)),
        ("message_size_limit", config.max_message_size.to_string()),
        ("smtpd_recipient_limit", config.max_recipients_per_message.to_string()),
        ("smtpd_sasl_type", "dovecot".into()),
        ("smtpd_sasl_path", host.sasl_socket.clone()),
    ];
    let mut list_additions = Vec::new();
    if let Some((smtp, local)) = &host.milter {
        // If the milter cannot be reached, mail is tempfailed, never
        // accepted unchecked. Mail Postfix makes itself (bounces) is
        // DKIM-signed by the same milter through its own socket, which is
        // how the milter tells it apart; Postfix shows its own bounces to
        // milters only when asked to.
        settings.extend([
            ("milter_default_action", "tempfail".to_owned()),
            ("milter_protocol", "6".to_owned()),
            ("internal_mail_filter_classes", "bounce".to_owned()),
        ]);
        list_additions.push(("smtpd_milters", smtp.clone()));
        list_additions.push(("non_smtpd_milters", local.clone()));
    }

    let chroot = if host.chroot { "y" } else { "n" };
    let logins_only = "-o smtpd_sasl_auth_enable=yes \
                       -o smtpd_client_restrictions=permit_sasl_authenticated,reject \
                       -o smtpd_relay_restrictions=permit_sasl_authenticated,reject";
    let submission = |name: &str, syslog: &str, extra: &str| MasterService {
        name: name.to_owned(),
        kind: "inet",
        entry: format!(
            "{name} inet n - {chroot} - - smtpd -o syslog_name=postfix/{syslog} \
             -o smtpd_tls_security_level=encrypt {extra}{logins_only}"
        ),
    };
    let mut services = vec![
        submission(&host.submission_service, "chatmail-submission", ""),
        submission(&host.submissions_service, "chatmail-submissions", "-o smtpd_tls_wrappermode=yes "),
    ];
    // The bot daemon submits its bots' mail here, logged in as the bot: a
    // socket in public/ (group postdrop), no TLS needed on it.
    if let Some(name) = bots_service_name(&host.queue_dir, &config.bot_submission_socket) {
        let mut entry = String::new();
        let _ = write!(
            entry,
            "{name} unix n - {chroot} - - smtpd -o syslog_name=postfix/chatmail-bots \
             -o smtpd_tls_security_level=none -o smtpd_tls_auth_only=no {logins_only}"
        );
        services.push(MasterService { name, kind: "unix", entry });
    }
    PostfixWiring { settings, list_additions, services }
}

impl PostfixWiring {
    /// The lines `chatmail-relay render postfix` prints for the package's
    /// scripts: `set NAME=VALUE`, `append NAME WORD`, `service NAME/KIND ENTRY`.
    pub fn to_lines(&self) -> String {
        let mut out = String::new();
        for (name, value) in &self.settings {
            let _ = writeln!(out, "set {name}={value}");
        }
        for (name, word) in &self.list_additions {
            let _ = writeln!(out, "append {name} {word}");
        }
        for s in &self.services {
            let _ = writeln!(out, "service {}/{} {}", s.name, s.kind, s.entry);
        }
        out
    }

    /// The settings and list additions as main.cf lines (for a main.cf
    /// that has none of them yet: the test harness's).
    pub fn main_cf_lines(&self) -> String {
        let mut out = String::new();
        for (name, value) in self.settings.iter().chain(&self.list_additions) {
            let _ = writeln!(out, "{name} = {value}");
        }
        out
    }

    /// The services as master.cf lines.
    pub fn master_cf_lines(&self) -> String {
        self.services.iter().map(|s| format!("{}\n", s.entry)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bots_service_only_directly_in_public() {
        let queue = Path::new("/var/spool/postfix");
        let table = [
            ("/var/spool/postfix/public/chatmail-bots", Some("chatmail-bots")),
            ("/var/spool/postfix/public/other", Some("other")),
            ("/var/spool/postfix/public/a/b", None),
            ("/var/spool/postfix/public", None),
            ("/var/spool/postfix/private/chatmail-bots", None),
            ("/run/chatmail-bots.sock", None),
        ];
        for (socket, want) in table {
            assert_eq!(bots_service_name(queue, Path::new(socket)).as_deref(), want, "{socket}");
        }
    }
}
