# Sourced by chatmail-relay's scripts (installed in /usr/share/chatmail-relay):
# chatmail.ini ($INI) as the relay's programs read it. No parsing here:
# `chatmail-relay value` applies chatmail's units and defaults (a plain
# max_mailbox_size means megabytes) and fails, naming the line, on a value
# the relay would refuse.

# ini_value KEY: KEY's checked value (sizes in bytes, paths with
# {mail_domain} filled in, an unset optional value empty).
ini_value() {
    chatmail-relay --config "$INI" value "$1"
}
