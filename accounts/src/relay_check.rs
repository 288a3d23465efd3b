//! `chatmail-relay check`: what a receiving chatmail relay needs in DNS,
//! its TLS certificate, and its wiring into Postfix and Dovecot, judged
//! from facts the command gathers (lookups, the certificate, `postconf`,
//! `doveconf`, sockets). This module only judges: no I/O, table-tested.
//! Each finding says what was checked, what was found and, for a problem
//! in DNS, the record to publish.

use std::fmt;
use std::net::IpAddr;

/// How a check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Works, but should be fixed (or is optional and absent).
    Warn,
    /// Mail to or from the relay will fail.
    Fail,
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub found: String,
    /// The zone line to publish (DNS problems), or what to do.
    pub fix: Option<String>,
}

impl Finding {
    fn new(level: Level, what: impl Into<String>, found: impl Into<String>) -> Finding {
        Finding { level, what: what.into(), found: found.into(), fix: None }
    }

    fn fix(mut self, fix: impl Into<String>) -> Finding {
        self.fix = Some(fix.into());
        self
    }
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.level {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        };
        write!(f, "{level} {}: {}", self.what, self.found)?;
        if let Some(fix) = &self.fix {
            write!(f, "\n       {fix}")?;
        }
        Ok(())
    }
}

/// A DNS answer: the records, or why the lookup failed (a name that does
/// not exist, or has no record of the type, is `Ok` and empty).
pub type Answer<T> = Result<Vec<T>, String>;

/// What DNS says about the relay's domain.
#[derive(Debug, Clone)]
pub struct DnsFacts {
    pub domain: String,
    /// A and AAAA of the domain.
    pub addresses: Answer<IpAddr>,
    /// MX of the domain: preference and exchange (no trailing dot).
    pub mx: Answer<(u16, String)>,
    /// A and AAAA of each MX host.
    pub mx_addresses: Vec<(String, Answer<IpAddr>)>,
    /// TXT at the domain, at `_dmarc.`, `_mta-sts.` and `_smtp._tls.`.
    pub txt: Answer<String>,
    pub dmarc: Answer<String>,
    pub mta_sts: Answer<String>,
    pub tls_rpt: Answer<String>,
    /// PTR of each of the relay's addresses.
    pub ptr: Vec<(IpAddr, Answer<String>)>,
}

fn default_answer<T>() -> Answer<T> {
    Ok(Vec::new())
}

impl DnsFacts {
    pub fn empty(domain: &str) -> DnsFacts {
        DnsFacts {
            domain: domain.to_owned(),
            addresses: default_answer(),
            mx: default_answer(),
            mx_addresses: Vec::new(),
            txt: default_answer(),
            dmarc: default_answer(),
            mta_sts: default_answer(),
            tls_rpt: default_answer(),
            ptr: Vec::new(),
        }
    }
}

fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

fn list(addresses: &[IpAddr]) -> String {
    addresses.iter().map(IpAddr::to_string).collect::<Vec<_>>().join(", ")
}

fn address_record(domain: &str, ip: &IpAddr) -> String {
    match ip {
        IpAddr::V4(_) => format!("{domain}. A {ip}"),
        IpAddr::V6(_) => format!("{domain}. AAAA {ip}"),
    }
}

/// The relay's own addresses: those given, else those the domain resolves to.
pub fn relay_addresses(given: &[IpAddr], facts: &DnsFacts) -> Vec<IpAddr> {
    if !given.is_empty() {
        return given.to_vec();
    }
    facts.addresses.clone().unwrap_or_default()
}

/// Judges the DNS of a receiving relay whose addresses are `given` (none:
/// those the domain resolves to).
pub fn dns_findings(facts: &DnsFacts, given: &[IpAddr]) -> Vec<Finding> {
    let relay = &relay_addresses(given, facts)[..];
    let domain = &facts.domain;
    let mut out = Vec::new();
    let example_ip = relay.first().map_or_else(|| format!("{domain}. A <the relay's IPv4 address>"), |ip| address_record(domain, ip));

    // A / AAAA: Delta Chat connects to the domain itself (IMAP, SMTP, web).
    match &facts.addresses {
        Err(e) => out.push(Finding::new(Level::Fail, format!("A/AAAA {domain}"), format!("lookup failed: {e}"))),
        Ok(found) if found.is_empty() => out.push(Finding::new(Level::Fail, format!("A/AAAA {domain}"), "no address").fix(format!("publish: {example_ip}"))),
        Ok(found) => {
            let missing: Vec<IpAddr> = relay.iter().filter(|ip| !found.contains(ip)).copied().collect();
            if missing.is_empty() {
                out.push(Finding::new(Level::Ok, format!("A/AAAA {domain}"), list(found)));
            } else {
                let fix = missing.iter().map(|ip| format!("publish: {}", address_record(domain, ip))).collect::<Vec<_>>().join("\n       ");
                out.push(Finding::new(Level::Fail, format!("A/AAAA {domain}"), format!("{} (not the relay's {})", list(found), list(&missing))).fix(fix));
            }
        }
    }

    // MX: other relays deliver to it.
    let mx_fix = format!("publish: {domain}. MX 10 {domain}.");
    match &facts.mx {
        Err(e) => out.push(Finding::new(Level::Fail, format!("MX {domain}"), format!("lookup failed: {e}"))),
        Ok(mx) if mx.is_empty() => out.push(Finding::new(Level::Fail, format!("MX {domain}"), "no MX record: other servers cannot deliver").fix(mx_fix)),
        Ok(mx) => {
            let mut sorted = mx.clone();
            sorted.sort();
            let shown = sorted.iter().map(|(p, h)| format!("{p} {h}")).collect::<Vec<_>>().join(", ");
            let reaches_relay = sorted.iter().any(|(_, host)| {
                facts.mx_addresses.iter().any(|(h, a)| same_name(h, host) && a.as_ref().is_ok_and(|a| a.iter().any(|ip| relay.contains(ip))))
            });
            if relay.is_empty() || reaches_relay {
                out.push(Finding::new(Level::Ok, format!("MX {domain}"), shown));
            } else {
                out.push(
                    Finding::new(Level::Fail, format!("MX {domain}"), format!("{shown}: no MX host resolves to {}", list(relay))).fix(mx_fix),
                );
            }
        }
    }

    // SPF: the relay's outgoing mail passes receivers' checks.
    let spf_fix = format!("publish: {domain}. TXT \"v=spf1 a mx ~all\"");
    match &facts.txt {
        Err(e) => out.push(Finding::new(Level::Fail, format!("SPF {domain}"), format!("lookup failed: {e}"))),
        Ok(txt) => {
            let spf: Vec<&String> = txt.iter().filter(|t| t.to_ascii_lowercase().starts_with("v=spf1")).collect();
            match spf.as_slice() {
                [] => out.push(Finding::new(Level::Fail, format!("SPF {domain}"), "no v=spf1 record: receivers may refuse the relay's mail").fix(spf_fix)),
                [record] => {
                    if spf_may_allow(record, relay) {
                        out.push(Finding::new(Level::Ok, format!("SPF {domain}"), record.as_str()));
                    } else {
                        out.push(
                            Finding::new(Level::Warn, format!("SPF {domain}"), format!("{record} (names neither a, mx nor {})", list(relay))).fix(spf_fix),
                        );
                    }
                }
                _ => out.push(Finding::new(Level::Fail, format!("SPF {domain}"), format!("{} v=spf1 records: receivers treat that as an error", spf.len())).fix(format!("keep one: {spf_fix}"))),
            }
        }
    }

    // DMARC: strict alignment, as chatmail relays publish it.
    let dmarc_fix = format!("publish: _dmarc.{domain}. TXT \"v=DMARC1;p=reject;adkim=s;aspf=s\"");
    match &facts.dmarc {
        Err(e) => out.push(Finding::new(Level::Warn, format!("DMARC _dmarc.{domain}"), format!("lookup failed: {e}"))),
        Ok(txt) => match txt.iter().find(|t| t.to_ascii_lowercase().starts_with("v=dmarc1")) {
            Some(record) => out.push(Finding::new(Level::Ok, format!("DMARC _dmarc.{domain}"), record.as_str())),
            None => out.push(Finding::new(Level::Warn, format!("DMARC _dmarc.{domain}"), "not published").fix(dmarc_fix)),
        },
    }

    // MTA-STS and TLS-RPT are optional; the relay serves no MTA-STS policy
    // itself, so a published one must be served by something else.
    match &facts.mta_sts {
        Ok(txt) if txt.iter().any(|t| t.to_ascii_lowercase().starts_with("v=stsv1")) => out.push(
            Finding::new(Level::Warn, format!("MTA-STS _mta-sts.{domain}"), "published")
                .fix(format!("make sure https://mta-sts.{domain}/.well-known/mta-sts.txt serves the policy (chatmail-web does not)")),
        ),
        Ok(_) => out.push(Finding::new(Level::Ok, format!("MTA-STS _mta-sts.{domain}"), "not published (optional)")),
        Err(e) => out.push(Finding::new(Level::Warn, format!("MTA-STS _mta-sts.{domain}"), format!("lookup failed: {e}"))),
    }
    match &facts.tls_rpt {
        Ok(txt) => match txt.iter().find(|t| t.to_ascii_lowercase().starts_with("v=tlsrptv1")) {
            Some(record) => out.push(Finding::new(Level::Ok, format!("TLS-RPT _smtp._tls.{domain}"), record.as_str())),
            None => out.push(Finding::new(Level::Ok, format!("TLS-RPT _smtp._tls.{domain}"), "not published (optional)")),
        },
        Err(e) => out.push(Finding::new(Level::Warn, format!("TLS-RPT _smtp._tls.{domain}"), format!("lookup failed: {e}"))),
    }

    // Reverse DNS: many receivers distrust an address without one.
    let mx_hosts: Vec<&str> = facts.mx.as_ref().map(|mx| mx.iter().map(|(_, h)| h.as_str()).collect()).unwrap_or_default();
    for (ip, answer) in &facts.ptr {
        let what = format!("reverse DNS {ip}");
        match answer {
            Err(e) => out.push(Finding::new(Level::Warn, what, format!("lookup failed: {e}"))),
            Ok(names) if names.is_empty() => {
                out.push(Finding::new(Level::Warn, what, "no PTR record").fix(format!("ask the address's provider for: {ip} PTR {domain}.")))
            }
            Ok(names) => {
                let shown = names.join(", ");
                if names.iter().any(|n| same_name(n, domain) || mx_hosts.iter().any(|h| same_name(n, h))) {
                    out.push(Finding::new(Level::Ok, what, shown));
                } else {
                    out.push(
                        Finding::new(Level::Warn, what, format!("{shown} (neither {domain} nor an MX host)"))
                            .fix(format!("ask the address's provider for: {ip} PTR {domain}.")),
                    );
                }
            }
        }
    }
    out
}

/// Whether an SPF record plausibly authorizes `relay`: it names `a` or
/// `mx` (this domain's), or one of the addresses; `include:` and
/// `redirect=` are taken on trust. Not an SPF evaluator.
fn spf_may_allow(record: &str, relay: &[IpAddr]) -> bool {
    record.split_whitespace().skip(1).any(|term| {
        let term = term.trim_start_matches(['+', '?']).to_ascii_lowercase();
        if term == "a" || term == "mx" || term.starts_with("include:") || term.starts_with("redirect=") || term.starts_with("a:") || term.starts_with("mx:") {
            return true;
        }
        let Some(net) = term.strip_prefix("ip4:").or_else(|| term.strip_prefix("ip6:")) else { return false };
        let (ip, prefix) = match net.split_once('/') {
            Some((ip, prefix)) => (ip, prefix.parse::<u8>().ok()),
            None => (net, None),
        };
        let Ok(ip) = ip.parse::<IpAddr>() else { return false };
        relay.iter().any(|r| in_network(*r, ip, prefix))
    })
}

fn in_network(address: IpAddr, network: IpAddr, prefix: Option<u8>) -> bool {
    match (address, network) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let bits = u32::from(prefix.unwrap_or(32).min(32));
            let mask = if bits == 0 { 0 } else { u32::MAX << (32 - bits) };
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let bits = u32::from(prefix.unwrap_or(128).min(128));
            let mask = if bits == 0 { 0 } else { u128::MAX << (128 - bits) };
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// What the certificate says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    pub path: String,
    /// DNS names of its subjectAltName (and the subject's CN if none).
    pub names: Vec<String>,
    /// Unix seconds.
    pub not_before: i64,
    pub not_after: i64,
}

/// Days before expiry from which a certificate is a warning.
pub const CERT_WARN_DAYS: i64 = 14;

fn name_matches(pattern: &str, name: &str) -> bool {
    if same_name(pattern, name) {
        return true;
    }
    // One wildcard label, leftmost only.
    match (pattern.strip_prefix("*."), name.split_once('.')) {
        (Some(base), Some((_, rest))) => same_name(base, rest),
        _ => false,
    }
}

/// Judges the certificate for `domain` at `now` (Unix seconds).
pub fn cert_findings(cert: &CertFacts, domain: &str, now: i64) -> Vec<Finding> {
    let mut out = Vec::new();
    let what = format!("TLS certificate {}", cert.path);
    if cert.names.iter().any(|n| name_matches(n, domain)) {
        out.push(Finding::new(Level::Ok, format!("{what} names"), cert.names.join(", ")));
    } else {
        out.push(
            Finding::new(Level::Fail, format!("{what} names"), format!("{} (not {domain}: clients refuse it)", cert.names.join(", ")))
                .fix(format!("get a certificate for {domain} (e.g. with certbot or acmetool)")),
        );
    }
    let days_left = (cert.not_after - now).div_euclid(86_400);
    if now < cert.not_before {
        out.push(Finding::new(Level::Fail, format!("{what} validity"), "not valid yet"));
    } else if cert.not_after <= now {
        out.push(Finding::new(Level::Fail, format!("{what} validity"), "expired").fix("renew it and reload Postfix, Dovecot and chatmail-web"));
    } else if days_left < CERT_WARN_DAYS {
        out.push(Finding::new(Level::Warn, format!("{what} validity"), format!("expires in {days_left} days")).fix("renew it (is the ACME client's timer running?)"));
    } else {
        out.push(Finding::new(Level::Ok, format!("{what} validity"), format!("{days_left} days left")));
    }
    out
}

/// Whether Dovecot's `doveconf -n` output loads the chatmail plugin:
/// 2.3 writes `mail_plugins = ... chatmail`, 2.4 a `mail_plugins {`
/// block with `chatmail = yes` (either possibly inside a protocol block).
pub fn dovecot_loads_plugin(doveconf: &str) -> bool {
    let mut in_block = false;
    for line in doveconf.lines().map(str::trim) {
        if in_block {
            if line == "}" {
                in_block = false;
            } else if line.split_once('=').is_some_and(|(k, v)| k.trim() == "chatmail" && v.trim() == "yes") {
                return true;
            }
        } else if let Some(value) = line.strip_prefix("mail_plugins") {
            let value = value.trim_start();
            if value.starts_with('{') {
                in_block = true;
            } else if let Some(words) = value.strip_prefix('=') {
                if words.split_whitespace().any(|w| w == "chatmail" || w == "$mail_plugins chatmail") {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "chat.example.org";

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    /// A relay with everything published right.
    fn good() -> DnsFacts {
        DnsFacts {
            addresses: Ok(vec![ip("192.0.2.10"), ip("2001:db8::10")]),
            mx: Ok(vec![(10, D.into())]),
            mx_addresses: vec![(D.into(), Ok(vec![ip("192.0.2.10")]))],
            txt: Ok(vec!["v=spf1 a ~all".into(), "google-site-verification=x".into()]),
            dmarc: Ok(vec!["v=DMARC1;p=reject;adkim=s;aspf=s".into()]),
            ptr: vec![(ip("192.0.2.10"), Ok(vec![format!("{D}.")]))],
            ..DnsFacts::empty(D)
        }
    }

    fn levels(findings: &[Finding]) -> Vec<(String, Level)> {
        findings.iter().map(|f| (f.what.split_whitespace().next().unwrap_or("").to_owned(), f.level)).collect()
    }

    fn find<'a>(findings: &'a [Finding], what: &str) -> &'a Finding {
        findings.iter().find(|f| f.what.starts_with(what)).unwrap_or_else(|| panic!("no {what} in {findings:?}"))
    }

    #[test]
    fn a_well_published_relay_passes() {
        let facts = good();
        let findings = dns_findings(&facts, &[]);
        assert!(findings.iter().all(|f| f.level == Level::Ok), "{findings:#?}");
        assert_eq!(find(&findings, "MTA-STS").found, "not published (optional)");
    }

    #[test]
    fn each_problem_names_the_record_to_publish() {
        type Change = fn(&mut DnsFacts);
        let table: &[(&str, Change, &str, Level, &str)] = &[
            ("no MX", |f| f.mx = Ok(vec![]), "MX", Level::Fail, "publish: chat.example.org. MX 10 chat.example.org."),
            ("MX elsewhere", |f| f.mx_addresses = vec![(D.into(), Ok(vec![ip("198.51.100.1")]))], "MX", Level::Fail, "MX 10"),
            ("no address", |f| f.addresses = Ok(vec![]), "A/AAAA", Level::Fail, "publish: chat.example.org. A"),
            ("no SPF", |f| f.txt = Ok(vec![]), "SPF", Level::Fail, "v=spf1 a mx ~all"),
            ("two SPF", |f| f.txt = Ok(vec!["v=spf1 a ~all".into(), "v=spf1 mx -all".into()]), "SPF", Level::Fail, "keep one"),
            ("SPF without the relay", |f| f.txt = Ok(vec!["v=spf1 ip4:203.0.113.0/24 -all".into()]), "SPF", Level::Warn, "v=spf1"),
            ("no DMARC", |f| f.dmarc = Ok(vec![]), "DMARC", Level::Warn, "v=DMARC1;p=reject;adkim=s;aspf=s"),
            ("no PTR", |f| f.ptr = vec![(ip("192.0.2.10"), Ok(vec![]))], "reverse", Level::Warn, "192.0.2.10 PTR chat.example.org."),
            ("foreign PTR", |f| f.ptr = vec![(ip("192.0.2.10"), Ok(vec!["host-10.provider.example.".into()]))], "reverse", Level::Warn, "PTR"),
            ("MTA-STS without a policy server", |f| f.mta_sts = Ok(vec!["v=STSv1; id=1".into()]), "MTA-STS", Level::Warn, "mta-sts.txt"),
            ("DNS down", |f| f.mx = Err("timed out".into()), "MX", Level::Fail, ""),
        ];
        for (name, change, what, level, fix) in table {
            let mut facts = good();
            change(&mut facts);
            let findings = dns_findings(&facts, &[]);
            let finding = find(&findings, what);
            assert_eq!(finding.level, *level, "{name}: {finding:?}");
            assert!(finding.fix.as_deref().unwrap_or("").contains(fix), "{name}: {finding:?}");
            // Nothing else changed level.
            let others = levels(&findings).into_iter().filter(|(w, l)| !what.starts_with(w.as_str()) && *l != Level::Ok).count();
            assert_eq!(others, 0, "{name}: {findings:#?}");
        }
    }

    #[test]
    fn given_addresses_are_the_relays() {
        let facts = good();
        let findings = dns_findings(&facts, &[ip("198.51.100.7")]);
        assert_eq!(find(&findings, "A/AAAA").level, Level::Fail);
        assert!(find(&findings, "A/AAAA").fix.as_deref().is_some_and(|f| f.contains("A 198.51.100.7")));
        assert_eq!(find(&findings, "MX").level, Level::Fail);
    }

    #[test]
    fn spf_terms() {
        let relay = [ip("192.0.2.10")];
        let cases = [
            ("v=spf1 a ~all", true),
            ("v=spf1 +mx -all", true),
            ("v=spf1 ip4:192.0.2.0/24 -all", true),
            ("v=spf1 ip4:192.0.2.10 -all", true),
            ("v=spf1 ip4:192.0.3.0/24 -all", false),
            ("v=spf1 ip6:2001:db8::/32 -all", false),
            ("v=spf1 include:_spf.example.net -all", true),
            ("v=spf1 -all", false),
        ];
        for (record, allowed) in cases {
            assert_eq!(spf_may_allow(record, &relay), allowed, "{record}");
        }
    }

    #[test]
    fn certificates() {
        let now = 1_800_000_000;
        let cert = |names: &[&str], before: i64, after: i64| CertFacts {
            path: "/etc/ssl/relay.pem".into(),
            names: names.iter().map(|n| n.to_string()).collect(),
            not_before: now + before,
            not_after: now + after,
        };
        let day = 86_400;
        let table: &[(CertFacts, Level, Level, &str)] = &[
            (cert(&[D, "mta-sts.chat.example.org"], -day, 90 * day), Level::Ok, Level::Ok, "90 days left"),
            (cert(&["*.example.org"], -day, 90 * day), Level::Ok, Level::Ok, ""),
            (cert(&["other.example"], -day, 90 * day), Level::Fail, Level::Ok, ""),
            (cert(&[D], -day, 5 * day), Level::Ok, Level::Warn, "expires in 5 days"),
            (cert(&[D], -90 * day, -day), Level::Ok, Level::Fail, "expired"),
            (cert(&[D], day, 90 * day), Level::Ok, Level::Fail, "not valid yet"),
        ];
        for (c, names, validity, text) in table {
            let findings = cert_findings(c, D, now);
            assert_eq!(findings[0].level, *names, "{c:?}");
            assert_eq!(findings[1].level, *validity, "{c:?}");
            assert!(findings[1].found.contains(text), "{findings:?}");
        }
        assert!(!name_matches("*.example.org", "a.b.example.org"));
    }

    #[test]
    fn dovecot_plugin_lines() {
        let cases = [
            ("mail_plugins = quota notify chatmail\n", true),
            ("protocol imap {\n  mail_plugins = $mail_plugins imap_quota chatmail\n}\n", true),
            ("mail_plugins {\n  quota = yes\n  chatmail = yes\n}\n", true),
            ("mail_plugins {\n  quota = yes\n}\nchatmail = yes\n", false),
            ("mail_plugins = quota notify\n", false),
            ("chatmail_config = /etc/chatmail/chatmail.ini\n", false),
        ];
        for (text, loaded) in cases {
            assert_eq!(dovecot_loads_plugin(text), loaded, "{text}");
        }
    }

    #[test]
    fn report_lines() {
        let finding = Finding::new(Level::Fail, "MX chat.example.org", "no MX record").fix("publish: chat.example.org. MX 10 chat.example.org.");
        assert_eq!(finding.to_string(), "FAIL MX chat.example.org: no MX record\n       publish: chat.example.org. MX 10 chat.example.org.");
        assert_eq!(Finding::new(Level::Ok, "a", "b").to_string(), "ok   a: b");
    }
}
