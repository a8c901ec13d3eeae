/*
 * fdkind: holds file descriptors of given kinds, the first at fd 42.
 *
 *   fdkind READY KIND...   KIND: io_uring | userfaultfd | perf_event |
 *                                bpf-map | pidfd | eventfd | unix |
 *                                flock | tcp | dgram=PATH
 *
 * The i-th kind is at fd 42 + 4*i (a kind with two fds at that one and the
 * next):
 * - io_uring: a ring from io_uring_setup(8 entries);
 * - userfaultfd: one after UFFDIO_API, registered on one page (missing);
 * - perf_event: a software task-clock counter on itself;
 * - bpf-map: an array map of 4 u64, element 1 set to 0x1234;
 * - pidfd: a pidfd of its parent (the harness: outside the dumped tree);
 * - eventfd: counter 5, EFD_NONBLOCK;
 * - unix: a SOCK_STREAM socketpair at fds N and N+1, "hello" queued on N;
 * - flock: flock-N in the ready file's directory, locked with LOCK_EX;
 * - tcp: an established connection on 127.0.0.1, the client at N, the
 *   accepted end at N+1 (the listener closed);
 * - dgram=PATH: a unix datagram socket connected to PATH (the harness's).
 *
 * Used by the bad-input tests: a kind the dumper does not support must make
 * the dump fail, naming pid, fd and kind, and leave this process untouched;
 * by the preflight tests, with several kinds at once.
 * On SIGTERM it checks that each fd is still the same kind of object and
 * that it still works (the ring's params, the uffd's registration, the
 * counter counting, the map's element, a signal 0 through the pidfd, the
 * eventfd's counter, the socket's queued bytes, the lock still held against
 * another open, bytes both ways over the connection, the datagram peer),
 * so the same victim also proves a restore once the kind is supported.
 */
#include "victim.h"
#include <libgen.h>
#include <linux/bpf.h>
#include <linux/io_uring.h>
#include <linux/perf_event.h>
#include <linux/userfaultfd.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

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

static char lock_dir[4096];

static void lock_path(int fd, char *p, size_t n)
{
	snprintf(p, n, "%s/flock-%d", lock_dir, fd);
}

static void setup(const char *kind, int fd)
{
	if (!strcmp(kind, "io_uring")) {
		struct io_uring_params params;

		memset(&params, 0, sizeof(params));
		move_to(syscall(SYS_io_uring_setup, 8, &params), fd);
	} else if (!strcmp(kind, "userfaultfd")) {
		struct uffdio_api api = {.api = UFFD_API};
		struct uffdio_register reg;

		move_to(syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK), fd);
		if (ioctl(fd, UFFDIO_API, &api))
			die("UFFDIO_API: %s", strerror(errno));
		uffd_page = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (uffd_page == MAP_FAILED)
			die("mmap: %s", strerror(errno));
		memset(&reg, 0, sizeof(reg));
		reg.range.start = (uintptr_t)uffd_page;
		reg.range.len = 4096;
		reg.mode = UFFDIO_REGISTER_MODE_MISSING;
		if (ioctl(fd, UFFDIO_REGISTER, &reg))
			die("UFFDIO_REGISTER: %s", strerror(errno));
	} else if (!strcmp(kind, "perf_event")) {
		struct perf_event_attr a;

		memset(&a, 0, sizeof(a));
		a.type = PERF_TYPE_SOFTWARE;
		a.size = sizeof(a);
		a.config = PERF_COUNT_SW_TASK_CLOCK;
		move_to(syscall(SYS_perf_event_open, &a, 0, -1, -1, PERF_FLAG_FD_CLOEXEC), fd);
	} else if (!strcmp(kind, "bpf-map")) {
		union bpf_attr a;
		uint64_t v = 0x1234;

		memset(&a, 0, sizeof(a));
		a.map_type = BPF_MAP_TYPE_ARRAY;
		a.key_size = 4;
		a.value_size = 8;
		a.max_entries = 4;
		move_to(syscall(SYS_bpf, BPF_MAP_CREATE, &a, sizeof(a)), fd);
		if (bpf_elem(BPF_MAP_UPDATE_ELEM, fd, 1, &v))
			die("BPF_MAP_UPDATE_ELEM: %s", strerror(errno));
	} else if (!strcmp(kind, "pidfd")) {
		/* Of its parent, the test: a process outside the tree. */
		move_to(syscall(SYS_pidfd_open, getppid(), 0), fd);
	} else if (!strcmp(kind, "eventfd")) {
		move_to(eventfd(5, EFD_NONBLOCK), fd);
	} else if (!strcmp(kind, "unix")) {
		int sv[2];

		if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv))
			die("socketpair: %s", strerror(errno));
		move_to(sv[0], fd);
		move_to(sv[1], fd + 1);
		if (write(fd + 1, "hello", 5) != 5)
			die("write socket: %s", strerror(errno));
	} else if (!strcmp(kind, "flock")) {
		char p[4200];

		lock_path(fd, p, sizeof(p));
		move_to(open(p, O_RDWR | O_CREAT, 0644), fd);
		if (flock(fd, LOCK_EX))
			die("flock %s: %s", p, strerror(errno));
	} else if (!strcmp(kind, "tcp")) {
		struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
		socklen_t len = sizeof(a);
		int l = socket(AF_INET, SOCK_STREAM, 0);

		if (l < 0 || bind(l, (struct sockaddr *)&a, sizeof(a)) || listen(l, 1) ||
		    getsockname(l, (struct sockaddr *)&a, &len))
			die("tcp listener: %s", strerror(errno));
		move_to(socket(AF_INET, SOCK_STREAM, 0), fd);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
			die("tcp connect: %s", strerror(errno));
		move_to(accept(l, NULL, NULL), fd + 1);
		close(l);
	} else if (!strncmp(kind, "dgram=", 6)) {
		struct sockaddr_un a = {.sun_family = AF_UNIX};

		snprintf(a.sun_path, sizeof(a.sun_path), "%s", kind + 6);
		move_to(socket(AF_UNIX, SOCK_DGRAM, 0), fd);
		if (connect(fd, (struct sockaddr *)&a, sizeof(a)))
			die("connect to %s: %s", a.sun_path, strerror(errno));
	} else {
		die("unknown kind %s", kind);
	}
}

/* roundtrip sends 4 bytes from one end of a connection to the other. */
static void roundtrip(int from, int to)
{
	struct pollfd p = {.fd = to, .events = POLLIN};
	char buf[8] = "";

	if (write(from, "ping", 4) != 4) {
		fail("tcp: send from fd %d: %s", from, strerror(errno));
		return;
	}
	if (poll(&p, 1, 5000) != 1) {
		fail("tcp: nothing arrives on fd %d from fd %d within 5 s", to, from);
		return;
	}
	if (read(to, buf, sizeof(buf)) != 4 || memcmp(buf, "ping", 4))
		fail("tcp: fd %d read \"%.8s\", want \"ping\"", to, buf);
}

static void check(const char *kind, int fd)
{
	if (!strcmp(kind, "io_uring")) {
		check_link(fd, "anon_inode:[io_uring]");
	} else if (!strcmp(kind, "userfaultfd")) {
		struct uffdio_register reg;

		check_link(fd, "anon_inode:[userfaultfd]");
		/* Registering again says EBUSY only if the range still is. */
		memset(&reg, 0, sizeof(reg));
		reg.range.start = (uintptr_t)uffd_page;
		reg.range.len = 4096;
		reg.mode = UFFDIO_REGISTER_MODE_MISSING;
		if (ioctl(fd, UFFDIO_REGISTER, &reg) && errno != EBUSY)
			fail("userfaultfd: register again: %s", strerror(errno));
		struct uffdio_range r = {.start = (uintptr_t)uffd_page, .len = 4096};
		if (ioctl(fd, UFFDIO_UNREGISTER, &r))
			fail("userfaultfd: the page is not registered any more: %s", strerror(errno));
	} else if (!strcmp(kind, "perf_event")) {
		uint64_t a = 0, b = 0;

		check_link(fd, "anon_inode:[perf_event]");
		if (read(fd, &a, 8) != 8)
			fail("perf_event: read: %s", strerror(errno));
		for (volatile int i = 0; i < 10000000; i++)
			;
		if (read(fd, &b, 8) != 8 || b <= a)
			fail("perf_event: the task clock does not count (%llu then %llu)", (unsigned long long)a, (unsigned long long)b);
	} else if (!strcmp(kind, "bpf-map")) {
		uint64_t v = 0;

		check_link(fd, "anon_inode:bpf-map");
		if (bpf_elem(BPF_MAP_LOOKUP_ELEM, fd, 1, &v) || v != 0x1234)
			fail("bpf map: element 1 is %#llx (%s), want 0x1234", (unsigned long long)v, strerror(errno));
	} else if (!strcmp(kind, "pidfd")) {
		check_link(fd, "anon_inode:[pidfd]");
		if (syscall(SYS_pidfd_send_signal, fd, 0, NULL, 0))
			fail("pidfd: signal 0 to its parent: %s", strerror(errno));
	} else if (!strcmp(kind, "eventfd")) {
		uint64_t v = 0;

		check_link(fd, "anon_inode:[eventfd]");
		if (read(fd, &v, 8) != 8 || v != 5)
			fail("eventfd counter is %llu, want 5", (unsigned long long)v);
	} else if (!strcmp(kind, "unix")) {
		char buf[16] = "";

		check_link(fd, "socket:");
		check_link(fd + 1, "socket:");
		if (recv(fd, buf, sizeof(buf), MSG_DONTWAIT) != 5 || memcmp(buf, "hello", 5))
			fail("unix socket lost its queued \"hello\" (got \"%.16s\")", buf);
	} else if (!strcmp(kind, "flock")) {
		char p[4200];
		int other;

		lock_path(fd, p, sizeof(p));
		check_link(fd, p);
		/* Another open file description must find the lock held. */
		other = open(p, O_RDWR);
		if (other < 0)
			fail("flock: open %s again: %s", p, strerror(errno));
		else if (!flock(other, LOCK_EX | LOCK_NB))
			fail("flock: %s is not locked any more", p);
		else if (errno != EWOULDBLOCK)
			fail("flock: try %s: %s", p, strerror(errno));
		close(other);
	} else if (!strcmp(kind, "tcp")) {
		check_link(fd, "socket:");
		check_link(fd + 1, "socket:");
		roundtrip(fd, fd + 1);
		roundtrip(fd + 1, fd);
	} else {
		struct sockaddr_un a;
		socklen_t len = sizeof(a);

		check_link(fd, "socket:");
		memset(&a, 0, sizeof(a));
		if (getpeername(fd, (struct sockaddr *)&a, &len) || strcmp(a.sun_path, kind + 6))
			fail("dgram: peer is \"%s\" (%s), want %s", a.sun_path, strerror(errno), kind + 6);
		else if (send(fd, "x", 1, 0) != 1)
			fail("dgram: send to %s: %s", kind + 6, strerror(errno));
	}
}

int main(int argc, char **argv)
{
	char ready[4096];

	if (argc < 3)
		die("usage: fdkind READY KIND...: io_uring|userfaultfd|perf_event|bpf-map|pidfd|eventfd|unix|flock|tcp|dgram=PATH");
	victim_init();
	snprintf(ready, sizeof(ready), "%s", argv[1]);
	snprintf(lock_dir, sizeof(lock_dir), "%s", dirname(ready));
	for (int i = 2; i < argc; i++)
		setup(argv[i], 42 + 4 * (i - 2));

	victim_ready(argv[1]);
	victim_wait();

	for (int i = 2; i < argc; i++)
		check(argv[i], 42 + 4 * (i - 2));
	victim_finish();
}
