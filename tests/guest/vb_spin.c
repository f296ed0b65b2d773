// SPDX-License-Identifier: GPL-2.0
/*
 * vb_spin - a CPU-bound workload that reports how much work it got done.
 *
 *   vb_spin -t seconds [-j threads] [-i ms]
 *
 *   -t  run this long (required)
 *   -j  spinning threads (default: one per online CPU)
 *   -i  sample interval in ms (default 100)
 *
 * Every interval it prints "sample T N": T the seconds since the start
 * (CLOCK_MONOTONIC) at the end of the interval, N the loop iterations all
 * threads completed in it; at the end "done THREADS TOTAL".  make bench
 * runs it beside an inflation: what the inflation costs a guest workload
 * is the work missing from the samples while it runs.
 *
 * Exit 0 on success, 1 if a thread could not be started, 3 on bad usage.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#include "vb_util.h"

#define MAX_THREADS 64
#define BATCH 4096	/* iterations between two published counts */

struct spinner {
	pthread_t tid;
	uint64_t done;		/* iterations so far, written by its thread */
	char pad[64 - sizeof(uint64_t)];
};

static struct spinner spinners[MAX_THREADS];
static volatile int stop;

static void *spin(void *arg)
{
	struct spinner *s = arg;
	uint64_t x = (uintptr_t)arg, n = 0;
	unsigned int i;

	while (!stop) {
		for (i = 0; i < BATCH; i++)
			x = x * 6364136223846793005ULL + 1442695040888963407ULL;
		n += BATCH;
		__atomic_store_n(&s->done, n, __ATOMIC_RELAXED);
	}
	/* Keep x alive so that the loop is not optimised away. */
	return (void *)(uintptr_t)(x & 1);
}

static uint64_t total(int threads)
{
	uint64_t sum = 0;
	int i;

	for (i = 0; i < threads; i++)
		sum += __atomic_load_n(&spinners[i].done, __ATOMIC_RELAXED);
	return sum;
}

static void usage(void)
{
	fprintf(stderr, "usage: vb_spin -t seconds [-j threads] [-i ms]\n");
	exit(3);
}

int main(int argc, char **argv)
{
	double secs = -1, t0, next, now;
	long threads = sysconf(_SC_NPROCESSORS_ONLN);
	long interval_ms = 100;
	struct timespec ts;
	uint64_t last = 0, cur;
	int opt, i;

	while ((opt = getopt(argc, argv, "t:j:i:")) != -1) {
		switch (opt) {
		case 't':
			secs = atof(optarg);
			break;
		case 'j':
			threads = atol(optarg);
			break;
		case 'i':
			interval_ms = atol(optarg);
			break;
		default:
			usage();
		}
	}
	if (secs <= 0 || threads < 1 || threads > MAX_THREADS ||
	    interval_ms < 1)
		usage();

	for (i = 0; i < threads; i++) {
		if (pthread_create(&spinners[i].tid, NULL, spin, &spinners[i])) {
			perror("pthread_create");
			return 1;
		}
	}
	t0 = vb_now();
	next = t0;
	do {
		next += interval_ms / 1000.0;
		now = vb_now();
		if (next > now) {
			ts.tv_sec = (time_t)(next - now);
			ts.tv_nsec = (long)((next - now - ts.tv_sec) * 1e9);
			nanosleep(&ts, NULL);
		}
		now = vb_now();
		cur = total(threads);
		printf("sample %.3f %llu\n", now - t0,
		       (unsigned long long)(cur - last));
		fflush(stdout);
		last = cur;
	} while (now - t0 < secs);
	stop = 1;
	for (i = 0; i < threads; i++)
		pthread_join(spinners[i].tid, NULL);
	printf("done %ld %llu\n", threads, (unsigned long long)last);
	return 0;
}
