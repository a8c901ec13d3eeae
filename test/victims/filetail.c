/*
 * filetail: the long tail of files (issue 15), one scenario a run.
 *
 *   filetail READY SCENARIO DIR
 *
 * epoll-closed  an epoll (fd 40) watching an eventfd (counter 2) added as
 *               fd 30, then dup'ed to 31 and 30 closed: epoll_wait gives
 *               its data 0x30, fdinfo still says tfd 30.
 * epoll-reused  the same, then another eventfd (counter 0) opened at fd 30:
 *               epoll_wait gives only the first one's data; fd 30 is still
 *               the second (counter 0, then 5 after a write), fd 31 the
 *               first (counter 2).
 * opath         DIR/link, a symbolic link to "target-nowhere", opened
 *               O_PATH|O_NOFOLLOW at fd 30: fstat says a link, readlinkat
 *               (fd, "") reads "target-nowhere", F_GETFL has O_PATH.
 */
#include "victim.h"

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>

static char dir[256];

static void epoll_check(int ep, uint64_t want, int n_want)
{
	struct epoll_event e[4];
	int n = epoll_wait(ep, e, 4, 0);

	if (n != n_want)
		fail("epoll_wait: %d events, want %d", n, n_want);
	else if (n == 1 && e[0].data.u64 != want)
		fail("epoll_wait: data %#llx, want %#llx", (unsigned long long)e[0].data.u64, (unsigned long long)want);
}

static void tfd_check(int ep, int tfd)
{
	char p[64], b[4096];
	int f, n;

	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", ep);
	f = open(p, O_RDONLY);
	n = f < 0 ? -1 : read(f, b, sizeof(b) - 1);
	if (f >= 0)
		close(f);
	if (n <= 0) {
		fail("read %s", p);
		return;
	}
	b[n] = 0;
	char want[32];

	snprintf(want, sizeof(want), "tfd: %8d", tfd);
	if (!strstr(b, want))
		fail("epoll fdinfo has no '%s':\n%s", want, b);
}

static uint64_t counter(int fd)
{
	uint64_t v = 0;

	if (read(fd, &v, 8) != 8)
		return errno == EAGAIN ? 0 : (uint64_t)-1;
	if (v && write(fd, &v, 8) != 8) /* put it back */
		fail("eventfd %d: write back: %s", fd, strerror(errno));
	return v;
}

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: filetail READY SCENARIO DIR");
	const char *sc = argv[2];
	char p[512];

	victim_init();
	snprintf(dir, sizeof(dir), "%s", argv[3]);

	if (!strcmp(sc, "epoll-closed") || !strcmp(sc, "epoll-reused")) {
		struct epoll_event e = { .events = EPOLLIN, .data.u64 = 0x30 };

		move_to(epoll_create1(0), 40);
		move_to(eventfd(2, EFD_NONBLOCK), 30);
		if (epoll_ctl(40, EPOLL_CTL_ADD, 30, &e))
			die("epoll_ctl: %s", strerror(errno));
		if (dup2(30, 31) != 31)
			die("dup2: %s", strerror(errno));
		close(30);
		if (!strcmp(sc, "epoll-reused"))
			move_to(eventfd(0, EFD_NONBLOCK), 30);
	} else if (!strcmp(sc, "opath")) {
		snprintf(p, sizeof(p), "%s/link", dir);
		if (symlink("target-nowhere", p))
			die("symlink %s: %s", p, strerror(errno));
		move_to(open(p, O_PATH | O_NOFOLLOW), 30);
	} else {
		die("unknown scenario %s", sc);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(sc, "epoll-closed")) {
		epoll_check(40, 0x30, 1);
		tfd_check(40, 30);
		if (fcntl(30, F_GETFD) != -1)
			fail("fd 30 is open, it was closed");
		if (counter(31) != 2)
			fail("fd 31: counter is not 2");
	} else if (!strcmp(sc, "epoll-reused")) {
		epoll_check(40, 0x30, 1);
		tfd_check(40, 30);
		if (counter(30) != 0)
			fail("fd 30: counter is not 0");
		if (counter(31) != 2)
			fail("fd 31: counter is not 2");
		uint64_t five = 5;

		if (write(30, &five, 8) != 8 || counter(30) != 5)
			fail("fd 30: a write of 5 is not read back");
		epoll_check(40, 0x30, 1); /* still only the first one */
	} else if (!strcmp(sc, "opath")) {
		struct stat st;
		char b[64] = "";
		int fl = fcntl(30, F_GETFL);

		if (fstat(30, &st) || !S_ISLNK(st.st_mode))
			fail("fd 30: fstat mode %o, want a symbolic link", st.st_mode);
		if (readlinkat(30, "", b, sizeof(b) - 1) != 14 || strcmp(b, "target-nowhere"))
			fail("fd 30: readlinkat gives '%s' (%s)", b, strerror(errno));
		if (fl < 0 || !(fl & O_PATH))
			fail("fd 30: F_GETFL %#x has no O_PATH", fl);
	}
	victim_finish();
}
