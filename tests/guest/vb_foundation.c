// SPDX-License-Identifier: GPL-2.0
/*
 * vb_foundation - in-guest checks of the balloon driver's visible state.
 *
 * Environment (set by the host test runner):
 *   VB_DRIVER       driver name bound to the balloon ("vballoon" or
 *                   "virtio_balloon"); default: whichever is bound
 *   VB_BALLOON_KB   expected balloon size in KiB (checked when set)
 *
 * vballoon-only checks SKIP when another driver is bound or when the file
 * they look at does not exist yet.
 */
#include <ctype.h>
#include <errno.h>
#include <glob.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "vb_util.h"

static char devdir[512];
static char drvname[64];

/* Find the balloon device bound to VB_DRIVER (or any balloon driver). */
static int find_device(void)
{
	static const char *const names[] = { "vballoon", "virtio_balloon" };
	const char *want = getenv("VB_DRIVER");
	char pat[PATH_MAX];
	glob_t g;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
		const char *n = want ? want : names[i];

		snprintf(pat, sizeof(pat), "/sys/bus/virtio/drivers/%s/virtio*", n);
		if (glob(pat, 0, NULL, &g) == 0) {
			snprintf(devdir, sizeof(devdir), "%s", g.gl_pathv[0]);
			snprintf(drvname, sizeof(drvname), "%s", n);
			globfree(&g);
			return 0;
		}
		globfree(&g);
		if (want)
			break;
	}
	return -1;
}

static long long expected_balloon_kb(void)
{
	const char *s = getenv("VB_BALLOON_KB");

	return s && *s ? strtoll(s, NULL, 10) : -1;
}

TEST(meminfo_consistent)
{
	long long total = vb_meminfo_kb("MemTotal");
	long long freekb = vb_meminfo_kb("MemFree");
	long long avail = vb_meminfo_kb("MemAvailable");

	ASSERT_GT(total, 0);
	EXPECT_GE(freekb, 0);
	EXPECT_LE(freekb, total);
	EXPECT_LE(avail, total);
}

TEST(balloon_device_present)
{
	glob_t g;
	int found = 0;

	if (glob("/sys/bus/virtio/devices/virtio*/device", 0, NULL, &g) == 0) {
		for (size_t i = 0; i < g.gl_pathc; i++) {
			FILE *f = fopen(g.gl_pathv[i], "r");
			unsigned int id = 0;

			if (f && fscanf(f, "%x", &id) == 1 && id == 5)
				found = 1;
			if (f)
				fclose(f);
		}
	}
	globfree(&g);
	ASSERT_EQ(1, found) TH_LOG("no virtio device with id 5");
}

TEST(balloon_driver_bound)
{
	ASSERT_EQ(0, find_device())
		TH_LOG("no balloon device bound to %s",
		       getenv("VB_DRIVER") ?: "any balloon driver");
}

static long long attr(const char *name)
{
	char p[PATH_MAX];

	snprintf(p, sizeof(p), "%s/%s", devdir, name);
	return vb_read_num(p);
}

static int attr_mode(const char *name, mode_t *mode)
{
	char p[PATH_MAX];
	struct stat st;

	snprintf(p, sizeof(p), "%s/%s", devdir, name);
	if (stat(p, &st))
		return -1;
	*mode = st.st_mode;
	return 0;
}

TEST(sysfs_attributes)
{
	static const char *const ro[] = { "current_kb", "host_target_kb" };
	static const char *const rw[] = { "target_kb", "floor_kb" };
	long long want = expected_balloon_kb();
	mode_t m;

	if (find_device() || strcmp(drvname, "vballoon"))
		SKIP(return, "vballoon not bound");
	if (attr_mode("current_kb", &m))
		SKIP(return, "no current_kb attribute yet");

	for (size_t i = 0; i < 2; i++) {
		ASSERT_EQ(0, attr_mode(ro[i], &m)) TH_LOG("missing %s", ro[i]);
		EXPECT_EQ((mode_t)0, m & 0222) TH_LOG("%s is writable", ro[i]);
		EXPECT_GE(attr(ro[i]), 0) TH_LOG("%s unreadable", ro[i]);
	}
	for (size_t i = 0; i < 2; i++) {
		if (attr_mode(rw[i], &m)) {
			TH_LOG("no %s attribute yet", rw[i]);
			continue;
		}
		EXPECT_NE((mode_t)0, m & S_IWUSR) TH_LOG("%s not writable", rw[i]);
		EXPECT_GE(attr(rw[i]), 0) TH_LOG("%s unreadable", rw[i]);
	}
	if (want >= 0) {
		EXPECT_EQ(want, attr("current_kb"));
		EXPECT_EQ(want, attr("host_target_kb"));
	}
}

TEST(debugfs_stats_format)
{
	char path[PATH_MAX], line[256], name[128];
	unsigned long long val;
	const char *dev;
	int lines = 0;
	FILE *f;

	if (find_device() || strcmp(drvname, "vballoon"))
		SKIP(return, "vballoon not bound");
	dev = strrchr(devdir, '/') + 1;
	snprintf(path, sizeof(path), "/sys/kernel/debug/vballoon/%s/stats", dev);
	f = fopen(path, "r");
	if (!f)
		SKIP(return, "no debugfs stats file yet");
	while (fgets(line, sizeof(line), f)) {
		char extra;

		EXPECT_EQ(2, sscanf(line, "%127s %llu %c", name, &val, &extra))
			TH_LOG("bad stats line: %s", line);
		lines++;
	}
	fclose(f);
	EXPECT_GT(lines, 0);
}

TEST(anon_memory_usable)
{
	size_t len = 128UL << 20;
	unsigned char *p = mmap(NULL, len, PROT_READ | PROT_WRITE,
				MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);

	ASSERT_NE(MAP_FAILED, p);
	for (size_t i = 0; i < len; i += 4096)
		p[i] = (unsigned char)(i >> 12);
	for (size_t i = 0; i < len; i += 4096)
		ASSERT_EQ((unsigned char)(i >> 12), p[i]);
	munmap(p, len);
}

TEST_HARNESS_MAIN
