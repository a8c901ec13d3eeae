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
 * fanotify      fanotify_init(FAN_CLASS_NOTIF|FAN_NONBLOCK|
 *               FAN_UNLIMITED_QUEUE) at fd 30, a mark on DIR/f: fdinfo says
 *               "flags:12" still (not 13: no FAN_CLOEXEC added), and a
 *               write to DIR/f is reported.
 * inotify-gone  an inotify (fd 30) watching DIR/x.txt (IN_MODIFY, wd 1),
 *               open at fd 31 and unlinked: a write through fd 31 is
 *               reported on wd 1.
 * netns         /proc/self/ns/net open at fd 30: still the task's network
 *               namespace (same inode as /proc/self/ns/net).
 * pidfd-dead    pidfds of children that exited and were reaped before the
 *               dump: fd 30 from pidfd_open, fd 31 from clone(CLONE_PIDFD):
 *               both still pidfds (fdinfo "Pid:\t-1"), signal 0 ESRCH,
 *               poll readable.
 * proc-dead     fd 30 open on /proc/CHILD/status and cwd in /proc/CHILD of
 *               a child that exited and was reaped: reads give ESRCH, the
 *               cwd's link still names /proc/CHILD.
 * shared-fdt    two children cloned with CLONE_FILES (no CLONE_THREAD) share
 *               the parent's fd table: fd 30 (an eventfd, counter 3) in
 *               all, and after the restore kcmp(KCMP_FILES) says the same
 *               table, an fd the parent opens is the children's.
 * flock-owner   DIR/l locked with flock(LOCK_EX) through fd 30 (dump -l):
 *               fdinfo's lock line names the victim's pid.
 * mapmode       DIR/m (2 pages) opened O_RDWR, mapped MAP_SHARED|PROT_READ,
 *               that fd closed, the file open O_RDONLY at fd 30: after the
 *               restore mprotect(PROT_READ|PROT_WRITE) works and a write
 *               through the mapping reaches the file.
 */
#include "victim.h"

#include <sys/file.h>
#include <sys/mman.h>

#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/stat.h>
#include <sys/fanotify.h>
#include <sys/inotify.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <poll.h>
#include <sched.h>
#include <linux/sched.h>

static char dir[256];
static pid_t fdt_child, fdt_child2;
static volatile int fdt_go;

static int fdt_main(void *arg)
{
	(void)arg;
	while (!fdt_go)
		pause();
	return 0;
}
static char *map;

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
	} else if (!strcmp(sc, "fanotify")) {
		snprintf(p, sizeof(p), "%s/f", dir);
		close(open(p, O_CREAT | O_WRONLY, 0644));
		move_to(fanotify_init(FAN_CLASS_NOTIF | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE, O_RDONLY), 30);
		if (fanotify_mark(30, FAN_MARK_ADD, FAN_MODIFY, AT_FDCWD, p))
			die("fanotify_mark %s: %s", p, strerror(errno));
	} else if (!strcmp(sc, "inotify-gone")) {
		snprintf(p, sizeof(p), "%s/x.txt", dir);
		move_to(open(p, O_CREAT | O_RDWR, 0644), 31);
		move_to(inotify_init1(IN_NONBLOCK), 30);
		if (inotify_add_watch(30, p, IN_MODIFY) != 1)
			die("inotify_add_watch %s: %s", p, strerror(errno));
		unlink(p);
	} else if (!strcmp(sc, "netns")) {
		move_to(open("/proc/self/ns/net", O_RDONLY), 30);
	} else if (!strcmp(sc, "pidfd-dead")) {
		pid_t c = fork();

		if (c == 0)
			_exit(0);
		move_to(syscall(SYS_pidfd_open, c, 0), 30);
		waitpid(c, NULL, 0);
		int pfd = -1;
		struct clone_args ca = { .flags = CLONE_PIDFD, .pidfd = (uint64_t)(uintptr_t)&pfd, .exit_signal = SIGCHLD };
		long r = syscall(SYS_clone3, &ca, sizeof(ca));

		if (r == 0)
			_exit(0);
		if (r < 0)
			die("clone3: %s", strerror(errno));
		waitpid(r, NULL, 0);
		move_to(pfd, 31);
	} else if (!strcmp(sc, "proc-dead")) {
		pid_t c = fork();

		if (c == 0) {
			pause();
			_exit(0);
		}
		snprintf(p, sizeof(p), "/proc/%d/status", c);
		move_to(open(p, O_RDONLY), 30);
		snprintf(p, sizeof(p), "/proc/%d", c);
		if (chdir(p))
			die("chdir %s: %s", p, strerror(errno));
		kill(c, SIGKILL);
		waitpid(c, NULL, 0);
	} else if (!strcmp(sc, "shared-fdt")) {
		static char stack[64 << 10], stack2[64 << 10];

		move_to(eventfd(3, 0), 30);
		fdt_child = clone(fdt_main, stack + sizeof(stack), CLONE_FILES | SIGCHLD, NULL);
		fdt_child2 = clone(fdt_main, stack2 + sizeof(stack2), CLONE_FILES | SIGCHLD, NULL);
		if (fdt_child < 0 || fdt_child2 < 0)
			die("clone CLONE_FILES: %s", strerror(errno));
	} else if (!strcmp(sc, "flock-owner")) {
		snprintf(p, sizeof(p), "%s/l", dir);
		move_to(open(p, O_CREAT | O_RDWR, 0644), 30);
		if (flock(30, LOCK_EX))
			die("flock: %s", strerror(errno));
	} else if (!strcmp(sc, "mapmode")) {
		snprintf(p, sizeof(p), "%s/m", dir);
		int f = open(p, O_CREAT | O_RDWR, 0644);

		if (f < 0 || ftruncate(f, 8192))
			die("%s: %s", p, strerror(errno));
		map = mmap(NULL, 8192, PROT_READ, MAP_SHARED, f, 0);
		if (map == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		close(f);
		move_to(open(p, O_RDONLY), 30);
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
	} else if (!strcmp(sc, "fanotify")) {
		char b[4096];
		int f = open("/proc/self/fdinfo/30", O_RDONLY), n = f < 0 ? -1 : read(f, b, sizeof(b) - 1);

		b[n > 0 ? n : 0] = 0;
		if (!strstr(b, "fanotify flags:12 "))
			fail("fd 30: fdinfo, want fanotify flags:12:\n%s", b);
		snprintf(p, sizeof(p), "%s/f", dir);
		f = open(p, O_WRONLY);
		if (write(f, "x", 1) != 1)
			fail("write %s: %s", p, strerror(errno));
		close(f);
		n = read(30, b, sizeof(b));
		if (n < (int)sizeof(struct fanotify_event_metadata) || !(((struct fanotify_event_metadata *)b)->mask & FAN_MODIFY))
			fail("fd 30: no FAN_MODIFY event (%d: %s)", n, strerror(errno));
	} else if (!strcmp(sc, "inotify-gone")) {
		char b[4096];
		int n;

		if (write(31, "x", 1) != 1)
			fail("write fd 31: %s", strerror(errno));
		n = read(30, b, sizeof(b));
		if (n < (int)sizeof(struct inotify_event))
			fail("fd 30: no event (%d: %s)", n, strerror(errno));
		else if (((struct inotify_event *)b)->wd != 1 || !(((struct inotify_event *)b)->mask & IN_MODIFY))
			fail("fd 30: event wd %d mask %#x, want wd 1 IN_MODIFY", ((struct inotify_event *)b)->wd, ((struct inotify_event *)b)->mask);
	} else if (!strcmp(sc, "netns")) {
		struct stat a, b;

		if (fstat(30, &a) || stat("/proc/self/ns/net", &b) || a.st_ino != b.st_ino || a.st_dev != b.st_dev)
			fail("fd 30 is not the task's network namespace (%s)", strerror(errno));
	} else if (!strcmp(sc, "pidfd-dead")) {
		for (int fd = 30; fd <= 31; fd++) {
			char q[64], b[4096];
			int f, n;
			struct pollfd pf = { .fd = fd, .events = POLLIN };

			snprintf(q, sizeof(q), "/proc/self/fdinfo/%d", fd);
			f = open(q, O_RDONLY);
			n = f < 0 ? -1 : read(f, b, sizeof(b) - 1);
			b[n > 0 ? n : 0] = 0;
			close(f);
			if (!strstr(b, "Pid:\t-1"))
				fail("fd %d: fdinfo, want Pid: -1:\n%s", fd, b);
			if (syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0) != -1 || errno != ESRCH)
				fail("fd %d: signal 0: want ESRCH, got %s", fd, strerror(errno));
			if (poll(&pf, 1, 0) != 1 || !(pf.revents & POLLIN))
				fail("fd %d: not readable", fd);
		}
	} else if (!strcmp(sc, "proc-dead")) {
		char b[64];

		if (read(30, b, sizeof(b)) != -1 || errno != ESRCH)
			fail("fd 30: read: want ESRCH, got %s", strerror(errno));
		if (readlink("/proc/self/cwd", b, sizeof(b)) < 6 || strncmp(b, "/proc/", 6))
			fail("cwd is not in /proc any more");
		if (access("status", F_OK) == 0)
			fail("cwd: status exists, the process is gone");
	}
	if (!strcmp(sc, "shared-fdt")) {
		int st;

		if (syscall(SYS_kcmp, getpid(), fdt_child, 2 /* KCMP_FILES */, 0, 0) != 0 ||
		    syscall(SYS_kcmp, getpid(), fdt_child2, 2 /* KCMP_FILES */, 0, 0) != 0)
			fail("a child's fd table is not the parent's (%s)", strerror(errno));
		if (counter(30) != 3)
			fail("fd 30: counter is not 3");
		move_to(eventfd(7, 0), 33);
		if (syscall(SYS_kcmp, getpid(), fdt_child, 0 /* KCMP_FILE */, 33, 33) != 0)
			fail("fd 33 opened by the parent is not the child's");
		kill(fdt_child, SIGKILL);
		kill(fdt_child2, SIGKILL);
		waitpid(fdt_child, &st, 0);
		waitpid(fdt_child2, &st, 0);
	}
	if (!strcmp(sc, "flock-owner")) {
		char q[64], b[4096], want[64];
		int f, n;

		snprintf(q, sizeof(q), "/proc/self/fdinfo/30");
		f = open(q, O_RDONLY);
		n = f < 0 ? -1 : read(f, b, sizeof(b) - 1);
		b[n > 0 ? n : 0] = 0;
		close(f);
		snprintf(want, sizeof(want), "FLOCK  ADVISORY  WRITE %d ", getpid());
		if (!strstr(b, want))
			fail("fd 30: want a lock line with '%s':\n%s", want, b);
	} else if (!strcmp(sc, "mapmode")) {
		if (mprotect(map, 8192, PROT_READ | PROT_WRITE))
			fail("mprotect PROT_WRITE: %s", strerror(errno));
		else {
			map[100] = 'w';
			char c = 0;

			if (pread(30, &c, 1, 100) != 1 || c != 'w')
				fail("the write through the mapping is not in the file");
		}
	}
	victim_finish();
}
