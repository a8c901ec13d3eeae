/*
 * ghost: regular files whose state a restore must bring back, by scenario.
 * Usage: ghost READY DIR SCENARIO... (see README.md for what each holds).
 */
#include "victim.h"

#include <dirent.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#define GIB (1024L * 1024 * 1024)
#define SMALL 10000
#define MAPSZ (64 * 1024)

static const char *dir;

static void path_of(char *buf, const char *name)
{
	snprintf(buf, 4096, "%s/%s", dir, name);
}

/* make_file creates DIR/NAME with SIZE bytes of pattern SEED. */
static int make_file(const char *name, size_t size, uint64_t seed, int flags)
{
	char p[4096];
	static uint64_t buf[SMALL];
	int fd;

	path_of(p, name);
	fd = open(p, flags | O_CREAT | O_EXCL, 0640);
	if (fd < 0)
		die("create %s: %s", p, strerror(errno));
	fill(buf, sizeof(buf) / 8, seed);
	if (size > sizeof(buf) || pwrite(fd, buf, size, 0) != (ssize_t)size)
		die("write %s: %s", p, strerror(errno));
	return fd;
}

static void unlink_file(const char *name)
{
	char p[4096];

	path_of(p, name);
	if (unlink(p))
		die("unlink %s: %s", p, strerror(errno));
}

/* check_words compares N words at P with words FROM.. of pattern SEED. */
static void check_words(const char *what, const uint64_t *p, size_t from, size_t n, uint64_t seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != pattern(seed, from + i)) {
			fail("%s: word %zu is %#llx, want %#llx", what, from + i,
			     (unsigned long long)p[i], (unsigned long long)pattern(seed, from + i));
			return;
		}
}

static int check_bytes(const char *what, int fd, off_t off, size_t size, uint64_t seed)
{
	static uint64_t want[SMALL], got[SMALL];

	fill(want, sizeof(want) / 8, seed);
	memset(got, 0, sizeof(got));
	if (pread(fd, got, size, off) != (ssize_t)size) {
		fail("%s: pread %zu at %lld: %s", what, size, (long long)off, strerror(errno));
		return -1;
	}
	if (memcmp(got, want, size)) {
		fail("%s: content differs", what);
		return -1;
	}
	return 0;
}

/* check_unlinked: the fd is still a file with no name, as before. */
static void check_unlinked(const char *what, int fd, const char *name, off_t size)
{
	struct stat st;
	char link[64], target[4096];
	ssize_t n;

	if (fstat(fd, &st)) {
		fail("%s: fstat: %s", what, strerror(errno));
		return;
	}
	if (st.st_nlink != 0)
		fail("%s: st_nlink is %lu, want 0 (the file has a name again)", what, (unsigned long)st.st_nlink);
	if (st.st_size != size)
		fail("%s: size %lld, want %lld", what, (long long)st.st_size, (long long)size);
	snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
	n = readlink(link, target, sizeof(target) - 1);
	target[n < 0 ? 0 : n] = 0;
	if (name && (!strstr(target, name) || !strstr(target, " (deleted)")))
		fail("%s: fd link is %s, want .../%s (deleted)", what, target, name);
}

/* small: an unlinked file by two opens (one with an offset), and an O_TMPFILE file. */
static int small_rw, small_ro, tmpf;
static void setup_small(void)
{
	char p[4096];

	small_rw = make_file("small.txt", SMALL, 1, O_RDWR);
	path_of(p, "small.txt");
	small_ro = open(p, O_RDONLY);
	if (small_ro < 0)
		die("open %s: %s", p, strerror(errno));
	if (lseek(small_rw, 1234, SEEK_SET) != 1234 || fchmod(small_rw, 0604))
		die("lseek/fchmod: %s", strerror(errno));
	unlink_file("small.txt");
	tmpf = open(dir, O_TMPFILE | O_RDWR, 0600);
	if (tmpf < 0)
		die("O_TMPFILE in %s: %s", dir, strerror(errno));
	if (write(tmpf, "temporary", 9) != 9)
		die("write tmpfile: %s", strerror(errno));
}

static void check_small(void)
{
	struct stat st;
	char buf[16] = "";

	check_unlinked("small.txt rw", small_rw, "small.txt", SMALL);
	check_unlinked("small.txt ro", small_ro, "small.txt", SMALL);
	check_bytes("small.txt", small_rw, 0, SMALL, 1);
	if (lseek(small_rw, 0, SEEK_CUR) != 1234)
		fail("small.txt: offset %lld, want 1234", (long long)lseek(small_rw, 0, SEEK_CUR));
	if (fstat(small_rw, &st) == 0 && (st.st_mode & 07777) != 0604)
		fail("small.txt: mode %o, want 604", st.st_mode & 07777);
	/* One inode: what one fd writes the other reads. */
	if (pwrite(small_rw, "shared", 6, 100) != 6 || pread(small_ro, buf, 6, 100) != 6 || memcmp(buf, "shared", 6))
		fail("small.txt: the two fds are not one file any more (read %.6s)", buf);
	check_unlinked("O_TMPFILE", tmpf, NULL, 9);
	if (pread(tmpf, buf, 9, 0) != 9 || memcmp(buf, "temporary", 9))
		fail("O_TMPFILE: content %.9s", buf);
	if (lseek(tmpf, 0, SEEK_CUR) != 9)
		fail("O_TMPFILE: offset %lld, want 9", (long long)lseek(tmpf, 0, SEEK_CUR));
}

/* sparse: a 1 GiB unlinked file with 4 written blocks. */
static const off_t sparse_off[] = { 0, 100L << 20, (512L << 20) + 123, GIB - 4096 };
static int sparse;
static void setup_sparse(void)
{
	static uint64_t buf[512];

	sparse = make_file("sparse.bin", 0, 0, O_RDWR);
	if (ftruncate(sparse, GIB))
		die("ftruncate: %s", strerror(errno));
	for (int i = 0; i < 4; i++) {
		fill(buf, 512, 10 + i);
		if (pwrite(sparse, buf, 4096, sparse_off[i]) != 4096)
			die("pwrite: %s", strerror(errno));
	}
	lseek(sparse, 5000, SEEK_SET);
	unlink_file("sparse.bin");
}

static void check_sparse(void)
{
	static char buf[1 << 16];
	static const off_t holes[] = { 8192, 50L << 20, (100L << 20) + 8192, 700L << 20, GIB - 65536 - 4096 };

	check_unlinked("sparse.bin", sparse, "sparse.bin", GIB);
	for (int i = 0; i < 4; i++)
		check_bytes("sparse.bin block", sparse, sparse_off[i], 4096, 10 + i);
	for (int i = 0; i < 5; i++) {
		if (pread(sparse, buf, sizeof(buf), holes[i]) != sizeof(buf)) {
			fail("sparse.bin: pread at %lld: %s", (long long)holes[i], strerror(errno));
			continue;
		}
		for (size_t j = 0; j < sizeof(buf); j++)
			if (buf[j]) {
				fail("sparse.bin: byte %lld of a hole is %#x", (long long)(holes[i] + j), buf[j]);
				break;
			}
	}
	if (lseek(sparse, 0, SEEK_CUR) != 5000)
		fail("sparse.bin: offset %lld, want 5000", (long long)lseek(sparse, 0, SEEK_CUR));
}

/* mmap: a deleted file mapped shared and private, its fd closed. */
static uint64_t *shm, *priv;
static void setup_mmap(void)
{
	int fd = make_file("map.bin", 0, 0, O_RDWR);
	static uint64_t buf[MAPSZ / 8];

	fill(buf, MAPSZ / 8, 20);
	if (pwrite(fd, buf, MAPSZ, 0) != MAPSZ)
		die("write map.bin: %s", strerror(errno));
	shm = mmap(NULL, MAPSZ, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
	priv = mmap(NULL, MAPSZ, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, 0);
	if (shm == MAP_FAILED || priv == MAP_FAILED)
		die("mmap map.bin: %s", strerror(errno));
	close(fd);
	unlink_file("map.bin");
	fill(priv + 4096 / 8, 4096 / 8, 21); /* one private page of its own */
	shm[0] = 0x5ea1ed; /* through the file */
}

static void check_mmap(void)
{
	char line[512];
	int found = 0;
	FILE *f;

	if (shm[0] != 0x5ea1ed)
		fail("map.bin shared: word 0 is %#llx, want 0x5ea1ed", (unsigned long long)shm[0]);
	check_words("map.bin shared", shm + 1, 1, MAPSZ / 8 - 1, 20);
	check_words("map.bin private page 2", priv + 8192 / 8, 8192 / 8, 4096 / 8, 20);
	check_words("map.bin private own page", priv + 4096 / 8, 0, 4096 / 8, 21);
	/* The private mapping sees what the shared one wrote: one file. */
	if (priv[0] != 0x5ea1ed)
		fail("map.bin private: word 0 is %#llx, want 0x5ea1ed (not the same file)", (unsigned long long)priv[0]);
	f = fopen("/proc/self/maps", "r");
	while (f && fgets(line, sizeof(line), f))
		if (strstr(line, "/map.bin (deleted)"))
			found++;
	if (f)
		fclose(f);
	if (found != 2)
		fail("map.bin: %d mappings say map.bin (deleted), want 2", found);
}

/* linked: a file unlinked by one name that keeps another (--link-remap). */
static int linked;
static void setup_linked(void)
{
	char a[4096], b[4096];

	linked = make_file("orig.txt", SMALL, 30, O_RDWR);
	path_of(a, "orig.txt");
	path_of(b, "other.txt");
	if (link(a, b))
		die("link: %s", strerror(errno));
	unlink_file("orig.txt");
	lseek(linked, 777, SEEK_SET);
}

static void check_linked(void)
{
	char p[4096], buf[8] = "";
	struct stat st;
	int fd;

	check_bytes("orig.txt", linked, 0, SMALL, 30);
	if (lseek(linked, 0, SEEK_CUR) != 777)
		fail("orig.txt: offset %lld, want 777", (long long)lseek(linked, 0, SEEK_CUR));
	if (fstat(linked, &st) == 0 && st.st_nlink != 1)
		fail("orig.txt: st_nlink %lu, want 1 (other.txt only)", (unsigned long)st.st_nlink);
	path_of(p, "other.txt");
	fd = open(p, O_RDONLY);
	if (pwrite(linked, "linked", 6, 10) != 6 || fd < 0 || pread(fd, buf, 6, 10) != 6 || memcmp(buf, "linked", 6))
		fail("orig.txt: a write through the fd does not reach other.txt (%.6s)", buf);
	close(fd);
}

/* big: a 2 MiB unlinked file (over a 1 MiB --ghost-limit). */
static int big;
static void setup_big(void)
{
	static uint64_t buf[1 << 15];

	big = make_file("big.bin", 0, 0, O_RDWR);
	for (int i = 0; i < 8; i++) {
		fill(buf, 1 << 15, 40 + i);
		if (write(big, buf, sizeof(buf)) != sizeof(buf))
			die("write big.bin: %s", strerror(errno));
	}
	unlink_file("big.bin");
}

static void check_big(void)
{
	check_unlinked("big.bin", big, "big.bin", 2 << 20);
	check_bytes("big.bin", big, 0, SMALL, 40);
}

/* flags: status flags that must survive, checked with F_GETFL. */
struct flagged {
	const char *name;
	int flags, fd, fl, fdfl;
};
static struct flagged flagged[] = {
	{ "direct.bin", O_RDWR | O_DIRECT },
	{ "noatime.txt", O_RDONLY | O_NOATIME },
	{ "append.txt", O_WRONLY | O_APPEND | O_NONBLOCK },
	{ "cloexec.txt", O_RDWR | O_CLOEXEC },
	{ "size.txt", O_RDWR },
};
static void setup_flags(void)
{
	for (size_t i = 0; i < sizeof(flagged) / sizeof(flagged[0]); i++) {
		struct flagged *f = &flagged[i];
		int fd = make_file(f->name, 8192, 50 + i, O_RDWR);

		close(fd);
		char p[4096];
		path_of(p, f->name);
		f->fd = open(p, f->flags);
		if (f->fd < 0)
			die("open %s: %s", p, strerror(errno));
		f->fl = fcntl(f->fd, F_GETFL);
		f->fdfl = fcntl(f->fd, F_GETFD);
		say("%s: F_GETFL %#o", f->name, f->fl);
	}
}

static void check_flags(void)
{
	void *buf;

	for (size_t i = 0; i < sizeof(flagged) / sizeof(flagged[0]); i++) {
		struct flagged *f = &flagged[i];
		int fl = fcntl(f->fd, F_GETFL), fdfl = fcntl(f->fd, F_GETFD);

		if (fl != f->fl)
			fail("%s: F_GETFL %#o, was %#o", f->name, fl, f->fl);
		if (fdfl != f->fdfl)
			fail("%s: F_GETFD %#o, was %#o", f->name, fdfl, f->fdfl);
	}
	/* O_DIRECT reads need aligned buffers: still a direct read. */
	if (posix_memalign(&buf, 4096, 4096) == 0) {
		if (pread(flagged[0].fd, buf, 4096, 4096) != 4096)
			fail("direct.bin: O_DIRECT pread: %s", strerror(errno));
		else
			check_words("direct.bin", buf, 512, 512, 50);
		free(buf);
	}
}

/* procsys: files of /proc and /sys. */
static int procfd, sysfd, procfl, sysfl;
static char sysbuf[256];
static void setup_procsys(void)
{
	procfd = open("/proc/self/status", O_RDONLY);
	sysfd = open("/sys/kernel/mm/transparent_hugepage/enabled", O_RDONLY);
	if (procfd < 0 || sysfd < 0)
		die("open /proc/self/status or /sys/kernel/mm/transparent_hugepage/enabled: %s", strerror(errno));
	if (pread(sysfd, sysbuf, sizeof(sysbuf) - 1, 0) <= 0)
		die("read sys: %s", strerror(errno));
	procfl = fcntl(procfd, F_GETFL);
	sysfl = fcntl(sysfd, F_GETFL);
}

static void check_procsys(void)
{
	char buf[4096] = "", want[32];
	ssize_t n = pread(procfd, buf, sizeof(buf) - 1, 0);

	snprintf(want, sizeof(want), "\nPid:\t%d\n", getpid());
	if (n <= 0 || !strstr(buf, want))
		fail("/proc/self/status fd: no %s line", "Pid:");
	memset(buf, 0, sizeof(buf));
	if (pread(sysfd, buf, sizeof(sysbuf) - 1, 0) <= 0 || strcmp(buf, sysbuf))
		fail("/sys fd reads %s, want %s", buf, sysbuf);
	if (fcntl(procfd, F_GETFL) != procfl || fcntl(sysfd, F_GETFL) != sysfl)
		fail("/proc or /sys fd flags %#o %#o, were %#o %#o", fcntl(procfd, F_GETFL), fcntl(sysfd, F_GETFL), procfl, sysfl);
}

/* dirfd: a directory of 40 entries half read with getdents64. */
#define NDIR 40
static int dfd;
static char seen[NDIR];
static int read_dir(int max)
{
	char buf[256];
	int got = 0;

	while (got < max) {
		long n = syscall(SYS_getdents64, dfd, buf, sizeof(buf));
		if (n <= 0)
			return n < 0 ? -1 : got;
		for (long off = 0; off < n;) {
			struct dirent64 *d = (struct dirent64 *)(buf + off);
			int i;

			if (sscanf(d->d_name, "e%d", &i) == 1 && i >= 0 && i < NDIR) {
				if (seen[i]++)
					fail("dir: e%d read twice", i);
			}
			got++;
			off += d->d_reclen;
		}
	}
	return got;
}

static void setup_dirfd(void)
{
	char p[4096];

	path_of(p, "d");
	if (mkdir(p, 0755))
		die("mkdir %s: %s", p, strerror(errno));
	for (int i = 0; i < NDIR; i++) {
		char f[4200];
		snprintf(f, sizeof(f), "%s/e%d", p, i);
		close(open(f, O_CREAT | O_WRONLY, 0644));
	}
	dfd = open(p, O_RDONLY | O_DIRECTORY);
	if (dfd < 0 || read_dir(15) < 15)
		die("read dir %s", p);
}

static void check_dirfd(void)
{
	if (read_dir(1000) < 0)
		fail("dir: getdents64: %s", strerror(errno));
	for (int i = 0; i < NDIR; i++)
		if (seen[i] != 1)
			fail("dir: e%d read %d times", i, seen[i]);
}

/*
 * exe: run from a copy that the test deletes, with a child forked from it
 * (which keeps the parent's mappings of the deleted binary).
 */
static pid_t exe_child;
static void check_exe_link(const char *who)
{
	char target[4096];
	ssize_t n = readlink("/proc/self/exe", target, sizeof(target) - 1);

	target[n < 0 ? 0 : n] = 0;
	if (!strstr(target, " (deleted)"))
		fail("%s: /proc/self/exe is %s, want a deleted file", who, target);
}

static void setup_exe(void)
{
	pid_t parent = getpid();

	exe_child = fork();
	if (exe_child < 0)
		die("fork: %s", strerror(errno));
	if (exe_child == 0) {
		while (!got_term && getppid() == parent)
			sleep_ms(10);
		if (getppid() != parent) {
			fail("exe child: its parent changed");
			_exit(1);
		}
		check_exe_link("exe child");
		_exit(victim_failures ? 1 : 0);
	}
}

static void check_exe(void)
{
	int status;

	check_exe_link("exe");
	kill(exe_child, SIGTERM);
	if (waitpid(exe_child, &status, 0) != exe_child || !WIFEXITED(status) || WEXITSTATUS(status))
		fail("exe child %d: status %#x", exe_child, status);
}

static const struct {
	const char *name;
	void (*setup)(void), (*check)(void);
} scenarios[] = {
	{ "small", setup_small, check_small },
	{ "sparse", setup_sparse, check_sparse },
	{ "mmap", setup_mmap, check_mmap },
	{ "linked", setup_linked, check_linked },
	{ "big", setup_big, check_big },
	{ "flags", setup_flags, check_flags },
	{ "procsys", setup_procsys, check_procsys },
	{ "dirfd", setup_dirfd, check_dirfd },
	{ "exe", setup_exe, check_exe },
};
#define NSCEN (sizeof(scenarios) / sizeof(scenarios[0]))

int main(int argc, char **argv)
{
	int on[NSCEN] = { 0 };

	if (argc < 4)
		die("usage: ghost READY DIR SCENARIO...");
	victim_init();
	dir = argv[2];
	for (int a = 3; a < argc; a++) {
		size_t i;
		for (i = 0; i < NSCEN && strcmp(argv[a], scenarios[i].name); i++)
			;
		if (i == NSCEN)
			die("unknown scenario %s", argv[a]);
		on[i] = 1;
		if (scenarios[i].setup)
			scenarios[i].setup();
	}
	victim_ready(argv[1]);
	victim_wait();
	for (size_t i = 0; i < NSCEN; i++)
		if (on[i])
			scenarios[i].check();
	victim_finish();
}
