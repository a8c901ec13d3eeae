/*
 * devices: fds on the devices a container has (see README.md).
 * `devices READY`: /dev/null write-only at fd 30, /dev/zero read-only at
 * 31, /dev/random at 32, /dev/urandom at 33, /dev/full at 34; a pty from
 * /dev/ptmx at 35 (unlocked) with its slave at 36, made the controlling
 * terminal of the victim's session; /dev/tty (the controlling terminal
 * through its alias) at 37.
 *
 * On SIGTERM every fd is checked: its device number (st_rdev) and access
 * mode are the same, and it still works: writes to /dev/null succeed,
 * /dev/zero reads zeros, the random ones give bytes, /dev/full refuses
 * with ENOSPC, bytes written to the slave come out of the master and
 * bytes through /dev/tty too.
 */
#include "victim.h"

#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>

struct dev {
	const char *path;
	int flags, fd;
	dev_t rdev;
} devs[] = {
	{ "/dev/null", O_WRONLY, 30 }, { "/dev/zero", O_RDONLY, 31 }, { "/dev/random", O_RDONLY, 32 },
	{ "/dev/urandom", O_RDONLY, 33 }, { "/dev/full", O_RDWR, 34 }, { "/dev/ptmx", O_RDWR | O_NOCTTY, 35 },
	{ NULL, O_RDWR, 36 }, { "/dev/tty", O_RDWR, 37 },
};
#define NDEV (sizeof(devs) / sizeof(devs[0]))

static void through_pty(const char *what, int in, int master)
{
	char buf[64];
	ssize_t n;
	int i;

	if (write(in, "ping\n", 5) != 5) {
		fail("%s: write: %s", what, strerror(errno));
		return;
	}
	for (i = 0; i < 100; i++) {
		n = read(master, buf, sizeof(buf));
		if (n > 0)
			break;
		sleep_ms(10);
	}
	if (n < 4 || memcmp(buf, "ping", 4))
		fail("%s: the master read %zd bytes", what, n);
}

int main(int argc, char **argv)
{
	char name[64];
	struct stat st;
	unsigned i;

	if (argc < 2)
		die("usage: devices READY");
	victim_init();
	for (i = 0; i < NDEV; i++) {
		if (devs[i].fd == 36) {
			int unlock = 0;

			if (ioctl(35, TIOCSPTLCK, &unlock) || ptsname_r(35, name, sizeof(name)))
				die("pty: %s", strerror(errno));
			devs[i].path = name;
		}
		move_to(open(devs[i].path, devs[i].flags), devs[i].fd);
		if (fstat(devs[i].fd, &st))
			die("fstat %s: %s", devs[i].path, strerror(errno));
		devs[i].rdev = st.st_rdev;
		if (devs[i].fd == 36 && ioctl(36, TIOCSCTTY, 0))
			die("TIOCSCTTY: %s", strerror(errno));
	}
	fcntl(35, F_SETFL, O_NONBLOCK);
	victim_ready(argv[1]);
	victim_wait();

	for (i = 0; i < NDEV; i++) {
		int fl = fcntl(devs[i].fd, F_GETFL);

		if (fstat(devs[i].fd, &st)) {
			fail("fd %d (%s): %s", devs[i].fd, devs[i].path, strerror(errno));
			continue;
		}
		if (st.st_rdev != devs[i].rdev)
			fail("fd %d (%s): device %u:%u, was %u:%u", devs[i].fd, devs[i].path, major(st.st_rdev), minor(st.st_rdev),
			     major(devs[i].rdev), minor(devs[i].rdev));
		if ((fl & O_ACCMODE) != (devs[i].flags & O_ACCMODE))
			fail("fd %d (%s): access mode %#x, was %#x", devs[i].fd, devs[i].path, fl & O_ACCMODE, devs[i].flags & O_ACCMODE);
	}
	{
		char z[16] = "xxxxxxxxxxxxxxx";
		static const char zeros[16];

		if (write(30, "x", 1) != 1)
			fail("/dev/null: write: %s", strerror(errno));
		if (read(31, z, sizeof(z)) != sizeof(z) || memcmp(z, zeros, sizeof(z)))
			fail("/dev/zero: not zeros");
		if (read(32, z, 4) != 4 || read(33, z, 16) != 16)
			fail("random: no bytes: %s", strerror(errno));
		if (write(34, "x", 1) != -1 || errno != ENOSPC)
			fail("/dev/full: write did not fail with ENOSPC");
	}
	through_pty("the slave", 36, 35);
	through_pty("/dev/tty", 37, 35);
	victim_finish();
}
