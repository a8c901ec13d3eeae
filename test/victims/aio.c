/*
 * aio: a Linux AIO context (io_setup) with completed events not yet
 * reaped.
 *
 *   aio READY DIR
 *
 * Sets up a context for 16 requests, writes 6 blocks of 512 bytes to
 * DIR/aio.data with IOCB_CMD_PWRITE (each with its own aio_data), reaps
 * the first 2 completions and leaves 4 in the ring. On SIGTERM it checks
 * that the context is the same (its id, which is the ring's address), the
 * 4 completions come out in order with their aio_data and result (512),
 * nothing more is pending, and a new write completes and is reaped; then
 * the file holds the 7 blocks.
 */
#include "victim.h"
#include <linux/aio_abi.h>
#include <sys/syscall.h>

#define BLOCK 512
#define FIRST 6

static aio_context_t ctx;
static int fd;
static char blocks[FIRST + 1][BLOCK];

static int submit(int i)
{
	struct iocb cb, *p = &cb;

	memset(&cb, 0, sizeof(cb));
	cb.aio_data = 0x1000 + i;
	cb.aio_lio_opcode = IOCB_CMD_PWRITE;
	cb.aio_fildes = fd;
	cb.aio_buf = (uintptr_t)blocks[i];
	cb.aio_nbytes = BLOCK;
	cb.aio_offset = (long long)i * BLOCK;
	return syscall(SYS_io_submit, ctx, 1, &p) == 1 ? 0 : -1;
}

static long reap(struct io_event *ev, long min, long max)
{
	struct timespec ts = { 5, 0 };

	return syscall(SYS_io_getevents, ctx, min, max, ev, &ts);
}

int main(int argc, char **argv)
{
	struct io_event ev[8];
	char path[4096];

	if (argc < 3)
		die("usage: aio READY DIR");
	victim_init();
	snprintf(path, sizeof(path), "%s/aio.data", argv[2]);
	fd = open(path, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		die("open %s: %s", path, strerror(errno));
	if (syscall(SYS_io_setup, 16, &ctx))
		die("io_setup: %s", strerror(errno));
	for (int i = 0; i <= FIRST; i++)
		memset(blocks[i], 'a' + i, BLOCK);
	for (int i = 0; i < FIRST; i++)
		if (submit(i))
			die("io_submit %d: %s", i, strerror(errno));
	if (reap(ev, 2, 2) != 2 || ev[0].data != 0x1000 || ev[1].data != 0x1001)
		die("reap the first 2 completions");
	aio_context_t first = ctx;

	victim_ready(argv[1]);
	victim_wait();

	if (ctx != first)
		fail("context id %#llx, was %#llx", (unsigned long long)ctx, (unsigned long long)first);
	long n = reap(ev, 0, 8);
	if (n != FIRST - 2)
		fail("%ld completions pending, want %d (%s)", n, FIRST - 2, n < 0 ? strerror(errno) : "");
	for (long i = 0; i < n && i < FIRST - 2; i++)
		if (ev[i].data != (uint64_t)(0x1002 + i) || ev[i].res != BLOCK)
			fail("completion %ld: data %#llx res %lld, want %#x and %d", i, (unsigned long long)ev[i].data,
			     (long long)ev[i].res, 0x1002 + (int)i, BLOCK);
	if (submit(FIRST))
		fail("io_submit after the restore: %s", strerror(errno));
	else if (reap(ev, 1, 8) != 1 || ev[0].data != 0x1000 + FIRST || ev[0].res != BLOCK)
		fail("the new write's completion: data %#llx res %lld", (unsigned long long)ev[0].data, (long long)ev[0].res);
	for (int i = 0; i <= FIRST; i++) {
		char got[BLOCK];

		if (pread(fd, got, BLOCK, (off_t)i * BLOCK) != BLOCK || memcmp(got, blocks[i], BLOCK))
			fail("block %d of %s is not what was written", i, path);
	}
	victim_finish();
}
