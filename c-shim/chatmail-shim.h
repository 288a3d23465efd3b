/* The C side of the chatmail Dovecot plugin: Dovecot's hooks, module
 * contexts and logging macros, which are easiest to use from C. Every
 * decision is made in Rust (dovecot-plugin/), which implements the
 * chatmail_rs_* functions below. Plain C types only: this header is what
 * bindgen reads. */
#ifndef CHATMAIL_SHIM_H
#define CHATMAIL_SHIM_H

struct module;

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
};

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

/* Implemented in Rust: called for every mail user Dovecot creates. */
void chatmail_rs_user_created(const struct chatmail_user_info *info);

#endif
