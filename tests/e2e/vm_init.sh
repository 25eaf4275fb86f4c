#!/bin/busybox sh
# /init of the e2e guest's initramfs (built by vmimage.py; adapted from
# shared/v4l2loopback-vm/init). Loads the modules, mounts the host root
# read-only over 9p with a tmpfs overlay on top, mounts the writable share at
# the same path as on the host, chroots into the host's userland, runs
# <share>/cmd.sh, writes its exit status to <share>/guest-rc and powers off.
# Any setup failure powers off at once WITHOUT writing guest-rc, so the host
# sees a clear failure instead of waiting for its timeout.
# Kernel command line: vmout=<share path> v4l2lb=<insmod options, ':' for ' '>
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev

die() { echo "[init] FATAL: $*"; sync; reboot -f; sleep 5; }
uptime_s() { cut -d' ' -f1 /proc/uptime; }

VMOUT=; V4L2LB=
for arg in $(cat /proc/cmdline); do
  case "$arg" in
    vmout=*) VMOUT="${arg#vmout=}" ;;
    v4l2lb=*) V4L2LB="${arg#v4l2lb=}" ;;
  esac
done
[ -n "$VMOUT" ] || die "no vmout= on the kernel command line"

echo "[init] $(uptime_s)s: loading modules"
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m" || die "insmod $m failed"
done
insmod /lib/modules/v4l2loopback.ko $(echo "$V4L2LB" | tr ':' ' ') || die "insmod v4l2loopback $V4L2LB failed"

mkdir -p /host /rw /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=524288,cache=loose hostroot /host || die "9p mount of the host root failed"
mount -t tmpfs -o size=1g tmpfs /rw
mkdir -p /rw/upper /rw/work
mount -t overlay overlay -o lowerdir=/host,upperdir=/rw/upper,workdir=/rw/work /newroot || die "overlay mount failed"
mount --move /dev /newroot/dev
mount --move /proc /newroot/proc
mount --move /sys /newroot/sys
mount -t tmpfs tmpfs /newroot/run
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
# Last, so no later mount hides it (the share may live anywhere, e.g. under /tmp;
# /tmp itself stays the overlay: the host's files, writable in the guest).
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 outshare "/newroot$VMOUT" || die "share mount at $VMOUT failed"
[ -f "/newroot$VMOUT/cmd.sh" ] || die "the share is mounted but $VMOUT/cmd.sh is not visible in the guest"

echo "[init] $(cut -d' ' -f1 /newroot/proc/uptime)s: running $VMOUT/cmd.sh"
chroot /newroot /usr/bin/env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
  HOME=/root TERM=dumb LANG=C.UTF-8 E2E_SHARE="$VMOUT" /bin/sh "$VMOUT/cmd.sh" </newroot/dev/null
rc=$?
echo "$rc" > "/newroot$VMOUT/guest-rc"
echo "[init] $(cut -d' ' -f1 /newroot/proc/uptime)s: command exited rc=$rc"
sync
reboot -f
