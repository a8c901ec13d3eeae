/*
 * shmem: shared memory whose pages are not all in the victim's own page
 * tables, and mappings that share one object in ways fork alone does not
 * explain.
 *
 *   shmem READY [sysv|rmid]
 *
 * - A: 8 MiB MAP_SHARED|MAP_ANONYMOUS; a child fills it with pattern 1 and
 *   exits (reaped); the victim never touches A before its checks, so that
 *   no pagemap of the tree shows those pages (a postgres backend filling
 *   shared buffers, then exiting).
 * - B: 1 MiB shared anonymous, pattern 2, mapped by two children C1 and
 *   C2 that the victim forks and then unmaps B itself: only C1 and C2 share
 *   it. On SIGTERM the victim stops C1, which writes a token into B and
 *   exits 0, then C2, which must read the token and the pattern.
 * - D: 4 pages shared anonymous, and E: a second mapping of D's last two
 *   pages (mremap with old size 0), so E's offset in the object is 2 pages;
 *   a word written through E must be read through D and back.
 * - sysv: also a 1 MiB System V segment (IPC_PRIVATE, mode 0600) attached
 *   by the victim and inherited by C1 and C2, pattern 3; checked as B and
 *   for 3 attachments (shm_nattch) before it is removed. Its id goes to
 *   stdout as "shmid N". rmid: the segment is marked IPC_RMID at once, so
 *   that it would go with the tree: the dump must refuse.
 *
 * Exit: 0 PASS, 1 with FAIL lines (a child's failures are its exit code).
 */
#include "victim.h"
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/shm.h>
#include <sys/wait.h>

#define MIB (1UL << 20)
#define PG 4096UL
#define A_SIZE (8 * MIB)
#define B_SIZE MIB
#define S_SIZE MIB
#define TOKEN 0x70c3e70c3e70c3eULL

static uint64_t *b, *seg;
static int sysv;

static void *map_shared(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);

	if (p == MAP_FAILED)
		die("mmap %zu shared: %s", size, strerror(errno));
	return p;
}

/* sharer is C1 (writer) or C2 (reader): on SIGTERM it checks B (and the
 * segment) and exits with its failure count as status. */
static void sharer(int writer)
{
	victim_init();
	victim_wait();
	if (writer) {
		b[B_SIZE / 8 - 1] = TOKEN;
		if (sysv)
			seg[S_SIZE / 8 - 1] = TOKEN;
	} else {
		if (b[B_SIZE / 8 - 1] != TOKEN)
			fail("B: C2 reads %#llx where C1 wrote the token: B is not shared any more",
			     (unsigned long long)b[B_SIZE / 8 - 1]);
		check_fill("B in C2", b, B_SIZE / 8 - 1, 2);
		if (sysv) {
			if (seg[S_SIZE / 8 - 1] != TOKEN)
				fail("segment: C2 reads %#llx where C1 wrote the token",
				     (unsigned long long)seg[S_SIZE / 8 - 1]);
			check_fill("segment in C2", seg, S_SIZE / 8 - 1, 3);
		}
	}
	exit(victim_failures ? 1 : 0);
}

static void stop_child(pid_t pid, const char *name)
{
	int st;

	if (kill(pid, SIGTERM))
		fail("kill %s (%d): %s", name, pid, strerror(errno));
	if (waitpid(pid, &st, 0) != pid)
		fail("waitpid %s (%d): %s", name, pid, strerror(errno));
	else if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
		fail("%s (%d) ended with status %#x: its checks failed (see above)", name, pid, st);
}

int main(int argc, char **argv)
{
	uint64_t *a, *d, *e;
	pid_t w, c1, c2;
	int st, shmid = -1;

	if (argc < 2)
		die("usage: shmem READY [sysv|rmid]");
	sysv = argc > 2;
	victim_init();

	a = map_shared(A_SIZE);
	w = fork();
	if (w < 0)
		die("fork: %s", strerror(errno));
	if (w == 0) {
		fill(a, A_SIZE / 8, 1);
		_exit(0);
	}
	if (waitpid(w, &st, 0) != w || !WIFEXITED(st) || WEXITSTATUS(st))
		die("the writer of A failed: %#x", st);

	b = map_shared(B_SIZE);
	fill(b, B_SIZE / 8, 2);
	if (sysv) {
		shmid = shmget(IPC_PRIVATE, S_SIZE, IPC_CREAT | 0600);
		if (shmid < 0)
			die("shmget: %s", strerror(errno));
		seg = shmat(shmid, NULL, 0);
		if (seg == (void *)-1)
			die("shmat: %s", strerror(errno));
		fill(seg, S_SIZE / 8, 3);
		say("shmid %d", shmid);
		if (!strcmp(argv[2], "rmid") && shmctl(shmid, IPC_RMID, NULL))
			die("shmctl(IPC_RMID): %s", strerror(errno));
	}
	c1 = fork();
	if (c1 == 0)
		sharer(1);
	c2 = fork();
	if (c2 == 0)
		sharer(0);
	if (c1 < 0 || c2 < 0)
		die("fork: %s", strerror(errno));
	if (munmap(b, B_SIZE))
		die("munmap B: %s", strerror(errno));

	d = map_shared(4 * PG);
	fill(d, 4 * PG / 8, 4);
	e = mremap((char *)d + 2 * PG, 0, 2 * PG, MREMAP_MAYMOVE);
	if (e == MAP_FAILED)
		die("mremap D's last pages: %s", strerror(errno));

	victim_ready(argv[1]);
	victim_wait();

	check_fill("A (written by a child gone before the dump)", a, A_SIZE / 8, 1);
	stop_child(c1, "C1");
	stop_child(c2, "C2");
	if (check_fill("D", d, 4 * PG / 8, 4) == 0) {
		if (e[0] != d[2 * PG / 8])
			fail("E[0] is %#llx, D at 2 pages %#llx", (unsigned long long)e[0], (unsigned long long)d[2 * PG / 8]);
		e[1] = TOKEN;
		if (d[2 * PG / 8 + 1] != TOKEN)
			fail("a word written through E is not read through D: E is not D's object any more");
		d[2 * PG / 8 + 2] = ~TOKEN;
		if (e[2] != ~TOKEN)
			fail("a word written through D is not read through E");
	}
	if (sysv) {
		struct shmid_ds ds;

		if (shmctl(shmid, IPC_STAT, &ds))
			fail("shmctl(IPC_STAT) of segment %d: %s", shmid, strerror(errno));
		else if (ds.shm_nattch != 1)
			fail("segment %d has %lu attachments with C1 and C2 gone, want 1", shmid, (unsigned long)ds.shm_nattch);
		if (seg[S_SIZE / 8 - 1] != TOKEN)
			fail("segment: the victim reads %#llx where C1 wrote the token", (unsigned long long)seg[S_SIZE / 8 - 1]);
		check_fill("segment", seg, S_SIZE / 8 - 1, 3);
		shmdt(seg);
		shmctl(shmid, IPC_RMID, NULL);
	}
	victim_finish();
}
