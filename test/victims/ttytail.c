/*
 * ttytail: the long tail of terminals (issue 15), one scenario a run.
 *
 *   ttytail READY SCENARIO
 *
 * owner        a pty pair: master fd 10, slave fd 11, the slave's device
 *              file chowned to 1234:5678, mode 0620: after the restore
 *              the slave's file has that owner and mode again.
 * slave-only   a pty whose master was closed (fd 11 the slave), hung up:
 *              after the restore too a read gives end of file, a write
 *              and tcgetattr EIO.
 * devtty       a child in a session of its own holds only the slave (fd 11,
 *              its controlling terminal, opened after setsid) and /dev/tty
 *              (fd 12); the parent holds only the master (fd 10): after
 *              the restore fd 12 is /dev/tty still, the child's group is
 *              the terminal's foreground group, and what the child writes
 *              through fd 12 the parent reads on the master.
 * devtty-member the same, but /dev/tty (fd 12) is held by a child of the
 *              session's leader, which holds only the slave: the child's
 *              checks, and the leader's that fd 11 is still its terminal.
 */
#include "victim.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>
#include <poll.h>
#include <sys/sysmacros.h>
#include <sys/wait.h>

static pid_t child;

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: ttytail READY SCENARIO");
	const char *sc = argv[2];
	char name[64];

	victim_init();
	move_to(posix_openpt(O_RDWR | O_NOCTTY), 10);
	if (grantpt(10) || unlockpt(10) || ptsname_r(10, name, sizeof(name)))
		die("pty: %s", strerror(errno));
	move_to(open(name, O_RDWR | O_NOCTTY), 11);
	{
		struct termios t;

		if (tcgetattr(11, &t) == 0) {
			cfmakeraw(&t);
			tcsetattr(11, TCSANOW, &t);
		}
	}
	if (!strcmp(sc, "owner")) {
		if (fchown(11, 1234, 5678) || fchmod(11, 0620))
			die("chown %s: %s", name, strerror(errno));
	} else if (!strcmp(sc, "slave-only")) {
		close(10);
	} else if (!strcmp(sc, "devtty") || !strcmp(sc, "devtty-member")) {
		int p[2];
		char c;

		close(11);
		if (pipe(p))
			die("pipe: %s", strerror(errno));
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0) {
			struct stat st;

			close(10);
			close(p[0]);
			if (setsid() < 0)
				die("setsid: %s", strerror(errno));
			move_to(open(name, O_RDWR), 11); /* its controlling terminal */
			if (!strcmp(sc, "devtty-member")) {
				pid_t m = fork();

				if (m < 0)
					die("fork: %s", strerror(errno));
				if (m > 0) {
					/* the leader: only the slave */
					int mst;

					close(p[1]);
					victim_wait();
					kill(m, SIGTERM);
					if (waitpid(m, &mst, 0) != m || !WIFEXITED(mst) || WEXITSTATUS(mst))
						fail("member %d failed (status %#x)", m, mst);
					if (tcgetpgrp(11) != getpgrp() || tcgetsid(11) != getpid())
						fail("leader: fd 11 is not its terminal (%s)", strerror(errno));
					exit(victim_failures ? 1 : 0);
				}
				close(11);
			}
			move_to(open("/dev/tty", O_RDWR), 12);
			if (write(p[1], "r", 1) != 1)
				die("child ready: %s", strerror(errno));
			close(p[1]);
			victim_wait();
			if (fstat(12, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != makedev(5, 0))
				fail("child: fd 12 is not /dev/tty (%s)", strerror(errno));
			if (tcgetpgrp(12) != getpgrp())
				fail("child: foreground group %d, want %d (%s)", tcgetpgrp(12), getpgrp(), strerror(errno));
			if (getsid(0) != (strcmp(sc, "devtty") ? getppid() : getpid()))
				fail("child: session %d, want %d", getsid(0), strcmp(sc, "devtty") ? getppid() : getpid());
			if (write(12, "hi", 2) != 2)
				fail("child: write /dev/tty: %s", strerror(errno));
			exit(victim_failures ? 1 : 0);
		}
		close(p[1]);
		if (read(p[0], &c, 1) != 1)
			die("child not ready");
		close(p[0]);
	} else {
		die("unknown scenario %s", sc);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(sc, "devtty") || !strcmp(sc, "devtty-member")) {
		int st;
		char b[8] = "";
		struct pollfd pf = { .fd = 10, .events = POLLIN };

		kill(child, SIGTERM);
		if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
			fail("child %d failed (status %#x)", child, st);
		if (poll(&pf, 1, 2000) != 1 || read(10, b, sizeof(b) - 1) != 2 || strcmp(b, "hi"))
			fail("master: want \"hi\" from the child, got \"%s\" (%s)", b, strerror(errno));
	}

	if (!strcmp(sc, "owner")) {
		struct stat st;

		if (fstat(11, &st))
			fail("fstat 11: %s", strerror(errno));
		else if (st.st_uid != 1234 || st.st_gid != 5678 || (st.st_mode & 07777) != 0620)
			fail("slave %s: owner %d:%d mode %o, want 1234:5678 0620", name, st.st_uid, st.st_gid, st.st_mode & 07777);
	} else if (!strcmp(sc, "slave-only")) {
		char b[8];
		struct termios t;
		ssize_t n;

		errno = 0;
		if ((n = read(11, b, sizeof(b))) != 0)
			fail("slave read: want end of file, got %zd (%s)", n, strerror(errno));
		errno = 0;
		if (write(11, "x", 1) != -1 || errno != EIO)
			fail("slave write: want EIO, got %s", strerror(errno));
		errno = 0;
		if (tcgetattr(11, &t) != -1 || errno != EIO)
			fail("slave tcgetattr: want EIO, got %s", strerror(errno));
	}
	victim_finish();
}
