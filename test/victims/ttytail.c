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
 */
#include "victim.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <termios.h>

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
	} else {
		die("unknown scenario %s", sc);
	}

	victim_ready(argv[1]);
	victim_wait();

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
