/*
 * ttyext: a terminal outside the dumped tree (issue 15), dumped with
 * --external tty[RDEV:DEV] and given back by --inherit-fd fd[N]:KEY.
 *
 *   ttyext READY SCENARIO DEVICE
 *
 * dev    DEVICE (a virtual console such as /dev/tty63, or /dev/console)
 *        opened O_RDWR|O_NOCTTY at fd 12: after the restore fd 12 is a
 *        terminal of the same device number, open O_RDWR, and tcgetattr
 *        works on it.
 * ctty   DEVICE is a pty slave whose master the test holds: opened at
 *        fd 12 by the session leader (the victim), so that it is its
 *        controlling terminal. After the restore it is still the
 *        session's terminal (tcgetsid), the victim's group is its
 *        foreground group, the line "ping" the test typed on the master
 *        is read from fd 12, and "pong" is written back for the test to
 *        read on the master.
 * ctty-devtty  the same with /dev/tty at fd 13 too, written through
 *        instead of fd 12.
 */
#include "victim.h"

#include <poll.h>
#include <sys/stat.h>
#include <termios.h>

int main(int argc, char **argv)
{
	if (argc < 4)
		die("usage: ttyext READY SCENARIO DEVICE");
	const char *sc = argv[2], *dev = argv[3];
	struct stat st0, st;
	int devtty = !strcmp(sc, "ctty-devtty"), ctty = devtty || !strcmp(sc, "ctty");
	int out = devtty ? 13 : 12;

	victim_init();
	if (!ctty && strcmp(sc, "dev"))
		die("unknown scenario %s", sc);
	if (ctty && getsid(0) != getpid())
		die("not a session leader");
	move_to(open(dev, O_RDWR | (ctty ? 0 : O_NOCTTY)), 12);
	if (fstat(12, &st0) || !isatty(12))
		die("%s is not a terminal: %s", dev, strerror(errno));
	if (ctty) {
		if (tcgetsid(12) != getpid())
			die("%s did not become the controlling terminal: %s", dev, strerror(errno));
		if (devtty)
			move_to(open("/dev/tty", O_RDWR), 13);
	}
	victim_ready(argv[1]);
	victim_wait();

	struct termios t;

	if (fstat(12, &st) || !S_ISCHR(st.st_mode) || st.st_rdev != st0.st_rdev)
		fail("fd 12 is device %#llx (%s), want %#llx", (unsigned long long)st.st_rdev, strerror(errno),
		     (unsigned long long)st0.st_rdev);
	if ((fcntl(12, F_GETFL) & O_ACCMODE) != O_RDWR)
		fail("fd 12 is not open O_RDWR: %#x", fcntl(12, F_GETFL));
	if (tcgetattr(12, &t))
		fail("tcgetattr fd 12: %s", strerror(errno));
	if (ctty) {
		char b[64] = "";
		struct pollfd pf = { .fd = 12, .events = POLLIN };
		ssize_t n = 0;

		if (tcgetsid(12) != getpid())
			fail("fd 12 is not the session's terminal: tcgetsid %d (%s)", tcgetsid(12), strerror(errno));
		if (tcgetpgrp(out) != getpgrp())
			fail("fd %d: foreground group %d (%s), want %d", out, tcgetpgrp(out), strerror(errno), getpgrp());
		if (poll(&pf, 1, 5000) == 1)
			n = read(12, b, sizeof(b) - 1);
		if (n < 5 || strncmp(b, "ping\n", 5))
			fail("fd 12: read \"%s\" (%zd, %s), want the line ping typed on the master", b, n, strerror(errno));
		if (write(out, "pong\n", 5) != 5)
			fail("write fd %d: %s", out, strerror(errno));
	}
	victim_finish();
}
