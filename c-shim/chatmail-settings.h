/* The plugin's settings with Dovecot 2.4 (see chatmail-settings.c). */
#ifndef CHATMAIL_SETTINGS_H
#define CHATMAIL_SETTINGS_H

struct chatmail_settings {
	pool_t pool;
	/* Path of chatmail.ini; empty for the default. */
	const char *chatmail_config;
};

extern const struct setting_parser_info chatmail_setting_parser_info;

#endif
