"""Pure logic behind run.sh: an ARM /proc/cpuinfo, the host's Debian mirror, pip settings for the rootfs.

Usage (run.sh calls these; each prints its result on stdout):
    python pi_setup.py cpuinfo cortex-a72 --cpus 4
    python pi_setup.py mirror /etc/apt/sources.list /etc/apt/sources.list.d/*
    pip config list | python pi_setup.py pip-conf --root /path/to/rootfs > rootfs/etc/pip.conf
    python pi_setup.py pick-images IMAGES_DIR --count 8
    python pi_setup.py wheel-tags ai-edge-litert numpy      (inside the rootfs: stdlib only)
    python pi_setup.py hwcaps                               (inside the rootfs: the emulated CPU's features)
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from dataclasses import dataclass
from pathlib import Path

DEFAULT_MIRROR = "http://deb.debian.org/debian"
# Suites of the Debian archive itself (security and third-party repositories use other names).
DEBIAN_SUITES = {"bookworm", "bookworm-updates", "trixie", "trixie-updates", "bullseye", "bullseye-updates",
                 "sid", "stable", "testing", "unstable", "oldstable"}


@dataclass(frozen=True)
class ArmCore:
    """What a Raspberry Pi's kernel reports for one core in /proc/cpuinfo."""

    part: str
    variant: str
    revision: int
    features: str
    board: str


# From real boards: Pi 4 is a Cortex-A72 r0p3, Pi 5 a Cortex-A76 r4p1 (implementer 0x41 = Arm).
CORES = {
    "cortex-a72": ArmCore("0xd08", "0x0", 3, "fp asimd evtstrm crc32 cpuid", "Raspberry Pi 4 Model B"),
    "cortex-a76": ArmCore(
        "0xd0b", "0x4", 1,
        "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
        "Raspberry Pi 5 Model B",
    ),
}

# Bit order of AT_HWCAP on arm64 (linux/arch/arm64/include/uapi/asm/hwcap.h), as /proc/cpuinfo names them.
HWCAP_NAMES = ("fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma lrcpc "
               "dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca pacg").split()
AT_HWCAP = 16

# pip settings that name a file or folder on the host; the rootfs gets the CA bundle copied to the same
# path, so `cert` stays, while local indexes, wheel folders and constraint files do not exist there.
PATH_KEYS = {"find-links", "constraint", "requirement", "build-constraint"}
INDEX_KEYS = {"index-url", "extra-index-url"}


def make_cpuinfo(core_name: str, cpus: int) -> str:
    """The /proc/cpuinfo text an arm64 Raspberry Pi OS kernel shows for `cpus` cores of `core_name`."""
    if core_name not in CORES:
        raise ValueError(f"got core {core_name!r}, expected one of {', '.join(sorted(CORES))}")
    if cpus < 1:
        raise ValueError(f"got {cpus} CPUs, expected at least 1")
    core = CORES[core_name]
    blocks = [
        f"processor\t: {index}\nBogoMIPS\t: 108.00\nFeatures\t: {core.features}\n"
        f"CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: {core.variant}\n"
        f"CPU part\t: {core.part}\nCPU revision\t: {core.revision}\n"
        for index in range(cpus)
    ]
    return "\n".join(blocks) + f"\nModel\t\t: {core.board} (emulated by qemu-user)\n"


def decode_hwcaps(bits: int) -> list[str]:
    """Feature names of the set bits of an arm64 AT_HWCAP value (unknown high bits as bitN)."""
    return [HWCAP_NAMES[index] if index < len(HWCAP_NAMES) else f"bit{index}"
            for index in range(bits.bit_length()) if bits >> index & 1]


def read_hwcaps() -> int:
    """AT_HWCAP of this process: what the (emulated) CPU tells programs it supports."""
    import ctypes
    import platform

    if platform.machine() != "aarch64":
        raise ValueError(f"got machine {platform.machine()}, expected aarch64 (AT_HWCAP bits differ per architecture)")
    libc = ctypes.CDLL(None)
    libc.getauxval.restype = ctypes.c_ulong
    return int(libc.getauxval(AT_HWCAP))


def find_debian_mirror(sources: dict[str, str]) -> str:
    """The first Debian archive URL (not security, not a third-party repo) in apt source files by name."""
    for name, text in sources.items():
        if name.endswith(".sources"):
            entries = deb822_entries(text)
        elif name.endswith(".list"):
            entries = one_line_entries(text)
        else:
            continue  # apt itself reads only *.list and *.sources
        for uri, suites in entries:
            if DEBIAN_SUITES & set(suites) and re.match(r"https?://", uri):
                return uri.rstrip("/")
    return DEFAULT_MIRROR


def deb822_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, suites) of the enabled `Types: deb` stanzas in a deb822 .sources file."""
    entries = []
    for stanza in re.split(r"\n\s*\n", text):
        fields = dict(re.findall(r"^([A-Za-z-]+):[ \t]*(.*)$", stanza, flags=re.MULTILINE))
        if "deb" in fields.get("Types", "").split() and fields.get("Enabled", "yes").lower() != "no":
            entries += [(uri, fields.get("Suites", "").split()) for uri in fields.get("URIs", "").split()]
    return entries


def one_line_entries(text: str) -> list[tuple[str, list[str]]]:
    """(URI, [suite]) of the `deb [options] URI suite component...` lines of a sources.list file."""
    entries = []
    for line in text.splitlines():
        words = re.sub(r"\[[^\]]*\]", " ", line.split("#", 1)[0]).split()
        if len(words) >= 3 and words[0] == "deb":
            entries.append((words[1], [words[2]]))
    return entries


def parse_pip_config(listing: str, environ: dict[str, str]) -> dict[str, str]:
    """Settings from `pip config list` lines (`global.cert='...'`) and PIP_* variables; later wins."""
    settings = {}
    for line in listing.splitlines():
        match = re.match(r"^(?::env:|[a-z]+)\.([a-z0-9-]+)='(.*)'$", line.strip())
        if match:
            settings[match.group(1)] = match.group(2)
    for name, value in environ.items():
        if name.startswith("PIP_"):
            settings[name[4:].lower().replace("_", "-")] = value
    return settings


def settings_for_rootfs(settings: dict[str, str], root: Path) -> tuple[dict[str, str], list[str]]:
    """Keep what works inside the rootfs; return (kept settings, one line per dropped value and why)."""
    kept, dropped = {}, []
    for key, value in settings.items():
        if key in PATH_KEYS:
            dropped.append(f"{key}={value}: a host file, absent in the rootfs")
            continue
        if key in INDEX_KEYS:
            remote = [url for url in value.split() if not url.startswith("file:")]
            dropped += [f"{key}={url}: a host folder" for url in value.split() if url not in remote]
            value = " ".join(remote)
        elif key in ("cert", "client-cert") and not (root / value.lstrip("/")).is_file():
            dropped.append(f"{key}={value}: not copied into the rootfs")
            continue
        if value:
            kept[key] = value
    return kept, dropped


def render_pip_conf(kept: dict[str, str], dropped: list[str]) -> str:
    """A pip.conf [global] section, with the dropped host settings listed as comments."""
    lines = ["# Written by benchmarks/pi-emulated/run.sh from the host's pip settings."]
    lines += [f"# dropped {line}" for line in dropped]
    lines += ["[global]"] + [f"{key} = {value}" for key, value in sorted(kept.items())]
    return "\n".join(lines) + "\n"


def pick_evenly(names: list[str], count: int) -> list[str]:
    """`count` names spread evenly over the sorted list (so every class folder is likely represented)."""
    if count < 1:
        raise ValueError(f"got {count} images to pick, expected at least 1")
    ordered = sorted(names)
    if len(ordered) <= count:
        return ordered
    step = len(ordered) / count
    return [ordered[int(index * step)] for index in range(count)]


def list_images(folder: Path) -> list[str]:
    """Image files under folder, as POSIX paths relative to it (allx's own notion of an image file)."""
    from allx.images import is_image_file  # host side only: the guest never runs this

    return [path.relative_to(folder).as_posix() for path in folder.rglob("*") if is_image_file(path)]


def describe_wheels(names: list[str]) -> list[str]:
    """`name version tags` of installed distributions, from their WHEEL metadata (the tags pip chose)."""
    from email.parser import Parser
    from importlib import metadata

    lines = []
    for name in names:
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            lines.append(f"{name} not installed")
            continue
        wheel = Parser().parsestr(dist.read_text("WHEEL") or "")
        lines.append(f"{name} {dist.version} {','.join(wheel.get_all('Tag') or ['?'])}")
    return lines


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    cpuinfo = commands.add_parser("cpuinfo", help="print an ARM /proc/cpuinfo")
    cpuinfo.add_argument("core", choices=sorted(CORES))
    cpuinfo.add_argument("--cpus", type=int, default=os.cpu_count() or 1, help="cores to list")
    mirror = commands.add_parser("mirror", help="print the Debian mirror of these apt source files")
    mirror.add_argument("files", nargs="*", type=Path)
    pip_conf = commands.add_parser("pip-conf", help="`pip config list` on stdin -> pip.conf for the rootfs")
    pip_conf.add_argument("--root", type=Path, required=True, help="the rootfs the CA bundle was copied into")
    pick = commands.add_parser("pick-images", help="print up to COUNT image paths under a folder, relative")
    pick.add_argument("folder", type=Path)
    pick.add_argument("--count", type=int, default=8)
    commands.add_parser("hwcaps", help="print the CPU features this process is told about (arm64 AT_HWCAP)")
    wheels = commands.add_parser("wheel-tags", help="print name, version and wheel tags of distributions")
    wheels.add_argument("names", nargs="+")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "cpuinfo":
            sys.stdout.write(make_cpuinfo(args.core, args.cpus))
        elif args.command == "mirror":
            sources = {str(path): path.read_text() for path in args.files if path.is_file()}
            print(find_debian_mirror(sources))
        elif args.command == "pick-images":
            sys.stdout.write("".join(f"{name}\n" for name in pick_evenly(list_images(args.folder), args.count)))
        elif args.command == "hwcaps":
            print(" ".join(decode_hwcaps(read_hwcaps())))
        elif args.command == "wheel-tags":
            print("\n".join(describe_wheels(args.names)))
        else:
            settings = parse_pip_config(sys.stdin.read(), dict(os.environ))
            sys.stdout.write(render_pip_conf(*settings_for_rootfs(settings, args.root)))
    except (OSError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
