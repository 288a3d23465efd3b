//! `chatmail-relay check` against the harness's DNS server: a relay with
//! everything published passes; each missing or wrong record fails with the
//! record to publish; certificates with the wrong name or near their end
//! are caught. (The wiring part runs in the package test, where Postfix
//! and Dovecot have Debian's paths.)

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use chatmail_testrelay::dkim::{publish, TEST_KEY_PEM};
use chatmail_testrelay::{sibling_binary, test_dns};

struct Site {
    dir: tempfile::TempDir,
    domain: String,
    ini: PathBuf,
}

const RELAY_IP: &str = "192.0.2.44";

/// A relay's chatmail.ini for `domain`, asking the test DNS, and a
/// certificate for it valid `days` days.
fn site(domain: &str, days: u32) -> Site {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = dir.path().join("dkim.private");
    std::fs::write(&key, TEST_KEY_PEM).expect("key");
    let ini = dir.path().join("chatmail.ini");
    let dns = test_dns().expect("test dns");
    std::fs::write(
        &ini,
        format!(
            "[params]\nmail_domain = {domain}\nmailboxes_dir = {}\ndkim_key_file = {}\ndns_servers = {}\nmetrics_dir =\n",
            dir.path().join("mail").display(),
            key.display(),
            dns.addr()
        ),
    )
    .expect("ini");
    certificate(dir.path(), "cert.pem", domain, days);
    Site { dir, domain: domain.to_owned(), ini }
}

fn certificate(dir: &Path, name: &str, domain: &str, days: u32) -> PathBuf {
    let cert = dir.join(name);
    let status = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", &days.to_string()])
        .args(["-subj", &format!("/CN={domain}"), "-addext", &format!("subjectAltName=DNS:{domain}")])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key")))
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));
    cert
}

/// Publishes everything a receiving relay needs.
fn publish_all(domain: &str) {
    let dns = test_dns().expect("test dns");
    let ip: IpAddr = RELAY_IP.parse().expect("ip");
    dns.set_addresses(domain, &[ip]);
    dns.set_mx(domain, &[(10, domain)]);
    dns.set_txt(domain, "v=spf1 a ~all");
    dns.set_txt(&format!("_dmarc.{domain}"), "v=DMARC1;p=reject;adkim=s;aspf=s");
    dns.set_ptr(ip, domain);
    publish(dns, "opendkim", domain);
}

fn check(site: &Site, args: &[&str]) -> (i32, String) {
    let binary = sibling_binary("chatmail-relay", "CHATMAIL_RELAY_BIN").expect("chatmail-relay");
    let out = Command::new(binary).arg("--config").arg(&site.ini).arg("check").args(args).output().expect("run check");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status.code().unwrap_or(-1), text)
}

fn cert_arg(site: &Site) -> String {
    site.dir.path().join("cert.pem").display().to_string()
}

#[test]
fn a_relay_with_everything_published_passes() {
    let site = site("all-good.check.test", 90);
    publish_all(&site.domain);
    let (code, out) = check(&site, &["--only", "dns,dkim,tls", "--cert", &cert_arg(&site)]);
    assert_eq!(code, 0, "{out}");
    for line in [
        format!("ok   A/AAAA {}: {RELAY_IP}", site.domain),
        format!("ok   MX {}: 10 {}", site.domain, site.domain),
        format!("ok   SPF {}: v=spf1 a ~all", site.domain),
        format!("ok   reverse DNS {RELAY_IP}: {}", site.domain),
        format!("ok   DKIM: opendkim._domainkey.{} matches", site.domain),
        "days left".to_owned(),
        "0 warnings, 0 failed".to_owned(),
    ] {
        assert!(out.contains(&line), "{line:?} in\n{out}");
    }
}

#[test]
fn missing_records_fail_with_the_record_to_publish() {
    let site = site("gaps.check.test", 90);
    publish_all(&site.domain);
    let dns = test_dns().expect("test dns");
    dns.set_mx(&site.domain, &[]);
    dns.remove(&format!("opendkim._domainkey.{}", site.domain));
    dns.remove(&format!("_dmarc.{}", site.domain));
    let (code, out) = check(&site, &["--only", "dns,dkim"]);
    assert_eq!(code, 1, "{out}");
    let domain = &site.domain;
    for line in [
        format!("FAIL MX {domain}: no MX record"),
        format!("publish: {domain}. MX 10 {domain}."),
        format!("FAIL DKIM: looking up TXT opendkim._domainkey.{domain}"),
        format!("publish: opendkim._domainkey.{domain}. 3600 IN TXT"),
        format!("warn DMARC _dmarc.{domain}: not published"),
        format!("publish: _dmarc.{domain}. TXT \"v=DMARC1;p=reject;adkim=s;aspf=s\""),
    ] {
        assert!(out.contains(&line), "{line:?} in\n{out}");
    }
    // The relay's address, given, is not where the domain points.
    let (code, out) = check(&site, &["--only", "dns", "--address", "198.51.100.9"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains(&format!("publish: {domain}. A 198.51.100.9")), "{out}");
}

#[test]
fn certificates_with_the_wrong_name_or_near_their_end_are_caught() {
    let site = site("certs.check.test", 90);
    let wrong = certificate(site.dir.path(), "other.pem", "other.check.test", 90);
    let (code, out) = check(&site, &["--only", "tls", "--cert", &wrong.display().to_string()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("names: other.check.test (not certs.check.test: clients refuse it)"), "{out}");
    let soon = certificate(site.dir.path(), "soon.pem", &site.domain, 3);
    let (code, out) = check(&site, &["--only", "tls", "--cert", &soon.display().to_string()]);
    assert_eq!(code, 0, "a warning is not a failure: {out}");
    assert!(out.contains("validity: expires in 2 days") || out.contains("validity: expires in 3 days"), "{out}");
    let (code, out) = check(&site, &["--only", "tls", "--cert", "/nonexistent/cert.pem"]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("FAIL TLS certificate: reading /nonexistent/cert.pem"), "{out}");
}

#[test]
fn bad_arguments_are_usage_errors() {
    let site = site("usage.check.test", 90);
    for args in [&["--only", "dns,everything"][..], &["--address", "not-an-ip"]] {
        let (code, out) = check(&site, args);
        assert_eq!(code, 2, "{args:?}: {out}");
    }
}
