/*
 * pty: pseudo-terminal pairs held inside one process.
 *
 *   pty READY
 *
 * - pair A: master at fd 40 (/dev/ptmx, packet mode, O_NONBLOCK), slave at
 *   fd 41 (/dev/pts/N, TIOCEXCL) and fd 43 (a second open of the slave,
 *   O_RDONLY). Slave termios: canonical with echo, ICRNL, ONLCR, 9600
 *   baud, VINTR ^G, VERASE ^H; window 33x111 (7x9 pixels).
 *   Pending: "line one\nhalf" typed on the master (the slave has one line
 *   and a half to read), its echo and "out1\n" written by the slave (the
 *   master has "line one\r\nhalfout1\r\n" to read).
 * - pair B: master only at fd 42, still locked (no unlockpt).
 * On SIGTERM it checks indices (TIOCGPTN, the /proc link of the slave),
 * termios, window size, packet mode, lock, exclusive mode, flags; that the
 * master reads exactly what was pending and nothing more (no echo
 * repeated); that the slave reads "line one\n", then, once "-done\n" is
 * typed, "half-done\n" (the half line was still waiting for its end).
 */
#include "victim.h"
#include <poll.h>
#include <sys/ioctl.h>
#include <termios.h>

static int ptn(int fd)
{
	int n = -1;

	if (ioctl(fd, TIOCGPTN, &n))
		return -1;
	return n;
}

static void set_termios(struct termios *t)
{
	memset(t, 0, sizeof(*t));
	t->c_iflag = ICRNL | IXON;
	t->c_oflag = OPOST | ONLCR;
	t->c_cflag = CS8 | CREAD | HUPCL;
	t->c_lflag = ICANON | ECHO | ECHOE | ISIG | IEXTEN;
	t->c_cc[VINTR] = 7;
	t->c_cc[VQUIT] = 034;
	t->c_cc[VERASE] = 8;
	t->c_cc[VKILL] = 025;
	t->c_cc[VEOF] = 4;
	t->c_cc[VMIN] = 1;
	cfsetispeed(t, B9600);
	cfsetospeed(t, B9600);
}

/* read_master reads what the master has, without the packet mode status
 * byte of each read, waiting at most ms for the first byte. */
static size_t read_master(char *buf, size_t size, int ms)
{
	size_t n = 0;
	struct pollfd p = {.fd = 40, .events = POLLIN};

	while (poll(&p, 1, n ? 50 : ms) == 1) {
		char tmp[4096];
		ssize_t r = read(40, tmp, sizeof(tmp));

		if (r <= 0)
			break;
		if (tmp[0] != TIOCPKT_DATA) {
			fail("master read: packet status %#x, want data", tmp[0]);
			continue;
		}
		if (n + r - 1 > size)
			r = size - n + 1;
		memcpy(buf + n, tmp + 1, r - 1);
		n += r - 1;
	}
	return n;
}

static void read_line(int fd, char *buf, size_t size, const char *what)
{
	size_t n = 0;
	struct pollfd p = {.fd = fd, .events = POLLIN};

	while (n < size - 1 && (n == 0 || buf[n - 1] != '\n')) {
		if (poll(&p, 1, 2000) != 1) {
			fail("%s: no complete line after %zu bytes", what, n);
			break;
		}
		ssize_t r = read(fd, buf + n, size - 1 - n);
		if (r <= 0) {
			fail("%s: read: %s", what, r ? strerror(errno) : "EOF");
			break;
		}
		n += r;
	}
	buf[n] = 0;
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: pty READY");
	victim_init();

	/* Its pairs do not take the lowest free indices: after the dump, a
	 * pty some other program opens meanwhile gets the lowest one, which
	 * would then not be free for the restore. */
	int spare[4];
	for (int i = 0; i < 4; i++)
		if ((spare[i] = posix_openpt(O_RDWR | O_NOCTTY | O_CLOEXEC)) < 0)
			die("posix_openpt: %s", strerror(errno));
	move_to(posix_openpt(O_RDWR | O_NOCTTY), 40);
	if (grantpt(40) || unlockpt(40))
		die("unlockpt: %s", strerror(errno));
	int index = ptn(40);
	char slave[64];
	snprintf(slave, sizeof(slave), "/dev/pts/%d", index);
	move_to(open(slave, O_RDWR | O_NOCTTY), 41);
	move_to(open(slave, O_RDONLY | O_NOCTTY), 43);
	move_to(posix_openpt(O_RDWR | O_NOCTTY), 42);
	int indexB = ptn(42);
	for (int i = 0; i < 4; i++)
		close(spare[i]);

	struct termios want;
	set_termios(&want);
	if (tcsetattr(41, TCSANOW, &want))
		die("tcsetattr: %s", strerror(errno));
	struct winsize ws = {.ws_row = 33, .ws_col = 111, .ws_xpixel = 7, .ws_ypixel = 9};
	if (ioctl(40, TIOCSWINSZ, &ws))
		die("TIOCSWINSZ: %s", strerror(errno));
	int one = 1;
	if (ioctl(40, TIOCPKT, &one))
		die("TIOCPKT: %s", strerror(errno));
	if (ioctl(41, TIOCEXCL))
		die("TIOCEXCL: %s", strerror(errno));
	if (fcntl(40, F_SETFL, O_NONBLOCK))
		die("F_SETFL: %s", strerror(errno));

	const char typed[] = "line one\nhalf";
	if (write(40, typed, strlen(typed)) != (ssize_t)strlen(typed))
		die("write master: %s", strerror(errno));
	struct pollfd p = {.fd = 41, .events = POLLIN};
	if (poll(&p, 1, 2000) != 1) /* the line discipline has run: echo done */
		die("slave not readable");
	if (write(41, "out1\n", 5) != 5)
		die("write slave: %s", strerror(errno));

	victim_ready(argv[1]);
	victim_wait();

	if (ptn(40) != index)
		fail("master index %d, want %d", ptn(40), index);
	if (ptn(42) != indexB)
		fail("pair B master index %d, want %d", ptn(42), indexB);
	char link[64] = {0};
	if (readlink("/proc/self/fd/41", link, sizeof(link) - 1) < 0 || strcmp(link, slave))
		fail("slave fd 41 is %s, want %s", link, slave);
	if (readlink("/proc/self/fd/43", link, sizeof(link) - 1) < 0 || strcmp(link, slave))
		fail("slave fd 43 is %s, want %s", link, slave);
	if ((fcntl(40, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) != (O_RDWR | O_NONBLOCK))
		fail("master flags %#o", fcntl(40, F_GETFL));
	if ((fcntl(43, F_GETFL) & (O_ACCMODE | O_NONBLOCK)) != O_RDONLY)
		fail("fd 43 flags %#o", fcntl(43, F_GETFL));

	struct termios got;
	if (tcgetattr(41, &got))
		fail("tcgetattr: %s", strerror(errno));
	else if (got.c_iflag != want.c_iflag || got.c_oflag != want.c_oflag || got.c_cflag != want.c_cflag ||
		 got.c_lflag != want.c_lflag || memcmp(got.c_cc, want.c_cc, NCCS) || cfgetospeed(&got) != B9600)
		fail("termios iflag %#x oflag %#x cflag %#x lflag %#x, want %#x %#x %#x %#x (or c_cc differ)",
		     got.c_iflag, got.c_oflag, got.c_cflag, got.c_lflag, want.c_iflag, want.c_oflag, want.c_cflag, want.c_lflag);
	struct winsize gws;
	if (ioctl(41, TIOCGWINSZ, &gws) || gws.ws_row != 33 || gws.ws_col != 111 || gws.ws_xpixel != 7 || gws.ws_ypixel != 9)
		fail("window %dx%d (%dx%d), want 33x111 (7x9)", gws.ws_row, gws.ws_col, gws.ws_xpixel, gws.ws_ypixel);
	int v = -1;
	if (ioctl(40, TIOCGPKT, &v) || v != 1)
		fail("packet mode %d, want 1", v);
	v = -1;
	if (ioctl(40, TIOCGPTLCK, &v) || v != 0)
		fail("pair A lock %d, want 0", v);
	v = -1;
	if (ioctl(42, TIOCGPTLCK, &v) || v != 1)
		fail("pair B lock %d, want 1", v);
	v = -1;
	if (ioctl(41, TIOCGEXCL, &v) || v != 1)
		fail("slave exclusive %d, want 1", v);

	char buf[4096];
	const char wantm[] = "line one\r\nhalfout1\r\n";
	size_t n = read_master(buf, sizeof(buf), 2000);
	if (n != strlen(wantm) || memcmp(buf, wantm, n))
		fail("master read %zu bytes \"%.*s\", want \"line one\\r\\nhalfout1\\r\\n\"", n, (int)n, buf);
	n = read_master(buf, sizeof(buf), 200);
	if (n)
		fail("master has %zu more bytes: \"%.*s\"", n, (int)n, buf);

	read_line(41, buf, sizeof(buf), "slave first line");
	if (strcmp(buf, "line one\n"))
		fail("slave read \"%s\", want \"line one\\n\"", buf);
	if (write(40, "-done\n", 6) != 6)
		fail("write master: %s", strerror(errno));
	read_line(41, buf, sizeof(buf), "slave second line");
	if (strcmp(buf, "half-done\n"))
		fail("slave read \"%s\", want \"half-done\\n\"", buf);
	n = read_master(buf, sizeof(buf), 500);
	if (n != 7 || memcmp(buf, "-done\r\n", 7))
		fail("echo of -done: \"%.*s\"", (int)n, buf);
	victim_finish();
}
