/*
 * locks: holds file locks of every kind on files of DIR.
 *
 *   locks READY DIR
 *
 * - fd 50: DIR/flock-ex, flock(LOCK_EX);
 * - fd 51: DIR/flock-sh, flock(LOCK_SH);
 * - fd 52: DIR/posix (O_RDWR), POSIX read lock on bytes 0-99 and write lock
 *   on bytes 4096-EOF (l_len 0), nothing on 100-4095;
 * - fd 53: DIR/ofd (O_RDWR), OFD write lock on bytes 10-19; fd 54 is a dup
 *   of it (the lock belongs to the open file, not to one fd).
 *
 * With "tree", a child (comm locks-child) shares all these open files: the
 * flock of fd 50 is its too, but it holds its own POSIX write lock on bytes
 * 1000-1099 of DIR/posix, and then blocks in F_SETLKW for a write lock on
 * bytes 0-99, which the parent's read lock refuses: a waiter, no lock. It
 * is READY once the child sleeps in that fcntl. After SIGTERM the parent
 * checks the child's lock (owned by the child's pid), then wakes it with
 * SIGTERM: its fcntl must fail with EINTR (still waiting, never granted),
 * its fdinfo show its lock and the shared flock.
 *
 * On SIGTERM it checks, from the inside, that it still holds all of them:
 * the "lock:" lines of its own fdinfo, other open files of its own (flock
 * and OFD locks conflict between open files, even of one process), and a
 * forked child for the POSIX locks (a process never conflicts with its
 * own POSIX locks). The test checks the same from outside.
 */
#include "victim.h"
#include <sys/file.h>
#include <sys/prctl.h>
#include <sys/wait.h>

static pid_t child;

static void posix_lock(int fd, int cmd, short type, off_t start, off_t len)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, cmd, &fl))
		die("fcntl(%d) lock fd %d [%ld, +%ld): %s", cmd, fd, (long)start, (long)len, strerror(errno));
}

/* fdinfo_has checks that the fdinfo of fd has a lock line with these words. */
static void fdinfo_has(int fd, const char *kind, const char *type, const char *range)
{
	char p[64], buf[4096], want[128];
	int f, n;

	snprintf(p, sizeof(p), "/proc/self/fdinfo/%d", fd);
	f = open(p, O_RDONLY);
	if (f < 0) {
		fail("open %s: %s", p, strerror(errno));
		return;
	}
	n = read(f, buf, sizeof(buf) - 1);
	close(f);
	buf[n > 0 ? n : 0] = 0;
	for (char *l = strstr(buf, "lock:"); l; l = strstr(l + 1, "lock:")) {
		char k[16], t[16], r1[32], r2[32];

		if (sscanf(l, "lock: %*d: %15s %*s %15s %*d %*s %31s %31s", k, t, r1, r2) == 4) {
			snprintf(want, sizeof(want), "%s-%s", r1, r2);
			if (!strcmp(k, kind) && !strcmp(t, type) && !strcmp(want, range))
				return;
		}
	}
	fail("fd %d has no %s %s lock on %s in its fdinfo:\n%s", fd, kind, type, range, buf);
}

/* reopen opens the file of fd again: a new open file description. */
static int reopen(int fd)
{
	char p[64];
	int nfd;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	nfd = open(p, O_RDWR);
	if (nfd < 0)
		fail("reopen fd %d: %s", fd, strerror(errno));
	return nfd;
}

static void check_flock(int fd, int exclusive)
{
	int nfd = reopen(fd);

	if (nfd < 0)
		return;
	if (flock(nfd, LOCK_EX | LOCK_NB) == 0)
		fail("fd %d: another open file got LOCK_EX: the %s lock is lost", fd, exclusive ? "LOCK_EX" : "LOCK_SH");
	else if (errno != EWOULDBLOCK)
		fail("fd %d: flock LOCK_EX|LOCK_NB: %s", fd, strerror(errno));
	if (flock(nfd, LOCK_SH | LOCK_NB) == 0) {
		if (exclusive)
			fail("fd %d: another open file got LOCK_SH: the LOCK_EX lock is lost", fd);
	} else if (!exclusive) {
		fail("fd %d: another open file cannot share the LOCK_SH lock: %s", fd, strerror(errno));
	}
	close(nfd);
}

/* conflict returns the lock type F_GETLK (or F_OFD_GETLK) sees for a type
 * lock on [start, +len) through fd, and its l_pid. */
static short conflict(int fd, int cmd, short type, off_t start, off_t len, pid_t *pid)
{
	struct flock fl = { .l_type = type, .l_whence = SEEK_SET, .l_start = start, .l_len = len };

	if (fcntl(fd, cmd, &fl)) {
		fail("fcntl(%d) get lock on fd %d: %s", cmd, fd, strerror(errno));
		return -1;
	}
	if (pid)
		*pid = fl.l_pid;
	return fl.l_type;
}

/* posix_child checks the POSIX locks of its parent from another process;
 * it exits with the number of failures. */
static void check_posix(void)
{
	pid_t parent = getpid(), child = fork(), owner;
	int status;

	if (child < 0) {
		fail("fork: %s", strerror(errno));
		return;
	}
	if (child == 0) {
		victim_failures = 0;
		if (conflict(52, F_GETLK, F_WRLCK, 0, 100, &owner) != F_RDLCK || owner != parent)
			fail("child: no POSIX read lock of pid %d on bytes 0-99 (owner %d)", parent, owner);
		if (conflict(52, F_GETLK, F_RDLCK, 0, 100, NULL) != F_UNLCK)
			fail("child: bytes 0-99 refuse a read lock: the read lock became a write lock");
		if (conflict(52, F_GETLK, F_WRLCK, 100, 900, NULL) != F_UNLCK)
			fail("child: bytes 100-999 are locked");
		if (conflict(52, F_GETLK, F_RDLCK, 1 << 30, 1, &owner) != F_WRLCK || owner != parent)
			fail("child: no POSIX write lock of pid %d up to EOF (owner %d)", parent, owner);
		if (conflict(52, F_GETLK, F_RDLCK, 4096, 1, &owner) != F_WRLCK)
			fail("child: no POSIX write lock at byte 4096");
		if (conflict(52, F_GETLK, F_RDLCK, 4095, 1, &owner) != F_UNLCK)
			fail("child: byte 4095 is locked");
		_exit(victim_failures);
	}
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("the POSIX locks are not seen from another process (child status %#x)", status);
}

/* waiter is the child of "tree": it holds a POSIX lock, then waits for one. */
static __attribute__((noreturn)) void waiter(void)
{
	struct flock fl = { .l_type = F_WRLCK, .l_whence = SEEK_SET, .l_start = 0, .l_len = 100 };
	pid_t self = getpid();

	prctl(PR_SET_NAME, "locks-child");
	prctl(PR_SET_PDEATHSIG, SIGKILL);
	posix_lock(52, F_SETLK, F_WRLCK, 1000, 100);
	if (fcntl(52, F_SETLKW, &fl) == 0)
		fail("locks-child: got a write lock on bytes 0-99 while its parent holds a read lock");
	else if (errno != EINTR)
		fail("locks-child: F_SETLKW failed with %s, want EINTR (SIGTERM)", strerror(errno));
	if (!got_term)
		fail("locks-child: F_SETLKW returned before SIGTERM");
	if (getpid() != self)
		fail("locks-child: getpid() = %d, was %d", getpid(), self);
	fdinfo_has(52, "POSIX", "WRITE", "1000-1099");
	fdinfo_has(50, "FLOCK", "WRITE", "0-EOF");
	_exit(victim_failures ? 1 : 0);
}

/* wait_blocked waits until the child sleeps in fcntl (72 on x86_64). */
static void wait_blocked(void)
{
	char p[64], buf[64];

	snprintf(p, sizeof(p), "/proc/%d/syscall", child);
	for (int i = 0; i < 500; i++) {
		int f = open(p, O_RDONLY), n;

		if (f < 0)
			die("open %s: %s", p, strerror(errno));
		n = read(f, buf, sizeof(buf) - 1);
		close(f);
		buf[n > 0 ? n : 0] = 0;
		if (!strncmp(buf, "72 ", 3))
			return;
		sleep_ms(10);
	}
	die("the child %d does not block in fcntl(F_SETLKW): %s", child, buf);
}

static void check_child(void)
{
	pid_t owner = 0;
	int status = 0;

	if (conflict(52, F_GETLK, F_RDLCK, 1000, 100, &owner) != F_WRLCK || owner != child)
		fail("no POSIX write lock of the child %d on bytes 1000-1099 (owner %d)", child, owner);
	if (kill(child, SIGTERM))
		fail("kill child %d: %s", child, strerror(errno));
	if (waitpid(child, &status, 0) != child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("the child %d failed its checks (status %#x)", child, status);
}

static void check_ofd(void)
{
	int nfd = reopen(53);
	pid_t owner = 0;

	if (nfd < 0)
		return;
	if (conflict(nfd, F_OFD_GETLK, F_RDLCK, 0, 0, &owner) != F_WRLCK || owner != -1)
		fail("another open file does not see the OFD write lock of fd 53 (pid %d)", owner);
	if (conflict(nfd, F_OFD_GETLK, F_RDLCK, 10, 10, NULL) != F_WRLCK)
		fail("bytes 10-19 are not OFD write-locked");
	if (conflict(nfd, F_OFD_GETLK, F_WRLCK, 20, 100, NULL) != F_UNLCK)
		fail("bytes 20-119 are locked");
	close(nfd);
	/* Through the locked open file itself nothing conflicts. */
	if (conflict(54, F_OFD_GETLK, F_WRLCK, 0, 0, NULL) != F_UNLCK)
		fail("fd 54 (a dup of fd 53) conflicts with its own OFD lock");
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: locks READY DIR [tree]");
	victim_init();
	const char *dir = argv[2];
	int tree = argc > 3 && !strcmp(argv[3], "tree");

	open_at(dir, "flock-ex", O_RDWR, 50);
	open_at(dir, "flock-sh", O_RDONLY, 51);
	open_at(dir, "posix", O_RDWR, 52);
	open_at(dir, "ofd", O_RDWR, 53);
	if (flock(50, LOCK_EX | LOCK_NB))
		die("flock LOCK_EX: %s", strerror(errno));
	if (flock(51, LOCK_SH | LOCK_NB))
		die("flock LOCK_SH: %s", strerror(errno));
	posix_lock(52, F_SETLK, F_RDLCK, 0, 100);
	posix_lock(52, F_SETLK, F_WRLCK, 4096, 0);
	posix_lock(53, F_OFD_SETLK, F_WRLCK, 10, 10);
	if (dup2(53, 54) != 54)
		die("dup2 53 54: %s", strerror(errno));
	if (tree) {
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0)
			waiter();
		wait_blocked();
	}

	victim_ready(argv[1]);
	victim_wait();

	fdinfo_has(50, "FLOCK", "WRITE", "0-EOF");
	fdinfo_has(51, "FLOCK", "READ", "0-EOF");
	fdinfo_has(52, "POSIX", "READ", "0-99");
	fdinfo_has(52, "POSIX", "WRITE", "4096-EOF");
	fdinfo_has(53, "OFDLCK", "WRITE", "10-19");
	fdinfo_has(54, "OFDLCK", "WRITE", "10-19");
	check_flock(50, 1);
	check_flock(51, 0);
	check_posix();
	check_ofd();
	if (tree)
		check_child();
	victim_finish();
}
