//! The relay's web pages: the index with the onboarding QR code, the
//! limits page and the privacy policy, all generated from chatmail.ini.
//! Plain HTML and CSS, no scripts, readable on a phone. Every value that
//! comes from the configuration or a request goes through [`escape`].

use chatmail_config::{format_size, Config};

use super::qr::Matrix;

/// Escapes text for HTML element content and quoted attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

fn count(n: u32, one: &str, many: &str) -> String {
    if n == 1 {
        format!("1 {one}")
    } else {
        format!("{n} {many}")
    }
}

const STYLE: &str = "\
:root{color-scheme:light}\
body{margin:0;font-family:system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;font-size:1.125rem;\
line-height:1.5;color:#1d1d1f;background:#f6f6f4}\
main{max-width:40rem;margin:0 auto;padding:1.25rem 1rem 2.5rem}\
h1{font-size:1.6rem;line-height:1.25;margin:.5rem 0 1rem;overflow-wrap:anywhere}\
h2{font-size:1.2rem;margin:1.75rem 0 .5rem}\
a{color:#0a58ca}\
.qr-box{text-align:center;margin:1.5rem 0}\
.qr-box a{display:inline-block}\
svg.qr{display:block;width:min(82vw,20rem);height:auto;margin:0 auto;background:#fff;\
border-radius:.5rem;box-shadow:0 1px 4px rgba(0,0,0,.15)}\
.button{display:inline-block;margin:1rem 0 .25rem;padding:.85rem 1.5rem;border-radius:.6rem;\
background:#0a58ca;color:#fff;font-weight:600;text-decoration:none}\
.note{font-size:1rem;color:#555}\
table{border-collapse:collapse;width:100%}\
th,td{text-align:left;vertical-align:top;padding:.55rem .4rem;border-bottom:1px solid #ddd}\
th{font-weight:600;width:45%}\
nav{margin-top:2.5rem;font-size:1rem}\
nav a{margin-right:1.25rem}\
code{overflow-wrap:anywhere}";

fn layout(title: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <meta name=\"referrer\" content=\"no-referrer\">\n\
         <title>{}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n<main>\n{body}\n\
         <nav><a href=\"/\">Get an account</a><a href=\"/info.html\">Limits</a>\
         <a href=\"/privacy.html\">Privacy</a></nav>\n</main>\n</body>\n</html>\n",
        escape(title)
    )
}

/// What the index page's QR code holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexKind {
    /// A `dcaccount:` link: Delta Chat asks the relay's `/new` for an account.
    DcAccount,
    /// A `dclogin:` link with a fresh address and password, made for this
    /// page view only.
    DcLogin,
}

/// The index page: what this relay is, the onboarding QR code and the same
/// link as a button for the phone the page is open on.
pub fn index_page(config: &Config, link: &str, kind: IndexKind) -> Result<String, String> {
    let domain = escape(&config.mail_domain);
    let qr = Matrix::encode(link)?.svg("QR code to get an account");
    let href = escape(link);
    let how = match kind {
        IndexKind::DcAccount => format!(
            "<p>Scan the code with Delta Chat (<em>Add account</em> or the QR scanner) to get a new chat address \
             at {domain}, or tap the button on the phone where Delta Chat is installed. No phone number, no \
             e-mail address, no personal data needed: Delta Chat creates the account for you.</p>"
        ),
        IndexKind::DcLogin => "<p>Scan the code with Delta Chat (<em>Add account</em> or the QR scanner), or tap \
             the button on the phone where Delta Chat is installed. The code holds a new address and its \
             password, made for this page view only: whoever uses it first owns the account. Reload the page \
             for another one.</p>"
            .to_owned(),
    };
    let body = format!(
        "<h1>{domain}</h1>\n\
         <p>This is a <strong>chatmail relay</strong>: a mail server for the \
         <a href=\"https://delta.chat\">Delta Chat</a> messenger. It only passes end-to-end encrypted messages \
         and keeps them only briefly.</p>\n{how}\n\
         <div class=\"qr-box\"><a href=\"{href}\">{qr}</a>\n\
         <a class=\"button\" href=\"{href}\">Get an account on this phone</a></div>\n\
         <p class=\"note\">No Delta Chat yet? Install it from <a href=\"https://get.delta.chat\">get.delta.chat</a>, \
         then come back to this page.</p>\n\
         <p class=\"note\">Before you sign up, read the <a href=\"/info.html\">limits of this relay</a> and its \
         <a href=\"/privacy.html\">privacy policy</a>.</p>"
    );
    Ok(layout(&format!("{} chatmail relay", config.mail_domain), &body))
}

/// The limits page: retention, quota, sizes and send rates from chatmail.ini.
pub fn info_page(config: &Config) -> String {
    let domain = escape(&config.mail_domain);
    let rows = [
        (
            "Messages are kept on the server",
            format!(
                "at most {}; Delta Chat normally fetches them much sooner and then removes them",
                count(config.delete_mails_after, "day", "days")
            ),
        ),
        ("Messages larger than 200 kB are kept", format!("at most {}", count(config.delete_large_after, "day", "days"))),
        (
            "Unused accounts are deleted",
            format!("after {} without a login, with all their messages", count(config.delete_inactive_users_after, "day", "days")),
        ),
        ("Storage per account", format_size(config.max_mailbox_size)),
        ("Largest message", format_size(config.max_message_size)),
        (
            "Sending",
            format!(
                "{} per minute on average, bursts of up to {}",
                count(config.max_user_send_per_minute, "message", "messages"),
                count(config.max_user_send_burst_size, "message", "messages")
            ),
        ),
        (
            "Sending from a new account",
            format!(
                "during its first {}: {} per minute, bursts of up to {}",
                count(config.reduced_rate_new_account_hours, "hour", "hours"),
                count(config.reduced_send_per_minute, "message", "messages"),
                count(config.reduced_send_burst_size, "message", "messages")
            ),
        ),
        ("Recipients per message", format!("at most {}", config.max_recipients_per_message)),
    ];
    let mut table = String::from("<table>\n");
    for (what, value) in rows {
        table.push_str(&format!("<tr><th>{}</th><td>{}</td></tr>\n", escape(what), escape(&value)));
    }
    table.push_str("</table>");
    let body = format!(
        "<h1>Limits of {domain}</h1>\n\
         <p>This relay keeps costs low and abuse hard by a few limits. They apply to every account.</p>\n\
         {table}\n\
         <h2>Only encrypted mail</h2>\n\
         <p>The relay accepts only end-to-end encrypted messages (OpenPGP, as Delta Chat sends them). \
         Unencrypted messages are refused, except the few that set up encryption between two contacts. \
         Accounts at other servers can reach you if their messages are encrypted.</p>"
    );
    layout(&format!("Limits of {}", config.mail_domain), &body)
}

/// The privacy policy: what the relay stores, for how long, and what it
/// cannot see.
pub fn privacy_page(config: &Config) -> String {
    let domain = escape(&config.mail_domain);
    let keep = escape(&count(config.delete_mails_after, "day", "days"));
    let inactive = escape(&count(config.delete_inactive_users_after, "day", "days"));
    let body = format!(
        "<h1>Privacy policy of {domain}</h1>\n\
         <p>This relay is run by the operator of {domain}. It exists to pass end-to-end encrypted messages \
         between Delta Chat users, and stores as little as that needs.</p>\n\
         <h2>What you give us</h2>\n\
         <p>Nothing personal. An account is a random address and a password chosen by your Delta Chat app. \
         We do not ask for a name, a phone number or another e-mail address.</p>\n\
         <h2>What the relay stores</h2>\n\
         <ul>\n\
         <li><strong>Your address and a hash of your password</strong>, so that only you can log in.</li>\n\
         <li><strong>The day of your last login</strong>, so that unused accounts can be deleted.</li>\n\
         <li><strong>Messages waiting for your devices</strong>, encrypted end to end: the relay cannot read \
         their content. Delta Chat removes them once fetched; the relay deletes anything older than {keep}.</li>\n\
         <li><strong>Technical logs</strong> of mail and web servers, with addresses of senders and recipients, \
         client IP addresses and times, needed to run the service and to stop abuse. They are kept briefly and \
         are not shared.</li>\n\
         </ul>\n\
         <h2>What the relay cannot see</h2>\n\
         <p>The content of your messages, their subjects and attachments, your contacts' names and your \
         profile picture travel encrypted. The relay sees who sends to whom, when, and how large a message is, \
         as any mail server must.</p>\n\
         <h2>Deleting your account</h2>\n\
         <p>An account that has not logged in for {inactive} is deleted together with all its messages. \
         Remove the account from your Delta Chat app and it will be deleted after that time.</p>\n\
         <h2>No tracking</h2>\n\
         <p>These pages use no cookies, no scripts and no third-party resources.</p>"
    );
    layout(&format!("Privacy policy of {}", config.mail_domain), &body)
}

/// A page for errors a person may see in a browser (404, over the limit).
pub fn error_page(config: &Config, title: &str, message: &str) -> String {
    let body = format!("<h1>{}</h1>\n<p>{}</p>", escape(title), escape(message));
    layout(&format!("{title} – {}", config.mail_domain), &body)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::path::Path;

    use super::*;

    fn config(extra: &str) -> Config {
        let text = format!("[params]\nmail_domain = chat.example\n{extra}");
        Config::parse(&text, Path::new("test.ini")).unwrap().config
    }

    #[test]
    fn escaping() {
        assert_eq!(escape("<a href=\"x\">'&'</a>"), "&lt;a href=&quot;x&quot;&gt;&#39;&amp;&#39;&lt;/a&gt;");
        assert_eq!(escape("plain äöü"), "plain äöü");
    }

    #[test]
    fn info_page_shows_the_configured_limits() {
        let c = config(
            "delete_mails_after = 21\ndelete_large_after = 1\ndelete_inactive_users_after = 365\n\
             max_mailbox_size = 2G\nmax_message_size = 10M\nmax_user_send_per_minute = 42\n\
             max_user_send_burst_size = 7\nreduced_send_per_minute = 3\nreduced_send_burst_size = 2\n\
             reduced_rate_new_account_hours = 12\nmax_recipients_per_message = 77\n",
        );
        let page = info_page(&c);
        for expected in [
            "at most 21 days",
            "at most 1 day<",
            "after 365 days without a login",
            "<td>2 GiB</td>",
            "<td>10 MiB</td>",
            "42 messages per minute on average, bursts of up to 7 messages",
            "first 12 hours: 3 messages per minute, bursts of up to 2 messages",
            "at most 77<",
            "Limits of chat.example",
        ] {
            assert!(page.contains(expected), "{expected:?} missing in\n{page}");
        }
        let defaults = info_page(&config(""));
        for expected in ["at most 40 days", "at most 7 days", "after 90 days", "<td>100 MiB</td>", "<td>30 MiB</td>", "60 messages per minute"] {
            assert!(defaults.contains(expected), "{expected:?} missing in\n{defaults}");
        }
    }

    #[test]
    fn privacy_page_shows_the_configured_days() {
        let page = privacy_page(&config("delete_mails_after = 5\ndelete_inactive_users_after = 30\n"));
        assert!(page.contains("older than 5 days"), "{page}");
        assert!(page.contains("logged in for 30 days"), "{page}");
    }

    #[test]
    fn pages_are_complete_documents_for_phones() {
        let c = config("");
        let pages = [
            index_page(&c, "dcaccount:https://chat.example/new", IndexKind::DcAccount).unwrap(),
            index_page(&c, "dclogin:a@chat.example?p=x&v=1", IndexKind::DcLogin).unwrap(),
            info_page(&c),
            privacy_page(&c),
            error_page(&c, "Not found", "No such page."),
        ];
        for page in pages {
            assert!(page.starts_with("<!DOCTYPE html>"));
            assert!(page.contains("<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"));
            assert!(!page.contains("<script"));
            assert!(page.trim_end().ends_with("</html>"));
        }
    }

    #[test]
    fn index_page_links_and_qr() {
        let c = config("");
        let page = index_page(&c, "dclogin:a@chat.example?p=x&v=1", IndexKind::DcLogin).unwrap();
        assert!(page.contains("href=\"dclogin:a@chat.example?p=x&amp;v=1\""), "{page}");
        assert!(page.contains("<svg xmlns="), "{page}");
        assert!(page.contains("whoever uses it first"), "{page}");
    }

    /// Config values are checked when loaded, but the pages must not rely
    /// on that: a hostile value stays text.
    #[test]
    fn hostile_values_stay_text() {
        let mut c = config("");
        c.mail_domain = "<script>alert('x')</script>&\"".into();
        let link = "dcaccount:https://x/new\"><script>alert(1)</script>";
        let pages = [
            index_page(&c, link, IndexKind::DcAccount).unwrap(),
            info_page(&c),
            privacy_page(&c),
            error_page(&c, "<b>title</b>", "<i>msg</i>"),
        ];
        for page in pages {
            assert!(!page.contains("<script"), "{page}");
            assert!(!page.contains("<b>") && !page.contains("<i>"), "{page}");
            assert!(page.contains("&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;"), "{page}");
        }
    }
}
