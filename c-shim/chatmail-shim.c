/* Dovecot hooks of the chatmail plugin; see chatmail-shim.h. */
#include "lib.h"
#include "mail-user.h"
#include "mail-storage-hooks.h"
#include "chatmail-shim.h"

static void chatmail_mail_user_created(struct mail_user *user)
{
	struct chatmail_user_info info;
	const char *home = NULL;

	if (mail_user_get_home(user, &home) <= 0)
		home = NULL;
	info.username = user->username;
	info.home = home;
	info.service = user->service;
	info.autocreated = user->autocreated ? 1 : 0;
	info.session_restored = user->session_restored ? 1 : 0;
	chatmail_rs_user_created(&info);
}

static struct mail_storage_hooks chatmail_mail_storage_hooks = {
	.mail_user_created = chatmail_mail_user_created,
};

void chatmail_shim_init(struct module *module)
{
	mail_storage_hooks_add(module, &chatmail_mail_storage_hooks);
}

void chatmail_shim_deinit(void)
{
	mail_storage_hooks_remove(&chatmail_mail_storage_hooks);
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
