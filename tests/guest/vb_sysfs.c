// SPDX-License-Identifier: GPL-2.0
/*
 * vb_sysfs - in-guest checks of the vballoon sysfs ABI
 * (Documentation/ABI/testing/sysfs-driver-vballoon).
 *
 * Runs as root in the test guest with vballoon bound and the balloon empty
 * (the host asks for nothing).  For every attribute: it reads as a decimal
 * number and one newline, with the documented mode.  For every writable
 * attribute: bad input is refused with the documented errno and changes
 * nothing; writers without write permission on the file are refused, and
 * an owner the admin delegated to (chown) is accepted; good
 * input is accepted and reads back rounded as documented.  Each writable
 * attribute test puts the value it found back when it ends.
 *
 * Output is kselftest TAP; the host runner (tests/cases_abi.py) turns each
 * "not ok" into a failure.
 */
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <grp.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "kselftest_harness.h"
#include "vb_util.h"

#define NOBODY 65534

static char devdir[256];

static const char *const ro_attrs[] = {
	"current_kb", "host_target_kb", "pressure_kb",
};

static const char *const rw_attrs[] = {
	"target_kb", "floor_kb", "holdoff_ms", "pressure_reserve_kb",
};

/* The device directory vballoon is bound to; 0 when found. */
static int find_devdir(void)
{
	glob_t g;
	int ret = -1;

	if (devdir[0])
		return 0;
	if (glob("/sys/bus/virtio/drivers/vballoon/virtio*", 0, NULL, &g) == 0) {
		snprintf(devdir, sizeof(devdir), "%s", g.gl_pathv[0]);
		ret = 0;
	}
	globfree(&g);
	return ret;
}

static void attr_path(char *out, size_t len, const char *name)
{
	snprintf(out, len, "%s/%s", devdir, name);
}

/* Read an attribute's whole text into buf; bytes read or -errno. */
static ssize_t read_text(const char *name, char *buf, size_t len)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	attr_path(path, sizeof(path), name);
	fd = open(path, O_RDONLY);
	if (fd < 0)
		return -errno;
	n = read(fd, buf, len - 1);
	if (n < 0)
		n = -errno;
	else
		buf[n] = '\0';
	close(fd);
	return n;
}

/*
 * The attribute as a number: digits and exactly one trailing newline,
 * nothing else.  -1 if it does not read like that.
 */
static long long read_num(const char *name)
{
	char buf[64], *end;
	unsigned long long v;
	ssize_t n = read_text(name, buf, sizeof(buf));

	if (n < 2 || buf[n - 1] != '\n')
		return -1;
	for (ssize_t i = 0; i < n - 1; i++)
		if (buf[i] < '0' || buf[i] > '9')
			return -1;
	errno = 0;
	v = strtoull(buf, &end, 10);
	if (errno || end != buf + n - 1 || v > LLONG_MAX)
		return -1;
	return (long long)v;
}

/*
 * One write(2) of exactly len bytes through a fresh descriptor.  Returns
 * what write returned, or -errno (of open or write).
 */
static ssize_t write_raw(const char *name, const char *data, size_t len)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	attr_path(path, sizeof(path), name);
	fd = open(path, O_WRONLY);
	if (fd < 0)
		return -errno;
	n = write(fd, data, len);
	if (n < 0)
		n = -errno;
	close(fd);
	return n;
}

static ssize_t write_str(const char *name, const char *s)
{
	return write_raw(name, s, strlen(s));
}

static const char *errname(ssize_t r)
{
	static char bufs[2][64];
	static int turn;
	char *buf = bufs[turn++ & 1];

	if (r >= 0) {
		snprintf(buf, sizeof(bufs[0]), "success (%zd bytes)", r);
		return buf;
	}
	switch (-r) {
	case EINVAL: return "EINVAL";
	case ERANGE: return "ERANGE";
	case EPERM: return "EPERM";
	case EACCES: return "EACCES";
	default:
		snprintf(buf, sizeof(bufs[0]), "errno %zd (%s)", -r, strerror(-r));
		return buf;
	}
}

/*
 * Guest RAM as the driver measures it, in KiB.  The balloon is meant to be
 * empty here (the host asks for nothing); wait for a page or chunk still
 * moving after an earlier test to settle, then it is MemTotal.  -1 if the
 * balloon does not empty, or MemTotal keeps moving.
 */
static long long guest_ram_kb(void)
{
	long long total = -1;

	for (int i = 0; i < 100; i++) {
		long long t = vb_meminfo_kb("MemTotal");

		if (read_num("current_kb") == 0 && t > 0 && t == total)
			return t;
		total = t;
		usleep(100000);
	}
	return -1;
}

static long long page_kb(void)
{
	return sysconf(_SC_PAGESIZE) / 1024;
}

/* Show a string with its control characters escaped, for messages. */
static const char *shown(const char *s, size_t len)
{
	static char buf[128];
	size_t o = 0;

	for (size_t i = 0; i < len && o + 5 < sizeof(buf); i++) {
		unsigned char c = s[i];

		if (c == '\n')
			o += snprintf(buf + o, sizeof(buf) - o, "\\n");
		else if (c == '\t')
			o += snprintf(buf + o, sizeof(buf) - o, "\\t");
		else if (c < 32 || c > 126)
			o += snprintf(buf + o, sizeof(buf) - o, "\\x%02x", c);
		else
			buf[o++] = c;
	}
	buf[o] = '\0';
	return buf;
}

TEST(device_bound)
{
	ASSERT_EQ(0, find_devdir()) {
		TH_LOG("no /sys/bus/virtio/drivers/vballoon/virtio* directory");
	}
}

/* Every attribute: mode as documented, reads as digits plus one newline. */
TEST(all_attributes_read_as_numbers)
{
	char path[PATH_MAX], text[64];
	struct stat st;

	ASSERT_EQ(0, find_devdir());
	for (size_t i = 0; i < ARRAY_SIZE(ro_attrs) + ARRAY_SIZE(rw_attrs); i++) {
		int rw = i >= ARRAY_SIZE(ro_attrs);
		const char *name = rw ? rw_attrs[i - ARRAY_SIZE(ro_attrs)]
				      : ro_attrs[i];
		mode_t want = rw ? 0644 : 0444;
		ssize_t n;

		attr_path(path, sizeof(path), name);
		ASSERT_EQ(0, stat(path, &st)) {
			TH_LOG("%s: stat: %s", name, strerror(errno));
		}
		EXPECT_EQ(want, st.st_mode & 07777) {
			TH_LOG("%s: expected mode %o, got %o", name, want,
			       st.st_mode & 07777);
		}
		n = read_text(name, text, sizeof(text));
		EXPECT_LT(0, n) {
			TH_LOG("%s: expected a readable attribute, got %s",
			       name, errname(n));
		}
		if (n <= 0)
			continue;
		EXPECT_LE(0, read_num(name)) {
			TH_LOG("%s: expected digits and one newline, got \"%s\"",
			       name, shown(text, n));
		}
	}
}

/* Read-only attributes refuse to be opened for writing, even by root. */
TEST(read_only_attributes_refuse_writes)
{
	char before[64], after[64];

	ASSERT_EQ(0, find_devdir());
	for (size_t i = 0; i < ARRAY_SIZE(ro_attrs); i++) {
		const char *name = ro_attrs[i];
		ssize_t r;

		ASSERT_LT(0, read_text(name, before, sizeof(before)));
		r = write_str(name, "0\n");
		EXPECT_EQ(-EACCES, r) {
			TH_LOG("%s <- \"0\\n\": expected EACCES, got %s",
			       name, errname(r));
		}
		ASSERT_LT(0, read_text(name, after, sizeof(after)));
		/* current_kb and friends may only move if the host asked. */
		if (strcmp(name, "pressure_kb") == 0)
			EXPECT_STREQ(before, after);
	}
}

FIXTURE(rw) {
	char saved[64];
	long long ram_kb;
};

FIXTURE_VARIANT(rw) {
	const char *name;
	bool is_kb;		/* a KiB size, bounded by guest RAM */
};

FIXTURE_VARIANT_ADD(rw, target_kb) { .name = "target_kb", .is_kb = true };
FIXTURE_VARIANT_ADD(rw, floor_kb) { .name = "floor_kb", .is_kb = true };
FIXTURE_VARIANT_ADD(rw, holdoff_ms) { .name = "holdoff_ms", .is_kb = false };
FIXTURE_VARIANT_ADD(rw, pressure_reserve_kb) {
	.name = "pressure_reserve_kb", .is_kb = true
};

FIXTURE_SETUP(rw)
{
	ASSERT_EQ(0, find_devdir());
	ASSERT_LT(0, read_text(variant->name, self->saved, sizeof(self->saved)));
	self->ram_kb = guest_ram_kb();
	ASSERT_LT(0, self->ram_kb) {
		TH_LOG("balloon not empty, or MemTotal not stable, for 10 s");
	}
}

FIXTURE_TEARDOWN(rw)
{
	char now[64];

	if (read_text(variant->name, now, sizeof(now)) > 0 &&
	    strcmp(now, self->saved) != 0)
		write_str(variant->name, self->saved);
}

/*
 * Write data (len bytes in one write) and expect errno err, with the
 * attribute unchanged.
 */
static void expect_refused(struct __test_metadata *_metadata,
			   const char *name, const char *data, size_t len,
			   int err)
{
	char before[64], after[64];
	ssize_t r;

	ASSERT_LT(0, read_text(name, before, sizeof(before)));
	r = write_raw(name, data, len);
	EXPECT_EQ(-err, r) {
		TH_LOG("%s <- \"%s\": expected %s, got %s", name,
		       shown(data, len), errname(-err), errname(r));
	}
	ASSERT_LT(0, read_text(name, after, sizeof(after)));
	EXPECT_STREQ(before, after) {
		TH_LOG("%s <- \"%s\": refused write changed the value",
		       name, shown(data, len));
	}
}

/* Junk, empty line, negative, blanks, trailing garbage: EINVAL. */
TEST_F(rw, junk_is_einval)
{
	static const char *const junk[] = {
		"abc", "abc\n", "\n", "-1", "-1\n", "12abc", "12abc\n",
		" 5\n", "5 \n", "5\n\n", "0x10\n", "1.5\n", "\t7\n", "+\n",
		"- 1\n", "1e3\n",
	};

	for (size_t i = 0; i < ARRAY_SIZE(junk); i++)
		expect_refused(_metadata, variant->name, junk[i],
			       strlen(junk[i]), EINVAL);
}

/*
 * A NUL byte after the digits is "anything after the digits other than
 * one newline" too (printf '5\0' > attr): EINVAL.  sysfs hands the store
 * all count bytes, so a parser that stops at the first NUL also lets
 * whatever follows it through ("5\0abc").
 */
TEST_F(rw, trailing_nul_is_einval)
{
	expect_refused(_metadata, variant->name, "5\0", 2, EINVAL);
	expect_refused(_metadata, variant->name, "5\n\0", 3, EINVAL);
	expect_refused(_metadata, variant->name, "5\0abc\n", 6, EINVAL);
}

/* Too large for the type, or for the guest: ERANGE. */
TEST_F(rw, out_of_range_is_erange)
{
	char big[32];

	expect_refused(_metadata, variant->name, "99999999999999999999999",
		       23, ERANGE);
	expect_refused(_metadata, variant->name, "18446744073709551616\n",
		       21, ERANGE);
	if (variant->is_kb) {
		/* 1 TiB in KiB, and one KiB more than guest RAM. */
		expect_refused(_metadata, variant->name, "1073741824\n", 11,
			       ERANGE);
		snprintf(big, sizeof(big), "%lld\n", self->ram_kb + 1);
		expect_refused(_metadata, variant->name, big, strlen(big),
			       ERANGE);
	} else {
		expect_refused(_metadata, variant->name, "60001\n", 6, ERANGE);
		expect_refused(_metadata, variant->name, "4294967295\n", 11,
			       ERANGE);
		expect_refused(_metadata, variant->name, "4294967296\n", 11,
			       ERANGE);
	}
}

/*
 * A write of zero bytes: the ABI says it is accepted and does nothing
 * (sysfs returns 0 before the driver sees it).
 */
TEST_F(rw, zero_byte_write_does_nothing)
{
	char before[64], after[64];
	ssize_t r;

	ASSERT_LT(0, read_text(variant->name, before, sizeof(before)));
	r = write_raw(variant->name, "", 0);
	EXPECT_EQ(0, r) {
		TH_LOG("%s <- zero bytes: expected 0 (accepted, no-op), got %s",
		       variant->name, errname(r));
	}
	ASSERT_LT(0, read_text(variant->name, after, sizeof(after)));
	EXPECT_STREQ(before, after);
}

/* A value that differs from the current one and is valid for the attribute. */
static const char *other_value(const char *name, const char *saved)
{
	if (strcmp(name, "holdoff_ms") == 0)
		return strcmp(saved, "1000\n") ? "1000\n" : "2000\n";
	if (strcmp(name, "target_kb") == 0)
		return strcmp(saved, "8192\n") ? "8192\n" : "16384\n";
	if (strcmp(name, "floor_kb") == 0)
		return strcmp(saved, "262144\n") ? "262144\n" : "524288\n";
	return strcmp(saved, "32768\n") ? "32768\n" : "65536\n";
}

/* Child exit codes of the unprivileged writers below. */
enum { W_REFUSED_OPEN = 10, W_REFUSED_WRITE, W_ACCEPTED, W_OTHER, W_SETUP };

static int child_write(const char *name, const char *val, int *err)
{
	char path[PATH_MAX];
	ssize_t n;
	int fd;

	attr_path(path, sizeof(path), name);
	fd = open(path, O_WRONLY);
	if (fd < 0) {
		*err = errno;
		return W_REFUSED_OPEN;
	}
	n = write(fd, val, strlen(val));
	*err = n < 0 ? errno : 0;
	close(fd);
	return n < 0 ? W_REFUSED_WRITE : W_ACCEPTED;
}

/*
 * Fork a child that becomes uid/gid nobody, tries the write and exits
 * with a W_* code; the errno it saw comes back through a pipe.
 */
static int unprivileged_write(const char *name, const char *val, int *err)
{
	int pfd[2], status, code;
	pid_t pid;

	if (pipe(pfd))
		return -1;
	pid = fork();
	if (pid < 0)
		return -1;
	if (pid == 0) {
		int e = 0;

		close(pfd[0]);
		if (setgroups(0, NULL) || setgid(NOBODY) || setuid(NOBODY))
			_exit(W_SETUP);
		code = child_write(name, val, &e);
		if (write(pfd[1], &e, sizeof(e)) != sizeof(e))
			_exit(W_OTHER);
		_exit(code);
	}
	close(pfd[1]);
	*err = 0;
	if (read(pfd[0], err, sizeof(*err)) != sizeof(*err))
		*err = -1;
	close(pfd[0]);
	if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status))
		return -1;
	return WEXITSTATUS(status);
}

/* uid/gid nobody cannot write (mode 0644): EACCES at open, nothing changes. */
TEST_F(rw, non_root_refused)
{
	const char *val = other_value(variant->name, self->saved);
	char after[64];
	int code, err;

	code = unprivileged_write(variant->name, val, &err);
	EXPECT_TRUE(code == W_REFUSED_OPEN || code == W_REFUSED_WRITE) {
		TH_LOG("%s <- \"%s\" as uid %d: expected EACCES/EPERM, got exit %d errno %d",
		       variant->name, shown(val, strlen(val)), NOBODY, code, err);
	}
	if (code == W_REFUSED_OPEN || code == W_REFUSED_WRITE) {
		EXPECT_TRUE(err == EACCES || err == EPERM) {
			TH_LOG("%s as uid %d: expected EACCES/EPERM, got %s",
			       variant->name, NOBODY, strerror(err));
		}
	}
	ASSERT_LT(0, read_text(variant->name, after, sizeof(after)));
	EXPECT_STREQ(self->saved, after);
}

/*
 * File permissions decide, not the writer's capabilities: once the admin
 * hands the file to uid nobody (chown), nobody's write is accepted; then
 * the file goes back to root and nobody is refused again.
 */
TEST_F(rw, delegated_by_chown)
{
	const char *val = other_value(variant->name, self->saved);
	char path[PATH_MAX], after[64];
	int code, err;

	attr_path(path, sizeof(path), variant->name);
	ASSERT_EQ(0, chown(path, NOBODY, NOBODY)) {
		TH_LOG("chown %s: %s", path, strerror(errno));
	}
	code = unprivileged_write(variant->name, val, &err);
	EXPECT_EQ(W_ACCEPTED, code) {
		TH_LOG("%s <- \"%s\" as its owner uid %d: expected accepted, got exit %d errno %d",
		       variant->name, shown(val, strlen(val)), NOBODY, code, err);
	}
	ASSERT_EQ(0, chown(path, 0, 0)) {
		TH_LOG("chown %s back to root: %s", path, strerror(errno));
	}
	ASSERT_LT(0, read_text(variant->name, after, sizeof(after)));
	EXPECT_STREQ(val, after);
	code = unprivileged_write(variant->name, self->saved, &err);
	EXPECT_EQ(W_REFUSED_OPEN, code) {
		TH_LOG("%s as uid %d after chown back: expected refused, got exit %d errno %d",
		       variant->name, NOBODY, code, err);
	}
}

/* Write s, expect it accepted whole, and the read-back in [lo, hi]. */
static void expect_good(struct __test_metadata *_metadata, const char *name,
			const char *s, long long lo, long long hi)
{
	ssize_t r = write_str(name, s);
	long long got;

	EXPECT_EQ((ssize_t)strlen(s), r) {
		TH_LOG("%s <- \"%s\": expected accepted, got %s", name,
		       shown(s, strlen(s)), errname(r));
	}
	got = read_num(name);
	EXPECT_TRUE(got >= lo && got <= hi) {
		if (lo == hi)
			TH_LOG("%s <- \"%s\": expected to read back %lld, got %lld",
			       name, shown(s, strlen(s)), lo, got);
		else
			TH_LOG("%s <- \"%s\": expected to read back %lld..%lld, got %lld",
			       name, shown(s, strlen(s)), lo, hi, got);
	}
}

/* Good input is accepted and reads back rounded as documented. */
TEST_F(rw, good_writes_read_back)
{
	const char *name = variant->name;
	long long pk = page_kb();
	long long ram = self->ram_kb - self->ram_kb % pk;
	char buf[32];

	if (strcmp(name, "holdoff_ms") == 0) {
		/* Rounded up to a scheduler tick (HZ >= 100: at most 10 ms). */
		expect_good(_metadata, name, "1001\n", 1001, 1010);
		expect_good(_metadata, name, "0\n", 0, 0);
		expect_good(_metadata, name, "60000\n", 60000, 60000);
		expect_good(_metadata, name, "+500\n", 500, 509);
		expect_good(_metadata, name, "3000", 3000, 3009);
	} else if (strcmp(name, "target_kb") == 0) {
		/* Rounded down to whole pages. */
		expect_good(_metadata, name, "8195\n", 8192, 8192);
		expect_good(_metadata, name, "+4096\n", 4096, 4096);
		expect_good(_metadata, name, "4097", 4096, 4096);
		expect_good(_metadata, name, "0\n", 0, 0);
	} else if (strcmp(name, "floor_kb") == 0) {
		/* Rounded up to whole pages: the floor is a guarantee. */
		expect_good(_metadata, name, "262145\n", 262144 + pk,
			    262144 + pk);
		expect_good(_metadata, name, "262144\n", 262144, 262144);
		expect_good(_metadata, name, "+131073", 131072 + pk,
			    131072 + pk);
		/* Exactly guest RAM is in range. */
		snprintf(buf, sizeof(buf), "%lld\n", ram);
		expect_good(_metadata, name, buf, ram, ram);
	} else {
		/* pressure_reserve_kb: rounded down to whole pages. */
		expect_good(_metadata, name, "65539\n", 65536, 65536);
		expect_good(_metadata, name, "0\n", 0, 0);
		expect_good(_metadata, name, "+8193", 8192, 8192);
		snprintf(buf, sizeof(buf), "%lld\n", ram);
		expect_good(_metadata, name, buf, ram, ram);
	}
}

TEST_HARNESS_MAIN
