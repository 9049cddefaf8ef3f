"""Front-end libraries that ship inside installed Python packages, as static files.

plotly.js comes with the ``plotly`` package (``plotly/package_data/plotly.min.js``): this finder
exposes that one file as ``vendor/plotly.min.js``, so ``collectstatic`` copies, hashes and
compresses it with the project's own files and WhiteNoise serves it. Nothing is downloaded (the
machines have no internet) and nothing is copied by hand; the version is the installed package's.
Only the named files are exposed, not the rest of a package's data folder.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import plotly
from django.contrib.staticfiles.finders import BaseFinder
from django.core.checks import CheckMessage, Error
from django.core.files.storage import FileSystemStorage

PREFIX = "vendor"
#: Files inside installed packages, served as ``vendor/<file name>``.
VENDORED: dict[str, Path] = {
    path.name: path for path in [Path(plotly.__file__).parent / "package_data" / "plotly.min.js"]
}


class _PrefixedStorage(FileSystemStorage):
    """A storage over one package folder, listed under ``vendor/`` (collectstatic and WhiteNoise
    read ``prefix`` as FileSystemFinder's prefixed STATICFILES_DIRS set it)."""

    prefix = PREFIX


class VendorFinder(BaseFinder):
    def check(self, **kwargs: Any) -> list[CheckMessage]:
        return [
            Error(f"vendored static file {name} is missing: {path}", id="refrain.E101")
            for name, path in VENDORED.items()
            if not path.is_file()
        ]

    def find(self, path: str, find_all: bool = False, **kwargs: Any) -> str | list[str]:
        name = path.removeprefix(f"{PREFIX}/") if path.startswith(f"{PREFIX}/") else None
        source = VENDORED.get(name) if name else None
        if source is None or not source.is_file():
            return [] if find_all else ""
        return [str(source)] if find_all else str(source)

    def list(self, ignore_patterns: Any) -> Iterator[tuple[str, FileSystemStorage]]:
        for name, path in VENDORED.items():
            yield name, _PrefixedStorage(location=str(path.parent))
