/*
 * fdkind: holds one file descriptor of a given kind at fd 42.
 *
 *   fdkind READY KIND       KIND: io_uring | userfaultfd | perf_event |
 *                                 bpf-map | pidfd | eventfd | unix
 *
 * - io_uring: a ring from io_uring_setup(8 entries);
 * - userfaultfd: one after UFFDIO_API, registered on one page (missing);
 * - perf_event: a software task-clock counter on itself;
 * - bpf-map: an array map of 4 u64, element 1 set to 0x1234;
 * - pidfd: a pidfd of its parent (the harness: outside the dumped tree);
 * - eventfd: counter 5, EFD_NONBLOCK;
 * - unix: a SOCK_STREAM socketpair at fds 42 and 43, "hello" queued on 42.
 *
 * Used by the bad-input tests: a kind the dumper does not support must make
 * the dump fail, naming pid, fd and kind, and leave this process untouched.
 * On SIGTERM it checks that fd 42 is still the same kind of object and that
 * it still works (the ring's params, the uffd's registration, the counter
 * counting, the map's element, a signal 0 through the pidfd, the eventfd's
 * counter, the socket's queued bytes),
 * so the same victim also proves a restore once the kind is supported.
 */
#include "victim.h"
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static char *uffd_page;

static long bpf_elem(int cmd, int fd, uint32_t key, uint64_t *val)
{
	union bpf_attr a;

	memset(&a, 0, sizeof(a));
	a.map_fd = fd;
	a.key = (uintptr_t)&key;
	a.value = (uintptr_t)val;
	return syscall(SYS_bpf, cmd, &a, sizeof(a));
}

static void check_link(int fd, const char *want_prefix)
{
	char p[64], link[256] = "";

	snprintf(p, sizeof(p), "/proc/self/fd/%d", fd);
	if (readlink(p, link, sizeof(link) - 1) < 0)
		fail("fd %d is not open: %s", fd, strerror(errno));
	else if (strncmp(link, want_prefix, strlen(want_prefix)))
		fail("fd %d is %s, want %s...", fd, link, want_prefix);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: fdkind READY io_uring|userfaultfd|perf_event|bpf-map|pidfd|eventfd|unix");
	victim_init();
	const char *kind = argv[2];

	if (!strcmp(kind, "io_uring")) {
		struct io_uring_params params;

		memset(&params, 0, sizeof(params));
		move_to(syscall(SYS_io_uring_setup, 8, &params), 42);
	} else if (!strcmp(kind, "userfaultfd")) {
		struct uffdio_api api = {.api = UFFD_API};
		struct uffdio_register reg;

		move_to(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), 42);
		if (ioctl(42, UFFDIO_API, &api))
			die("UFFDIO_API: %s", strerror(errno));
		uffd_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (uffd_page == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		memset(&reg, 0, sizeof(reg));
		reg.range.start = (uintptr_t)uffd_page;
		reg.range.len = 4096;
		reg.mode = UFFDIO_REGISTER_MODE_MISSING;
		if (ioctl(42, UFFDIO_REGISTER, &reg))
			die("UFFDIO_REGISTER: %s", strerror(errno));
	} else if (!strcmp(kind, "perf_event")) {
		struct perf_event_attr a;

		memset(&a, 0, sizeof(a));
		a.type = PERF_TYPE_SOFTWARE;
		a.size = sizeof(a);
		a.config = PERF_COUNT_SW_TASK_CLOCK;
		move_to(syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC), 42);
	} else if (!strcmp(kind, "bpf-map")) {
		union bpf_attr a;
		uint64_t v = 0x1234;

		memset(&a, 0, sizeof(a));
		a.map_type = BPF_MAP_TYPE_ARRAY;
		a.key_size = 4;
		a.value_size = 8;
		a.max_entries = 4;
		move_to(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a)), 42);
		if (bpf_elem(BPF_MAP_UPDATE_ELEM, 42, 1, &v))
			die("BPF_MAP_UPDATE_ELEM: %s", strerror(errno));
	} else if (!strcmp(kind, "pidfd")) {
		/* Of its parent, the test: a process outside the tree. */
		move_to(syscall(SYS_pidfd_open, getppid(), 0), 42);
	} else if (!strcmp(kind, "eventfd")) {
		move_to(eventfd(5, EFD_NONBLOCK), 42);
	} else if (!strcmp(kind, "unix")) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair: %s", strerror(errno));
		move_to(sv[0], 42);
		move_to(sv[1], 43);
		if (write(43, "hello", 5) != 5)
			die("write socket: %s", strerror(errno));
	} else {
		die("unknown kind %s", kind);
	}

	victim_ready(argv[1]);
	victim_wait();

	if (!strcmp(kind, "io_uring")) {
		check_link(42, "anon_inode:[io_uring]");
	} else if (!strcmp(kind, "userfaultfd")) {
		struct uffdio_register reg;

		check_link(42, "anon_inode:[userfaultfd]");
		/* Registering again says EBUSY only if the range still is. */
		memset(&reg, 0, sizeof(reg));
		reg.range.start = (uintptr_t)uffd_page;
		reg.range.len = 4096;
		reg.mode = UFFDIO_REGISTER_MODE_MISSING;
		if (ioctl(42, UFFDIO_REGISTER, &reg) && errno != EBUSY)
			fail("userfaultfd: register again: %s", strerror(errno));
		struct uffdio_range r = {.start = (uintptr_t)uffd_page, .len = 4096};
		if (ioctl(42, UFFDIO_UNREGISTER, &r))
			fail("userfaultfd: the page is not registered any more: %s", strerror(errno));
	} else if (!strcmp(kind, "perf_event")) {
		uint64_t a = 0, b = 0;

		check_link(42, "anon_inode:[perf_event]");
		if (read(42, &a, 8) != 8)
			fail("perf_event: read: %s", strerror(errno));
		for (volatile int i = 0; i < 10000000; i++)
			;
		if (read(42, &b, 8) != 8 || b <= a)
			fail("perf_event: the task clock does not count (%llu then %llu)", (unsigned long long)a, (unsigned long long)b);
	} else if (!strcmp(kind, "bpf-map")) {
		uint64_t v = 0;

		check_link(42, "anon_inode:bpf-map");
		if (bpf_elem(BPF_MAP_LOOKUP_ELEM, 42, 1, &v) || v != 0x1234)
			fail("bpf map: element 1 is %#llx (%s), want 0x1234", (unsigned long long)v, strerror(errno));
	} else if (!strcmp(kind, "pidfd")) {
		check_link(42, "anon_inode:[pidfd]");
		if (syscall(SYS_pidfd_send_signal, 42, 0, NULL, 0))
			fail("pidfd: signal 0 to its parent: %s", strerror(errno));
	} else if (!strcmp(kind, "eventfd")) {
		uint64_t v = 0;

		check_link(42, "anon_inode:[eventfd]");
		if (read(42, &v, 8) != 8 || v != 5)
			fail("eventfd counter is %llu, want 5", (unsigned long long)v);
	} else {
		char buf[16] = "";

		check_link(42, "socket:");
		check_link(43, "socket:");
		if (recv(42, buf, sizeof(buf), MSG_DONTWAIT) != 5 || memcmp(buf, "hello", 5))
			fail("unix socket lost its queued \"hello\" (got \"%.16s\")", buf);
	}
	victim_finish();
}
