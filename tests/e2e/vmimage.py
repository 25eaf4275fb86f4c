#!/usr/bin/env python3
"""Build and boot a throw-away qemu guest that has a real v4l2loopback device.

This machine's kernel cannot load v4l2loopback, but a stock Debian kernel booted
under qemu (TCG software emulation) can. The guest mounts the host's root
read-only over 9p (with a tmpfs overlay on top), so it runs this machine's own
Python, venv, ffmpeg and v4l2-ctl unchanged. A second, writable 9p share (a
folder on the host, mounted at the same path in the guest) carries the guest
command in (`cmd.sh`) and its results and exit status (`guest-rc`) out.

Nothing is installed into the host except the Debian packages in HOST_PACKAGES:
the kernel, its headers, v4l2loopback's source and busybox-static are fetched
with `apt-get download` and unpacked with `dpkg -x` into the cache folder
(`<repo>/.cache/e2e-vm/`, git-ignored), where the module and the initramfs are
built once and reused until the inputs change.

Used by test_v4l2loopback_vm.py; also usable by hand (as root):

    python tests/e2e/vmimage.py build              # build or reuse the cached image
    python tests/e2e/vmimage.py run 'v4l2-ctl --list-devices; exit 3'
    python tests/e2e/vmimage.py run --timeout 900 "$(command -v python) tests/e2e/guest_e2e.py --out /tmp/x"

Based on the recipe in shared/v4l2loopback-vm/ (see its README for pitfalls).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import stat
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO_ROOT = HERE.parents[1]
DEFAULT_CACHE = REPO_ROOT / ".cache" / "e2e-vm"
INIT_SCRIPT = HERE / "vm_init.sh"

# Debian packages the host needs: qemu to boot the guest; v4l-utils and ffmpeg
# because the guest runs the host's binaries through the 9p share; gcc/make to
# build the module (Debian's kernel is built with the host's gcc-12).
HOST_PACKAGES = {  # package -> a file it provides (cheap "is it installed" test)
    "qemu-system-x86": "qemu-system-x86_64",
    "v4l-utils": "v4l2-ctl",
    "ffmpeg": "ffmpeg",
    "gcc": "gcc",
    "make": "make",
}

# Kernel modules the guest's /init loads (their dependencies are added from
# modules.dep, in load order): virtio transport, 9p root share, overlayfs for a
# writable root, V4L2 core for v4l2loopback. virtio-rng avoids entropy stalls.
GUEST_MODULES = ["virtio_pci", "virtio-rng", "9pnet_virtio", "9p", "overlay", "videodev"]

# Bump when the build steps change in a way that must invalidate cached images.
BUILD_FORMAT = 1

# Default v4l2loopback devices for PrivacyCam's tests: the daemon writes
# /dev/video0 "PrivacyCam"; ffmpeg plays a clip into /dev/video1 "FakeWebcam",
# which the daemon reads like a physical webcam; /dev/video2 "PrivacyCamKill" is
# a fresh device for the SIGKILL test (0.12 takes no second writer on video0).
# exclusive_caps=1 as for browsers.
DEFAULT_V4L2LOOPBACK = {
    "devices": "3",
    "video_nr": "0,1,2",
    "card_label": "PrivacyCam,FakeWebcam,PrivacyCamKill",
    "exclusive_caps": "1,1,1",
}

_T0 = time.monotonic()


def log(msg: str) -> None:
    print(f"[e2e-vm {time.monotonic() - _T0:6.1f}s] {msg}", file=sys.stderr, flush=True)


class VMError(RuntimeError):
    """The image could not be built or the guest could not be started."""


# --------------------------------------------------------------------------- host checks


def why_cannot_run() -> str | None:
    """Reason qemu cannot run on this machine at all, or None if it can."""
    if platform.system() != "Linux":
        return f"the v4l2loopback VM needs Linux (this is {platform.system()})"
    if platform.machine() != "x86_64":
        return f"the v4l2loopback VM needs an x86_64 host (this is {platform.machine()})"
    if os.geteuid() != 0:
        return "the v4l2loopback VM needs root (9p share of / with security_model=none, apt-get)"
    missing = [p for p, exe in HOST_PACKAGES.items() if not shutil.which(exe)]
    if missing and not (shutil.which("apt-get") and shutil.which("dpkg")):
        return f"missing {', '.join(missing)} and no apt-get/dpkg to install them"
    if not shutil.which("apt-get") and not _image_is_cached(DEFAULT_CACHE):
        return "no apt-get to download the Debian kernel and v4l2loopback source"
    return None


def _run(cmd: list[str], what: str, cwd: Path | None = None, timeout: float = 900) -> str:
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-25:])
        raise VMError(f"{what} failed (exit {proc.returncode}): {' '.join(cmd)}\n{tail}")
    return proc.stdout


_apt_updated = False


def _apt_update() -> None:
    global _apt_updated
    if not _apt_updated:
        log("apt-get update")
        _run(["apt-get", "update", "-qq"], "apt-get update", timeout=600)
        _apt_updated = True


def ensure_host_packages() -> None:
    missing = [p for p, exe in HOST_PACKAGES.items() if not shutil.which(exe)]
    if not missing:
        return
    _apt_update()
    log(f"apt-get install {' '.join(missing)}")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    proc = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        capture_output=True,
        text=True,
        env=env,
        timeout=1200,
    )
    if proc.returncode != 0:
        raise VMError(f"apt-get install {' '.join(missing)} failed:\n{proc.stderr[-2000:]}")


# --------------------------------------------------------------------------- build


@dataclass
class Image:
    kernel: Path  # vmlinuz
    initrd: Path  # initramfs.cpio.gz (busybox, /init, modules incl. v4l2loopback.ko)
    module: Path  # v4l2loopback.ko (for a reload inside the guest: insmod <this>)
    kernel_version: str
    v4l2loopback_version: str
    cache: Path


def _inputs_digest() -> str:
    h = hashlib.sha256()
    h.update(f"{BUILD_FORMAT} {GUEST_MODULES}".encode())
    h.update(INIT_SCRIPT.read_bytes())
    return h.hexdigest()[:16]


def _image_is_cached(cache: Path) -> Image | None:
    stamp = cache / "image" / "build.json"
    try:
        meta = json.loads(stamp.read_text())
    except (OSError, ValueError):
        return None
    img = Image(
        kernel=cache / "image" / "vmlinuz",
        initrd=cache / "image" / "initramfs.cpio.gz",
        module=cache / "image" / "v4l2loopback.ko",
        kernel_version=meta.get("kernel", "?"),
        v4l2loopback_version=meta.get("v4l2loopback", "?"),
        cache=cache,
    )
    ok = meta.get("inputs") == _inputs_digest() and all(p.is_file() for p in (img.kernel, img.initrd, img.module))
    return img if ok else None


def _apt_depends(pkg: str, pattern: str) -> str | None:
    out = subprocess.run(["apt-cache", "depends", pkg], capture_output=True, text=True).stdout
    for line in out.splitlines():
        m = re.match(r"\s*\|?Depends:\s*(\S+)\s*$", line)
        if m and re.fullmatch(pattern, m.group(1)):
            return m.group(1)
    return None


def _kernel_packages() -> tuple[str, list[str]]:
    """(kernel version, packages to download) for Debian's current amd64 kernel.
    Image and headers must match exactly, so both come from one apt-cache answer."""
    for attempt in (1, 2):
        kpkg = _apt_depends("linux-image-amd64", r"linux-image-\d\S*-amd64")
        if kpkg:
            kver = kpkg[len("linux-image-") :]
            common = _apt_depends(f"linux-headers-{kver}", r"linux-headers-\S+-common")
            kbuild = _apt_depends(f"linux-headers-{kver}", r"linux-kbuild-\S+")
            if common and kbuild:
                return kver, [kpkg, f"linux-headers-{kver}", common, kbuild, "v4l2loopback-dkms", "busybox-static"]
        if attempt == 1:
            _apt_update()
    raise VMError(
        "apt-cache cannot resolve linux-image-amd64 -> linux-image-<version>-amd64 (not a Debian amd64 apt source?)"
    )


def _download(pkgs: list[str], debs: Path) -> None:
    debs.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("_")[0] for p in debs.glob("*.deb")}
    todo = [p for p in pkgs if p not in have]
    if not todo:
        return
    log(f"apt-get download {' '.join(todo)}")
    try:
        _run(["apt-get", "download", "-q=2", *todo], "apt-get download", cwd=debs)
    except VMError:
        _apt_update()  # stale lists name versions the mirror no longer has
        _run(["apt-get", "download", "-q=2", *todo], "apt-get download", cwd=debs)


def _modinfo(data: bytes) -> dict[str, str]:
    """The .modinfo section (key=value strings) of a kernel module (ELF64 LE).
    Debian ships no modules.dep (depmod makes it at install time), so the
    dependencies come from here."""
    import struct

    (shoff,) = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def section(i: int) -> tuple[int, int, int]:
        (name,) = struct.unpack_from("<I", data, shoff + i * shentsize)
        off, size = struct.unpack_from("<QQ", data, shoff + i * shentsize + 0x18)
        return name, off, size

    _, stroff, _ = section(shstrndx)
    for i in range(shnum):
        name, off, size = section(i)
        if data[stroff + name :].split(b"\0", 1)[0] == b".modinfo":
            items = [kv.split(b"=", 1) for kv in data[off : off + size].split(b"\0") if b"=" in kv]
            return {k.decode(): v.decode(errors="replace") for k, v in items}
    return {}


def _module_load_order(modroot: Path, wanted: list[str]) -> list[Path]:
    """Module files to insmod for `wanted` (names as in modprobe), dependencies first."""

    def key(name: str) -> str:
        return re.sub(r"\.ko(\.\w+)?$", "", name).replace("-", "_")

    files = {key(p.name): p for p in (modroot / "kernel").rglob("*.ko*")}
    builtin_file = modroot / "modules.builtin"
    builtin = {key(Path(m).name) for m in builtin_file.read_text().split()} if builtin_file.exists() else set()
    order: list[Path] = []

    def visit(name: str, chain: tuple[str, ...]) -> None:
        k = key(name)
        if k in builtin or files.get(k) in order:
            return
        if k not in files:
            raise VMError(
                f"kernel module {name} (needed by {' <- '.join(chain) or 'the guest'}) "
                f"is neither in {modroot}/kernel nor built in"
            )
        for dep in filter(None, _modinfo(_read_module(files[k])).get("depends", "").split(",")):
            visit(dep, (name, *chain))
        order.append(files[k])

    for name in wanted:
        visit(name, ())
    return order


def _read_module(path: Path) -> bytes:
    data = path.read_bytes()
    if path.suffix == ".xz":
        import lzma

        data = lzma.decompress(data)
    elif path.suffix == ".zst":
        raise VMError(f"{path}: zstd-compressed modules are not supported by this harness")
    return data


def _cpio_newc(entries: list[tuple[str, int, bytes, tuple[int, int]]]) -> bytes:
    """A cpio 'newc' archive (the initramfs format) of (name, mode, data, (rdev major, minor))."""
    out = bytearray()

    def add(ino: int, name: str, mode: int, data: bytes, rdev: tuple[int, int]) -> None:
        fields = [ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(name) + 1, 0]
        out.extend(b"070701" + "".join(f"{f:08X}" for f in fields).encode() + name.encode() + b"\0")
        out.extend(b"\0" * (-len(out) % 4))
        out.extend(data)
        out.extend(b"\0" * (-len(out) % 4))

    for ino, (name, mode, data, rdev) in enumerate(entries, 1):
        add(ino, name, mode, data, rdev)
    add(0, "TRAILER!!!", 0, b"", (0, 0))
    return bytes(out)


def build_image(cache: Path = DEFAULT_CACHE) -> Image:
    """Build (or reuse) kernel + initramfs + v4l2loopback.ko under `cache`. Takes 1-2 min."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one build at a time; others wait and reuse it
        img = _image_is_cached(cache)
        if img:
            return img
        return _build_locked(cache)


def _build_locked(cache: Path) -> Image:
    t0 = time.monotonic()
    log(f"building the guest image in {cache} (once; takes 1-2 minutes)")
    build = cache / "build"
    root = build / "root"
    kver, pkgs = _kernel_packages()
    _download(pkgs, build / "debs")

    log(f"unpacking {len(pkgs)} packages (dpkg -x, nothing is installed)")
    shutil.rmtree(root, ignore_errors=True)
    for pkg in pkgs:
        debs = sorted((build / "debs").glob(f"{pkg}_*.deb"))
        if not debs:
            raise VMError(f"apt-get download left no {pkg}_*.deb in {build / 'debs'}")
        deb = debs[-1]
        _run(["dpkg", "-x", str(deb), str(root)], f"dpkg -x {deb.name}")
    headers = root / "usr" / "src" / f"linux-headers-{kver}"
    mk = headers / "Makefile"  # it includes the -common tree by absolute path
    mk.write_text(mk.read_text().replace("include /usr/src/", f"include {root}/usr/src/"))

    srcs = sorted((root / "usr" / "src").glob("v4l2loopback-*"))
    if not srcs:
        raise VMError("v4l2loopback-dkms has no /usr/src/v4l2loopback-* source tree")
    src = srcs[-1]
    lbver = src.name.split("-", 1)[1]
    log(f"building v4l2loopback {lbver} against linux-headers-{kver}")
    lbdir = build / "v4l2loopback"
    shutil.rmtree(lbdir, ignore_errors=True)
    shutil.copytree(src, lbdir)
    _run(["make", f"-j{os.cpu_count() or 2}", "-C", str(headers), f"M={lbdir}", "modules"], "building v4l2loopback.ko")

    log("writing the initramfs")
    modroot = root / "lib" / "modules" / kver
    mods = _module_load_order(modroot, GUEST_MODULES)
    entries: list[tuple[str, int, bytes, tuple[int, int]]] = []
    for d in ("bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp"):
        entries.append((d, stat.S_IFDIR | 0o755, b"", (0, 0)))
    entries.append(("dev/console", stat.S_IFCHR | 0o600, b"", (5, 1)))
    entries.append(("init", stat.S_IFREG | 0o755, INIT_SCRIPT.read_bytes(), (0, 0)))
    entries.append(("bin/busybox", stat.S_IFREG | 0o755, (root / "bin" / "busybox").read_bytes(), (0, 0)))
    names = []
    for m in mods:
        name = re.sub(r"\.ko(\.\w+)?$", ".ko", m.name)
        names.append(name)
        entries.append((f"lib/modules/{name}", stat.S_IFREG | 0o644, _read_module(m), (0, 0)))
    entries.append(
        ("lib/modules/v4l2loopback.ko", stat.S_IFREG | 0o644, (lbdir / "v4l2loopback.ko").read_bytes(), (0, 0))
    )
    entries.append(("lib/modules/load-order", stat.S_IFREG | 0o644, ("\n".join(names) + "\n").encode(), (0, 0)))

    image = cache / "image"
    shutil.rmtree(image, ignore_errors=True)
    image.mkdir()
    (image / "initramfs.cpio.gz").write_bytes(gzip.compress(_cpio_newc(entries), compresslevel=1))
    shutil.copy2(root / "boot" / f"vmlinuz-{kver}", image / "vmlinuz")
    shutil.copy2(lbdir / "v4l2loopback.ko", image / "v4l2loopback.ko")
    (image / "build.json").write_text(
        json.dumps(
            {
                "inputs": _inputs_digest(),
                "kernel": kver,
                "v4l2loopback": lbver,
                "modules": names,
                "packages": sorted(p.name for p in (build / "debs").glob("*.deb")),
                "built_s": round(time.monotonic() - t0, 1),
            },
            indent=1,
        )
    )
    shutil.rmtree(root)  # ~500 MB unpacked; the .debs stay for a rebuild
    shutil.rmtree(lbdir)
    img = _image_is_cached(cache)
    assert img is not None
    log(f"guest image ready in {time.monotonic() - t0:.0f}s: kernel {kver}, v4l2loopback {lbver}")
    return img


def ensure_image(cache: Path = DEFAULT_CACHE) -> Image:
    """Host packages + cached guest image, building what is missing."""
    ensure_host_packages()
    return build_image(cache)


# --------------------------------------------------------------------------- boot


@dataclass
class GuestResult:
    rc: int | None  # the guest command's exit status; None if it never wrote one
    timed_out: bool  # qemu was killed after `timeout` seconds
    qemu_rc: int | None
    elapsed: float
    console: str  # serial console (kernel messages, /init and the command's output)
    share: Path

    @property
    def ok(self) -> bool:
        return self.rc == 0

    def explain(self, lines: int = 60) -> str:
        if self.timed_out:
            what = f"the guest did not finish within {self.elapsed:.0f}s and was killed (hang?)"
        elif self.rc is None:
            what = (
                f"the guest stopped without reporting an exit status (qemu exit {self.qemu_rc}; "
                "kernel panic or /init failure?)"
            )
        else:
            what = f"the guest command exited with status {self.rc}"
        tail = "\n".join(self.console.splitlines()[-lines:])
        return f"{what} after {self.elapsed:.0f}s; console ({self.share / 'console.log'}):\n{tail}"


def run_guest(
    image: Image,
    command: str,
    share: Path,
    timeout: float = 600,
    v4l2loopback: dict[str, str] | None = None,
    memory: str = "2G",
    echo: bool = False,
) -> GuestResult:
    """Boot the guest and run `command` (a shell script, as root, in the host's
    userland) in it. `share` is a host folder, writable by the guest at the same
    path, emptied first. qemu is killed after `timeout` seconds: a hang never
    outlives it. Two runs on one share (two pytest sessions) take turns."""
    share = share.resolve()
    if re.search(r"[\s:]", str(share)):
        raise VMError(f"share path must not contain spaces or ':' (kernel command line): {share}")
    share.mkdir(parents=True, exist_ok=True)
    with open(share / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for old in share.iterdir():
            if old.is_file() and old.name != ".lock":
                old.unlink()
        (share / "cmd.sh").write_text(command + "\n")
        return _boot(image, share, timeout, v4l2loopback, memory, echo)


def _boot(
    image: Image, share: Path, timeout: float, v4l2loopback: dict[str, str] | None, memory: str, echo: bool
) -> GuestResult:
    lb = dict(DEFAULT_V4L2LOOPBACK if v4l2loopback is None else v4l2loopback)
    lbarg = ":".join(f"{k}={v}" for k, v in lb.items())
    append = f"console=ttyS0 panic=-1 quiet loglevel=4 vmout={share} v4l2lb={lbarg}"
    cmd = [
        "qemu-system-x86_64",
        "-accel",
        "tcg,thread=multi",
        "-cpu",
        "max",  # not kvm: see README
        "-m",
        memory,
        "-smp",
        str(os.cpu_count() or 2),
        "-display",
        "none",
        "-monitor",
        "none",
        "-nodefaults",
        "-no-reboot",
        "-serial",
        f"file:{share / 'console.log'}",
        "-kernel",
        str(image.kernel),
        "-initrd",
        str(image.initrd),
        "-append",
        append,
        "-device",
        "virtio-rng-pci",
        "-virtfs",
        "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs",
        f"local,path={share},mount_tag=outshare,security_model=none",
    ]
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    timed_out, pos = False, 0
    try:
        while proc.poll() is None:
            if time.monotonic() - t0 > timeout:
                timed_out = True
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                break
            time.sleep(0.5)
            if echo:
                pos = _echo_new(share / "console.log", pos)
    finally:
        if proc.poll() is None:  # interrupted (Ctrl-C): never leave qemu behind
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    if echo:
        _echo_new(share / "console.log", pos)
    qemu_out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
    console = _read_text(share / "console.log") + (f"\n[qemu] {qemu_out.strip()}" if qemu_out.strip() else "")
    rc_text = _read_text(share / "guest-rc").strip()
    rc = int(rc_text) if rc_text.lstrip("-").isdigit() and not timed_out else None
    return GuestResult(
        rc=rc, timed_out=timed_out, qemu_rc=proc.returncode, elapsed=time.monotonic() - t0, console=console, share=share
    )


def _read_text(path: Path) -> str:
    with contextlib.suppress(OSError):
        return path.read_bytes().decode(errors="replace")
    return ""


def _echo_new(path: Path, pos: int) -> int:
    with contextlib.suppress(OSError), open(path, "rb") as f:
        f.seek(pos)
        data = f.read()
        sys.stderr.write(data.decode(errors="replace"))
        sys.stderr.flush()
        return pos + len(data)
    return pos


# --------------------------------------------------------------------------- CLI


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("build", help="build or reuse the cached guest image")
    r = sub.add_parser("run", help="boot the guest and run a shell command in it; exit with its status")
    r.add_argument("command")
    r.add_argument("--share", type=Path, default=None, help="writable share (default <cache>/runs/manual)")
    r.add_argument("--timeout", type=float, default=600)
    r.add_argument(
        "--v4l2loopback",
        default=None,
        help="module options, e.g. devices=3:exclusive_caps=1,1,1:card_label=A,B,C:video_nr=0,1,2",
    )
    a = ap.parse_args(argv)
    reason = why_cannot_run()
    if reason:
        print(f"cannot run: {reason}", file=sys.stderr)
        return 2
    img = ensure_image(a.cache)
    if a.cmd == "build":
        print(json.dumps({k: str(v) for k, v in img.__dict__.items()}, indent=1))
        return 0
    lb = dict(kv.split("=", 1) for kv in a.v4l2loopback.split(":")) if a.v4l2loopback else None
    res = run_guest(
        img, a.command, a.share or a.cache / "runs" / "manual", timeout=a.timeout, v4l2loopback=lb, echo=True
    )
    if res.rc != 0:
        print(res.explain(lines=0).split("; console")[0], file=sys.stderr)
    return 99 if res.rc is None else res.rc


if __name__ == "__main__":
    sys.exit(main())
