// SPDX-License-Identifier: GPL-2.0
/*
 * vballoon: the admin's knobs, in the bound virtio device's sysfs
 * directory.  Documented in Documentation/ABI/testing/sysfs-driver-vballoon.
 *
 * Sizes are in KiB.  Who may write is the file's mode and owner (0644,
 * root; an admin may delegate with chown or chmod), as for every sysfs
 * knob: the store methods check no capability, since the writer is not
 * necessarily who opened the file.  Writes are parsed strictly, and a
 * rejected write changes nothing.
 *
 * The driver core creates the attributes after probe succeeds and removes
 * them before remove (driver.dev_groups), so a show or store never meets
 * a half-built or freed vballoon.
 */
#define pr_fmt(fmt) KBUILD_MODNAME ": " fmt

#include <linux/device.h>
#include <linux/jiffies.h>
#include <linux/kernel.h>
#include <linux/string.h>
#include <linux/sysfs.h>

#include "vballoon.h"

static struct vballoon *dev_to_vb(struct device *dev)
{
	return dev_to_virtio(dev)->priv;
}

/*
 * Check a write before parsing it: no NUL inside the written bytes
 * (kstrto*() would stop there and never see what follows).
 */
static int vb_check_write(const char *buf, size_t count)
{
	if (strnlen(buf, count) != count)
		return -EINVAL;
	return 0;
}

/*
 * Parse a size in KiB into pages, rounded up or down.  Rejects what is not
 * a plain decimal number (-EINVAL), and sizes that overflow or exceed
 * guest RAM (-ERANGE).
 */
static int vb_parse_pages(struct vballoon *vb, const char *buf, size_t count,
			  bool round_up, unsigned long *pages)
{
	u64 kb;
	int err;

	err = vb_check_write(buf, count);
	if (!err)
		err = kstrtou64(buf, 10, &kb);
	if (err)
		return err;
	if (kb > VB_PAGES_TO_KB(vb_guest_ram(vb)))
		return -ERANGE;
	if (round_up)
		*pages = DIV_ROUND_UP_ULL(kb, PAGE_SIZE >> 10);
	else
		*pages = kb >> (PAGE_SHIFT - 10);
	return 0;
}

static ssize_t vb_show_pages(char *buf, unsigned long pages)
{
	return sysfs_emit(buf, "%llu\n", VB_PAGES_TO_KB(pages));
}

static ssize_t current_kb_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return vb_show_pages(buf, READ_ONCE(dev_to_vb(dev)->nr_held));
}
static DEVICE_ATTR_RO(current_kb);

static ssize_t host_target_kb_show(struct device *dev,
				   struct device_attribute *attr, char *buf)
{
	return vb_show_pages(buf, vb_host_target(dev_to_vb(dev)));
}
static DEVICE_ATTR_RO(host_target_kb);

static ssize_t target_kb_show(struct device *dev,
			      struct device_attribute *attr, char *buf)
{
	return vb_show_pages(buf, READ_ONCE(dev_to_vb(dev)->guest_target));
}

static ssize_t target_kb_store(struct device *dev,
			       struct device_attribute *attr,
			       const char *buf, size_t count)
{
	struct vballoon *vb = dev_to_vb(dev);
	unsigned long pages;
	int err;

	err = vb_parse_pages(vb, buf, count, false, &pages);
	if (err)
		return err;
	WRITE_ONCE(vb->guest_target, pages);
	vb_queue_work(vb, 0);
	return count;
}
static DEVICE_ATTR_RW(target_kb);

static ssize_t floor_kb_show(struct device *dev,
			     struct device_attribute *attr, char *buf)
{
	return vb_show_pages(buf, READ_ONCE(dev_to_vb(dev)->floor));
}

static ssize_t floor_kb_store(struct device *dev,
			      struct device_attribute *attr,
			      const char *buf, size_t count)
{
	struct vballoon *vb = dev_to_vb(dev);
	unsigned long pages;
	int err;

	/* Round up: the floor is a promise to the guest. */
	err = vb_parse_pages(vb, buf, count, true, &pages);
	if (err)
		return err;
	WRITE_ONCE(vb->floor, pages);
	/* A raised floor deflates at once. */
	vb_queue_work(vb, 0);
	return count;
}
static DEVICE_ATTR_RW(floor_kb);

static ssize_t holdoff_ms_show(struct device *dev,
			       struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n",
			  jiffies_to_msecs(READ_ONCE(dev_to_vb(dev)->holdoff_base)));
}

static ssize_t holdoff_ms_store(struct device *dev,
				struct device_attribute *attr,
				const char *buf, size_t count)
{
	struct vballoon *vb = dev_to_vb(dev);
	unsigned int ms;
	int err;

	err = vb_check_write(buf, count);
	if (!err)
		err = kstrtouint(buf, 10, &ms);
	if (err)
		return err;
	/* Up to the most the hold-off ever grows to. */
	if (ms > 60 * MSEC_PER_SEC)
		return -ERANGE;
	spin_lock(&vb->lock);
	vb->holdoff_base = msecs_to_jiffies(ms);
	vb->policy.holdoff = vb->holdoff_base;
	spin_unlock(&vb->lock);
	return count;
}
static DEVICE_ATTR_RW(holdoff_ms);

static ssize_t pressure_reserve_kb_show(struct device *dev,
					struct device_attribute *attr,
					char *buf)
{
	return vb_show_pages(buf, READ_ONCE(dev_to_vb(dev)->pressure_reserve));
}

static ssize_t pressure_reserve_kb_store(struct device *dev,
					 struct device_attribute *attr,
					 const char *buf, size_t count)
{
	struct vballoon *vb = dev_to_vb(dev);
	unsigned long pages;
	int err;

	err = vb_parse_pages(vb, buf, count, false, &pages);
	if (err)
		return err;
	WRITE_ONCE(vb->pressure_reserve, pages);
	return count;
}
static DEVICE_ATTR_RW(pressure_reserve_kb);

static ssize_t pressure_kb_show(struct device *dev,
				struct device_attribute *attr, char *buf)
{
	return vb_show_pages(buf, READ_ONCE(dev_to_vb(dev)->stats.pressure_pages));
}
static DEVICE_ATTR_RO(pressure_kb);

static struct attribute *vb_attrs[] = {
	&dev_attr_current_kb.attr,
	&dev_attr_host_target_kb.attr,
	&dev_attr_target_kb.attr,
	&dev_attr_floor_kb.attr,
	&dev_attr_holdoff_ms.attr,
	&dev_attr_pressure_reserve_kb.attr,
	&dev_attr_pressure_kb.attr,
	NULL,
};

static const struct attribute_group vb_group = {
	.attrs = vb_attrs,
};

/* vb_driver.driver.dev_groups (vb_main.c). */
const struct attribute_group *vb_groups[] = {
	&vb_group,
	NULL,
};
