/* Instant IMAP IDLE wake-up on stock Dovecot.

   Dovecot's mailbox-watch.c watches a mailbox with inotify, but on a change
   it only arms a 500 ms timer before it tells the IDLE-ing client. This
   file watches the same paths with the plugin's OWN inotify instance and,
   when mail arrives (Rust decides from the events, see idle.rs), calls the
   mailbox's notify callback at once. Dovecot's watch, its delay
   timer and its periodic poll stay as they are: they are the safety net
   whenever ours is missing (limits reached, error, storage we do not know).

   Traps (see the project's notes):
   - Never io_add_notify() a path Dovecot already watches: an ioloop has one
     inotify instance, the kernel hands out the same watch descriptor again,
     and Dovecot dispatches each event to one io only, so a second watch
     silently steals Dovecot's events.
   - The notify callback may destroy the IMAP client and free the mailbox:
     nothing of the mailbox or of our context is touched after calling it.
   - Dovecot's close path never calls notify_changes: close is wrapped, or
     the descriptor leaks. */
#include "lib.h"
#include "ioloop.h"
#include "array.h"
#include "module-context.h"
#include "mail-storage-private.h"
#include "chatmail-shim.h"
#include "chatmail-idle.h"

#include <errno.h>
#include <sys/stat.h>
#include <sys/inotify.h>
#include <time.h>
#include <unistd.h>

/* maildir's uidlist lock (MAILDIR_UIDLIST_NAME in maildir-uidlist.h plus
   the dotlock suffix). */
#define MAILDIR_UIDLIST_LOCK_NAME "dovecot-uidlist.lock"

/* The events Dovecot's own inotify watch asks for (ioloop-notify-inotify.c). */
#define CHATMAIL_IDLE_EVENTS \
	(IN_CREATE | IN_DELETE | IN_DELETE_SELF | IN_MOVE | IN_MODIFY)

#define CHATMAIL_IDLE_CONTEXT(obj) \
	MODULE_CONTEXT_REQUIRE(obj, chatmail_idle_storage_module)

ARRAY_DEFINE_TYPE(chatmail_idle_event, struct chatmail_idle_event);

struct chatmail_idle_mailbox {
	union mailbox_module_context module_ctx;
	struct mailbox *box;
	struct chatmail_idle_policy policy;

	/* Our own inotify instance while the mailbox is watched, else -1. */
	int fd;
	/* Watch descriptors of maildir's new/, cur/ and control directory
	   (-1: not watched). */
	int wd_new, wd_cur, wd_control;
	/* maildir's uidlist lock file (NULL: none) */
	const char *uidlist_lock_path;
	/* Mail arrived but the session was not woken yet (the delivery
	   still held the uidlist lock). */
	int arrival_pending;
	struct io *io;
	/* A wake-up held back by policy.min_interval_msecs. */
	struct timeout *to_wake;
	/* CLOCK_MONOTONIC milliseconds of the last wake-up; 0: none yet. */
	uint64_t last_wake_msecs;
};

static MODULE_CONTEXT_DEFINE_INIT(chatmail_idle_storage_module,
				  &mail_storage_module_register);

static uint64_t chatmail_idle_now_msecs(void)
{
	struct timespec ts;

	if (clock_gettime(CLOCK_MONOTONIC, &ts) < 0)
		return 0;
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

static const char *chatmail_idle_username(struct mailbox *box)
{
	return mailbox_list_get_user(mailbox_get_namespace(box)->list)->username;
}

static void chatmail_idle_stop(struct chatmail_idle_mailbox *ibox)
{
	timeout_remove(&ibox->to_wake);
	io_remove(&ibox->io);
	if (ibox->fd != -1) {
		/* Closing the instance drops all its watches. */
		i_close_fd(&ibox->fd);
	}
}

/* Tells the IDLE-ing session about the change now. */
static void chatmail_idle_wake(struct chatmail_idle_mailbox *ibox)
{
	struct mailbox *box = ibox->box;

	timeout_remove(&ibox->to_wake);
	ibox->last_wake_msecs = chatmail_idle_now_msecs();
	if (box->notify_callback == NULL)
		return;
	/* Dovecot's own delayed wake-up, if armed, stays: it is the safety net
	   should this sync miss something. */
	box->notify_callback(box, box->notify_context);
	/* The session (and with it box and ibox) may be gone now. */
}

static enum chatmail_idle_change chatmail_idle_change(uint32_t mask)
{
	if ((mask & IN_Q_OVERFLOW) != 0)
		return CHATMAIL_IDLE_OVERFLOW;
	if ((mask & (IN_DELETE_SELF | IN_MOVE_SELF | IN_IGNORED)) != 0)
		return CHATMAIL_IDLE_WATCH_GONE;
	if ((mask & IN_CREATE) != 0)
		return CHATMAIL_IDLE_CREATED;
	if ((mask & IN_MOVED_TO) != 0)
		return CHATMAIL_IDLE_MOVED_IN;
	if ((mask & IN_MOVED_FROM) != 0)
		return CHATMAIL_IDLE_MOVED_OUT;
	if ((mask & IN_DELETE) != 0)
		return CHATMAIL_IDLE_REMOVED;
	return CHATMAIL_IDLE_MODIFIED;
}

/* Reads every queued event into `events`. Returns 0, or errno. */
static int chatmail_idle_read(struct chatmail_idle_mailbox *ibox,
			      ARRAY_TYPE(chatmail_idle_event) *events)
{
	/* Room for many events per read(); each is a struct inotify_event
	   plus its name (at most NAME_MAX + 1 bytes). */
	char buf[4096]
		__attribute__((aligned(__alignof__(struct inotify_event))));
	const struct inotify_event *event;
	struct chatmail_idle_event *out;
	ssize_t ret, pos;

	for (;;) {
		ret = read(ibox->fd, buf, sizeof(buf));
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return errno == EAGAIN || errno == EWOULDBLOCK ? 0 : errno;
		}
		if (ret == 0)
			return EIO;
		for (pos = 0; pos + (ssize_t)sizeof(*event) <= ret;
		     pos += sizeof(*event) + event->len) {
			event = (const struct inotify_event *)(buf + pos);
			if (event->wd == ibox->wd_control) {
				/* Only the uidlist lock's release counts. */
				if ((event->mask & IN_DELETE) == 0 ||
				    event->len == 0 ||
				    strcmp(event->name, MAILDIR_UIDLIST_LOCK_NAME) != 0)
					continue;
				out = array_append_space(events);
				out->place = CHATMAIL_IDLE_PLACE_CONTROL;
				out->change = CHATMAIL_IDLE_LOCK_RELEASED;
				continue;
			}
			out = array_append_space(events);
			out->place = event->wd == ibox->wd_new ?
				CHATMAIL_IDLE_PLACE_NEW :
				event->wd == ibox->wd_cur ?
				CHATMAIL_IDLE_PLACE_CUR :
				CHATMAIL_IDLE_PLACE_OTHER;
			out->change = chatmail_idle_change(event->mask);
			out->cookie = event->cookie;
		}
	}
}

static void chatmail_idle_input(struct chatmail_idle_mailbox *ibox)
{
	ARRAY_TYPE(chatmail_idle_event) events;
	uint64_t since_last, delay;
	struct stat st;
	bool wake = FALSE;
	int err, lock_held;

	T_BEGIN {
		t_array_init(&events, 16);
		err = chatmail_idle_read(ibox, &events);
		if (err == 0 && array_count(&events) > 0) {
			lock_held = ibox->uidlist_lock_path != NULL &&
				stat(ibox->uidlist_lock_path, &st) == 0;
			wake = chatmail_rs_idle_wakes(array_front(&events),
						      array_count(&events),
						      &ibox->arrival_pending,
						      lock_held ? 1 : 0) != 0;
		}
	} T_END;
	if (err != 0) {
		chatmail_rs_idle_failed(chatmail_idle_username(ibox->box),
					CHATMAIL_IDLE_READ_FAILED, "", err);
		chatmail_idle_stop(ibox);
		return;
	}
	if (!wake || ibox->to_wake != NULL) {
		/* Nothing that needs telling at once, or a wake-up is already
		   due (and will see this change too). */
		return;
	}
	since_last = ibox->last_wake_msecs == 0 ? UINT64_MAX :
		chatmail_idle_now_msecs() - ibox->last_wake_msecs;
	delay = chatmail_rs_idle_wake_delay(ibox->policy.min_interval_msecs,
					    since_last);
	if (delay == 0)
		chatmail_idle_wake(ibox);
	else {
		ibox->to_wake = timeout_add_short(delay > 60000 ? 60000 :
						  (unsigned int)delay,
						  chatmail_idle_wake, ibox);
	}
}

/* The paths to watch for this mailbox, with what they are: those Dovecot's
   storage watches (maildir: new/ and cur/, see maildir_notify_changes();
   sdbox and mdbox: the index log, see dbox_notify_changes()), and for
   maildir also its control directory, for the uidlist lock's release.
   Returns FALSE for a storage whose paths we do not know, left to Dovecot
   alone. */
static bool chatmail_idle_paths(struct mailbox *box, const char **paths_r,
				enum chatmail_idle_place *places_r,
				unsigned int *count_r)
{
	const char *name = box->storage->name;
	const char *dir, *control;

	if (strcmp(name, "maildir") == 0) {
		if (mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_MAILBOX,
					&dir) <= 0 ||
		    mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_CONTROL,
					&control) <= 0)
			return FALSE;
		paths_r[0] = t_strconcat(dir, "/new", NULL);
		places_r[0] = CHATMAIL_IDLE_PLACE_NEW;
		paths_r[1] = t_strconcat(dir, "/cur", NULL);
		places_r[1] = CHATMAIL_IDLE_PLACE_CUR;
		/* A delivery renames the mail into new/ while it holds the
		   uidlist lock, and only then records it in the uidlist and
		   the index: a session woken by the rename alone may sync too
		   early and see nothing (Dovecot's 500 ms delay hides that
		   race). The lock's release says the delivery is complete. */
		paths_r[2] = control;
		places_r[2] = CHATMAIL_IDLE_PLACE_CONTROL;
		*count_r = 3;
		return TRUE;
	}
	if (strcmp(name, "sdbox") == 0 || strcmp(name, "mdbox") == 0) {
		if (mailbox_get_path_to(box, MAILBOX_LIST_PATH_TYPE_INDEX,
					&dir) <= 0)
			return FALSE;
		paths_r[0] = t_strconcat(dir, "/dovecot.index.log", NULL);
		places_r[0] = CHATMAIL_IDLE_PLACE_OTHER;
		*count_r = 1;
		return TRUE;
	}
	return FALSE;
}

static void chatmail_idle_start(struct chatmail_idle_mailbox *ibox)
{
	struct mailbox *box = ibox->box;
	const char *paths[3];
	enum chatmail_idle_place places[3];
	unsigned int i, count;
	int fd, wd;

	if (ibox->fd != -1) {
		/* Asked again while watching: the paths are the same. */
		return;
	}
	if (!chatmail_idle_paths(box, paths, places, &count))
		return;

	fd = inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
	if (fd == -1) {
		chatmail_rs_idle_failed(chatmail_idle_username(box),
					CHATMAIL_IDLE_INIT_FAILED, "", errno);
		return;
	}
	ibox->wd_new = ibox->wd_cur = ibox->wd_control = -1;
	ibox->arrival_pending = 0;
	for (i = 0; i < count; i++) {
		wd = inotify_add_watch(fd, paths[i],
				       places[i] == CHATMAIL_IDLE_PLACE_CONTROL ?
				       IN_DELETE : CHATMAIL_IDLE_EVENTS);
		if (wd < 0) {
			chatmail_rs_idle_failed(chatmail_idle_username(box),
						CHATMAIL_IDLE_WATCH_FAILED,
						paths[i], errno);
			i_close_fd(&fd);
			return;
		}
		if (places[i] == CHATMAIL_IDLE_PLACE_NEW)
			ibox->wd_new = wd;
		else if (places[i] == CHATMAIL_IDLE_PLACE_CUR)
			ibox->wd_cur = wd;
		else if (places[i] == CHATMAIL_IDLE_PLACE_CONTROL) {
			ibox->wd_control = wd;
			if (ibox->uidlist_lock_path == NULL) {
				ibox->uidlist_lock_path = p_strconcat(box->pool,
					paths[i], "/", MAILDIR_UIDLIST_LOCK_NAME, NULL);
			}
		}
	}
	ibox->fd = fd;
	ibox->io = io_add(fd, IO_READ, chatmail_idle_input, ibox);
}

static void chatmail_idle_notify_changes(struct mailbox *box)
{
	struct chatmail_idle_mailbox *ibox = CHATMAIL_IDLE_CONTEXT(box);

	/* Dovecot's own watch first: it stays the safety net. */
	ibox->module_ctx.super.notify_changes(box);
	if (box->notify_callback == NULL)
		chatmail_idle_stop(ibox);
	else T_BEGIN {
		chatmail_idle_start(ibox);
	} T_END;
}

static void chatmail_idle_close(struct mailbox *box)
{
	struct chatmail_idle_mailbox *ibox = CHATMAIL_IDLE_CONTEXT(box);

	chatmail_idle_stop(ibox);
	ibox->module_ctx.super.close(box);
}

void chatmail_idle_mailbox_allocated(struct mailbox *box,
				     const struct chatmail_idle_policy *policy)
{
	struct mailbox_vfuncs *v = box->vlast;
	struct chatmail_idle_mailbox *ibox;

	ibox = p_new(box->pool, struct chatmail_idle_mailbox, 1);
	ibox->box = box;
	ibox->policy = *policy;
	ibox->fd = -1;
	ibox->wd_new = ibox->wd_cur = ibox->wd_control = -1;
	ibox->module_ctx.super = *v;
	box->vlast = &ibox->module_ctx.super;
	v->notify_changes = chatmail_idle_notify_changes;
	v->close = chatmail_idle_close;
	MODULE_CONTEXT_SET(box, chatmail_idle_storage_module, ibox);
}
