/*
 * ghostnode: unlinked FIFOs, directories and device nodes still open, and a
 * cwd in a removed directory.
 *
 *   ghostnode READY DIR
 *
 * - DIR/fifo: mkfifo'd 0640, opened O_RDWR at fd 40, O_RDONLY|O_NONBLOCK
 *   at fd 41 and O_WRONLY at fd 42, 3000 patterned bytes written, then
 *   unlinked.
 * - DIR/dir: mkdir'ed 0751, opened O_RDONLY|O_DIRECTORY at fd 43, rmdir'ed.
 * - DIR/cwd/sub: made, chdir'ed into, then DIR/cwd/sub and DIR/cwd removed:
 *   the cwd is a removed directory whose parent is gone too.
 * - DIR/null (c 1 3) and DIR/zero (c 1 5): mknod'ed 0620, owned by
 *   1234:5678, mtime 1000000000, opened O_RDWR at fds 44 and 45, unlinked.
 * - /dev/shm/stasis-ghostnode-PID: 8192 patterned bytes, fd 46 and a
 *   MAP_SHARED mapping, unlinked.
 * On SIGTERM every fd must be the same kind of file with st_nlink 0, its
 * mode, owner, rdev and link ("NAME (deleted)") as before; the FIFO gives
 * back its 3000 bytes and nothing more, then carries a new message from
 * fd 42 to fd 41; fchdir to fd 43 works and nothing can be made there
 * (ENOENT); getcwd() and readlink(/proc/self/cwd) say what they said
 * before the dump, relative opens give ENOENT; the devices read like
 * /dev/null and /dev/zero; the shm file has its bytes, shared with the
 * mapping.
 */
#include "victim.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>

#define NFIFO 3000
#define SHM 8192
#define MTIME 1000000000

static unsigned char fb(int i) { return (unsigned char)(i * 7 + 3); }

struct node {
	int fd;
	const char *name;
	char link[4096]; /* readlink of the fd before the dump */
	struct stat st;
};

static struct node nodes[] = {
	{ .fd = 40, .name = "fifo" }, { .fd = 41, .name = "fifo" }, { .fd = 42, .name = "fifo" }, { .fd = 43, .name = "dir" },
	{ .fd = 44, .name = "null" }, { .fd = 45, .name = "zero" }, { .fd = 46, .name = "shm" },
};
#define NNODES (int)(sizeof(nodes) / sizeof(nodes[0]))

static void fdlink(int fd, char *buf, size_t n)
{
	char p[64];
	ssize_t r;

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	r = readlink(p, buf, n - 1);
	buf[r < 0 ? 0 : r] = 0;
}

static void record(struct node *n)
{
	fdlink(n->fd, n->link, sizeof(n->link));
	if (fstat(n->fd, &n->st))
		die("fstat fd %d: %s", n->fd, strerror(errno));
	if (n->st.st_nlink != 0 || !strstr(n->link, " (deleted)"))
		die("fd %d (%s) is not unlinked: nlink %lu, %s", n->fd, n->name,
		    (unsigned long)n->st.st_nlink, n->link);
}

static void check_node(struct node *n)
{
	char link[4096];
	struct stat st;

	fdlink(n->fd, link, sizeof(link));
	if (strcmp(link, n->link))
		fail("fd %d (%s): link %s, was %s", n->fd, n->name, link, n->link);
	if (fstat(n->fd, &st)) {
		fail("fd %d (%s): fstat: %s", n->fd, n->name, strerror(errno));
		return;
	}
	if (st.st_nlink != 0)
		fail("fd %d (%s): st_nlink %lu, want 0", n->fd, n->name, (unsigned long)st.st_nlink);
	if (st.st_mode != n->st.st_mode || st.st_uid != n->st.st_uid || st.st_gid != n->st.st_gid ||
	    st.st_rdev != n->st.st_rdev)
		fail("fd %d (%s): mode %#o uid %u gid %u rdev %d:%d, was %#o %u %u %d:%d", n->fd, n->name,
		     st.st_mode, st.st_uid, st.st_gid, major(st.st_rdev), minor(st.st_rdev), n->st.st_mode,
		     n->st.st_uid, n->st.st_gid, major(n->st.st_rdev), minor(n->st.st_rdev));
	if (S_ISCHR(st.st_mode) && st.st_mtime != MTIME)
		fail("fd %d (%s): mtime %ld, want %d", n->fd, n->name, (long)st.st_mtime, MTIME);
}

static void check_flags(int fd, int want)
{
	int fl = fcntl(fd, F_GETFL);

	if ((fl & (O_ACCMODE | O_NONBLOCK)) != want)
		fail("fd %d: flags %#o, want %#o", fd, fl & (O_ACCMODE | O_NONBLOCK), want);
}

static void check_fifo(void)
{
	unsigned char got[NFIFO + 100];
	ssize_t r = 0, k;

	check_flags(40, O_RDWR);
	check_flags(41, O_RDONLY | O_NONBLOCK);
	check_flags(42, O_WRONLY);
	while ((k = read(41, got + r, sizeof(got) - r)) > 0)
		r += k;
	if (r != NFIFO)
		fail("FIFO: read %zd bytes, want %d", r, NFIFO);
	for (int i = 0; i < r && i < NFIFO; i++)
		if (got[i] != fb(i)) {
			fail("FIFO: byte %d is %#x, want %#x", i, got[i], fb(i));
			break;
		}
	if (write(42, "after restore", 13) != 13)
		fail("FIFO: write on fd 42: %s", strerror(errno));
	r = read(41, got, sizeof(got));
	if (r != 13 || memcmp(got, "after restore", 13))
		fail("FIFO: round trip read %zd bytes (%s)", r, r < 0 ? strerror(errno) : "");
	/* The read-write end is the same FIFO too. */
	if (write(40, "rw", 2) != 2 || read(41, got, sizeof(got)) != 2)
		fail("FIFO: fd 40 is not the same FIFO as fd 41");
}

/* dirents returns what getdents64 says about a directory: -errno or a count. */
static long dirents(int fd)
{
	char buf[4096];
	long n = syscall(SYS_getdents64, fd, buf, sizeof(buf));

	return n < 0 ? -errno : n;
}

static char cwd_link[4096], cwd_get[4096];
static int cwd_errno;
static long dir_dents;

static void record_cwd(void)
{
	ssize_t r = readlink("/proc/self/cwd", cwd_link, sizeof(cwd_link) - 1);
	cwd_link[r < 0 ? 0 : r] = 0;
	errno = 0;
	if (!getcwd(cwd_get, sizeof(cwd_get)))
		cwd_errno = errno;
}

static void check_cwd(void)
{
	char link[4096], get[4096] = "";
	struct stat st;
	ssize_t r = readlink("/proc/self/cwd", link, sizeof(link) - 1);
	int e = 0;

	link[r < 0 ? 0 : r] = 0;
	if (strcmp(link, cwd_link))
		fail("cwd: /proc/self/cwd is %s, was %s", link, cwd_link);
	if (!getcwd(get, sizeof(get)))
		e = errno;
	if (e != cwd_errno || (e == 0 && strcmp(get, cwd_get)))
		fail("cwd: getcwd gives %s (%s), gave %s (%s)", get, strerror(e), cwd_get, strerror(cwd_errno));
	if (stat(".", &st) || !S_ISDIR(st.st_mode) || st.st_nlink != 0)
		fail("cwd: stat . gives mode %#o nlink %lu (%s), want a directory with nlink 0", st.st_mode,
		     (unsigned long)st.st_nlink, strerror(errno));
	if (open("nofile", O_RDONLY) >= 0 || errno != ENOENT)
		fail("cwd: open nofile: %s, want ENOENT", strerror(errno));
	if (open("new", O_CREAT | O_WRONLY, 0600) >= 0 || errno != ENOENT)
		fail("cwd: create new: %s, want ENOENT", strerror(errno));
	if (mkdir("newdir", 0700) == 0 || errno != ENOENT)
		fail("cwd: mkdir newdir: %s, want ENOENT", strerror(errno));
}

static void check_dir(void)
{
	long n = dirents(43);

	if (n != dir_dents)
		fail("dir: getdents64 gives %ld, gave %ld before", n, dir_dents);
	if (fchdir(43)) {
		fail("dir: fchdir: %s", strerror(errno));
		return;
	}
	if (open("new", O_CREAT | O_WRONLY, 0600) >= 0 || errno != ENOENT)
		fail("dir: create a file in it: %s, want ENOENT", strerror(errno));
}

static void check_devices(void)
{
	char buf[64];
	ssize_t r;

	if ((r = read(44, buf, sizeof(buf))) != 0)
		fail("null: read gives %zd, want 0 (EOF)", r);
	if (write(44, "x", 1) != 1)
		fail("null: write: %s", strerror(errno));
	memset(buf, 0xff, sizeof(buf));
	if ((r = read(45, buf, sizeof(buf))) != (ssize_t)sizeof(buf))
		fail("zero: read gives %zd", r);
	for (size_t i = 0; i < sizeof(buf); i++)
		if (buf[i]) {
			fail("zero: byte %zu is %#x", i, buf[i]);
			break;
		}
}

static void check_shm(uint64_t *map)
{
	static uint64_t buf[SHM / 8];

	if (pread(46, buf, SHM, 0) != SHM)
		fail("shm: pread: %s", strerror(errno));
	else
		check_fill("shm file", buf, SHM / 8, 46);
	check_fill("shm mapping", map, SHM / 8, 46);
	map[0] = 42; /* the mapping and the fd must still be one file */
	if (pread(46, buf, 8, 0) != 8 || buf[0] != 42)
		fail("shm: a write through the mapping is not seen through fd 46");
}

int main(int argc, char **argv)
{
	char p[4096], cwd1[4096], cwd2[4096];
	struct timespec ts[2] = { { MTIME, 0 }, { MTIME, 0 } };
	static uint64_t buf[SHM / 8];
	unsigned char fbuf[NFIFO];
	const char *dir;
	uint64_t *map;

	if (argc < 3)
		die("usage: ghostnode READY DIR");
	victim_init();
	dir = argv[2];
	umask(0);

	snprintf(p, sizeof(p), "%s/fifo", dir);
	if (mkfifo(p, 0640))
		die("mkfifo %s: %s", p, strerror(errno));
	move_to(open(p, O_RDWR), 40);
	move_to(open(p, O_RDONLY | O_NONBLOCK), 41);
	move_to(open(p, O_WRONLY), 42);
	for (int i = 0; i < NFIFO; i++)
		fbuf[i] = fb(i);
	if (write(42, fbuf, NFIFO) != NFIFO)
		die("write FIFO: %s", strerror(errno));
	if (unlink(p))
		die("unlink %s: %s", p, strerror(errno));

	snprintf(p, sizeof(p), "%s/dir", dir);
	if (mkdir(p, 0751))
		die("mkdir %s: %s", p, strerror(errno));
	move_to(open(p, O_RDONLY | O_DIRECTORY), 43);
	if (rmdir(p))
		die("rmdir %s: %s", p, strerror(errno));
	dir_dents = dirents(43);

	snprintf(cwd1, sizeof(cwd1), "%s/cwd", dir);
	snprintf(cwd2, sizeof(cwd2), "%s/cwd/sub", dir);
	if (mkdir(cwd1, 0755) || mkdir(cwd2, 0700) || chdir(cwd2))
		die("make cwd %s: %s", cwd2, strerror(errno));
	if (rmdir(cwd2) || rmdir(cwd1))
		die("remove cwd %s: %s", cwd2, strerror(errno));
	record_cwd();

	static const struct { const char *name; int minor, fd; } devs[] = { { "null", 3, 44 }, { "zero", 5, 45 } };
	for (int i = 0; i < 2; i++) {
		snprintf(p, sizeof(p), "%s/%s", dir, devs[i].name);
		if (mknod(p, S_IFCHR | 0620, makedev(1, devs[i].minor)) || chown(p, 1234, 5678) ||
		    utimensat(AT_FDCWD, p, ts, 0))
			die("mknod %s: %s", p, strerror(errno));
		move_to(open(p, O_RDWR), devs[i].fd);
		if (unlink(p))
			die("unlink %s: %s", p, strerror(errno));
	}

	snprintf(p, sizeof(p), "/dev/shm/stasis-ghostnode-%d", getpid());
	move_to(open(p, O_RDWR | O_CREAT | O_EXCL, 0600), 46);
	fill(buf, SHM / 8, 46);
	if (pwrite(46, buf, SHM, 0) != SHM)
		die("write %s: %s", p, strerror(errno));
	map = mmap(NULL, SHM, PROT_READ | PROT_WRITE, MAP_SHARED, 46, 0);
	if (map == MAP_FAILED)
		die("mmap %s: %s", p, strerror(errno));
	if (unlink(p))
		die("unlink %s: %s", p, strerror(errno));

	for (int i = 0; i < NNODES; i++)
		record(&nodes[i]);
	say("ghostnode: cwd %s, getcwd %s (%s)", cwd_link, cwd_get, strerror(cwd_errno));
	victim_ready(argv[1]);
	victim_wait();

	for (int i = 0; i < NNODES; i++)
		check_node(&nodes[i]);
	check_fifo();
	check_cwd();
	check_dir();
	check_devices();
	check_shm(map);
	victim_finish();
}
