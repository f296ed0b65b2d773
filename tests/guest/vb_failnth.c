// SPDX-License-Identifier: GPL-2.0
/*
 * vb_failnth N FILE TEXT - write TEXT to FILE with the Nth fault-injection
 * point of this task failing (/proc/thread-self/fail-nth, a kernel built
 * with CONFIG_FAULT_INJECTION).
 *
 * FILE is opened before the counter is armed, so only what the write does
 * in the kernel counts: for /sys/bus/virtio/drivers/vballoon/bind that is
 * the driver core's bind path and vballoon's probe.  Prints one line:
 *
 *   n=N rc=0|-1 errno=NAME injected=0|1 left=L
 *
 * injected=1 when the Nth point was reached (the counter ran down to 0);
 * injected=0 means the write made fewer than N fallible calls, so a loop
 * over N can stop; it made N - L of them then.  Exit status 0 unless the tool itself failed.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int write_str(int fd, const char *s)
{
	ssize_t n = write(fd, s, strlen(s));

	return n == (ssize_t)strlen(s) ? 0 : -1;
}

int main(int argc, char **argv)
{
	int nth, fd, cfd, rc, err;
	char buf[32];
	ssize_t n;

	if (argc != 4) {
		fprintf(stderr, "usage: %s N FILE TEXT\n", argv[0]);
		return 2;
	}
	nth = atoi(argv[1]);
	fd = open(argv[2], O_WRONLY);
	if (fd < 0) {
		perror(argv[2]);
		return 2;
	}
	cfd = open("/proc/thread-self/fail-nth", O_RDWR);
	if (cfd < 0) {
		perror("/proc/thread-self/fail-nth");
		return 2;
	}
	snprintf(buf, sizeof(buf), "%d", nth);
	if (write_str(cfd, buf)) {
		perror("arming fail-nth");
		return 2;
	}
	rc = write_str(fd, argv[3]);
	err = rc ? errno : 0;
	/* What is left of the count: 0 once the Nth point failed. */
	n = pread(cfd, buf, sizeof(buf) - 1, 0);
	buf[n > 0 ? n : 0] = '\0';
	if (write_str(cfd, "0")) {
		perror("disarming fail-nth");
		return 2;
	}
	printf("n=%d rc=%d errno=%s injected=%d left=%d\n", nth, rc,
	       err ? strerrorname_np(err) : "0", atoi(buf) == 0, atoi(buf));
	return 0;
}
