/*
 * fdkind: holds one file descriptor of a given kind at fd 42.
 *
 *   fdkind READY KIND       KIND: io_uring | eventfd | unix
 *
 * - io_uring: a ring from io_uring_setup(8 entries);
 * - eventfd: counter 5, EFD_NONBLOCK;
 * - unix: a SOCK_STREAM socketpair at fds 42 and 43, "hello" queued on 42.
 *
 * Used by the bad-input tests: a kind the dumper does not support must make
 * the dump fail, naming pid, fd and kind, and leave this process untouched.
 * On SIGTERM it checks that fd 42 is still the same kind of object and, for
 * eventfd and unix, that its state (counter value, queued bytes) is intact,
 * so the same victim also proves a restore once the kind is supported.
 */
#include "victim.h"
#include <linux/io_uring.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/syscall.h>

static void move_to(int fd, int target)
{
	if (fd < 0)
		die("create fd: %s", strerror(errno));
	if (dup2(fd, target) != target)
		die("dup2 to %d: %s", target, strerror(errno));
	close(fd);
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
		die("usage: fdkind READY io_uring|eventfd|unix");
	victim_init();
	const char *kind = argv[2];

	if (!strcmp(kind, "io_uring")) {
		struct io_uring_params params;

		memset(&params, 0, sizeof(params));
		move_to(syscall(SYS_io_uring_setup, 8, &params), 42);
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
