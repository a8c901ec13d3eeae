/*
 * sharedfd: one open file description shared by a parent and its child
 * (inherited through fork) and by a dup in the parent.
 *
 *   sharedfd READY DIR
 *
 * DIR/shared.txt is opened O_RDWR at fd 80 and dup'ed to fd 81 before the
 * fork. Before the dump the parent writes "AAAA", then the child "BBBB":
 * the offset is 8 for both. On SIGTERM the parent asks the child (through
 * a pipe) to write "CCCC", then checks that its own offset moved to 12 and
 * writes "DDDD" through fd 81; the file must read AAAABBBBCCCCDDDD. With
 * two descriptions instead of one, the child's write would not move the
 * parent's offset and the parent would overwrite it.
 */
#include "victim.h"
#include <sys/wait.h>

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: sharedfd READY DIR");
	victim_init();
	char path[4096];
	snprintf(path, sizeof(path), "%s/shared.txt", argv[2]);
	int fd = open(path, O_RDWR | O_CREAT | O_TRUNC, 0644);
	if (fd < 0 || dup2(fd, 80) != 80 || dup2(fd, 81) != 81)
		die("open %s: %s", path, strerror(errno));
	close(fd);
	int go[2], done[2];
	if (pipe(go) || pipe(done))
		die("pipe: %s", strerror(errno));
	if (write(80, "AAAA", 4) != 4)
		die("write: %s", strerror(errno));
	pid_t child = fork();
	if (child < 0)
		die("fork: %s", strerror(errno));
	if (child == 0) {
		char c;
		if (write(80, "BBBB", 4) != 4)
			_exit(3);
		if (write(done[1], "b", 1) != 1)
			_exit(3);
		/* Wait for the parent's go, across the dump and restore. */
		while (read(go[0], &c, 1) < 0 && errno == EINTR)
			;
		if (write(80, "CCCC", 4) != 4)
			_exit(4);
		if (write(done[1], "c", 1) != 1)
			_exit(4);
		_exit(0);
	}
	char c;
	if (read(done[0], &c, 1) != 1)
		die("child did not write");
	victim_ready(argv[1]);
	victim_wait();

	off_t off = lseek(80, 0, SEEK_CUR);
	if (off != 8)
		fail("offset of fd 80 is %lld, want 8", (long long)off);
	if (write(go[1], "g", 1) != 1)
		fail("tell the child: %s", strerror(errno));
	else if (read(done[0], &c, 1) != 1)
		fail("the child did not answer");
	off = lseek(81, 0, SEEK_CUR);
	if (off != 12)
		fail("after the child wrote 4 bytes, offset of fd 81 is %lld, want 12 (not one description any more?)", (long long)off);
	if (write(81, "DDDD", 4) != 4)
		fail("write: %s", strerror(errno));
	char buf[64] = "";
	ssize_t n = pread(80, buf, sizeof(buf) - 1, 0);
	if (n != 16 || memcmp(buf, "AAAABBBBCCCCDDDD", 16))
		fail("shared.txt holds \"%s\", want AAAABBBBCCCCDDDD", buf);
	int st;
	if (waitpid(child, &st, 0) != child || !WIFEXITED(st) || WEXITSTATUS(st))
		fail("child ended with %#x", st);
	victim_finish();
}
