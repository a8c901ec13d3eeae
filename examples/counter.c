/* A sample workload for the demo: counts in memory and appends the count to
 * a log file every 200 ms. After a restore it must go on from where it was. */
#include <stdio.h>
#include <time.h>
#include <unistd.h>

int main(int argc, char **argv)
{
	FILE *log = fopen(argc > 1 ? argv[1] : "counter.log", "a");
	if (!log)
		return 1;
	setvbuf(log, NULL, _IOLBF, 0);
	for (unsigned long n = 0;; n++) {
		fprintf(log, "pid %d count %lu\n", getpid(), n);
		struct timespec ts = {0, 200 * 1000 * 1000};
		nanosleep(&ts, NULL);
	}
}
