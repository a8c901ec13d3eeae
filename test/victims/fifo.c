/*
 * fifo: named pipes with data buffered in them.
 *
 *   fifo READY DIR
 *
 * - DIR/f1: read end O_RDONLY|O_NONBLOCK at fd 70, write end O_WRONLY at
 *   fd 71, 5000 patterned bytes buffered, capacity raised to 128 KiB.
 * - DIR/f2: opened once O_RDWR at fd 72 (no other opener), "rdwr data"
 *   buffered in it.
 * On SIGTERM it checks flags, capacity and data, then that the FIFOs are
 * still the ones at their paths: bytes written through a new open of
 * DIR/f1 come out of fd 70, and a write to fd 71 comes out of fd 70 too.
 */
#include "victim.h"
#include <sys/stat.h>

#define N1 5000

static unsigned char b1(int i) { return (unsigned char)(i * 13 + 5); }

static void check_flags(int fd, int want, const char *what)
{
	int fl = fcntl(fd, F_GETFL);

	if ((fl & (O_ACCMODE | O_NONBLOCK)) != want)
		fail("%s (fd %d): flags %#o, want %#o", what, fd, fl & (O_ACCMODE | O_NONBLOCK), want);
}

static void expect(int fd, const void *want, size_t n, const char *what)
{
	unsigned char got[8192];
	ssize_t r = read(fd, got, sizeof(got));

	if (r != (ssize_t)n || memcmp(got, want, n))
		fail("%s: read %zd bytes, want %zu%s", what, r, n, r == (ssize_t)n ? " (different bytes)" : "");
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: fifo READY DIR");
	victim_init();
	char f1[4096], f2[4096];
	snprintf(f1, sizeof(f1), "%s/f1", argv[2]);
	snprintf(f2, sizeof(f2), "%s/f2", argv[2]);
	if (mkfifo(f1, 0600) || mkfifo(f2, 0600))
		die("mkfifo: %s", strerror(errno));

	move_to(open(f1, O_RDONLY | O_NONBLOCK), 70);
	move_to(open(f1, O_WRONLY), 71);
	if (fcntl(71, F_SETPIPE_SZ, 128 * 1024) < 0)
		die("F_SETPIPE_SZ: %s", strerror(errno));
	unsigned char data[N1];
	for (int i = 0; i < N1; i++)
		data[i] = b1(i);
	for (int off = 0; off < N1; off += 500)
		if (write(71, data + off, 500) != 500)
			die("write f1: %s", strerror(errno));
	move_to(open(f2, O_RDWR), 72);
	if (write(72, "rdwr data", 9) != 9)
		die("write f2: %s", strerror(errno));

	victim_ready(argv[1]);
	victim_wait();

	check_flags(70, O_RDONLY | O_NONBLOCK, "f1 read end");
	check_flags(71, O_WRONLY, "f1 write end");
	check_flags(72, O_RDWR, "f2");
	int cap = fcntl(70, F_GETPIPE_SZ);
	if (cap != 128 * 1024)
		fail("f1: capacity %d, want %d", cap, 128 * 1024);
	expect(70, data, N1, "f1 buffered data");
	expect(72, "rdwr data", 9, "f2 buffered data");

	int w = open(f1, O_WRONLY | O_NONBLOCK);
	if (w < 0)
		fail("open %s for writing: %s (no reader: fd 70 is not on this FIFO?)", f1, strerror(errno));
	else if (write(w, "by path", 7) != 7)
		fail("write %s: %s", f1, strerror(errno));
	else
		expect(70, "by path", 7, "f1 written through its path");
	if (write(71, "by fd", 5) != 5)
		fail("write fd 71: %s", strerror(errno));
	else
		expect(70, "by fd", 5, "f1 written through fd 71");
	victim_finish();
}
