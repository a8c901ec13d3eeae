/*
 * tcpsrv: a TCP server with one established connection streaming both ways.
 *
 *   tcpsrv READY ADDR PORT RX_TOTAL TX_TOTAL PAUSE_RX RESUME_TX
 *
 * Listens on ADDR:PORT (127.0.0.1 or ::1, SO_REUSEADDR, backlog 5), says it
 * is ready, accepts one client, sets TCP_NODELAY, SO_KEEPALIVE and
 * TCP_KEEPIDLE 77 on the connection, then at once writes TX_TOTAL bytes and
 * reads RX_TOTAL bytes (then EOF), both streams made of little-endian u32
 * sequence numbers (xor 0x5a for what it sends). Once it has read PAUSE_RX
 * bytes it stops reading until it has written RESUME_TX bytes (more than
 * the buffers between it and a client that stopped reading hold), so that
 * what the client sends meanwhile stays in its receive queue. After
 * writing TX_TOTAL bytes it shuts its side down.
 *
 * On SIGTERM it checks: every byte received was the next one expected, no
 * error or reset, exactly RX_TOTAL bytes then EOF, all TX_TOTAL bytes
 * written, the connection's ends (the peer at every read) and options, the listener still
 * listening on ADDR:PORT.
 */
#include "victim.h"
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>

static uint8_t pat(uint64_t i, uint8_t salt)
{
	uint32_t n = (uint32_t)(i / 4);

	return (uint8_t)(n >> (8 * (i % 4))) ^ salt;
}

static int getint(int fd, int level, int opt)
{
	int v = -1;
	socklen_t l = sizeof(v);

	if (getsockopt(fd, level, opt, &v, &l))
		fail("getsockopt(%d, %d): %s", level, opt, strerror(errno));
	return v;
}

static int port_of(struct sockaddr_storage *ss)
{
	if (ss->ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)ss)->sin_port);
	return ntohs(((struct sockaddr_in6 *)ss)->sin6_port);
}

static uint8_t buf[65536];

int main(int argc, char **argv)
{
	if (argc < 8)
		die("usage: tcpsrv READY ADDR PORT RX_TOTAL TX_TOTAL PAUSE_RX RESUME_TX");
	victim_init();
	signal(SIGPIPE, SIG_IGN);
	int port = atoi(argv[3]);
	uint64_t rxtotal = strtoull(argv[4], NULL, 0), txtotal = strtoull(argv[5], NULL, 0);
	uint64_t pause_rx = strtoull(argv[6], NULL, 0), resume_tx = strtoull(argv[7], NULL, 0);
	struct sockaddr_storage ss;
	socklen_t sl;

	memset(&ss, 0, sizeof(ss));
	if (inet_pton(AF_INET, argv[2], &((struct sockaddr_in *)&ss)->sin_addr) == 1) {
		ss.ss_family = AF_INET;
		((struct sockaddr_in *)&ss)->sin_port = htons(port);
		sl = sizeof(struct sockaddr_in);
	} else if (inet_pton(AF_INET6, argv[2], &((struct sockaddr_in6 *)&ss)->sin6_addr) == 1) {
		ss.ss_family = AF_INET6;
		((struct sockaddr_in6 *)&ss)->sin6_port = htons(port);
		sl = sizeof(struct sockaddr_in6);
	} else
		die("bad address %s", argv[2]);

	int one = 1, idle = 77;
	int lsk = socket(ss.ss_family, SOCK_STREAM, 0);

	if (lsk < 0 || setsockopt(lsk, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)))
		die("socket: %s", strerror(errno));
	if (bind(lsk, (struct sockaddr *)&ss, sl) || listen(lsk, 5))
		die("bind/listen %s:%d: %s", argv[2], port, strerror(errno));
	victim_ready(argv[1]);

	int sk = -1;

	while (sk < 0 && !got_term) {
		struct pollfd p = { lsk, POLLIN, 0 };

		if (poll(&p, 1, 10) == 1)
			sk = accept4(lsk, NULL, NULL, SOCK_NONBLOCK);
	}
	if (sk < 0)
		die("no client connected");
	if (setsockopt(sk, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) ||
	    setsockopt(sk, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) ||
	    setsockopt(sk, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)))
		die("setsockopt: %s", strerror(errno));
	struct sockaddr_storage peer0;
	socklen_t pl = sizeof(peer0);

	if (getpeername(sk, (struct sockaddr *)&peer0, &pl))
		die("getpeername: %s", strerror(errno));

	uint64_t rx = 0, tx = 0;
	int rx_eof = 0, broken = 0, bad = 0, peer_checked = 0;

	while (!got_term && !broken) {
		struct pollfd p = { sk, 0, 0 };

		if (tx < txtotal)
			p.events |= POLLOUT;
		int paused = rx >= pause_rx && tx < resume_tx;

		if (!paused && !rx_eof)
			p.events |= POLLIN;
		if (!p.events) {
			sleep_ms(10);
			continue;
		}
		int n = poll(&p, 1, 10);

		if (n < 0 && errno != EINTR)
			die("poll: %s", strerror(errno));
		if (n <= 0)
			continue;
		if (p.revents & POLLERR) {
			fail("connection error after %llu bytes in, %llu out: %s", (unsigned long long)rx,
			     (unsigned long long)tx, strerror(getint(sk, SOL_SOCKET, SO_ERROR)));
			broken = 1;
			break;
		}
		if (p.revents & POLLOUT) {
			size_t len = sizeof(buf);

			if (len > txtotal - tx)
				len = txtotal - tx;
			for (size_t i = 0; i < len; i++)
				buf[i] = pat(tx + i, 0x5a);
			ssize_t w = write(sk, buf, len);

			if (w > 0) {
				tx += w;
				if (tx == txtotal && shutdown(sk, SHUT_WR))
					fail("shutdown: %s", strerror(errno));
			} else if (w < 0 && errno != EAGAIN && errno != EINTR) {
				fail("write after %llu bytes: %s", (unsigned long long)tx, strerror(errno));
				broken = 1;
			}
		}
		if (p.revents & (POLLIN | POLLHUP)) {
			size_t len = sizeof(buf);

			if (rx < pause_rx && len > pause_rx - rx)
				len = pause_rx - rx;
			ssize_t r = read(sk, buf, len);

			if (r == 0) {
				rx_eof = 1;
			} else if (r > 0) {
				struct sockaddr_storage peer;

				pl = sizeof(peer);
				/* ENOTCONN once both sides are closed, data left */
				int e = getpeername(sk, (struct sockaddr *)&peer, &pl) ? errno : 0;

				if (e && e != ENOTCONN)
					fail("getpeername: %s", strerror(e));
				else if (!e && port_of(&peer) != port_of(&peer0) && !peer_checked++)
					fail("connection's peer port is %d, want %d", port_of(&peer), port_of(&peer0));
				for (ssize_t i = 0; i < r && !bad; i++) {
					if (buf[i] != pat(rx + i, 0)) {
						fail("byte %llu received is %#x, want %#x", (unsigned long long)(rx + i),
						     buf[i], pat(rx + i, 0));
						bad = 1;
					}
				}
				rx += r;
			} else if (errno != EAGAIN && errno != EINTR) {
				fail("read after %llu bytes: %s", (unsigned long long)rx, strerror(errno));
				broken = 1;
			}
		}
	}

	/* What came before SIGTERM counts even if it was not read yet: a
	 * client that has sent everything cannot tell when it was read. */
	while (!broken && !rx_eof && !bad) {
		ssize_t r = recv(sk, buf, sizeof(buf), MSG_DONTWAIT);

		if (r == 0)
			rx_eof = 1;
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r && !bad; i++)
			if (buf[i] != pat(rx + i, 0)) {
				fail("byte %llu received is %#x, want %#x", (unsigned long long)(rx + i), buf[i],
				     pat(rx + i, 0));
				bad = 1;
			}
		rx += r;
	}
	victim_wait(); /* a broken connection is reported at SIGTERM */
	if (rx != rxtotal || !rx_eof)
		fail("received %llu bytes (eof %d), want %llu then EOF", (unsigned long long)rx, rx_eof,
		     (unsigned long long)rxtotal);
	if (tx != txtotal)
		fail("sent %llu bytes, want %llu", (unsigned long long)tx, (unsigned long long)txtotal);
	if (getint(sk, IPPROTO_TCP, TCP_NODELAY) != 1)
		fail("TCP_NODELAY lost");
	if (getint(sk, SOL_SOCKET, SO_KEEPALIVE) != 1)
		fail("SO_KEEPALIVE lost");
	if (getint(sk, IPPROTO_TCP, TCP_KEEPIDLE) != 77)
		fail("TCP_KEEPIDLE is %d, want 77", getint(sk, IPPROTO_TCP, TCP_KEEPIDLE));
	struct sockaddr_storage me;
	socklen_t ml = sizeof(me);

	if (getsockname(sk, (struct sockaddr *)&me, &ml) || port_of(&me) != port)
		fail("connection's local port is %d, want %d", port_of(&me), port);
	ml = sizeof(me);
	if (getsockname(lsk, (struct sockaddr *)&me, &ml) || port_of(&me) != port || me.ss_family != ss.ss_family)
		fail("listener is on port %d, want %d", port_of(&me), port);
	if (getint(lsk, SOL_SOCKET, SO_ACCEPTCONN) != 1)
		fail("listener does not listen");
	if (getint(lsk, SOL_SOCKET, SO_REUSEADDR) != 1)
		fail("listener lost SO_REUSEADDR");
	victim_finish();
}
