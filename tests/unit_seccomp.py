"""Run a command under a systemd unit's own seccomp filter, built as systemd builds it.

systemd turns SystemCallFilter= (its @groups expanded by `systemd-analyze
syscall-filter`), SystemCallErrorNumber= and RestrictAddressFamilies= into
libseccomp filters, which a user manager loads too (they need no privilege,
only no_new_privs). This rebuilds those filters with pyseccomp, libseccomp's
Python API over ctypes (the official binding is not on PyPI, and Debian's
python3-seccomp is for the system Python only), loads them in this process
and execs the command, as the manager does right before ExecStart.

    python unit_seccomp.py UNIT COMMAND [ARG...]

Not rebuilt: the namespace, cgroup and capability settings (see the unit's
comments); SystemCallArchitectures=native is libseccomp's default anyway.
"""

from __future__ import annotations

import errno
import os
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

# Address families are numbered below this (AF_MAX, Linux 6.x).
ADDRESS_FAMILY_COUNT = 46
# systemd adds these to every allow list (man systemd.exec: always permitted).
ALLOW_LIST_BASE = "@default"


@dataclass(frozen=True)
class SeccompPlan:
    allow_list: bool  # True: only `syscalls` run; False: `syscalls` are the ones refused
    syscalls: frozenset[str]
    error_number: int | None  # what a refused call returns; None: the process is killed (SIGSYS)
    address_families: frozenset[int] | None  # socket() families allowed; None: all


def service_settings(unit: Path) -> dict[str, list[str]]:
    """Every assignment in the unit's [Service] section, in order; an empty one resets the key, as in systemd.

    Hand-written: configparser keeps only the last of repeated keys, and units repeat them.
    """
    settings: dict[str, list[str]] = {}
    section = ""
    for raw in unit.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        if line.startswith("["):
            section = line.strip("[]")
        elif section == "Service" and "=" in line:
            key, value = (part.strip() for part in line.split("=", 1))
            settings[key] = [*settings.get(key, []), value] if value else []
    return settings


def syscall_groups() -> dict[str, list[str]]:
    """`systemd-analyze syscall-filter`: each @group and its entries (syscalls or further @groups)."""
    listing = subprocess.run(["systemd-analyze", "syscall-filter"], capture_output=True, text=True, check=True)
    groups: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in listing.stdout.splitlines():
        entry = line.strip()
        if line.startswith("@"):
            current = groups.setdefault(entry, [])
        elif current is not None and entry and not entry.startswith("#"):
            current.append(entry)
    return groups


def expand(names: list[str], groups: dict[str, list[str]]) -> set[str]:
    syscalls: set[str] = set()
    for name in names:
        if ":" in name:
            raise ValueError(f"per-call errno suffixes ({name}) are not rebuilt here")
        syscalls |= expand(groups[name], groups) if name.startswith("@") else {name}
    return syscalls


def plan_for(settings: dict[str, list[str]], groups: dict[str, list[str]]) -> SeccompPlan:
    """The filter systemd would load: the first SystemCallFilter= decides allow or deny list, later ones edit it."""
    assignments = settings.get("SystemCallFilter", [])
    allow_list = bool(assignments) and not assignments[0].startswith("~")
    syscalls = expand([ALLOW_LIST_BASE], groups) if allow_list else set()
    for value in assignments:
        refused = value.startswith("~")
        names = expand(value.lstrip("~").split(), groups)
        if refused == allow_list:  # "~" in an allow list, or a plain entry in a deny list, takes calls out
            syscalls -= names
        else:
            syscalls |= names
    error_names = settings.get("SystemCallErrorNumber", [])
    error_name = error_names[-1] if error_names else "kill"
    error_number = None if error_name == "kill" else getattr(errno, error_name)
    families = settings.get("RestrictAddressFamilies", [])
    allowed_families = None
    if families:
        if families[-1].startswith("~") or families[-1] == "none":
            raise ValueError("only an allow list of address families is rebuilt here")
        allowed_families = frozenset(getattr(socket, name) for name in families[-1].split())
    return SeccompPlan(allow_list, frozenset(syscalls), error_number, allowed_families)


def load(plan: SeccompPlan) -> None:
    """Load the plan's filters into this process (and so into what it execs next)."""
    import pyseccomp

    if plan.address_families is not None:
        # As systemd does: a socket() of another family fails with EAFNOSUPPORT.
        sockets = pyseccomp.SyscallFilter(pyseccomp.ALLOW)
        wrong_family = pyseccomp.ERRNO(errno.EAFNOSUPPORT)
        for family in range(ADDRESS_FAMILY_COUNT):
            if family not in plan.address_families:
                sockets.add_rule(wrong_family, "socket", pyseccomp.Arg(0, pyseccomp.EQ, family))
        sockets.add_rule(wrong_family, "socket", pyseccomp.Arg(0, pyseccomp.GE, ADDRESS_FAMILY_COUNT))
        sockets.load()
    # Last, as systemd does: the call filter may refuse seccomp() itself.
    refused = pyseccomp.KILL_PROCESS if plan.error_number is None else pyseccomp.ERRNO(plan.error_number)
    calls = pyseccomp.SyscallFilter(refused if plan.allow_list else pyseccomp.ALLOW)
    listed_action = pyseccomp.ALLOW if plan.allow_list else refused
    for name in sorted(plan.syscalls):
        # Names this libseccomp or architecture does not know are skipped, as systemd skips them.
        if pyseccomp.resolve_syscall(pyseccomp.Arch.NATIVE, name) >= 0:
            calls.add_rule(listed_action, name)
    calls.load()


def main(argv: list[str]) -> None:
    if len(argv) < 3:
        sys.exit(__doc__)
    plan = plan_for(service_settings(Path(argv[1])), syscall_groups())
    load(plan)
    os.execvp(argv[2], argv[2:])


if __name__ == "__main__":
    main(sys.argv)
