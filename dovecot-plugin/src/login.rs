//! Which mail users count as a login, for the last-login record that the
//! expiry of inactive accounts reads (`chatmail_config::layout`).

/// What Dovecot tells about a mail user it has just created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserEvent<'a> {
    pub service: &'a str,
    pub has_home: bool,
    pub autocreated: bool,
    pub session_restored: bool,
}

/// Whether this user is a person logging in. LMTP delivering mail to an
/// account is not its login (else incoming mail would keep an abandoned
/// account alive forever); nor are users Dovecot creates for itself, nor
/// an IMAP session coming back from hibernation.
pub fn is_login(event: &UserEvent<'_>) -> bool {
    event.has_home && !event.autocreated && !event.session_restored && matches!(event.service, "imap" | "pop3")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logins() {
        let login = UserEvent { service: "imap", has_home: true, autocreated: false, session_restored: false };
        let table = [
            (login, true),
            (UserEvent { service: "pop3", ..login }, true),
            (UserEvent { service: "lmtp", ..login }, false),
            (UserEvent { service: "lda", ..login }, false),
            (UserEvent { service: "doveadm", ..login }, false),
            (UserEvent { has_home: false, ..login }, false),
            (UserEvent { autocreated: true, ..login }, false),
            (UserEvent { session_restored: true, ..login }, false),
        ];
        for (event, want) in table {
            assert_eq!(is_login(&event), want, "{event:?}");
        }
    }
}
