# Sourced by chatmail-relay's scripts (installed in /usr/share/chatmail-relay):
# reading /etc/chatmail/chatmail.ini ($INI) from shell. chatmail's format is
# `key = value` lines in [params], the last one winning.

# ini_value KEY DEFAULT: KEY's value, or DEFAULT when it is not set (or $INI
# does not exist).
ini_value() {
    v=$(sed -n "s/^[[:space:]]*$1[[:space:]]*=[[:space:]]*//p" "$INI" 2>/dev/null | tail -n 1)
    echo "${v:-$2}"
}

# ini_mailboxes_dir DOMAIN: mailboxes_dir with {mail_domain} filled in.
ini_mailboxes_dir() {
    ini_value mailboxes_dir "/home/vmail/mail/{mail_domain}" | sed "s/{mail_domain}/$1/"
}
