/*
 * files: regular file descriptors and file mappings survive a dump.
 *
 *   files READY DIR
 *
 * In DIR it creates and holds:
 * - r.txt (64 KiB of known bytes) open O_RDONLY at fd 100, 1000 bytes read;
 *   also mapped MAP_PRIVATE with one page changed (a private copy);
 * - w.txt open O_WRONLY|O_CLOEXEC, 5000 bytes written, plus a dup() of it
 *   (one open file description: one shared offset, FD_CLOEXEC only on the
 *   first);
 * - a.txt open twice O_WRONLY|O_APPEND: "before\n" written;
 * - rw.txt open O_RDWR, 3000 bytes, offset moved back to 1234;
 * - m.bin (64 KiB) mapped MAP_SHARED and patterned, its fd closed.
 *
 * On SIGTERM it checks flags and offsets, continues reading and writing, and
 * writes "restored marker" at offset 8192 of the shared mapping (msync), which
 * the harness then finds in m.bin. a.txt must then read
 * "before\nmid\nafter\n": "mid" goes through the second O_APPEND fd, "after"
 * through the first, so a lost O_APPEND would overwrite "mid".
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define RSIZE (64 * 1024)
#define MSIZE (64 * 1024)
#define PAGE 4096

static unsigned char rbyte(long i) { return (unsigned char)(i * 7 + i / 251 + 3); }
static unsigned char wbyte(long i) { return (unsigned char)(i * 13 + 5); }
static unsigned char mbyte(long i) { return (unsigned char)(i * 31 + i / 4096 + 11); }

static char path[4][512];
static int fd_r = 100, fd_w, fd_w2, fd_a, fd_a2, fd_rw;
static unsigned char *shm, *priv;

static int open_in(const char *dir, const char *name, int flags, char *out)
{
	snprintf(out, 512, "%s/%s", dir, name);
	int fd = open(out, flags, 0644);
	if (fd < 0)
		die("open %s: %s", out, strerror(errno));
	return fd;
}

static void write_all(int fd, const void *buf, size_t len, const char *what)
{
	if (write(fd, buf, len) != (ssize_t)len)
		die("write %s: %s", what, strerror(errno));
}

static void check_bytes(const char *what, const unsigned char *got, long off, long n, unsigned char (*want)(long))
{
	for (long i = 0; i < n; i++) {
		if (got[i] != want(off + i)) {
			fail("%s: byte at offset %ld is %#x, want %#x", what, off + i, got[i], want(off + i));
			return;
		}
	}
}

static void check_off(int fd, const char *name, off_t want)
{
	off_t got = lseek(fd, 0, SEEK_CUR);
	if (got != want)
		fail("fd %d (%s): offset %lld, want %lld", fd, name, (long long)got, (long long)want);
}

static void check_flags(int fd, const char *name, int want_acc, int want_append, int want_cloexec)
{
	int fl = fcntl(fd, F_GETFL), fdfl = fcntl(fd, F_GETFD);

	if (fl < 0 || fdfl < 0) {
		fail("fd %d (%s) is not open: %s", fd, name, strerror(errno));
		return;
	}
	if ((fl & O_ACCMODE) != want_acc)
		fail("fd %d (%s): access mode %#o, want %#o", fd, name, fl & O_ACCMODE, want_acc);
	if (!!(fl & O_APPEND) != want_append)
		fail("fd %d (%s): O_APPEND is %s", fd, name, want_append ? "lost" : "set");
	if (!!(fdfl & FD_CLOEXEC) != want_cloexec)
		fail("fd %d (%s): FD_CLOEXEC is %s", fd, name, want_cloexec ? "lost" : "set");
}

int main(int argc, char **argv)
{
	static unsigned char buf[RSIZE];
	char p[512];

	if (argc < 3)
		die("usage: files READY DIR");
	victim_init();
	const char *dir = argv[2];

	/* r.txt: written through a temporary fd, then read through fd 100. */
	int tmp = open_in(dir, "r.txt", O_WRONLY | O_CREAT | O_TRUNC, path[0]);
	for (long i = 0; i < RSIZE; i++)
		buf[i] = rbyte(i);
	write_all(tmp, buf, RSIZE, "r.txt");
	close(tmp);
	tmp = open(path[0], O_RDONLY);
	if (tmp < 0 || dup2(tmp, fd_r) != fd_r)
		die("open r.txt at fd %d: %s", fd_r, strerror(errno));
	close(tmp);
	if (read(fd_r, buf, 1000) != 1000)
		die("read r.txt: %s", strerror(errno));

	fd_w = open_in(dir, "w.txt", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, path[1]);
	for (long i = 0; i < 5000; i++)
		buf[i] = wbyte(i);
	write_all(fd_w, buf, 5000, "w.txt");
	fd_w2 = dup(fd_w);

	fd_a = open_in(dir, "a.txt", O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, path[2]);
	fd_a2 = open(path[2], O_WRONLY | O_APPEND);
	if (fd_a2 < 0)
		die("open a.txt again: %s", strerror(errno));
	write_all(fd_a, "before\n", 7, "a.txt");

	fd_rw = open_in(dir, "rw.txt", O_RDWR | O_CREAT | O_TRUNC, path[3]);
	for (long i = 0; i < 3000; i++)
		buf[i] = rbyte(i);
	write_all(fd_rw, buf, 3000, "rw.txt");
	lseek(fd_rw, 1234, SEEK_SET);

	int mfd = open_in(dir, "m.bin", O_RDWR | O_CREAT | O_TRUNC, p);
	if (ftruncate(mfd, MSIZE))
		die("ftruncate m.bin: %s", strerror(errno));
	shm = mmap(NULL, MSIZE, PROT_READ | PROT_WRITE, MAP_SHARED, mfd, 0);
	if (shm == MAP_FAILED)
		die("mmap m.bin: %s", strerror(errno));
	close(mfd);
	for (long i = 0; i < MSIZE; i++)
		shm[i] = mbyte(i);
	msync(shm, MSIZE, MS_SYNC);

	priv = mmap(NULL, RSIZE, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd_r, 0);
	if (priv == MAP_FAILED)
		die("mmap r.txt private: %s", strerror(errno));
	memcpy(priv + 2 * PAGE, "COW", 3);

	victim_ready(argv[1]);
	victim_wait();

	/* r.txt: continue reading where we were. */
	check_flags(fd_r, "r.txt", O_RDONLY, 0, 0);
	check_off(fd_r, "r.txt", 1000);
	if (read(fd_r, buf, 1000) != 1000)
		fail("read r.txt after restore: %s", strerror(errno));
	else
		check_bytes("r.txt read through fd 100", buf, 1000, 1000, rbyte);

	/* w.txt: the dup shares the offset. */
	check_flags(fd_w, "w.txt", O_WRONLY, 0, 1);
	check_flags(fd_w2, "w.txt dup", O_WRONLY, 0, 0);
	check_off(fd_w, "w.txt", 5000);
	for (long i = 0; i < 1000; i++)
		buf[i] = wbyte(5000 + i);
	if (write(fd_w2, buf, 1000) != 1000)
		fail("write w.txt dup: %s", strerror(errno));
	check_off(fd_w, "w.txt after a write through its dup", 6000);
	tmp = open(path[1], O_RDONLY);
	if (tmp < 0 || read(tmp, buf, RSIZE) != 6000)
		fail("w.txt does not hold 6000 bytes");
	else
		check_bytes("w.txt", buf, 0, 6000, wbyte);
	close(tmp);

	/* a.txt: both fds append. */
	check_flags(fd_a, "a.txt", O_WRONLY, 1, 0);
	check_flags(fd_a2, "a.txt second fd", O_WRONLY, 1, 0);
	if (write(fd_a2, "mid\n", 4) != 4 || write(fd_a, "after\n", 6) != 6)
		fail("write a.txt: %s", strerror(errno));
	tmp = open(path[2], O_RDONLY);
	memset(buf, 0, 64);
	if (tmp < 0 || read(tmp, buf, 64) < 0 || strcmp((char *)buf, "before\nmid\nafter\n"))
		fail("a.txt holds \"%.64s\", want \"before\\nmid\\nafter\\n\"", buf);
	close(tmp);

	/* rw.txt: offset in the middle of the file. */
	check_flags(fd_rw, "rw.txt", O_RDWR, 0, 0);
	check_off(fd_rw, "rw.txt", 1234);
	if (read(fd_rw, buf, 10) != 10)
		fail("read rw.txt: %s", strerror(errno));
	else
		check_bytes("rw.txt", buf, 1234, 10, rbyte);

	/* Mappings. */
	check_bytes("MAP_SHARED m.bin", shm, 0, MSIZE, mbyte);
	memcpy(shm + 8192, "restored marker\n", 16);
	if (msync(shm, MSIZE, MS_SYNC))
		fail("msync m.bin: %s", strerror(errno));
	if (memcmp(priv + 2 * PAGE, "COW", 3))
		fail("private copy of r.txt page 2 lost its change (reads %.3s)", priv + 2 * PAGE);
	check_bytes("MAP_PRIVATE r.txt before the changed page", priv, 0, 2 * PAGE, rbyte);
	check_bytes("MAP_PRIVATE r.txt after the change", priv + 2 * PAGE + 3, 2 * PAGE + 3, RSIZE - 2 * PAGE - 3, rbyte);
	if (pread(fd_r, buf, 3, 2 * PAGE) != 3 || buf[0] != rbyte(2 * PAGE))
		fail("the private mapping's change reached r.txt");
	check_off(fd_r, "r.txt after pread", 2000);
	victim_finish();
}
