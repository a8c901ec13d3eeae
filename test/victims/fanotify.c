/*
 * fanotify: a fanotify group whose marks must still report events, each
 * with an fd on the right file, after a restore.
 *
 *   fanotify READY DIR MNT [fs|perm]
 *
 * MNT is a mount of its own (the harness mounts a tmpfs there), so that a
 * mount mark sees only this victim. Files: DIR/f.txt, MNT/m.txt,
 * MNT/ign.txt. Fd 40: fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK,
 * O_RDONLY | O_LARGEFILE), not close-on-exec, with
 *   - an inode mark on DIR/f.txt: FAN_MODIFY | FAN_CLOSE_WRITE;
 *   - a mount mark on MNT: FAN_OPEN | FAN_CLOSE_NOWRITE;
 *   - an inode mark on MNT/ign.txt with only an ignored mask
 *     (FAN_OPEN | FAN_CLOSE_NOWRITE): the mount mark must not report it.
 * With "fs" it also holds a filesystem mark (FAN_MARK_FILESYSTEM) on MNT,
 * with "perm" a FAN_CLASS_CONTENT group at fd 41 with a FAN_OPEN_PERM mark
 * on DIR/f.txt (closed again before the checks): kinds the dump must
 * refuse.
 *
 * On SIGTERM it checks the flags and that nothing is queued, then writes
 * f.txt, reads m.txt and ign.txt, and reads DIR/other.txt (not marked).
 * The events must carry this pid and an O_RDONLY fd on the file, and sum
 * up, per file, to exactly FAN_MODIFY | FAN_CLOSE_WRITE for f.txt and
 * FAN_OPEN | FAN_CLOSE_NOWRITE for m.txt (the kernel may merge events);
 * any other event is a failure.
 */
#include "victim.h"
#include <poll.h>
#include <sys/fanotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#define FAN 40
#define FAN_PERM 41

static char path_f[4096], path_m[4096], path_ign[4096], path_other[4096];

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0 || close(fd))
		die("create %s: %s", path, strerror(errno));
}

static void mark(int fd, unsigned int flags, uint64_t mask, const char *path)
{
	if (fanotify_mark(fd, FAN_MARK_ADD | flags, mask, AT_FDCWD, path))
		die("fanotify_mark %#x %#llx %s: %s", flags, (unsigned long long)mask, path, strerror(errno));
}

static ino_t ino_of(const char *path)
{
	struct stat st;

	if (stat(path, &st))
		die("stat %s: %s", path, strerror(errno));
	return st.st_ino;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: fanotify READY DIR MNT [fs|perm]");
	victim_init();
	const char *mode = argc > 4 ? argv[4] : "";
	snprintf(path_f, sizeof(path_f), "%s/f.txt", argv[2]);
	snprintf(path_other, sizeof(path_other), "%s/other.txt", argv[2]);
	snprintf(path_m, sizeof(path_m), "%s/m.txt", argv[3]);
	snprintf(path_ign, sizeof(path_ign), "%s/ign.txt", argv[3]);
	touch(path_f);
	touch(path_other);
	touch(path_m);
	touch(path_ign);
	ino_t ino_f = ino_of(path_f), ino_m = ino_of(path_m);

	int fd = fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK, O_RDONLY | O_LARGEFILE);
	if (fd < 0)
		die("fanotify_init: %s", strerror(errno));
	if (dup2(fd, FAN) != FAN)
		die("dup2: %s", strerror(errno));
	close(fd);
	mark(FAN, 0, FAN_MODIFY | FAN_CLOSE_WRITE, path_f);
	mark(FAN, FAN_MARK_MOUNT, FAN_OPEN | FAN_CLOSE_NOWRITE, argv[3]);
	mark(FAN, FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY, FAN_OPEN | FAN_CLOSE_NOWRITE, path_ign);
	if (!strcmp(mode, "fs"))
		mark(FAN, FAN_MARK_FILESYSTEM, FAN_CLOSE_WRITE, argv[3]);
	if (!strcmp(mode, "perm")) {
		fd = fanotify_init(FAN_CLASS_CONTENT | FAN_CLOEXEC, O_RDONLY);
		if (fd < 0 || dup3(fd, FAN_PERM, O_CLOEXEC) != FAN_PERM)
			die("fanotify_init(FAN_CLASS_CONTENT): %s", strerror(errno));
		close(fd);
		mark(FAN_PERM, 0, FAN_OPEN_PERM, path_f);
	}
	say("fanotify: fd %d marks %s (inode %lu), mount %s, ignores %s", FAN, path_f, (unsigned long)ino_f, argv[3], path_ign);
	victim_ready(argv[1]);
	victim_wait();
	/* Nobody answers its permission events: closing the group allows them. */
	if (!strcmp(mode, "perm"))
		close(FAN_PERM);

	int fl = fcntl(FAN, F_GETFL);
	if (fl < 0 || !(fl & O_NONBLOCK))
		fail("fd %d lost O_NONBLOCK (flags %#x)", FAN, fl);
	if (fcntl(FAN, F_GETFD) != 0)
		fail("fd %d became close-on-exec", FAN);
	int q = -1;
	if (ioctl(FAN, FIONREAD, &q) || q)
		fail("%d bytes queued on fd %d before any change", q, FAN);

	fd = open(path_f, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "x", 1) != 1 || close(fd))
		fail("write %s: %s", path_f, strerror(errno));
	const char *reads[] = { path_m, path_ign, path_other };
	for (int i = 0; i < 3; i++) {
		char c;

		fd = open(reads[i], O_RDONLY | O_CLOEXEC);
		if (fd < 0 || read(fd, &c, 1) < 0 || close(fd))
			fail("read %s: %s", reads[i], strerror(errno));
	}

	uint64_t got_f = 0, got_m = 0;
	char buf[4096] __attribute__((aligned(8)));
	/* Up to 2 s for the events, then 200 ms more for any unexpected one. */
	for (int idle = 0; idle < 20;) {
		struct pollfd p = { FAN, POLLIN, 0 };

		if (poll(&p, 1, 100) <= 0) {
			idle++;
			if (idle >= 2 && got_f == (FAN_MODIFY | FAN_CLOSE_WRITE) && got_m == (FAN_OPEN | FAN_CLOSE_NOWRITE))
				break;
			continue;
		}
		ssize_t len = read(FAN, buf, sizeof(buf));
		if (len <= 0) {
			fail("read fd %d: %s", FAN, len < 0 ? strerror(errno) : "EOF");
			break;
		}
		struct fanotify_event_metadata *ev = (struct fanotify_event_metadata *)buf;
		for (; FAN_EVENT_OK(ev, len); ev = FAN_EVENT_NEXT(ev, len)) {
			struct stat st;
			char link[4096] = "?", proc[64];

			if (ev->vers != FANOTIFY_METADATA_VERSION) {
				fail("event of version %d", ev->vers);
				continue;
			}
			if (ev->fd < 0) {
				fail("event mask %#llx without an fd (%d)", (unsigned long long)ev->mask, ev->fd);
				continue;
			}
			snprintf(proc, sizeof(proc), "/proc/self/fd/%d", ev->fd);
			if (readlink(proc, link, sizeof(link) - 1) < 0)
				strcpy(link, "?");
			if (fstat(ev->fd, &st))
				fail("fstat of event fd: %s", strerror(errno));
			else if (ev->pid != getpid())
				fail("event mask %#llx on %s from pid %d, not this one", (unsigned long long)ev->mask, link, ev->pid);
			else if ((fcntl(ev->fd, F_GETFL) & O_ACCMODE) != O_RDONLY)
				fail("event fd on %s is not O_RDONLY (flags %#x)", link, fcntl(ev->fd, F_GETFL));
			else if (st.st_ino == ino_f)
				got_f |= ev->mask;
			else if (st.st_ino == ino_m)
				got_m |= ev->mask;
			else
				fail("unexpected event mask %#llx on %s", (unsigned long long)ev->mask, link);
			close(ev->fd);
		}
	}
	if (got_f != (FAN_MODIFY | FAN_CLOSE_WRITE))
		fail("events on f.txt (inode mark): mask %#llx, want %#x", (unsigned long long)got_f, FAN_MODIFY | FAN_CLOSE_WRITE);
	if (got_m != (FAN_OPEN | FAN_CLOSE_NOWRITE))
		fail("events on m.txt (mount mark): mask %#llx, want %#x", (unsigned long long)got_m, FAN_OPEN | FAN_CLOSE_NOWRITE);
	victim_finish();
}
