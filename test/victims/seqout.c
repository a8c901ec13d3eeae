/*
 * seqout: writes "N\n" to stdout every 5 ms, N counting from 0.
 *
 *   seqout READY
 *
 * Started with stdout a pipe whose reader is the test, outside the
 * dumped tree: the pipe is the state under test. The reader checks that
 * the numbers go on without a gap or a repeat across a dump and restore.
 * On SIGTERM it says PASS (on stdout) and exits 0.
 */
#include "victim.h"

int main(int argc, char **argv)
{
	if (argc < 2)
		die("usage: seqout READY");
	victim_init();
	signal(SIGPIPE, SIG_IGN);
	victim_ready(argv[1]);
	char line[32];
	for (unsigned long n = 0; !got_term; n++) {
		int len = snprintf(line, sizeof(line), "%lu\n", n);
		if (write(1, line, len) != len)
			die("write stdout: %s", strerror(errno));
		sleep_ms(5);
	}
	victim_finish();
}
