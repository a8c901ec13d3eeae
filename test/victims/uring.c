/*
 * uring: an io_uring instance, set up by raw syscalls as liburing 2.x
 * does (both rings in one mapping, the SQ array filled once with 0..n-1),
 * used before the dump and again after the restore.
 *
 *   uring READY DIR [unreaped|inflight|nosqarray|fork]
 *
 * Sets up a ring of 8 SQEs and 32 CQEs (IORING_SETUP_CQSIZE), writes a
 * file DIR/uring.data, submits 37 NOPs and a read of the file through the
 * ring and reaps them all (the counters wrap the rings several times).
 * With "unreaped", 3 more NOPs are submitted and completed but their CQEs
 * left in the ring. On SIGTERM it checks that the ring is where it was
 * (same fd, same mappings), the counters are what they were, the unreaped
 * CQEs come out with their user_data, then a read and a NOP submitted
 * through the same ring at the same addresses complete with the file's
 * bytes. With "inflight", a read of an empty pipe is left in flight (the
 * dump must refuse the ring and leave it working): on SIGTERM the pipe
 * gets a byte and the read completes. With "nosqarray" the ring has no SQ
 * array (IORING_SETUP_NO_SQARRAY, as liburing 2.6+ makes them). With
 * "fork" a child holds the ring and its mappings too (inherited); after
 * the restore it submits a NOP through them, then the parent checks.
 */
#include <sys/wait.h>
#include "victim.h"
#include <linux/io_uring.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#ifndef IORING_SETUP_NO_SQARRAY
#define IORING_SETUP_NO_SQARRAY (1U << 16)
#endif

#define SQ_ENTRIES 8
#define CQ_ENTRIES 32
#define RING_FD 42
#define DATA_FD 43

static int ring_fd = -1;
static struct io_uring_params p;
static unsigned char *rings;
static struct io_uring_sqe *sqes;
static unsigned *sq_head, *sq_tail, *sq_mask, *sq_array;
static unsigned *cq_head, *cq_tail, *cq_mask;
static struct io_uring_cqe *cqes;

static char text[4096];

static int enter(unsigned submit, unsigned wait)
{
	return syscall(SYS_io_uring_enter, ring_fd, submit, wait, wait ? IORING_ENTER_GETEVENTS : 0, NULL, 0);
}

static struct io_uring_sqe *next_sqe(void)
{
	unsigned tail = *sq_tail;
	struct io_uring_sqe *sqe = &sqes[tail & *sq_mask];

	memset(sqe, 0, sizeof(*sqe));
	return sqe;
}

static void push(void)
{
	__atomic_store_n(sq_tail, *sq_tail + 1, __ATOMIC_RELEASE);
}

static void nop(uint64_t data)
{
	struct io_uring_sqe *sqe = next_sqe();

	sqe->opcode = IORING_OP_NOP;
	sqe->user_data = data;
	push();
}

static void readat(void *buf, unsigned len, uint64_t off, uint64_t data)
{
	struct io_uring_sqe *sqe = next_sqe();

	sqe->opcode = IORING_OP_READ;
	sqe->fd = DATA_FD;
	sqe->addr = (uintptr_t)buf;
	sqe->len = len;
	sqe->off = off;
	sqe->user_data = data;
	push();
}

/* reap takes one CQE, waiting for it if need be. */
static int reap(struct io_uring_cqe *out)
{
	unsigned head = *cq_head;

	if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE)) {
		if (enter(0, 1) < 0)
			return -1;
		if (head == __atomic_load_n(cq_tail, __ATOMIC_ACQUIRE))
			return -1;
	}
	*out = cqes[head & *cq_mask];
	__atomic_store_n(cq_head, head + 1, __ATOMIC_RELEASE);
	return 0;
}

int main(int argc, char **argv)
{
	int unreaped = argc > 3 && !strcmp(argv[3], "unreaped");
	int inflight = argc > 3 && !strcmp(argv[3], "inflight");
	int noarray = argc > 3 && !strcmp(argv[3], "nosqarray");
	int forked = argc > 3 && !strcmp(argv[3], "fork");
	pid_t child = -1;
	int go[2];
	int pfd[2];
	struct io_uring_cqe cqe;
	char buf[64];

	if (argc < 3)
		die("usage: uring READY DIR [unreaped]");
	victim_init();
	for (size_t i = 0; i < sizeof(text); i++)
		text[i] = 'a' + i % 23;
	open_at(argv[2], "uring.data", O_RDWR | O_TRUNC, DATA_FD);
	if (write(DATA_FD, text, sizeof(text)) != sizeof(text))
		die("write uring.data: %s", strerror(errno));

	p.flags = IORING_SETUP_CQSIZE | (noarray ? IORING_SETUP_NO_SQARRAY : 0);
	p.cq_entries = CQ_ENTRIES;
	move_to(syscall(SYS_io_uring_setup, SQ_ENTRIES, &p), RING_FD);
	ring_fd = RING_FD;
	if (!(p.features & IORING_FEAT_SINGLE_MMAP))
		die("no IORING_FEAT_SINGLE_MMAP");
	size_t sqlen = noarray ? 0 : p.sq_off.array + p.sq_entries * sizeof(unsigned);
	size_t cqlen = p.cq_off.cqes + p.cq_entries * sizeof(struct io_uring_cqe);
	size_t rlen = sqlen > cqlen ? sqlen : cqlen;
	rings = mmap(NULL, rlen, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE, ring_fd, IORING_OFF_SQ_RING);
	if (rings == MAP_FAILED)
		die("mmap rings: %s", strerror(errno));
	sqes = mmap(NULL, p.sq_entries * sizeof(struct io_uring_sqe), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_POPULATE,
		    ring_fd, IORING_OFF_SQES);
	if (sqes == MAP_FAILED)
		die("mmap sqes: %s", strerror(errno));
	sq_head = (unsigned *)(rings + p.sq_off.head);
	sq_tail = (unsigned *)(rings + p.sq_off.tail);
	sq_mask = (unsigned *)(rings + p.sq_off.ring_mask);
	sq_array = (unsigned *)(rings + p.sq_off.array);
	cq_head = (unsigned *)(rings + p.cq_off.head);
	cq_tail = (unsigned *)(rings + p.cq_off.tail);
	cq_mask = (unsigned *)(rings + p.cq_off.ring_mask);
	cqes = (struct io_uring_cqe *)(rings + p.cq_off.cqes);
	/* As liburing 2.x: the array is the identity, set once. */
	for (unsigned i = 0; i < p.sq_entries && !noarray; i++)
		sq_array[i] = i;

	for (int i = 0; i < 37; i++) {
		nop(100 + i);
		if (enter(1, 1) != 1 || reap(&cqe) || cqe.user_data != (uint64_t)(100 + i) || cqe.res != 0)
			die("nop %d: %s", i, strerror(errno));
	}
	memset(buf, 0, sizeof(buf));
	readat(buf, sizeof(buf), 100, 7);
	if (enter(1, 1) != 1 || reap(&cqe) || cqe.user_data != 7 || cqe.res != sizeof(buf) || memcmp(buf, text + 100, sizeof(buf)))
		die("read through the ring: res %d", cqe.res);
	unsigned want = 38;
	if (unreaped) {
		for (int i = 0; i < 3; i++)
			nop(500 + i);
		if (enter(3, 3) != 3)
			die("3 nops: %s", strerror(errno));
		want += 3;
	}
	if (inflight) {
		if (pipe(pfd))
			die("pipe: %s", strerror(errno));
		struct io_uring_sqe *sqe = next_sqe();

		sqe->opcode = IORING_OP_READ;
		sqe->fd = pfd[0];
		sqe->addr = (uintptr_t)buf;
		sqe->len = 1;
		sqe->off = -1;
		sqe->user_data = 77;
		push();
		if (enter(1, 0) != 1)
			die("submit a read of a pipe: %s", strerror(errno));
	}
	void *rings0 = rings, *sqes0 = sqes;
	if (forked) {
		if (pipe(go))
			die("pipe: %s", strerror(errno));
		child = fork();
		if (child < 0)
			die("fork: %s", strerror(errno));
		if (child == 0) {
			char c;

			/* Woken by the parent after the restore: a NOP of its own. */
			signal(SIGTERM, SIG_DFL);
			close(go[1]);
			if (read(go[0], &c, 1) != 1)
				_exit(3);
			nop(4242);
			if (enter(1, 1) != 1 || reap(&cqe) || cqe.user_data != 4242)
				_exit(4);
			_exit(rings == rings0 ? 0 : 5);
		}
		close(go[0]);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (inflight) {
		if (write(pfd[1], "x", 1) != 1 || reap(&cqe) || cqe.user_data != 77 || cqe.res != 1 || buf[0] != 'x')
			fail("the read in flight: data %llu res %d", (unsigned long long)cqe.user_data, cqe.res);
		victim_finish();
	}
	if (forked) {
		int st;

		if (write(go[1], "g", 1) != 1 || waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
			fail("the child's NOP through the inherited ring: status %#x", st);
		want++;
	}
	if (fcntl(RING_FD, F_GETFD) < 0)
		fail("fd %d is gone: %s", RING_FD, strerror(errno));
	char link[64] = "", path[64];
	snprintf(path, sizeof(path), "/proc/self/fd/%d", RING_FD);
	if (readlink(path, link, sizeof(link) - 1) < 0 || strcmp(link, "anon_inode:[io_uring]"))
		fail("fd %d is %s, not io_uring", RING_FD, link);
	if (rings != rings0 || sqes != sqes0)
		fail("the rings moved");
	if (*sq_head != want || *sq_tail != want || *cq_tail != want || *cq_head != (unreaped ? want - 3 : want))
		fail("counters sq %u/%u cq %u/%u, want %u", *sq_head, *sq_tail, *cq_head, *cq_tail, want);
	for (unsigned i = 0; i < p.sq_entries && !noarray; i++)
		if (sq_array[i] != i) {
			fail("sq array[%u] is %u", i, sq_array[i]);
			break;
		}
	if (unreaped)
		for (int i = 0; i < 3; i++)
			if (reap(&cqe) || cqe.user_data != (uint64_t)(500 + i) || cqe.res != 0)
				fail("unreaped cqe %d: data %llu res %d", i, (unsigned long long)cqe.user_data, cqe.res);
	if (*cq_head != *cq_tail)
		fail("%u more cqes than there were", *cq_tail - *cq_head);

	memset(buf, 0, sizeof(buf));
	readat(buf, sizeof(buf), 1000, 8);
	nop(9);
	int n = enter(2, 2);
	if (n != 2)
		fail("submit a read and a nop after the restore: %d (%s)", n, n < 0 ? strerror(errno) : "");
	for (int i = 0; i < 2 && n == 2; i++) {
		if (reap(&cqe)) {
			fail("completion %d after the restore", i);
			break;
		}
		if (cqe.user_data == 8 && (cqe.res != sizeof(buf) || memcmp(buf, text + 1000, sizeof(buf))))
			fail("read after the restore: res %d, bytes %s", cqe.res, cqe.res > 0 && memcmp(buf, text + 1000, sizeof(buf)) ? "differ" : "ok");
		else if (cqe.user_data != 8 && (cqe.user_data != 9 || cqe.res != 0))
			fail("nop after the restore: data %llu res %d", (unsigned long long)cqe.user_data, cqe.res);
	}
	if (*sq_head != want + 2 || *cq_tail != want + 2)
		fail("counters after: sq head %u cq tail %u, want %u", *sq_head, *cq_tail, want + 2);
	victim_finish();
}
