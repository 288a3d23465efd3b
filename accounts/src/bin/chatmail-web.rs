//! `chatmail-web`: the relay's HTTPS server for onboarding (`POST /new`,
//! the index page with the QR code, limits and privacy pages).
//! `chatmail-web --help` lists the arguments.

use std::process::ExitCode;
use std::sync::Arc;

use chatmail_accounts::web::{self, App, CertStore, Onboarding, Parsed};
use tokio::net::TcpListener;

fn main() -> ExitCode {
    let args = match web::parse_web_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{}", web::WEB_USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("chatmail-web: {message}\n{}", web::WEB_USAGE);
            return ExitCode::from(2);
        }
    };
    let config = match chatmail_config::load_for("chatmail-web", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let onboarding = args.onboarding.clone().unwrap_or_else(|| Onboarding::default_for(&config));
    if let Onboarding::DcLogin(hints) = &onboarding {
        if let Some(hint) = web::security_hint(hints) {
            eprintln!("chatmail-web: warning: {hint}");
        }
    }
    let app = match App::new(config, onboarding) {
        Ok(app) => Arc::new(app),
        Err(e) => {
            eprintln!("chatmail-web: error: {e}");
            return ExitCode::from(2);
        }
    };
    let certs = match CertStore::load(&args.cert, &args.key) {
        Ok(certs) => Arc::new(certs),
        Err(e) => {
            eprintln!("chatmail-web: error: {e}");
            return ExitCode::from(2);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("chatmail-web: error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let listeners = bind(&args.listen).await?;
        for listener in &listeners {
            if let Ok(addr) = listener.local_addr() {
                eprintln!("chatmail-web: listening on {addr}, onboarding link {}", app.onboarding_link());
            }
        }
        web::serve(listeners, app, certs, chatmail_accounts::shutdown_signal("chatmail-web")).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("chatmail-web: error: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Binds every `--listen` address; without any, `[::]:443`, or
/// `0.0.0.0:443` where the machine has no IPv6.
async fn bind(listen: &[String]) -> Result<Vec<TcpListener>, String> {
    if listen.is_empty() {
        return match TcpListener::bind(web::DEFAULT_LISTEN).await {
            Ok(listener) => Ok(vec![listener]),
            Err(e) if matches!(e.raw_os_error(), Some(97 | 99)) => {
                // EAFNOSUPPORT / EADDRNOTAVAIL: no IPv6 here.
                let listener = TcpListener::bind(web::FALLBACK_LISTEN)
                    .await
                    .map_err(|e| format!("binding {}: {e}", web::FALLBACK_LISTEN))?;
                Ok(vec![listener])
            }
            Err(e) => Err(format!("binding {}: {e}", web::DEFAULT_LISTEN)),
        };
    }
    let mut listeners = Vec::new();
    for addr in listen {
        listeners.push(TcpListener::bind(addr.as_str()).await.map_err(|e| format!("binding {addr}: {e}"))?);
    }
    Ok(listeners)
}

