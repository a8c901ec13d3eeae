/*
 * memfd: memfd fds with content, holes, seals, offsets and mappings.
 *
 *   memfd READY
 *
 * - A "victim-a" (fd 50): 64 KiB, data in pages 0-1 and 10-11, the rest a
 *   hole; mode 0640, owner 1234:5678; sealed GROW|SHRINK; mapped MAP_SHARED
 *   read-write (whole file); fd 50 at offset 4096+123, fd 51 a dup of it
 *   (one description, one offset), fd 52 a read-only reopen at offset 77.
 * - B "victim-b" (fd 53): 3 pages of data, sealed WRITE|SHRINK|SEAL, mapped
 *   MAP_SHARED read-only (allowed under F_SEAL_WRITE: the mapping may never
 *   become writable).
 * - C "victim-c" (fd 54): 1 page, mapped MAP_SHARED read-write, then sealed
 *   FUTURE_WRITE: the mapping still writes, write() and new writable
 *   mappings are refused.
 * - D "victim-d" (fd 55): made without MFD_ALLOW_SEALING (seals: SEAL).
 *
 * On SIGTERM it checks, for each: the /proc/self/fd link, size, content,
 * holes (SEEK_DATA/SEEK_HOLE), F_GET_SEALS, that sealed operations are
 * still refused and the others allowed, offsets and their sharing, access
 * modes, mode and owner, and that each mapping and its fd are one memfd
 * (same inode; a write through one is read through the other).
 */
#include "victim.h"
#include <sys/mman.h>
#include <sys/stat.h>

#define PG 4096
#define A_SIZE (16 * PG)

static unsigned char *map_a, *map_b, *map_c;

static unsigned char byte_at(char tag, long off)
{
	return (unsigned char)(tag + off * 7 + off / PG);
}

static void fill_range(int fd, char tag, long from, long to)
{
	static unsigned char buf[PG];

	for (long off = from; off < to; off += PG) {
		for (int i = 0; i < PG; i++)
			buf[i] = byte_at(tag, off + i);
		if (pwrite(fd, buf, PG, off) != PG)
			die("pwrite memfd %c at %ld: %s", tag, off, strerror(errno));
	}
}

static int reopen(int fd, int flags)
{
	char p[64];

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	return open(p, flags);
}

static void check_link(int fd, const char *want)
{
	char p[64], link[256] = "";

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	if (readlink(p, link, sizeof(link) - 1) < 0)
		fail("fd %d is not open: %s", fd, strerror(errno));
	else if (strcmp(link, want))
		fail("fd %d is %s, want %s", fd, link, want);
}

static void check_seals(int fd, char tag, int want)
{
	int s = fcntl(fd, F_GET_SEALS);

	if (s != want)
		fail("memfd %c: seals %#x, want %#x", tag, s, want);
}

static void check_content(int fd, char tag, long from, long to)
{
	static unsigned char buf[PG];

	for (long off = from; off < to; off += PG) {
		if (pread(fd, buf, PG, off) != PG) {
			fail("memfd %c: pread at %ld: %s", tag, off, strerror(errno));
			return;
		}
		for (int i = 0; i < PG; i++)
			if (buf[i] != byte_at(tag, off + i)) {
				fail("memfd %c: byte %ld is %#x, want %#x", tag, off + i, buf[i], byte_at(tag, off + i));
				return;
			}
	}
}

static void check_zero(int fd, char tag, long from, long to)
{
	static unsigned char buf[PG];

	for (long off = from; off < to; off += PG) {
		if (pread(fd, buf, PG, off) != PG) {
			fail("memfd %c: pread at %ld: %s", tag, off, strerror(errno));
			return;
		}
		for (int i = 0; i < PG; i++)
			if (buf[i]) {
				fail("memfd %c: byte %ld of a hole is %#x", tag, off + i, buf[i]);
				return;
			}
	}
}

static void check_size(int fd, char tag, long want)
{
	struct stat st;

	if (fstat(fd, &st))
		fail("memfd %c: fstat: %s", tag, strerror(errno));
	else if (st.st_size != want)
		fail("memfd %c: size %ld, want %ld", tag, (long)st.st_size, want);
}

static void check_pos(int fd, long want)
{
	long pos = lseek(fd, 0, SEEK_CUR);

	if (pos != want)
		fail("fd %d: offset %ld, want %ld", fd, pos, want);
}

/* refused checks that an operation failed with EPERM (a seal). */
static void refused(long ret, const char *what)
{
	if (ret >= 0)
		fail("%s succeeded: a seal is lost", what);
	else if (errno != EPERM)
		fail("%s: %s, want EPERM", what, strerror(errno));
}

/* same_inode checks that the mapping at addr is a mapping of fd's file. */
static void same_inode(int fd, void *addr, long len, char tag)
{
	char p[96];
	struct stat a, b;

	snprintf(p, sizeof(p), "/proc/self/map_files/%lx-%lx", (unsigned long)addr, (unsigned long)addr + len);
	if (stat(p, &a) || fstat(fd, &b))
		fail("memfd %c: stat mapping %s or fd %d: %s", tag, p, fd, strerror(errno));
	else if (a.st_ino != b.st_ino || a.st_dev != b.st_dev)
		fail("memfd %c: the mapping (inode %lu) and fd %d (inode %lu) are different files", tag,
		     (unsigned long)a.st_ino, fd, (unsigned long)b.st_ino);
}

static void check_holes(int fd)
{
	/* A private fd: the offsets of fds 50-52 are checked elsewhere. */
	int f = reopen(fd, O_RDONLY);

	if (f < 0) {
		fail("memfd A: reopen: %s", strerror(errno));
		return;
	}
	long h0 = lseek(f, 0, SEEK_HOLE), d1 = lseek(f, 2 * PG, SEEK_DATA);
	long h1 = lseek(f, 10 * PG, SEEK_HOLE), d2 = lseek(f, 12 * PG, SEEK_DATA);

	if (h0 != 2 * PG || d1 != 10 * PG || h1 != 12 * PG || d2 >= 0)
		fail("memfd A: holes moved: hole at %ld, data at %ld, hole at %ld, data after 12 pages at %ld (want %d %d %d -1)",
		     h0, d1, h1, d2, 2 * PG, 10 * PG, 12 * PG);
	close(f);
}

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: memfd READY");
	victim_init();

	/* A */
	move_to(memfd_create("victim-a", MFD_ALLOW_SEALING), 50);
	if (ftruncate(50, A_SIZE))
		die("ftruncate A: %s", strerror(errno));
	fill_range(50, 'A', 0, 2 * PG);
	fill_range(50, 'A', 10 * PG, 12 * PG);
	if (fchmod(50, 0640) || fchown(50, 1234, 5678))
		die("fchmod/fchown A: %s", strerror(errno));
	map_a = mmap(NULL, A_SIZE, PROT_READ | PROT_WRITE, MAP_SHARED, 50, 0);
	if (map_a == MAP_FAILED)
		die("mmap A: %s", strerror(errno));
	if (fcntl(50, F_ADD_SEALS, F_SEAL_GROW | F_SEAL_SHRINK))
		die("seal A: %s", strerror(errno));
	if (lseek(50, PG + 123, SEEK_SET) != PG + 123)
		die("lseek A: %s", strerror(errno));
	if (dup2(50, 51) != 51)
		die("dup A: %s", strerror(errno));
	move_to(reopen(50, O_RDONLY), 52);
	if (lseek(52, 77, SEEK_SET) != 77)
		die("lseek A ro: %s", strerror(errno));

	/* B */
	move_to(memfd_create("victim-b", MFD_ALLOW_SEALING), 53);
	fill_range(53, 'B', 0, 3 * PG);
	if (fcntl(53, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_SEAL))
		die("seal B: %s", strerror(errno));
	map_b = mmap(NULL, 3 * PG, PROT_READ, MAP_SHARED, 53, 0);
	if (map_b == MAP_FAILED)
		die("mmap B: %s", strerror(errno));

	/* C */
	move_to(memfd_create("victim-c", MFD_ALLOW_SEALING), 54);
	fill_range(54, 'C', 0, PG);
	map_c = mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, 54, 0);
	if (map_c == MAP_FAILED)
		die("mmap C: %s", strerror(errno));
	if (fcntl(54, F_ADD_SEALS, F_SEAL_FUTURE_WRITE))
		die("seal C: %s", strerror(errno));

	/* D */
	move_to(memfd_create("victim-d", 0), 55);
	if (write(55, "dee", 3) != 3)
		die("write D: %s", strerror(errno));

	say("memfd: A mapped at %p, B at %p, C at %p", (void *)map_a, (void *)map_b, (void *)map_c);
	victim_ready(argv[1]);
	victim_wait();

	/* A: links, size, content and holes first (the writes below fill). */
	check_link(50, "/memfd:victim-a (deleted)");
	check_link(52, "/memfd:victim-a (deleted)");
	check_size(50, 'A', A_SIZE);
	check_content(50, 'A', 0, 2 * PG);
	check_zero(50, 'A', 2 * PG, 10 * PG);
	check_content(50, 'A', 10 * PG, 12 * PG);
	check_zero(50, 'A', 12 * PG, A_SIZE);
	check_holes(50);
	check_seals(50, 'A', F_SEAL_GROW | F_SEAL_SHRINK);
	{
		struct stat st;

		if (fstat(50, &st) == 0 && ((st.st_mode & 07777) != 0640 || st.st_uid != 1234 || st.st_gid != 5678))
			fail("memfd A: mode %o owner %d:%d, want 640 1234:5678", st.st_mode & 07777, st.st_uid, st.st_gid);
	}
	check_pos(50, PG + 123);
	check_pos(52, 77);
	if (lseek(51, 10, SEEK_CUR) != PG + 133)
		fail("fd 51: seek failed: %s", strerror(errno));
	check_pos(50, PG + 133); /* fd 51 is a dup of 50: one offset */
	check_pos(52, 77);       /* fd 52 is another description */
	if ((fcntl(52, F_GETFL) & O_ACCMODE) != O_RDONLY || write(52, "x", 1) >= 0)
		fail("fd 52 is not read-only any more");
	if ((fcntl(50, F_GETFL) & O_ACCMODE) != O_RDWR)
		fail("fd 50 is not read-write any more");
	refused(ftruncate(50, A_SIZE + PG), "memfd A: grow (F_SEAL_GROW)");
	refused(ftruncate(50, PG), "memfd A: shrink (F_SEAL_SHRINK)");
	refused(pwrite(50, "x", 1, A_SIZE), "memfd A: write past the end (F_SEAL_GROW)");
	same_inode(50, map_a, A_SIZE, 'A');
	if (map_a[PG + 5] != byte_at('A', PG + 5))
		fail("memfd A: the mapping reads %#x at %d, want %#x", map_a[PG + 5], PG + 5, byte_at('A', PG + 5));
	map_a[3 * PG + 1] = 0x5a; /* into a hole, through the mapping */
	{
		unsigned char c = 0;

		if (pread(52, &c, 1, 3 * PG + 1) != 1 || c != 0x5a)
			fail("memfd A: a write through the mapping is not seen by fd 52 (%#x)", c);
		if (pwrite(50, "\xa5", 1, 11 * PG) != 1)
			fail("memfd A: pwrite: %s", strerror(errno));
		else if (map_a[11 * PG] != 0xa5)
			fail("memfd A: a write through fd 50 is not seen by the mapping (%#x)", map_a[11 * PG]);
	}

	/* B */
	check_link(53, "/memfd:victim-b (deleted)");
	check_size(53, 'B', 3 * PG);
	check_content(53, 'B', 0, 3 * PG);
	check_seals(53, 'B', F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_SEAL);
	refused(pwrite(53, "x", 1, 0), "memfd B: write (F_SEAL_WRITE)");
	refused(fcntl(53, F_ADD_SEALS, F_SEAL_GROW), "memfd B: add a seal (F_SEAL_SEAL)");
	refused((long)mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, 53, 0), "memfd B: writable mmap (F_SEAL_WRITE)");
	if (mprotect(map_b, PG, PROT_READ | PROT_WRITE) == 0)
		fail("memfd B: its read-only mapping could be made writable");
	same_inode(53, map_b, 3 * PG, 'B');
	if (map_b[2 * PG + 9] != byte_at('B', 2 * PG + 9))
		fail("memfd B: the mapping reads %#x, want %#x", map_b[2 * PG + 9], byte_at('B', 2 * PG + 9));

	/* C */
	check_link(54, "/memfd:victim-c (deleted)");
	check_size(54, 'C', PG);
	check_content(54, 'C', 0, PG);
	check_seals(54, 'C', F_SEAL_FUTURE_WRITE);
	refused(pwrite(54, "x", 1, 0), "memfd C: write (F_SEAL_FUTURE_WRITE)");
	refused((long)mmap(NULL, PG, PROT_READ | PROT_WRITE, MAP_SHARED, 54, 0), "memfd C: new writable mmap (F_SEAL_FUTURE_WRITE)");
	same_inode(54, map_c, PG, 'C');
	map_c[100] = 0x77; /* the mapping made before the seal still writes */
	{
		unsigned char c = 0;

		if (pread(54, &c, 1, 100) != 1 || c != 0x77)
			fail("memfd C: a write through the mapping is not seen by fd 54 (%#x)", c);
	}

	/* D */
	check_link(55, "/memfd:victim-d (deleted)");
	check_seals(55, 'D', F_SEAL_SEAL);
	refused(fcntl(55, F_ADD_SEALS, F_SEAL_WRITE), "memfd D: add a seal (made without MFD_ALLOW_SEALING)");
	{
		char b[4] = "";

		if (pread(55, b, 3, 0) != 3 || memcmp(b, "dee", 3))
			fail("memfd D: content %.3s, want dee", b);
		check_pos(55, 3);
	}
	victim_finish();
}
