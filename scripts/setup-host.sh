#!/bin/sh
# Installs what building and running a local chatmail relay needs on Debian 12.
# Idempotent and quick when everything is present. Must run as root.
#
# The distribution's own postfix and dovecot services are kept from starting
# (a policy-rc.d denies starts during installation), because the local relay
# runs its own instances with private config dirs and ports.
set -eu

PACKAGES="postfix dovecot-core dovecot-imapd dovecot-lmtpd dovecot-dev libclang-dev \
clang openssl ssl-cert pkg-config python3-venv python3-pip make chromium \
debootstrap lintian dpkg-dev coturn"

log() { echo "setup-host: $*" >&2; }

if [ "$(id -u)" != 0 ]; then
    log "must run as root (Postfix and Dovecot need it); try: sudo $0"
    exit 1
fi

missing=""
for p in $PACKAGES; do
    if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
        missing="$missing $p"
    fi
done

if [ -n "$missing" ]; then
    log "installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    # Finish any installation an earlier interrupted run left half-configured.
    dpkg --configure -a || true
    echo "postfix postfix/main_mailer_type select No configuration" | debconf-set-selections
    # Keep the distribution's services from starting and grabbing ports.
    policy=/usr/sbin/policy-rc.d
    had_policy=no
    [ -e "$policy" ] && had_policy=yes
    if [ "$had_policy" = no ]; then
        printf '#!/bin/sh\nexit 101\n' > "$policy"
        chmod 755 "$policy"
    fi
    apt-get update -q
    # A first install can fail transiently (a vanished /tmp/apt-dpkg-install-*
    # archive was seen); one retry after fixing dpkg state is enough.
    if ! apt-get install -y -q --no-install-recommends $missing; then
        log "install failed once; retrying"
        dpkg --configure -a || true
        apt-get install -y -q --no-install-recommends $missing
    fi
    if [ "$had_policy" = no ]; then
        rm -f "$policy"
    fi
fi

# The mail store belongs to one unprivileged system user, as on a chatmail relay.
if ! getent passwd vmail >/dev/null; then
    log "creating system user vmail"
    useradd --system --user-group --home-dir /home/vmail --no-create-home \
        --shell /usr/sbin/nologin vmail
fi

# The Debian packages are built with cargo-deb (crates.io), pinned.
if ! cargo deb --version 2>/dev/null | grep -q "3\.8\.0"; then
    log "installing cargo-deb 3.8.0"
    cargo install --locked --quiet cargo-deb@3.8.0
fi

log "host ready"
