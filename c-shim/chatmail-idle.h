/* The instant IDLE wake-up (chatmail-idle.c), used by chatmail-shim.c only. */
#ifndef CHATMAIL_IDLE_H
#define CHATMAIL_IDLE_H

struct mailbox;
struct chatmail_idle_policy;

/* Wraps the mailbox's notify_changes and close vfuncs (from the
   mailbox_allocated hook of an IMAP session whose policy enables it). */
void chatmail_idle_mailbox_allocated(struct mailbox *box,
				     const struct chatmail_idle_policy *policy);

#endif
