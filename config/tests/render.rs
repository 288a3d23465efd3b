//! Golden tests of the rendered Postfix and Dovecot wiring: each folder in
//! tests/render holds a chatmail.ini and the files rendered from it for a
//! Debian host (what the package writes). Run with
//! CHATMAIL_UPDATE_GOLDEN=1 to rewrite the expected files after a deliberate
//! change, then review the diff.

use std::path::Path;

use chatmail_config::wiring::{render_dovecot, render_postfix, DovecotHost, DovecotRelease, PostfixHost};
use chatmail_config::Config;

/// The mail user's uid in the expected files.
const VMAIL_UID: u32 = 999;

#[test]
fn rendered_wiring_matches_the_golden_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/render");
    let update = std::env::var_os("CHATMAIL_UPDATE_GOLDEN").is_some();
    let mut cases: Vec<_> = std::fs::read_dir(&root).expect("tests/render").map(|e| e.expect("entry").path()).collect();
    cases.sort();
    let mut failures = Vec::new();
    for case in &cases {
        let loaded = Config::load(&case.join("chatmail.ini")).unwrap_or_else(|e| panic!("{e}"));
        assert!(loaded.warnings.is_empty(), "{}: {:?}", case.display(), loaded.warnings);
        let config = loaded.config;
        let mut rendered = Vec::new();
        for release in [DovecotRelease::V2_3, DovecotRelease::V2_4] {
            let mut host = DovecotHost::debian(Path::new("/etc/dovecot"), Path::new("/etc/chatmail/chatmail.ini"), VMAIL_UID);
            host.release = release;
            let dovecot = render_dovecot(&config, &host);
            let dir = match release {
                DovecotRelease::V2_3 => "dovecot-2.3",
                DovecotRelease::V2_4 => "dovecot-2.4",
            };
            rendered.push((format!("{dir}/90-chatmail.conf"), dovecot.conf));
            rendered.push((format!("{dir}/05-chatmail-auth.conf"), dovecot.auth_conf));
            for (path, text) in dovecot.aux {
                rendered.push((format!("{dir}/{}", path.file_name().expect("file name").to_string_lossy()), text));
            }
        }
        let postfix = render_postfix(&config, &PostfixHost::debian(Path::new("/var/spool/postfix")));
        rendered.push(("postfix.txt".to_owned(), postfix.to_lines()));
        for (name, text) in rendered {
            let path = case.join(name);
            if update {
                std::fs::create_dir_all(path.parent().expect("dir")).expect("mkdir");
                std::fs::write(&path, &text).expect("writing a golden file");
                continue;
            }
            let want = std::fs::read_to_string(&path).unwrap_or_default();
            if want != text {
                failures.push(format!("{} differs from the rendering:\n{text}", path.display()));
            }
        }
    }
    assert!(cases.len() >= 6, "render cases missing");
    assert!(failures.is_empty(), "{}\n(CHATMAIL_UPDATE_GOLDEN=1 rewrites them)", failures.join("\n"));
}
