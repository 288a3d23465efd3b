//! `chatmail-account`: operator commands. `new-login` prints a `dclogin:`
//! link and a terminal QR code for a fresh random account.
//! `chatmail-account --help` lists the arguments.

use std::process::ExitCode;

use chatmail_accounts::web::{self, OsRandom, Parsed, QrMatrix};
use chatmail_accounts::AccountPolicy;

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
    let config = match chatmail_config::load_for("chatmail-account", &args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if let Some(hint) = web::security_hint(&args.hints) {
        eprintln!("chatmail-account: note: {hint}");
    }
    let policy = AccountPolicy::from_config(&config);
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
