//! `chatmail-account`: operator commands. `new-login` prints a `dclogin:`
//! link and a terminal QR code for a fresh random account.
//! `chatmail-account --help` lists the arguments.

use std::process::ExitCode;

use chatmail_accounts::web::{self, OsRandom, Parsed, QrMatrix};
use chatmail_accounts::AccountPolicy;
use chatmail_config::Config;

fn main() -> ExitCode {
    let args = match web::parse_account_args(std::env::args().skip(1)) {
        Ok(Parsed::Run(args)) => args,
        Ok(Parsed::Help) => {
            println!("{}", web::ACCOUNT_USAGE);
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("chatmail-account: {message}\n{}", web::ACCOUNT_USAGE);
            return ExitCode::from(2);
        }
    };
    let loaded = match Config::load(&args.config) {
        Ok(loaded) => loaded,
        Err(e) => {
            eprintln!("chatmail-account: error: {e}");
            return ExitCode::from(2);
        }
    };
    for warning in &loaded.warnings {
        eprintln!("chatmail-account: warning: {warning}");
    }
    if let Some(hint) = web::security_hint(&args.hints) {
        eprintln!("chatmail-account: note: {hint}");
    }
    let policy = AccountPolicy::from_config(&loaded.config);
    let (addr, password) = match web::fresh_credentials(&policy, &mut OsRandom) {
        Ok(credentials) => credentials,
        Err(e) => {
            eprintln!("chatmail-account: error: {e}");
            return ExitCode::FAILURE;
        }
    };
    let url = web::dclogin_url(&addr, &password, &args.hints);
    println!("{url}");
    if args.qr {
        match QrMatrix::encode(&url) {
            Ok(matrix) => print!("\n{}", matrix.terminal(args.dark_terminal)),
            Err(e) => {
                eprintln!("chatmail-account: error: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    ExitCode::SUCCESS
}
