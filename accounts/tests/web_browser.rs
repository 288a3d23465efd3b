//! The onboarding page in a real browser: headless Chromium (Debian's
//! `chromium`, installed by scripts/setup-host.sh) loads the index page
//! over HTTPS, takes screenshots at phone and desktop sizes, and the QR
//! code in each screenshot must decode to the onboarding link.

#![allow(clippy::unwrap_used)]

mod web_support;

use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use web_support::{decode_qr, Server, Setup};

const CHROMIUM: &str = "chromium";

/// Fails (does not skip) without Chromium: CI installs it.
fn check_chromium() {
    match Command::new(CHROMIUM).arg("--version").stdout(Stdio::piped()).stderr(Stdio::piped()).output() {
        Ok(out) if out.status.success() => {}
        Ok(out) => panic!("`{CHROMIUM} --version` failed: {}", String::from_utf8_lossy(&out.stderr)),
        Err(e) => panic!(
            "cannot run `{CHROMIUM}` ({e}): this test needs Debian's chromium package; \
             run scripts/setup-host.sh or `apt-get install chromium`"
        ),
    }
}

/// Loads `url` in headless Chromium with a `width`×`height` window and
/// returns the screenshot's path.
fn screenshot(dir: &Path, url: &str, width: u32, height: u32) -> PathBuf {
    let shot = dir.join(format!("shot-{width}x{height}.png"));
    let profile = dir.join(format!("profile-{width}x{height}"));
    let mut child = Command::new(CHROMIUM)
        .args(["--headless", "--no-sandbox", "--disable-gpu", "--ignore-certificate-errors", "--hide-scrollbars"])
        .args(["--no-first-run", "--no-default-browser-check", "--disable-extensions", "--force-device-scale-factor=1"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(format!("--window-size={width},{height}"))
        .arg(format!("--screenshot={}", shot.display()))
        .arg(url)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > Duration::from_secs(120) {
            let _ = child.kill();
            let _ = child.wait();
            panic!("chromium did not finish within 120 s");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    if let Some(mut pipe) = child.stderr.take() {
        let _ = std::io::Read::read_to_string(&mut pipe, &mut stderr);
    }
    assert!(status.success() && shot.exists(), "chromium failed ({status}):\n{stderr}");
    shot
}

/// The screenshot as greyscale pixels.
fn load_grey(path: &Path) -> (usize, usize, Vec<u8>) {
    let mut decoder = png::Decoder::new(BufReader::new(std::fs::File::open(path).unwrap()));
    decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    let channels = info.color_type.samples();
    let (w, h) = (info.width as usize, info.height as usize);
    let grey = buf[..info.buffer_size()]
        .chunks(channels)
        .map(|px| match channels {
            1 | 2 => px[0],
            _ => ((u32::from(px[0]) * 299 + u32::from(px[1]) * 587 + u32::from(px[2]) * 114) / 1000) as u8,
        })
        .collect();
    (w, h, grey)
}

#[test]
fn index_page_qr_code_decodes_to_the_onboarding_link_in_chromium() {
    check_chromium();
    let setup = Setup::new("");
    let server = Server::start(&setup, &[]);
    for (width, height) in [(412, 1000), (1280, 900)] {
        let shot = screenshot(setup.dir.path(), &server.url("/"), width, height);
        let (w, h, grey) = load_grey(&shot);
        assert_eq!((w, h), (width as usize, height as usize));
        let codes = decode_qr(w, h, &grey);
        assert_eq!(codes, vec!["dcaccount:https://chat.example/new".to_owned()], "screenshot {}", shot.display());
    }
    let log = server.log();
    assert!(log.contains("method=GET path=/ status=200 ip=127.0.0.1"), "{log}");
}

#[test]
fn dclogin_page_qr_code_decodes_in_chromium() {
    check_chromium();
    let setup = Setup::new("");
    let args = ["--onboarding", "dclogin", "--host", "127.0.0.1", "--imap-port", "2993", "--smtp-port", "2465", "--security", "ssl", "--accept-invalid-certs"];
    let server = Server::start(&setup, &args);
    let shot = screenshot(setup.dir.path(), &server.url("/"), 412, 1000);
    let (w, h, grey) = load_grey(&shot);
    let codes = decode_qr(w, h, &grey);
    assert_eq!(codes.len(), 1, "screenshot {}: {codes:?}", shot.display());
    let link = &codes[0];
    assert!(link.starts_with("dclogin:") && link.contains("@chat.example?p="), "{link}");
    assert!(link.ends_with("&v=1&ih=127.0.0.1&ip=2993&is=ssl&sh=127.0.0.1&sp=2465&ss=ssl&ic=3&sc=3"), "{link}");
}
