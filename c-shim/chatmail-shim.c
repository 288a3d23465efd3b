/* Dovecot hooks of the chatmail plugin; see chatmail-shim.h. */
#include "lib.h"
#include "module-context.h"
#include "mail-user.h"
#include "mail-namespace.h"
#include "mail-storage-private.h"
#include "mail-storage-hooks.h"
#include "mail-search-build.h"
#include "quota.h"
#include "array.h"
#include "seq-range-array.h"
#include "notify-plugin.h"
#include "chatmail-shim.h"
#include "chatmail-idle.h"

/* Dovecot 2.4 (Debian 13) changed a few of the calls below (settings,
   quota_get_resource, notify_unregister); the rest of the API the shim
   uses is the same in 2.3 and 2.4. */
#if DOVECOT_VERSION_MAJOR > 2 || \
	(DOVECOT_VERSION_MAJOR == 2 && DOVECOT_VERSION_MINOR >= 4)
#  define CHATMAIL_DOVECOT_2_4
#  include "settings.h"
#  include "chatmail-settings.h"
#endif

#define CHATMAIL_USER_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, chatmail_user_module)

struct chatmail_user {
	union mail_user_module_context module_ctx;
	/* The setting chatmail_config, read once when the user is created;
	   NULL if unset. */
	const char *config_path;
};

static MODULE_CONTEXT_DEFINE_INIT(chatmail_user_module,
				  &mail_user_module_register);

/* The setting chatmail_config of this user, or NULL if unset. */
static const char *chatmail_config_setting(struct mail_user *user)
{
#ifdef CHATMAIL_DOVECOT_2_4
	/* Read once per process: the Rust side reads chatmail.ini once per
	   process too (a mail process serves one relay), and settings_get()
	   for every LMTP delivery's user showed in the plugin's cost. */
	static bool read = FALSE;
	static char *path = NULL;
	const struct chatmail_settings *set;
	const char *error;

	if (read)
		return path;
	if (settings_get(user->event, &chatmail_setting_parser_info, 0,
			 &set, &error) < 0) {
		i_error("chatmail: reading the setting chatmail_config: %s",
			error);
		return NULL;
	}
	if (set->chatmail_config[0] != '\0')
		path = i_strdup(set->chatmail_config);
	settings_free(set);
	read = TRUE;
	return path;
#else
	return mail_user_plugin_getenv(user, "chatmail_config");
#endif
}

static void chatmail_user_info_fill(struct mail_user *user,
				    struct chatmail_user_info *info)
{
	struct chatmail_user *cuser = MODULE_CONTEXT(user, chatmail_user_module);
	const char *home = NULL;

	if (mail_user_get_home(user, &home) <= 0)
		home = NULL;
	info->username = user->username;
	info->home = home;
	info->service = user->service;
	info->autocreated = user->autocreated ? 1 : 0;
	info->session_restored = user->session_restored ? 1 : 0;
	info->config_path = cuser == NULL ? NULL : cuser->config_path;
}

/* deinit_pre runs while every plugin's state is still alive: deinit would
   be too late, since the quota plugin (loaded before us, so earlier in the
   deinit chain) has freed its quota by the time ours would run. */
static void chatmail_user_deinit_pre(struct mail_user *user)
{
	struct chatmail_user *cuser = CHATMAIL_USER_CONTEXT(user);
	struct chatmail_user_info info;

	/* A user whose initialisation failed (e.g. refused for too many
	   sessions) has no namespaces: there is nothing to maintain. */
	if (user->error == NULL && user->namespaces != NULL) {
		chatmail_user_info_fill(user, &info);
		chatmail_rs_user_deinit(user, &info);
	}
	cuser->module_ctx.super.deinit_pre(user);
}

static void chatmail_mail_user_created(struct mail_user *user)
{
	struct mail_user_vfuncs *v = user->vlast;
	struct chatmail_user *cuser;
	struct chatmail_user_info info;

	cuser = p_new(user->pool, struct chatmail_user, 1);
	cuser->config_path = chatmail_config_setting(user);
	cuser->module_ctx.super = *v;
	MODULE_CONTEXT_SET(user, chatmail_user_module, cuser);
	chatmail_user_info_fill(user, &info);
	chatmail_rs_user_created(user, &info);
	if (user->autocreated)
		return;

	/* Chain our deinit_pre: the Rust side does its maintenance while the
	   user's storage and quota are still usable. */
	user->vlast = &cuser->module_ctx.super;
	v->deinit_pre = chatmail_user_deinit_pre;
}

static void chatmail_mailbox_allocated(struct mailbox *box)
{
	struct mail_user *user = box->storage->user;
	struct chatmail_user_info info;
	struct chatmail_idle_policy policy;

	/* Only IMAP sessions IDLE; LMTP and the plugin's own maintenance
	   allocate mailboxes too. */
	if (user->autocreated || user->service == NULL ||
	    strcmp(user->service, "imap") != 0)
		return;
	i_zero(&policy);
	chatmail_user_info_fill(user, &info);
	chatmail_rs_idle_policy(&info, &policy);
	if (policy.enabled != 0)
		chatmail_idle_mailbox_allocated(box, &policy);
}

static struct mail_storage_hooks chatmail_mail_storage_hooks = {
	.mail_user_created = chatmail_mail_user_created,
	.mailbox_allocated = chatmail_mailbox_allocated,
};

/* A transaction that may save mails the bot daemon wants to hear of
   (notify plugin events). */
struct chatmail_txn {
	struct mailbox *box;
	bool wanted;
	bool wants_push;
	bool saved;
	/* Envelope sender of the first saved mail (push only), or NULL. */
	char *sender;
	bool expunged;
	/* UIDs of the expunged mails (their files may outlive the commit). */
	ARRAY_TYPE(uint32_t) expunged_uids;
};

static struct mail_user *chatmail_box_user(struct mailbox *box)
{
	return mailbox_list_get_user(mailbox_get_namespace(box)->list);
}

static void *chatmail_txn_begin(struct mailbox_transaction_context *t)
{
	struct chatmail_txn *txn = i_new(struct chatmail_txn, 1);
	struct mail_user *user;
	struct chatmail_user_info info;

	i_array_init(&txn->expunged_uids, 4);
	txn->box = mailbox_transaction_get_mailbox(t);
	user = chatmail_box_user(txn->box);
	chatmail_user_info_fill(user, &info);
	int wants = chatmail_rs_wants_jobs(&info, mailbox_get_vname(txn->box));
	if ((wants & CHATMAIL_WANTS_JOBS) != 0) {
		/* Have UIDs assigned at commit even where Dovecot would not
		   (LMTP with one recipient): the job names the mail by UID. */
		t->flags |= MAILBOX_TRANSACTION_FLAG_ASSIGN_UIDS;
	}
	txn->wants_push = (wants & CHATMAIL_WANTS_PUSH) != 0;
	txn->wanted = wants != 0;
	return txn;
}

static void chatmail_mail_save(void *_txn, struct mail *mail)
{
	struct chatmail_txn *txn = _txn;
	const char *sender;

	txn->saved = TRUE;
	/* LMTP sets the envelope sender on the save (mail_deliver_save);
	   a mail the account sent to itself makes no push notification. */
	if (txn->wants_push && txn->sender == NULL &&
	    mail_get_special(mail, MAIL_FETCH_FROM_ENVELOPE, &sender) >= 0 &&
	    sender != NULL && *sender != '\0')
		txn->sender = i_strdup(sender);
}

static void chatmail_mail_expunge(void *_txn, struct mail *mail)
{
	struct chatmail_txn *txn = _txn;

	txn->expunged = TRUE;
	if (txn->wanted && array_count(&txn->expunged_uids) < 10000)
		array_push_back(&txn->expunged_uids, &mail->uid);
}

static void chatmail_mail_copy(void *txn, struct mail *src ATTR_UNUSED,
			       struct mail *dst ATTR_UNUSED)
{
	((struct chatmail_txn *)txn)->saved = TRUE;
}

static void chatmail_txn_commit(void *_txn,
				struct mail_transaction_commit_changes *changes)
{
	struct chatmail_txn *txn = _txn;

	if (txn->wanted && (txn->saved || txn->expunged)) T_BEGIN {
		struct mail_user *user = chatmail_box_user(txn->box);
		struct chatmail_user_info info;
		ARRAY_TYPE(uint32_t) uids;
		struct seq_range_iter iter;
		unsigned int n = 0;
		uint32_t uid, uid_validity = 0;

		t_array_init(&uids, 4);
		if (!txn->saved) {
			/* Only expunges: pass their UIDs instead. */
			array_append_array(&uids, &txn->expunged_uids);
		} else if (changes != NULL) {
			uid_validity = changes->uid_validity;
			seq_range_array_iter_init(&iter, &changes->saved_uids);
			while (seq_range_array_iter_nth(&iter, n++, &uid))
				array_push_back(&uids, &uid);
		}
		chatmail_user_info_fill(user, &info);
		chatmail_rs_mails_saved(&info, mailbox_get_vname(txn->box),
					uid_validity,
					array_count(&uids) == 0 ? NULL : array_front(&uids),
					array_count(&uids),
					txn->saved ? 0 : 1,
					txn->wants_push ? 1 : 0, txn->sender);
	} T_END;
	array_free(&txn->expunged_uids);
	i_free(txn->sender);
	i_free(txn);
}

static void chatmail_txn_rollback(void *_txn)
{
	struct chatmail_txn *txn = _txn;

	array_free(&txn->expunged_uids);
	i_free(txn->sender);
	i_free(txn);
}

static const struct notify_vfuncs chatmail_notify_vfuncs = {
	.mail_transaction_begin = chatmail_txn_begin,
	.mail_save = chatmail_mail_save,
	.mail_expunge = chatmail_mail_expunge,
	.mail_copy = chatmail_mail_copy,
	.mail_transaction_commit = chatmail_txn_commit,
	.mail_transaction_rollback = chatmail_txn_rollback,
};

static struct notify_context *chatmail_notify_ctx;

void chatmail_shim_init(struct module *module)
{
	mail_storage_hooks_add(module, &chatmail_mail_storage_hooks);
	chatmail_notify_ctx = notify_register(&chatmail_notify_vfuncs);
}

void chatmail_shim_deinit(void)
{
	if (chatmail_notify_ctx != NULL) {
#ifdef CHATMAIL_DOVECOT_2_4
		notify_unregister(&chatmail_notify_ctx);
#else
		notify_unregister(chatmail_notify_ctx);
		chatmail_notify_ctx = NULL;
#endif
	}
	mail_storage_hooks_remove(&chatmail_mail_storage_hooks);
}

void chatmail_shim_user_fail(struct mail_user *user, const char *reason)
{
	/* mail_user_init() fails when a hook has set user->error. */
	user->error = p_strdup(user->pool, reason);
}

void chatmail_shim_log(enum chatmail_log_level level, const char *message)
{
	switch (level) {
	case CHATMAIL_LOG_DEBUG:
		i_debug("chatmail: %s", message);
		break;
	case CHATMAIL_LOG_INFO:
		i_info("chatmail: %s", message);
		break;
	case CHATMAIL_LOG_WARNING:
		i_warning("chatmail: %s", message);
		break;
	case CHATMAIL_LOG_ERROR:
	default:
		i_error("chatmail: %s", message);
		break;
	}
}

int chatmail_shim_quota_usage(struct mail_user *user, uint64_t *used_r,
			      uint64_t *limit_r)
{
	struct quota_root_iter *iter;
	struct quota_root *root;
	int ret = 0;

	iter = quota_root_iter_init_user(user);
	while ((root = quota_root_iter_next(iter)) != NULL) {
		uint64_t value, limit;
		const char *error;
#ifdef CHATMAIL_DOVECOT_2_4
		/* No mailbox: the limits of the root's first namespace (the
		   relay's one quota covers the whole account). */
		enum quota_get_result result =
			quota_get_resource(root, NULL, QUOTA_NAME_STORAGE_BYTES,
					   &value, &limit, &error);
#else
		enum quota_get_result result =
			quota_get_resource(root, "INBOX", QUOTA_NAME_STORAGE_BYTES,
					   &value, &limit, &error);
#endif
		if (result == QUOTA_GET_RESULT_LIMITED) {
			*used_r = value;
			*limit_r = limit;
			ret = 1;
			break;
		}
		if (result == QUOTA_GET_RESULT_INTERNAL_ERROR) {
			i_error("chatmail: quota of %s: %s",
				user->username, error);
			ret = -1;
			break;
		}
	}
	quota_root_iter_deinit(&iter);
	return ret;
}

static struct mailbox *chatmail_inbox_open(struct mail_user *user)
{
	struct mail_namespace *ns;
	struct mailbox *box;

	ns = mail_namespace_find_inbox(user->namespaces);
	if (ns == NULL) {
		i_error("chatmail: %s has no INBOX namespace", user->username);
		return NULL;
	}
	box = mailbox_alloc(ns->list, "INBOX", 0);
	if (mailbox_open(box) < 0 || mailbox_sync(box, 0) < 0) {
		i_error("chatmail: opening INBOX of %s: %s", user->username,
			mailbox_get_last_internal_error(box, NULL));
		mailbox_free(&box);
		return NULL;
	}
	return box;
}

int chatmail_shim_inbox_list(struct mail_user *user,
			     chatmail_mail_cb *callback, void *context)
{
	struct mailbox *box;
	struct mailbox_transaction_context *trans;
	struct mail_search_args *args;
	struct mail_search_context *search;
	struct mail *mail;
	int ret = 0;

	if ((box = chatmail_inbox_open(user)) == NULL)
		return -1;
	trans = mailbox_transaction_begin(box, 0, "chatmail list");
	args = mail_search_build_init();
	mail_search_build_add_all(args);
	search = mailbox_search_init(trans, args, NULL,
				     MAIL_FETCH_RECEIVED_DATE |
				     MAIL_FETCH_VIRTUAL_SIZE, NULL);
	mail_search_args_unref(&args);
	while (mailbox_search_next(search, &mail)) {
		time_t received;
		uoff_t size;

		/* A mail whose date or size cannot be read is skipped:
		   it is never deleted on a guess. */
		if (mail_get_received_date(mail, &received) < 0 ||
		    mail_get_virtual_size(mail, &size) < 0)
			continue;
		callback(context, mail->uid, (int64_t)received, (uint64_t)size);
	}
	if (mailbox_search_deinit(&search) < 0) {
		i_error("chatmail: listing INBOX of %s: %s", user->username,
			mailbox_get_last_internal_error(box, NULL));
		ret = -1;
	}
	(void)mailbox_transaction_commit(&trans);
	mailbox_free(&box);
	return ret;
}

int chatmail_shim_inbox_expunge(struct mail_user *user, const uint32_t *uids,
				unsigned int count)
{
	struct mailbox *box;
	struct mailbox_transaction_context *trans;
	struct mail *mail;
	unsigned int i;
	int ret = 0;

	if ((box = chatmail_inbox_open(user)) == NULL)
		return -1;
	trans = mailbox_transaction_begin(box, 0, "chatmail expunge");
	mail = mail_alloc(trans, 0, NULL);
	for (i = 0; i < count; i++) {
		if (mail_set_uid(mail, uids[i]))
			mail_expunge(mail);
	}
	mail_free(&mail);
	if (mailbox_transaction_commit(&trans) < 0 ||
	    mailbox_sync(box, 0) < 0) {
		i_error("chatmail: expunging from INBOX of %s: %s",
			user->username,
			mailbox_get_last_internal_error(box, NULL));
		ret = -1;
	}
	mailbox_free(&box);
	return ret;
}
