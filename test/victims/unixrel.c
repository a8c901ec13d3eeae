/*
 * unixrel: unix sockets bound by a relative name.
 *
 *   unixrel READY DIR
 *
 * It works in DIR. S, a stream listener, is bound to "rel.sock" with an
 * address length that counts the name's terminating NUL (as many programs
 * compute it: offsetof(sun_path) + strlen + 1), so that the kernel keeps
 * "rel.sock\0" as its name; D, a datagram socket, to "sub/d.sock" the
 * same way; P, a stream listener, to "plain.sock" without the NUL.
 *
 * On SIGTERM: getsockname gives each its relative name back, each file
 * is a socket in DIR, S and P accept a client that connects by the
 * absolute path, D receives a datagram sent to its absolute path.
 */
#include "victim.h"

#include <poll.h>
#include <stddef.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

enum { S, D, P, NSK };
static const char *names[NSK] = { "rel.sock", "sub/d.sock", "plain.sock" };
static const int types[NSK] = { SOCK_STREAM, SOCK_DGRAM, SOCK_STREAM };
static const int nul[NSK] = { 1, 1, 0 };
static int sk[NSK];
static char dir[256];

static socklen_t mkaddr(struct sockaddr_un *a, const char *path, int with_nul)
{
	memset(a, 0, sizeof(*a));
	a->sun_family = AF_UNIX;
	strncpy(a->sun_path, path, sizeof(a->sun_path) - 1);
	return offsetof(struct sockaddr_un, sun_path) + strlen(path) + (with_nul ? 1 : 0);
}

static void check(int i)
{
	struct sockaddr_un a;
	socklen_t l = sizeof(a);
	char abs[512];
	struct stat st;

	memset(&a, 0, sizeof(a));
	if (getsockname(sk[i], (struct sockaddr *)&a, &l))
		fail("%s: getsockname: %s", names[i], strerror(errno));
	else if (strcmp(a.sun_path, names[i]))
		fail("%s: getsockname gives %s", names[i], a.sun_path);
	snprintf(abs, sizeof(abs), "%s/%s", dir, names[i]);
	if (stat(abs, &st) || !S_ISSOCK(st.st_mode)) {
		fail("%s: no socket file at %s", names[i], abs);
		return;
	}
	int c = socket(AF_UNIX, types[i], 0);
	socklen_t al = mkaddr(&a, abs, 0);

	if (types[i] == SOCK_DGRAM) {
		char b[8] = "";

		if (sendto(c, "dg", 2, 0, (struct sockaddr *)&a, al) != 2)
			fail("%s: sendto %s: %s", names[i], abs, strerror(errno));
		else if (recv(sk[i], b, sizeof(b), MSG_DONTWAIT) != 2 || memcmp(b, "dg", 2))
			fail("%s: the datagram sent to %s did not come", names[i], abs);
	} else if (connect(c, (struct sockaddr *)&a, al)) {
		fail("%s: connect %s: %s", names[i], abs, strerror(errno));
	} else {
		int s = accept(sk[i], NULL, NULL);

		if (s < 0)
			fail("%s: accept: %s", names[i], strerror(errno));
		close(s);
	}
	close(c);
}

int main(int argc, char **argv)
{
	if (argc < 3)
		die("usage: unixrel READY DIR");
	victim_init();
	snprintf(dir, sizeof(dir), "%s", argv[2]);
	if (chdir(dir) || mkdir("sub", 0755))
		die("%s: %s", dir, strerror(errno));
	for (int i = 0; i < NSK; i++) {
		struct sockaddr_un a;
		socklen_t l = mkaddr(&a, names[i], nul[i]);

		sk[i] = socket(AF_UNIX, types[i], 0);
		if (sk[i] < 0 || bind(sk[i], (struct sockaddr *)&a, l))
			die("bind %s: %s", names[i], strerror(errno));
		if (types[i] == SOCK_STREAM && listen(sk[i], 4))
			die("listen %s: %s", names[i], strerror(errno));
	}
	victim_ready(argv[1]);
	victim_wait();
	for (int i = 0; i < NSK; i++)
		check(i);
	victim_finish();
}
