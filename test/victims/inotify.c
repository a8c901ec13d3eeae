/*
 * inotify: two inotify fds whose watches must still report events, with
 * the same watch descriptors, after a restore.
 *
 *   inotify READY DIR
 *
 * In DIR: a.txt, b.txt and the directory sub/.
 * - fd 40: inotify_init1(IN_NONBLOCK), not close-on-exec. Watches, with
 *   gaps in the wd numbers (wds 1 and 3 were added and removed):
 *     wd 2  a.txt  IN_MODIFY | IN_CLOSE_WRITE
 *     wd 4  sub/   IN_CREATE | IN_DELETE
 *     wd 5  b.txt  IN_ATTRIB | IN_ONESHOT
 * - fd 41: inotify_init1(IN_CLOEXEC), blocking:
 *     wd 1  a.txt  IN_OPEN
 *
 * On SIGTERM it checks the flags of both fds and that nothing is queued,
 * then causes events itself: writes a.txt, creates and deletes sub/new,
 * chmods b.txt twice, writes b.txt; fd 40 must report exactly
 * (2 IN_MODIFY) (2 IN_CLOSE_WRITE) (4 IN_CREATE "new") (4 IN_DELETE "new")
 * (5 IN_ATTRIB) (5 IN_IGNORED: the one-shot watch is gone), and fd 41
 * exactly (1 IN_OPEN).
 */
#include "victim.h"
#include <poll.h>
#include <sys/inotify.h>
#include <sys/ioctl.h>
#include <sys/stat.h>

#define IFD 40
#define IFD2 41

static char path_a[4096], path_b[4096], path_sub[4096], path_new[4096];

struct want {
	int wd;
	uint32_t mask;
	const char *name;
};

static void move_to_flags(int fd, int target, int flags)
{
	if (fd < 0)
		die("inotify_init1: %s", strerror(errno));
	if (dup3(fd, target, flags) != target)
		die("dup3 to %d: %s", target, strerror(errno));
	close(fd);
}

static int watch(int fd, const char *path, uint32_t mask)
{
	int wd = inotify_add_watch(fd, path, mask);

	if (wd < 0)
		die("inotify_add_watch %s: %s", path, strerror(errno));
	return wd;
}

static void touch(const char *path)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);

	if (fd < 0 || close(fd))
		die("create %s: %s", path, strerror(errno));
}

/* drain reads every queued event of the non-blocking fd 40 away. */
static void drain(void)
{
	char buf[4096];

	while (read(IFD, buf, sizeof(buf)) > 0)
		;
}

static int queued(int fd)
{
	int n = -1;

	if (ioctl(fd, FIONREAD, &n))
		fail("FIONREAD on fd %d: %s", fd, strerror(errno));
	return n;
}

/*
 * expect reads events from fd (waiting up to 2 s in all) and compares
 * them, in order, with want; then nothing else may come within 100 ms.
 */
static void expect(int fd, const struct want *want, int n)
{
	char buf[4096] __attribute__((aligned(__alignof__(struct inotify_event))));
	int got = 0, waited = 0;

	while (got < n + 1) {
		struct pollfd p = { fd, POLLIN, 0 };

		if (poll(&p, 1, 100) <= 0) {
			if (got >= n || (waited += 100) >= 2000)
				break;
			continue;
		}
		ssize_t len = read(fd, buf, sizeof(buf));

		if (len <= 0) {
			fail("read fd %d: %s", fd, len < 0 ? strerror(errno) : "EOF");
			return;
		}
		for (char *p = buf; p < buf + len;) {
			struct inotify_event *ev = (struct inotify_event *)p;
			const char *name = ev->len ? ev->name : "";

			if (got >= n)
				fail("fd %d: unexpected event wd %d mask %#x name \"%s\"", fd, ev->wd, ev->mask, name);
			else if (ev->wd != want[got].wd || ev->mask != want[got].mask || strcmp(name, want[got].name))
				fail("fd %d: event %d is wd %d mask %#x name \"%s\", want wd %d mask %#x name \"%s\"",
				     fd, got, ev->wd, ev->mask, name, want[got].wd, want[got].mask, want[got].name);
			got++;
			p += sizeof(*ev) + ev->len;
		}
	}
	if (got < n)
		fail("fd %d: only %d of %d events arrived (first missing: wd %d mask %#x)", fd, got, n,
		     want[got].wd, want[got].mask);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: inotify READY DIR");
	victim_init();
	snprintf(path_a, sizeof(path_a), "%s/a.txt", argv[2]);
	snprintf(path_b, sizeof(path_b), "%s/b.txt", argv[2]);
	snprintf(path_sub, sizeof(path_sub), "%s/sub", argv[2]);
	snprintf(path_new, sizeof(path_new), "%s/sub/new", argv[2]);
	touch(path_a);
	touch(path_b);
	if (mkdir(path_sub, 0755))
		die("mkdir %s: %s", path_sub, strerror(errno));

	move_to_flags(inotify_init1(IN_NONBLOCK), IFD, 0);
	move_to_flags(inotify_init1(IN_CLOEXEC), IFD2, O_CLOEXEC);
	int gap1 = watch(IFD, argv[2], IN_ACCESS);
	int wd_a = watch(IFD, path_a, IN_MODIFY | IN_CLOSE_WRITE);
	int gap3 = watch(IFD, path_b, IN_OPEN);
	if (inotify_rm_watch(IFD, gap1) || inotify_rm_watch(IFD, gap3))
		die("inotify_rm_watch: %s", strerror(errno));
	int wd_sub = watch(IFD, path_sub, IN_CREATE | IN_DELETE);
	int wd_b = watch(IFD, path_b, IN_ATTRIB | IN_ONESHOT);
	int wd2_a = watch(IFD2, path_a, IN_OPEN);
	if (wd_a != 2 || wd_sub != 4 || wd_b != 5 || wd2_a != 1)
		die("wds %d %d %d %d, want 2 4 5 1", wd_a, wd_sub, wd_b, wd2_a);
	drain(); /* the IN_IGNORED of the removed watches */
	say("inotify: fd %d watches a.txt as %d, sub as %d, b.txt as %d; fd %d a.txt as %d",
	    IFD, wd_a, wd_sub, wd_b, IFD2, wd2_a);
	victim_ready(argv[1]);
	victim_wait();

	int fl = fcntl(IFD, F_GETFL), fl2 = fcntl(IFD2, F_GETFL);
	if (fl < 0 || !(fl & O_NONBLOCK))
		fail("fd %d lost O_NONBLOCK (flags %#x)", IFD, fl);
	if (fl2 < 0 || (fl2 & O_NONBLOCK))
		fail("fd %d became O_NONBLOCK (flags %#x)", IFD2, fl2);
	if (fcntl(IFD, F_GETFD) != 0 || fcntl(IFD2, F_GETFD) != FD_CLOEXEC)
		fail("close-on-exec of fds %d, %d is %d, %d, want 0, 1", IFD, IFD2, fcntl(IFD, F_GETFD), fcntl(IFD2, F_GETFD));
	int q = queued(IFD), q2 = queued(IFD2);
	if (q || q2)
		fail("events queued before any change: %d bytes on fd %d, %d on fd %d", q, IFD, q2, IFD2);

	int fd = open(path_a, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "x", 1) != 1 || close(fd))
		fail("write %s: %s", path_a, strerror(errno));
	touch(path_new);
	if (unlink(path_new))
		fail("unlink %s: %s", path_new, strerror(errno));
	if (chmod(path_b, 0600) || chmod(path_b, 0644))
		fail("chmod %s: %s", path_b, strerror(errno));
	fd = open(path_b, O_WRONLY | O_CLOEXEC);
	if (fd < 0 || write(fd, "y", 1) != 1 || close(fd))
		fail("write %s: %s", path_b, strerror(errno));

	static const struct want want[] = {
		{ 2, IN_MODIFY, "" },	   { 2, IN_CLOSE_WRITE, "" }, { 4, IN_CREATE, "new" },
		{ 4, IN_DELETE, "new" }, { 5, IN_ATTRIB, "" },	      { 5, IN_IGNORED, "" },
	};
	static const struct want want2[] = { { 1, IN_OPEN, "" } };
	expect(IFD, want, sizeof(want) / sizeof(want[0]));
	expect(IFD2, want2, 1);
	victim_finish();
}
