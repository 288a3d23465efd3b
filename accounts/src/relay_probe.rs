//! The I/O side of `chatmail-relay check`: DNS lookups, the certificate
//! file, `postconf`/`doveconf`, the daemons' sockets. The judging is
//! [`crate::relay_check`].

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use chatmail_config::wiring::{render_postfix, DovecotHost, PostfixHost};
use chatmail_config::Config;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::proto::rr::RData;
use hickory_resolver::TokioResolver;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::CertificateDer;
use x509_cert::der::Decode;

use crate::relay_check::{dovecot_loads_plugin, Answer, CertFacts, DnsFacts, Finding, Level};

/// A resolver asking `servers` (chatmail.ini's `dns_servers`), or those in
/// /etc/resolv.conf.
pub fn resolver(servers: &[SocketAddr], timeout: Duration) -> Result<TokioResolver, String> {
    let (config, mut options) = if servers.is_empty() {
        hickory_resolver::system_conf::read_system_conf().map_err(|e| format!("reading /etc/resolv.conf: {e}"))?
    } else {
        let name_servers = servers
            .iter()
            .map(|server| {
                let mut udp = ConnectionConfig::udp();
                udp.port = server.port();
                let mut tcp = ConnectionConfig::tcp();
                tcp.port = server.port();
                NameServerConfig::new(server.ip(), true, vec![udp, tcp])
            })
            .collect();
        (ResolverConfig::from_name_servers(name_servers), Default::default())
    };
    options.timeout = timeout;
    options.attempts = 2;
    TokioResolver::builder_with_config(config, TokioRuntimeProvider::default())
        .with_options(options)
        .build()
        .map_err(|e| format!("setting up the DNS resolver: {e}"))
}

fn fqdn(name: &str) -> String {
    format!("{}.", name.trim_end_matches('.'))
}

fn name_text(name: &hickory_resolver::proto::rr::Name) -> String {
    name.to_ascii().trim_end_matches('.').to_owned()
}

/// Records of one lookup: a name or type without records is an empty answer.
async fn records<T>(lookup: impl std::future::Future<Output = Result<hickory_resolver::lookup::Lookup, hickory_resolver::net::NetError>>, pick: impl Fn(&RData) -> Option<T>) -> Answer<T> {
    match lookup.await {
        Ok(found) => Ok(found.answers().iter().filter_map(|r| pick(&r.data)).collect()),
        Err(e) if e.is_no_records_found() || e.is_nx_domain() => Ok(Vec::new()),
        Err(e) => Err(e.to_string()),
    }
}

fn txt(data: &RData) -> Option<String> {
    match data {
        RData::TXT(txt) => Some(txt.txt_data.iter().map(|part| String::from_utf8_lossy(part).into_owned()).collect()),
        _ => None,
    }
}

async fn addresses(resolver: &TokioResolver, name: &str) -> Answer<IpAddr> {
    let v4 = records(resolver.ipv4_lookup(fqdn(name)), |d| match d {
        RData::A(a) => Some(IpAddr::V4(a.0)),
        _ => None,
    })
    .await?;
    let v6 = records(resolver.ipv6_lookup(fqdn(name)), |d| match d {
        RData::AAAA(a) => Some(IpAddr::V6(a.0)),
        _ => None,
    })
    .await?;
    Ok(v4.into_iter().chain(v6).collect())
}

/// Everything DNS says about `domain`, and the PTR of `given` addresses
/// (or, without any, of the domain's own).
pub async fn dns_facts(resolver: &TokioResolver, domain: &str, given: &[IpAddr]) -> DnsFacts {
    let mut facts = DnsFacts::empty(domain);
    facts.addresses = addresses(resolver, domain).await;
    facts.mx = records(resolver.mx_lookup(fqdn(domain)), |d| match d {
        RData::MX(mx) => Some((mx.preference, name_text(&mx.exchange))),
        _ => None,
    })
    .await;
    if let Ok(mx) = &facts.mx {
        for (_, host) in mx {
            facts.mx_addresses.push((host.clone(), addresses(resolver, host).await));
        }
    }
    facts.txt = records(resolver.txt_lookup(fqdn(domain)), txt).await;
    facts.dmarc = records(resolver.txt_lookup(fqdn(&format!("_dmarc.{domain}"))), txt).await;
    facts.mta_sts = records(resolver.txt_lookup(fqdn(&format!("_mta-sts.{domain}"))), txt).await;
    facts.tls_rpt = records(resolver.txt_lookup(fqdn(&format!("_smtp._tls.{domain}"))), txt).await;
    for ip in crate::relay_check::relay_addresses(given, &facts) {
        let names = records(resolver.reverse_lookup(ip), |d| match d {
            RData::PTR(ptr) => Some(name_text(&ptr.0)),
            _ => None,
        })
        .await;
        facts.ptr.push((ip, names));
    }
    facts
}

/// The first certificate of a PEM file: its names and dates.
pub fn cert_facts(path: &Path) -> Result<CertFacts, String> {
    let first = CertificateDer::pem_file_iter(path)
        .map_err(|e| format!("reading {}: {e}", path.display()))?
        .next()
        .ok_or_else(|| format!("{}: no CERTIFICATE block", path.display()))?
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let cert = x509_cert::Certificate::from_der(first.as_ref()).map_err(|e| format!("{}: not an X.509 certificate: {e}", path.display()))?;
    let tbs = &cert.tbs_certificate;
    let mut names = Vec::new();
    for ext in tbs.extensions.iter().flatten() {
        if ext.extn_id == <x509_cert::ext::pkix::SubjectAltName as x509_cert::der::oid::AssociatedOid>::OID {
            let san = x509_cert::ext::pkix::SubjectAltName::from_der(ext.extn_value.as_bytes()).map_err(|e| format!("{}: subjectAltName: {e}", path.display()))?;
            for name in san.0 {
                if let x509_cert::ext::pkix::name::GeneralName::DnsName(dns) = name {
                    names.push(dns.as_str().to_owned());
                }
            }
        }
    }
    let seconds = |t: &x509_cert::time::Time| i64::try_from(t.to_unix_duration().as_secs()).unwrap_or(i64::MAX);
    Ok(CertFacts { path: path.display().to_string(), names, not_before: seconds(&tbs.validity.not_before), not_after: seconds(&tbs.validity.not_after) })
}

/// The certificate Postfix serves: the last file of
/// `smtpd_tls_chain_files` (the key comes first, then the chain, or one
/// file holds both), else `smtpd_tls_cert_file`.
fn postfix_cert(places: &WiringPlaces) -> Option<PathBuf> {
    let pdir = places.postfix_dir.as_deref();
    postconf(pdir, &["-h", "smtpd_tls_chain_files"])
        .ok()
        .and_then(|files| files.split([',', ' ']).rfind(|f| !f.is_empty()).map(PathBuf::from))
        .or_else(|| postconf(pdir, &["-h", "smtpd_tls_cert_file"]).ok().filter(|f| !f.is_empty()).map(PathBuf::from))
}

/// The certificate `cert` (else Postfix's) judged for `domain` at `now`.
pub fn tls_findings(cert: Option<PathBuf>, places: &WiringPlaces, domain: &str, now: i64) -> Vec<Finding> {
    let Some(path) = cert.or_else(|| postfix_cert(places)) else {
        return vec![Finding {
            level: Level::Warn,
            what: "TLS certificate".into(),
            found: "none found in Postfix's settings".into(),
            fix: Some("give it with --cert FILE".into()),
        }];
    };
    match cert_facts(&path) {
        Ok(facts) => crate::relay_check::cert_findings(&facts, domain, now),
        Err(e) => vec![Finding { level: Level::Fail, what: "TLS certificate".into(), found: e, fix: None }],
    }
}

/// `postconf` (with `-c DIR` if given): the value of `name`, or why not.
fn postconf(dir: Option<&Path>, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("postconf");
    if let Some(dir) = dir {
        command.arg("-c").arg(dir);
    }
    let out = command.args(args).output().map_err(|e| format!("running postconf: {e} (is Postfix installed?)"))?;
    if !out.status.success() {
        return Err(format!("postconf {}: {}", args.join(" "), String::from_utf8_lossy(&out.stderr).trim()));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_owned())
}

/// Where Postfix and Dovecot keep their configuration.
#[derive(Debug, Clone, Default)]
pub struct WiringPlaces {
    /// `postconf -c`; `None`: Postfix's default.
    pub postfix_dir: Option<PathBuf>,
    /// `doveconf -c`; `None`: Dovecot's default.
    pub dovecot_config: Option<PathBuf>,
}

/// The relay's wiring as Postfix and Dovecot have it, and whether the
/// daemons answer on their sockets.
pub fn wiring_findings(config: &Config, config_file: &Path, places: &WiringPlaces) -> Vec<Finding> {
    let mut out = Vec::new();
    let pdir = places.postfix_dir.as_deref();
    match postconf(pdir, &["-h", "queue_directory"]) {
        Err(e) => out.push(Finding { level: Level::Fail, what: "Postfix".into(), found: e, fix: None }),
        Ok(queue_dir) => {
            let host = PostfixHost::debian(Path::new(&queue_dir));
            let wiring = render_postfix(config, &host);
            for (name, word) in &wiring.list_additions {
                let what = format!("Postfix {name}");
                match postconf(pdir, &["-h", name]) {
                    Ok(value) if value.split([',', ' ']).any(|w| w == word) => out.push(Finding { level: Level::Ok, what, found: format!("has {word}"), fix: None }),
                    Ok(value) => out.push(Finding {
                        level: Level::Fail,
                        what,
                        found: format!("{value:?} lacks {word}"),
                        fix: Some("dpkg-reconfigure chatmail-relay (or /usr/share/chatmail-relay/chatmail-postfix-wiring add)".into()),
                    }),
                    Err(e) => out.push(Finding { level: Level::Fail, what, found: e, fix: None }),
                }
            }
            let differing: Vec<String> = wiring
                .settings
                .iter()
                .filter(|(name, value)| postconf(pdir, &["-h", name]).map_or(true, |v| v != *value))
                .map(|(name, value)| format!("{name} (relay: {value})"))
                .collect();
            if differing.is_empty() {
                out.push(Finding { level: Level::Ok, what: "Postfix settings".into(), found: format!("{} as rendered from chatmail.ini", wiring.settings.len()), fix: None });
            } else {
                out.push(Finding {
                    level: Level::Warn,
                    what: "Postfix settings".into(),
                    found: format!("differ from chatmail.ini: {}", differing.join(", ")),
                    fix: Some("dpkg-reconfigure chatmail-relay applies them".into()),
                });
            }
            for service in &wiring.services {
                let what = format!("Postfix service {}/{}", service.name, service.kind);
                match postconf(pdir, &["-M", &format!("{}/{}", service.name, service.kind)]) {
                    Ok(line) if !line.is_empty() => out.push(Finding { level: Level::Ok, what, found: "in master.cf".into(), fix: None }),
                    Ok(_) => out.push(Finding { level: Level::Fail, what, found: "missing from master.cf".into(), fix: Some("dpkg-reconfigure chatmail-relay".into()) }),
                    Err(e) => out.push(Finding { level: Level::Fail, what, found: e, fix: None }),
                }
            }
            if let Some((milter, _)) = &host.milter {
                let path = Path::new(&queue_dir).join(milter.trim_start_matches("unix:").trim_start_matches('/'));
                out.push(socket_finding("chatmail-milter", &path));
            }
        }
    }
    let mut doveconf = Command::new("doveconf");
    if let Some(file) = &places.dovecot_config {
        doveconf.arg("-c").arg(file);
    }
    match doveconf.arg("-n").output() {
        Err(e) => out.push(Finding { level: Level::Fail, what: "Dovecot".into(), found: format!("running doveconf: {e} (is Dovecot installed?)"), fix: None }),
        Ok(o) if !o.status.success() => out.push(Finding { level: Level::Fail, what: "Dovecot".into(), found: format!("doveconf -n: {}", String::from_utf8_lossy(&o.stderr).trim()), fix: None }),
        Ok(o) => {
            let text = String::from_utf8_lossy(&o.stdout);
            if dovecot_loads_plugin(&text) {
                out.push(Finding { level: Level::Ok, what: "Dovecot mail_plugins".into(), found: "loads chatmail".into(), fix: None });
            } else {
                out.push(Finding {
                    level: Level::Fail,
                    what: "Dovecot mail_plugins".into(),
                    found: "the chatmail plugin is not loaded (no quota, expiry, IDLE wake-up, push or bots)".into(),
                    fix: Some("dpkg-reconfigure chatmail-relay renders conf.d/90-chatmail.conf".into()),
                });
            }
        }
    }
    let dovecot = DovecotHost::debian(Path::new("/etc/dovecot"), config_file, 0);
    out.push(socket_finding("chatmail-auth", &dovecot.auth_socket));
    out.push(socket_finding("chatmail-metadata", &dovecot.metadata_socket));
    out
}

fn socket_finding(daemon: &str, path: &Path) -> Finding {
    let what = format!("{daemon} {}", path.display());
    match std::os::unix::net::UnixStream::connect(path) {
        Ok(_) => Finding { level: Level::Ok, what, found: "answers".into(), fix: None },
        Err(e) => Finding { level: Level::Fail, what, found: format!("not answering: {e}"), fix: Some(format!("systemctl status {daemon}")) },
    }
}

/// The DKIM records, as `chatmail-milter dkim-check` sees them (it has the
/// keys and compares them with what DNS publishes).
pub fn dkim_findings(config_file: &Path) -> Vec<Finding> {
    let milter = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|d| d.join("chatmail-milter")))
        .filter(|p| p.is_file())
        .unwrap_or_else(|| PathBuf::from("/usr/sbin/chatmail-milter"));
    let out = match Command::new(&milter).arg("dkim-check").arg("--config").arg(config_file).output() {
        Ok(out) => out,
        Err(e) => return vec![Finding { level: Level::Fail, what: "DKIM".into(), found: format!("running {}: {e}", milter.display()), fix: None }],
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    let mut findings: Vec<Finding> = Vec::new();
    for line in stdout.lines() {
        if let Some(ok) = line.strip_prefix("ok: ") {
            findings.push(Finding { level: Level::Ok, what: "DKIM".into(), found: ok.into(), fix: None });
        } else if let Some(problem) = line.strip_prefix("MISMATCH: ") {
            findings.push(Finding { level: Level::Fail, what: "DKIM".into(), found: problem.into(), fix: None });
        } else if let (Some(publish), Some(last)) = (line.trim_start().strip_prefix("publish: "), findings.last_mut()) {
            last.fix = Some(format!("publish: {publish}"));
        }
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    for line in stderr.lines().filter(|l| !l.trim().is_empty()) {
        findings.push(Finding { level: Level::Fail, what: "DKIM".into(), found: line.trim_start_matches("chatmail-milter: ").into(), fix: None });
    }
    if findings.is_empty() {
        findings.push(Finding { level: Level::Fail, what: "DKIM".into(), found: format!("chatmail-milter dkim-check said nothing ({})", out.status), fix: None });
    }
    findings
}
