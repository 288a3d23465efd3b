/* The plugin's one setting, chatmail_config (the path of chatmail.ini), as
   Dovecot 2.4's settings API wants it declared.

   Dovecot 2.4 has no plugin { } section and refuses settings it does not
   know. The config process learns of a plugin's settings from a module in
   MODULEDIR/settings that exports <name>_set_infos; it cannot load the mail
   plugin itself (no lib-storage there). So this file is compiled twice:
   into the plugin, which reads the setting with settings_get(), and alone,
   with CHATMAIL_SETTINGS_MODULE defined, into libchatmail_settings.so for
   MODULEDIR/settings. Both then share the same defines, which Dovecot
   requires (it matches values by position). Not used with Dovecot 2.3,
   where the setting lives in plugin { } and mail_user_plugin_getenv()
   reads it. */
#include "lib.h"
#include "settings-parser.h"
#include "chatmail-settings.h"

#undef DEF
#define DEF(type, name) \
	SETTING_DEFINE_STRUCT_##type(#name, name, struct chatmail_settings)

static const struct setting_define chatmail_setting_defines[] = {
	/* A path: no %{variables} expanded. */
	DEF(STR_NOVARS, chatmail_config),
	SETTING_DEFINE_LIST_END
};

static const struct chatmail_settings chatmail_default_settings = {
	/* Empty: the plugin's default path (/etc/chatmail/chatmail.ini). */
	.chatmail_config = "",
};

const struct setting_parser_info chatmail_setting_parser_info = {
	.name = "chatmail",
	.defines = chatmail_setting_defines,
	.defaults = &chatmail_default_settings,
	.struct_size = sizeof(struct chatmail_settings),
	.pool_offset1 = 1 + offsetof(struct chatmail_settings, pool),
};

#ifdef CHATMAIL_SETTINGS_MODULE
/* Read by Dovecot's config process (module name chatmail_settings). */
const struct setting_parser_info *chatmail_settings_set_infos[] = {
	&chatmail_setting_parser_info,
	NULL
};
/* Dovecot loads the module only into the release it was built for. */
const char *chatmail_settings_version = DOVECOT_ABI_VERSION;
#endif
