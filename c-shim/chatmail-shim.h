/* The C side of the chatmail Dovecot plugin: Dovecot's hooks, module
 * contexts and logging macros, which are easiest to use from C. Every
 * decision is made in Rust (dovecot-plugin/), which implements the
 * chatmail_rs_* functions below. Plain C types only: this header is what
 * bindgen reads. */
#ifndef CHATMAIL_SHIM_H
#define CHATMAIL_SHIM_H

#include <stdint.h>

struct module;
struct mail_user;

/* What the plugin learns about a mail user when Dovecot creates it. */
struct chatmail_user_info {
	const char *username;
	/* The user's home (the account's maildir), or NULL if it has none. */
	const char *home;
	/* "imap", "lmtp", ... */
	const char *service;
	/* Not a logged-in user (e.g. LDA's raw user or a shared user). */
	int autocreated;
	/* IMAP unhibernation, not a new login. */
	int session_restored;
	/* The plugin setting chatmail_config (path of chatmail.ini), or NULL. */
	const char *config_path;
};

/* Receives one mail of a listing: UID, received date (Unix seconds; for
 * maildir the file's mtime, which chatmail's expiry also goes by), size in
 * bytes (virtual size, as the quota counts it). */
typedef void chatmail_mail_cb(void *context, uint32_t uid, int64_t saved, uint64_t size);

enum chatmail_log_level {
	CHATMAIL_LOG_DEBUG = 0,
	CHATMAIL_LOG_INFO = 1,
	CHATMAIL_LOG_WARNING = 2,
	CHATMAIL_LOG_ERROR = 3,
};

/* Registers the plugin's hooks with Dovecot (from chatmail_plugin_init). */
void chatmail_shim_init(struct module *module);
/* Unregisters them (from chatmail_plugin_deinit). */
void chatmail_shim_deinit(void);
/* Logs through Dovecot's own log, prefixed "chatmail: ". */
void chatmail_shim_log(enum chatmail_log_level level, const char *message);

/* Quota usage of the user's storage in bytes. Returns 1 with a limit,
 * 0 if no quota limits storage, -1 on error (logged). */
int chatmail_shim_quota_usage(struct mail_user *user, uint64_t *used_r, uint64_t *limit_r);
/* Calls callback for every mail in the user's INBOX. 0 ok, -1 error (logged). */
int chatmail_shim_inbox_list(struct mail_user *user, chatmail_mail_cb *callback, void *context);
/* Expunges these UIDs from the user's INBOX (missing ones are skipped).
 * 0 ok, -1 error (logged). */
int chatmail_shim_inbox_expunge(struct mail_user *user, const uint32_t *uids, unsigned int count);

/* Makes the user's initialisation fail with this error (the session ends;
 * Dovecot logs the reason). Only from chatmail_rs_user_created. */
void chatmail_shim_user_fail(struct mail_user *user, const char *reason);

/* The instant IDLE wake-up of one IMAP mailbox (chatmail-idle.c). */
struct chatmail_idle_policy {
	/* Non-zero: watch the mailbox with the plugin's own inotify instance
	   and wake IDLE at once (otherwise Dovecot's own 500 ms delay). */
	int enabled;
	/* Least time between two wake-ups of one mailbox, in milliseconds
	   (0: none). */
	uint32_t min_interval_msecs;
};

/* Why the plugin's own watch could not be set up (the session then gets
   Dovecot's delayed wake-up). */
enum chatmail_idle_failure {
	CHATMAIL_IDLE_INIT_FAILED = 0,	/* inotify_init1() */
	CHATMAIL_IDLE_WATCH_FAILED = 1,	/* inotify_add_watch() */
	CHATMAIL_IDLE_READ_FAILED = 2,	/* read() of the inotify descriptor */
};

/* Where a watched change happened. */
enum chatmail_idle_place {
	/* A path other than the ones below (e.g. a dbox index log). */
	CHATMAIL_IDLE_PLACE_OTHER = 0,
	/* maildir new/: where deliveries arrive. */
	CHATMAIL_IDLE_PLACE_NEW = 1,
	/* maildir cur/ */
	CHATMAIL_IDLE_PLACE_CUR = 2,
	/* maildir's control directory, watched for the release of the
	   uidlist lock (dovecot-uidlist.lock) only. */
	CHATMAIL_IDLE_PLACE_CONTROL = 3,
};

/* What happened (the shim's reading of the inotify event mask). */
enum chatmail_idle_change {
	CHATMAIL_IDLE_CREATED = 0,	/* IN_CREATE: a new name (e.g. a hard link) */
	CHATMAIL_IDLE_MOVED_IN = 1,	/* IN_MOVED_TO */
	CHATMAIL_IDLE_MOVED_OUT = 2,	/* IN_MOVED_FROM */
	CHATMAIL_IDLE_REMOVED = 3,	/* IN_DELETE */
	CHATMAIL_IDLE_MODIFIED = 4,	/* IN_MODIFY */
	CHATMAIL_IDLE_WATCH_GONE = 5,	/* IN_DELETE_SELF, IN_MOVE_SELF, IN_IGNORED */
	CHATMAIL_IDLE_OVERFLOW = 6,	/* IN_Q_OVERFLOW: events were lost */
	/* IN_DELETE of dovecot-uidlist.lock in the control directory: a
	   delivery (or a sync) has finished updating the uidlist and index. */
	CHATMAIL_IDLE_LOCK_RELEASED = 7,
};

/* One inotify event of a watched mailbox. */
struct chatmail_idle_event {
	enum chatmail_idle_place place;
	enum chatmail_idle_change change;
	/* Pairs the two halves of a rename (IN_MOVED_FROM/IN_MOVED_TO). */
	uint32_t cookie;
};

/* Implemented in Rust: whether to wake the session now, given the events
   read at once, whether an arrival is still waiting to be told
   (*pending, updated) and whether the uidlist lock is held right now.
   Changes it does not wake for are left to Dovecot's own delayed wake-up. */
int chatmail_rs_idle_wakes(const struct chatmail_idle_event *events, unsigned int count,
			   int *pending, int lock_held);
/* Implemented in Rust: the wake-up policy for mailboxes of this user (only
   asked for IMAP sessions). */
void chatmail_rs_idle_policy(const struct chatmail_user_info *info,
			     struct chatmail_idle_policy *policy_r);
/* Implemented in Rust: a change was seen in a watched mailbox whose last
   wake-up was `since_last_msecs` ago (UINT64_MAX: never). Returns after
   how many milliseconds to wake the session (0: now). */
uint64_t chatmail_rs_idle_wake_delay(uint32_t min_interval_msecs, uint64_t since_last_msecs);
/* Implemented in Rust: the plugin's own watch failed (`err` is errno);
   logged once per process with what the operator can do about it. */
void chatmail_rs_idle_failed(const char *username, enum chatmail_idle_failure what,
			     const char *path, int err);

/* Implemented in Rust: called for every mail user Dovecot creates. */
void chatmail_rs_user_created(struct mail_user *user, const struct chatmail_user_info *info);
/* What a transaction's saves may make (flags of chatmail_rs_wants_jobs). */
enum chatmail_wants {
	/* Bot jobs: the shim has UIDs assigned at commit. */
	CHATMAIL_WANTS_JOBS = 1,
	/* A push arrival: the shim notes the envelope sender. */
	CHATMAIL_WANTS_PUSH = 2,
};
/* Implemented in Rust: what saves into `mailbox` by this user may make
 * (enum chatmail_wants flags; 0: nothing). */
int chatmail_rs_wants_jobs(const struct chatmail_user_info *info, const char *mailbox);
/* Implemented in Rust: called after such a transaction saved or copied
 * mails into `mailbox` (or only expunged some: `expunged_only` non-zero)
 * and committed; `uids` (count) are the saved mails' UIDs, or the
 * expunged ones'; `push_wanted` is non-zero if chatmail_rs_wants_jobs said
 * CHATMAIL_WANTS_PUSH; `sender` is the first saved mail's envelope sender
 * (NULL if unknown). */
void chatmail_rs_mails_saved(const struct chatmail_user_info *info, const char *mailbox,
			     uint32_t uid_validity, const uint32_t *uids, unsigned int count,
			     int expunged_only, int push_wanted, const char *sender);
/* Implemented in Rust: called when a (logged-in or delivered-to) user's
 * session ends, while its storage is still usable. */
void chatmail_rs_user_deinit(struct mail_user *user, const struct chatmail_user_info *info);

#endif
