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
    for file in ["chatmail-shim.h", "chatmail-idle.c", "chatmail-idle.h"] {
        println!("cargo:rerun-if-changed={}", shim_dir.join(file).display());
    }
    println!("cargo:rerun-if-env-changed=DOVECOT_INCLUDE");
    println!("cargo:rerun-if-changed={include}/config.h");

    cc::Build::new()
        .file(shim_dir.join("chatmail-shim.c"))
        .file(shim_dir.join("chatmail-idle.c"))
        .include(&include)
        .include(&shim_dir)
        .define("HAVE_CONFIG_H", None)
        .warnings(true)
        // An API that differs between Dovecot releases must fail the
        // build, not compile with a warning into a plugin that crashes.
        .flag("-Werror=implicit-function-declaration")
        .flag("-Werror=incompatible-pointer-types")
        .flag("-Werror=int-conversion")
        .compile("chatmail_shim");

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
