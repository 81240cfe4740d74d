"""Forward-secure sealing of the audit log, after systemd-journald's Forward Secure Sealing and RFC 5848.

Each log has a sealing key on the device, in a file of mode 0600 in the user's config folder (never the
log's folder). Every write to the log ends with a seal: an HMAC-SHA256 of the chain's head (row id and
hash) under the key of the seal's epoch, stored in the log. Then the key moves forward,
k(i+1) = HKDF-SHA256(k(i)), and the file holding k(i) is replaced: the device keeps only the key of the
last seal. So:
- someone who can write the log file but not read the key cannot make a seal, and any edit, deletion,
  added row or emptied file no longer matches the last seal (or the key's epoch);
- a verification key (log id, epoch e, k(e)) printed once by `allx-edge log setup-keys` and kept off the
  device derives every later key, so it checks every seal from e on. Someone with root on the device later
  learns only the current key: the seals made before it stay provable.
The spool (rows that waited for a locked log) is authenticated with a second, fixed key of the same file.
"""

from __future__ import annotations

import contextlib
import fcntl
import hmac
import json
import os
import secrets
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterator

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from allx import layout
from allx.errors import DataError, UsageError
from allx.files import write_atomic

KEY_KIND = "allx-audit-sealing-key"
VERIFY_PREFIX = "allx-vk1"
KEY_BYTES = 32
EVOLVE_INFO = b"allx audit log: next sealing key"


def evolve(key: bytes, steps: int = 1) -> bytes:
    """The sealing key `steps` epochs later: HKDF-SHA256, one way, so a later key never gives an earlier one."""
    for _ in range(steps):
        key = HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=EVOLVE_INFO).derive(key)
    return key


def mac(key: bytes, data: dict) -> str:
    """HMAC-SHA256 (hex) of the canonical JSON of `data`."""
    text = json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(key, text.encode("utf-8"), "sha256").hexdigest()


def seal_tag(key: bytes, log_id: str, seal: dict) -> str:
    """The tag of a seal: what it says (epoch, head row and hash, time) bound to its log and key."""
    return mac(key, {"log_id": log_id, **{name: seal[name] for name in ("epoch", "head_id", "head_hash", "time_utc")}})


def tag_matches(key: bytes, log_id: str, seal: dict) -> bool:
    return hmac.compare_digest(seal_tag(key, log_id, seal), str(seal.get("tag", "")))


@dataclass(frozen=True)
class SealingKey:
    """A log's key file: the current sealing key (epoch = the log's last seal) and the spool's key."""

    path: Path
    log_id: str
    log_path: str
    epoch: int
    key: bytes
    spool_key: bytes
    exported_epoch: int | None = None  # the epoch a verification key was printed at

    def to_json(self) -> str:
        return json.dumps({"kind": KEY_KIND, "log_id": self.log_id, "log_path": self.log_path, "epoch": self.epoch,
                           "key": self.key.hex(), "spool_key": self.spool_key.hex(),
                           "exported_epoch": self.exported_epoch}, indent=2) + "\n"

    def forward(self) -> "SealingKey":
        return replace(self, epoch=self.epoch + 1, key=evolve(self.key))


def key_path(key_dir: Path, log_id: str) -> Path:
    return Path(key_dir) / layout.AUDIT_KEY.format(log_id=log_id)


def new_key(key_dir: Path, log_id: str, log_path: Path) -> SealingKey:
    """A fresh key at epoch 0 for a new log (written at once, before the log names it)."""
    key = SealingKey(key_path(key_dir, log_id), log_id, str(log_path), 0, secrets.token_bytes(KEY_BYTES),
                     secrets.token_bytes(KEY_BYTES))
    save_key(key)
    return key


def save_key(key: SealingKey) -> None:
    """Replace the key file (0600, folder 0700): the previous key is gone with the previous file."""
    try:
        key.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(key.path, key.to_json(), mode=0o600)
    except OSError as err:
        raise DataError(f"{key.path}: cannot write the audit log's sealing key ({err.strerror or err}), expected a "
                        "writable key folder") from None


def read_key(key_dir: Path, log_id: str) -> SealingKey | None:
    """The log's key file, or None when there is none (off the device, say); a bad file is a DataError."""
    path = key_path(key_dir, log_id)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("kind") != KEY_KIND or data.get("log_id") != log_id:
            raise ValueError(f"kind {data.get('kind')!r}, log {data.get('log_id')!r}")
        return SealingKey(path, log_id, str(data["log_path"]), int(data["epoch"]), bytes.fromhex(data["key"]),
                          bytes.fromhex(data["spool_key"]), data.get("exported_epoch"))
    except FileNotFoundError:
        return None
    except OSError as err:
        raise DataError(f"{path}: cannot read the audit log's sealing key ({err.strerror or err}), expected a "
                        "file this user can read") from None
    except (ValueError, KeyError, TypeError, AttributeError) as err:
        raise DataError(f"{path}: got a damaged sealing key ({err}), expected the key file allx-edge wrote") from None


def keys_naming(key_dir: Path, log_path: Path) -> list[SealingKey]:
    """Keys in `key_dir` of logs that lived at `log_path` and were written to (epoch > 0)."""
    found = []
    for path in sorted(Path(key_dir).glob(layout.AUDIT_KEY.format(log_id="*"))):
        try:
            key = read_key(key_dir, path.stem)
        except DataError:
            continue
        if key is not None and key.epoch > 0 and key.log_path == str(log_path):
            found.append(key)
    return found


@contextlib.contextmanager
def key_lock(key_dir: Path, log_id: str) -> Iterator[None]:
    """One writer at a time moves a log's key forward (taken inside the log's write lock, so never waits long)."""
    path = Path(key_dir) / layout.AUDIT_KEY_LOCK.format(log_id=log_id)
    try:
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o600)
    except OSError as err:
        raise DataError(f"{path}: cannot lock the audit log's sealing key ({err.strerror or err}), expected a "
                        "writable key folder") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


@dataclass(frozen=True)
class VerifyKey:
    """What `allx-edge log setup-keys` prints: a log's key at one epoch, kept off the device."""

    log_id: str
    epoch: int
    key: bytes

    def __str__(self) -> str:
        return f"{VERIFY_PREFIX}:{self.log_id}:{self.epoch}:{self.key.hex()}"

    def key_at(self, epoch: int) -> bytes:
        return evolve(self.key, epoch - self.epoch)


def parse_verify_key(text: str) -> VerifyKey:
    """A verification key as printed, or the file it was written to; anything else is a UsageError."""
    text = str(text).strip()
    if not text.startswith(VERIFY_PREFIX) and Path(text).is_file():
        text = Path(text).read_text(encoding="utf-8").strip()
    parts = text.split(":")
    try:
        if len(parts) != 4 or parts[0] != VERIFY_PREFIX or len(parts[3]) != 2 * KEY_BYTES or not parts[2].isdigit():
            raise ValueError
        return VerifyKey(parts[1], int(parts[2]), bytes.fromhex(parts[3]))
    except ValueError:
        raise UsageError(f"--verify-key: got {text[:24]!r}..., expected {VERIFY_PREFIX}:LOG_ID:EPOCH:KEY as "
                         "`allx-edge log setup-keys` printed it (or the file it wrote)") from None


# --- what verify says about the seals (each problem names the rows or seals it is about) ---

def verify_key_problems(seals: list[dict], verify_key: VerifyKey, log_id: str) -> list[str]:
    """Every seal from the verification key's epoch on must carry that epoch's tag."""
    if verify_key.log_id != log_id:
        raise UsageError(f"--verify-key: got a key of log {verify_key.log_id}, expected one of this log "
                         f"({log_id})")
    checked = [item for item in seals if item["epoch"] >= verify_key.epoch]
    if not checked:
        return [f"{seals_named(seals[-1]['epoch'] + 1, verify_key.epoch)}: deleted (the verification key starts "
                f"at seal {verify_key.epoch}, the log's last seal is {seals[-1]['epoch']}): rows were cut from the end"]
    epoch, key = verify_key.epoch, verify_key.key
    for item in checked:
        key, epoch = evolve(key, item["epoch"] - epoch), item["epoch"]
        if not tag_matches(key, log_id, item):
            return [f"seal {item['epoch']}: forged (its tag does not match the verification key): the rows it "
                    "covers were rewritten by someone who had the device's later key"]
    return []


def gap_problems(seals: list[dict]) -> list[str]:
    return [f"{seals_named(before['epoch'] + 1, after['epoch'] - 1)}: deleted" for before, after in zip(seals, seals[1:])
            if after["epoch"] != before["epoch"] + 1]


def chain_seal_problems(seals: list[dict], hashes: dict[int, str], last_id: int, pinpoint: bool) -> list[str]:
    """The chain against what the seals recorded: rows cut from the end, added after the last seal, or
    (`pinpoint`: when the chain itself names no row) rewritten with the chain recomputed, named from the
    first seal whose row no longer has its hash."""
    last = seals[-1]
    if last["head_id"] > last_id:
        return [f"{rows_named(last_id + 1, last['head_id'])}: deleted (seal {last['epoch']} covers row "
                f"{last['head_id']}, the last row left is {last_id})"]
    problems = []
    changed = next((item for item in seals if item["head_id"] in hashes and hashes[item["head_id"]] != item["head_hash"]),
                   None) if pinpoint else None
    if changed is not None:
        problems.append(f"row {changed['head_id']}: changed after it was sealed (seal {changed['epoch']} holds "
                        "another hash): rows were rewritten and the hash chain recomputed")
    if last["head_id"] < last_id:
        problems.append(f"{rows_named(last['head_id'] + 1, last_id)}: not sealed (added without the sealing key)")
    return problems


def device_key_problems(last: dict, key: SealingKey, log_id: str) -> list[str]:
    """The last seal against this device's key: made with it (or with the next one, when a writer stopped
    between its commit and its key move), and not older than the key (seals and rows cut from the end)."""
    if last["epoch"] < key.epoch:
        return [f"{seals_named(last['epoch'] + 1, key.epoch)}: deleted (the sealing key is at seal {key.epoch}, the "
                f"log's last seal is {last['epoch']}): rows were cut from the end"]
    if last["epoch"] == key.epoch and tag_matches(key.key, log_id, last):
        return []
    if last["epoch"] == key.epoch + 1 and tag_matches(evolve(key.key), log_id, last):
        return []
    return [f"seal {last['epoch']}: forged (its tag does not match this device's sealing key)"]


def seals_named(first: int, last: int) -> str:
    return f"seal {first}" if first == last else f"seals {first}-{last}"


def rows_named(first: int, last: int) -> str:
    return f"row {first}" if first == last else f"rows {first}-{last}"
