//! Builds the C shim against Dovecot's headers (package dovecot-dev) and
//! generates Rust bindings for its interface and for the ABI version of the
//! Dovecot the plugin is built for.

use std::path::PathBuf;

const DOVECOT_INCLUDE: &str = "/usr/include/dovecot";

fn main() {
    let include = std::env::var("DOVECOT_INCLUDE").unwrap_or_else(|_| DOVECOT_INCLUDE.into());
    let shim_dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR")).join("../c-shim");
    if !PathBuf::from(&include).join("config.h").is_file() {
        panic!("{include}/config.h not found: install dovecot-dev (scripts/setup-host.sh does) or set DOVECOT_INCLUDE");
    }
    println!("cargo:rerun-if-changed={}", shim_dir.join("chatmail-shim.c").display());
    for file in ["chatmail-shim.h", "chatmail-idle.c", "chatmail-idle.h", "chatmail-settings.c", "chatmail-settings.h"] {
        println!("cargo:rerun-if-changed={}", shim_dir.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=DOVECOT_INCLUDE");
    println!("cargo:rerun-if-changed={include}/config.h");

    let config_h = std::fs::read_to_string(PathBuf::from(&include).join("config.h")).expect("reading config.h");
    let dovecot_2_4 = version_at_least(&config_h, 2, 4);
    let build = || {
        let mut build = cc::Build::new();
        build
            .include(&include)
            .include(&shim_dir)
            .define("HAVE_CONFIG_H", None)
            .warnings(true)
            // An API that differs between Dovecot releases must fail the
            // build, not compile with a warning into a plugin that crashes.
            .flag("-Werror=implicit-function-declaration")
            .flag("-Werror=incompatible-pointer-types")
            .flag("-Werror=int-conversion");
        build
    };
    let mut shim = build();
    shim.file(shim_dir.join("chatmail-shim.c")).file(shim_dir.join("chatmail-idle.c"));
    if dovecot_2_4 {
        shim.file(shim_dir.join("chatmail-settings.c"));
        settings_module(build(), &shim_dir);
    }
    shim.compile("chatmail_shim");

    // The shim's interface plus DOVECOT_ABI_VERSION from config.h: the
    // plugin must announce exactly the ABI of the Dovecot it was built for.
    let wrapper = format!("#include \"{include}/config.h\"\n#include \"{}\"\n", shim_dir.join("chatmail-shim.h").display());
    let bindings = bindgen::Builder::default()
        .header_contents("wrapper.h", &wrapper)
        .allowlist_function("chatmail_.*")
        .allowlist_type("chatmail_.*")
        .opaque_type("mail_user")
        .allowlist_var("DOVECOT_ABI_VERSION")
        .rustified_enum("chatmail_log_level")
        .rustified_enum("chatmail_idle_failure")
        .rustified_enum("chatmail_idle_place")
        .rustified_enum("chatmail_idle_change")
        .generate()
        .expect("bindgen could not read the shim's header");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR")).join("bindings.rs");
    bindings.write_to_file(&out).expect("writing bindings.rs");
}

/// Whether config.h's DOVECOT_VERSION_MAJOR/MINOR are at least major.minor.
fn version_at_least(config_h: &str, major: u32, minor: u32) -> bool {
    let number = |name: &str| {
        config_h
            .lines()
            .find_map(|l| l.strip_prefix(&format!("#define {name} ")))
            .and_then(|v| v.trim().parse::<u32>().ok())
            .unwrap_or_else(|| panic!("config.h lacks {name}"))
    };
    (number("DOVECOT_VERSION_MAJOR"), number("DOVECOT_VERSION_MINOR")) >= (major, minor)
}

/// Dovecot 2.4: libchatmail_settings.so, the module through which Dovecot's
/// config process learns the setting chatmail_config (see
/// chatmail-settings.c), written beside the plugin (target/<profile>/).
fn settings_module(mut build: cc::Build, shim_dir: &std::path::Path) {
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    // OUT_DIR is target/<profile>/build/<crate>-<hash>/out.
    let profile_dir = out.ancestors().nth(3).expect("OUT_DIR inside target/<profile>").to_path_buf();
    let module = profile_dir.join("libchatmail_settings.so");
    let status = build
        .define("CHATMAIL_SETTINGS_MODULE", None)
        .pic(true)
        .get_compiler()
        .to_command()
        .arg("-shared")
        .arg("-o")
        .arg(&module)
        .arg(shim_dir.join("chatmail-settings.c"))
        .status()
        .expect("running the C compiler");
    assert!(status.success(), "building {} failed", module.display());
}
