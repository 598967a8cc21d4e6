"""Datasets: roots, split files, frames and videos, checked by `mkd data check`, by the
data stage of `mkd run` (before any teacher trains) and by `mkd data import`."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

from tests.faults.table import FINISHED, Case
from tests.faults.workspace import Workspace

#: a broken dataset copy lives at <ws>/bad; it must not be altered either
BAD = (*FINISHED, "bad/**")
#: the data stage may fail, but no teacher may start on bad data
NO_TEACHER = ("runs/stages/*/*/manifest.json", "runs/stages/teacher/*")
CHECK = ("data", "check", "{ws}/bad", "--split", "synth", "--frames", "4")
RUN_BAD = ("run", "{cfg}", "--set", "data.root={ws}/bad", "--set", "data.synth=null", "--stages", "teacher:rgb")


def first_video(root: Path, which: str = "train") -> tuple[str, str]:
    """(class, video) of the first line of a split file."""
    line = (root / "splits" / "synth" / f"{which}list03.txt").read_text().splitlines()[0]
    cls, video = line.strip().split("/")
    return cls, video


def on_bad(edit: Callable[[Workspace, Path], None]) -> Callable[[Workspace], None]:
    """Copy the dataset to <ws>/bad, then apply ``edit(ws, bad_root)``."""
    def setup(ws: Workspace) -> None:
        edit(ws, ws.bad_copy())
    return setup


def _frame(how: str, index: int = 1):
    def edit(ws: Workspace, root: Path) -> None:
        cls, video = first_video(root)
        ws.corrupt(root / "rgb_l8" / cls / video / f"{index:08d}.jpg", how)
    return edit


def _keep_frames(n: int):
    def edit(ws: Workspace, root: Path) -> None:
        cls, video = first_video(root)
        for mod in root.glob("*_l8"):  # every modality, so the only problem is the frame count
            for p in sorted((mod / cls / video).glob("*"))[n:]:
                p.unlink()
    return edit


def _split(which: str, text: bytes | str | None, append: bool = False):
    def edit(ws: Workspace, root: Path) -> None:
        path = root / "splits" / "synth" / f"{which}list03.txt"
        if text is None:
            path.unlink()
            return
        data = text.encode() if isinstance(text, str) else text
        ws.write(path, (path.read_bytes() + data) if append else data)
    return edit


def _spaces(ws: Workspace, root: Path) -> None:
    """Class folders named with spaces, listed with spaces: they must match."""
    cls, _ = first_video(root)
    spaced = cls.replace("_", " ") + " x"
    for mod in root.glob("*_l8"):
        if (mod / cls).is_dir():
            (mod / cls).rename(mod / spaced)
    for split in (root / "splits" / "synth").glob("*.txt"):
        lines = [spaced + line[len(cls):] if line.startswith(cls + "/") else line for line in split.read_text().splitlines()]
        ws.write(split, "\n".join(lines) + "\n")


def _upper(ws: Workspace, root: Path) -> None:
    split = root / "splits" / "synth" / "trainlist03.txt"
    ws.write(split, split.read_text().upper())


def _empty_class(ws: Workspace, root: Path) -> None:
    cls, _ = first_video(root)
    for v in (root / "rgb_l8" / cls).iterdir():
        for f in v.iterdir():
            f.unlink()
        v.rmdir()


def _empty_dir(name: str):
    def setup(ws: Workspace) -> None:
        (ws.root / name).mkdir()
    return setup


def _fake_video(ws: Workspace) -> None:
    ws.write(ws.root / "videos" / "clap" / "v1.mp4", b"not a video at all\n" * 10)


CASES = [
    # ------------------------------------------------------------------ data
    Case("data-root-missing", "data", "`mkd data check` on a folder that does not exist",
         "Names the folder", argv=("data", "check", "{ws}/nowhere"), expect_in_error="nowhere"),
    Case("data-no-rgb-dir", "data", "`mkd data check` on an empty folder (no `rgb_l8/`)",
         "Names the folder and the layout it expects", argv=("data", "check", "{ws}/empty"), setup=_empty_dir("empty"),
         expect_in_error="empty"),
    Case("run-data-root-missing", "data", "`mkd run` with `data.root` pointing nowhere (no synth section)",
         "Fails in the data stage, naming the root; no teacher starts",
         argv=("run", "{cfg}", "--set", "data.root={ws}/nowhere", "--set", "data.synth=null", "--stages", "teacher:rgb"),
         expect_in_error="nowhere", forbid_new=NO_TEACHER),
    Case("import-no-videos", "videos", "`mkd data import` of a folder with no videos",
         "Fails: nothing to import (today: exit 0)", argv=("data", "import", "{ws}/empty", "--out", "{ws}/imported"),
         setup=_empty_dir("empty"), expect_in_error="empty"),
    Case("import-missing-dir", "videos", "`mkd data import` of a folder that does not exist",
         "Names the folder", argv=("data", "import", "{ws}/novideos", "--out", "{ws}/imported"), expect_in_error="novideos"),
    Case("import-not-a-video", "videos", "`mkd data import` of a `.mp4` that holds text",
         "Lists it as failed (one line naming the file, exit 1); imports nothing as if it were good",
         argv=("data", "import", "{ws}/videos", "--out", "{ws}/imported"), setup=_fake_video, expect_in_error="v1.mp4",
         expect_exit=1, error_prefix="failed:",
         forbid_new=("imported/rgb_l8/*/*/*",)),
    # ---------------------------------------------------------------- splits
    Case("split-empty", "splits", "Empty `trainlist03.txt`",
         "`mkd data check` reports the empty split file (today: OK)", argv=CHECK, setup=on_bad(_split("train", "")),
         expect_exit=1, expect_in_error="trainlist03", protected=BAD),
    Case("split-empty-run", "splits", "Empty `trainlist03.txt`, then `mkd run`",
         "Fails in the data stage naming the file; no teacher starts", argv=RUN_BAD, setup=on_bad(_split("train", "")),
         expect_in_error="train", protected=BAD, forbid_new=NO_TEACHER),
    Case("split-missing", "splits", "`testlist03.txt` deleted, then `mkd run`",
         "Names the missing split file; no teacher starts", argv=RUN_BAD, setup=on_bad(_split("test", None)),
         expect_in_error="testlist03", protected=BAD, forbid_new=NO_TEACHER),
    Case("split-unknown-video", "splits", "A split line naming a video that is not on disk",
         "Names the video; no teacher starts", argv=RUN_BAD, setup=on_bad(_split("train", "clap/v999\n", append=True)),
         expect_in_error="v999", protected=BAD, forbid_new=NO_TEACHER),
    Case("split-not-utf8", "splits", "A split file with Latin-1 bytes",
         "Names the file and says it is not UTF-8", argv=RUN_BAD,
         setup=on_bad(_split("train", b"caf\xe9/v000\n", append=True)), expect_in_error="trainlist03", protected=BAD,
         forbid_new=NO_TEACHER),
    Case("split-line-traversal", "splits", "A split line `../../../etc/passwd`",
         "Refuses the line (names are not paths); nothing outside the root is read", argv=RUN_BAD,
         setup=on_bad(_split("train", "../../../etc/passwd\n", append=True)), protected=BAD, forbid_new=NO_TEACHER),
    Case("split-line-absolute", "splits", "A split line `/etc/passwd`",
         "Refuses the line", argv=RUN_BAD, setup=on_bad(_split("train", "/etc/passwd\n", append=True)), protected=BAD,
         forbid_new=NO_TEACHER),
    Case("split-class-spaces", "splits", "Class folders named with spaces, listed with spaces",
         "They match: `mkd data check` is OK (today: never matched)", argv=CHECK, setup=on_bad(_spaces),
         expect_exit=0, protected=BAD),
    Case("split-case-insensitive", "splits", "Split lines in upper case",
         "They match the folders case-insensitively: OK", argv=CHECK, setup=on_bad(_upper), expect_exit=0, protected=BAD),
    # ---------------------------------------------------------------- frames
    Case("frame-zero-byte", "frames", "One zero-byte frame, `mkd data check`",
         "Names the frame", argv=CHECK, setup=on_bad(_frame("empty")), expect_exit=1, expect_in_error="00000001.jpg",
         protected=BAD),
    Case("frame-truncated", "frames", "One truncated JPEG, `mkd data check`",
         "Names the frame", argv=CHECK, setup=on_bad(_frame("truncate", 3)), expect_exit=1, expect_in_error="00000003.jpg",
         protected=BAD),
    Case("frame-not-image", "frames", "One frame that is a text file, `mkd data check`",
         "Names the frame", argv=CHECK, setup=on_bad(_frame("text", 2)), expect_exit=1, expect_in_error="00000002.jpg",
         protected=BAD),
    Case("frame-zero-byte-run", "frames", "One zero-byte frame, then `mkd run`",
         "The data stage decodes every frame and names it; no teacher starts (today: failed at features, after training)",
         argv=RUN_BAD, setup=on_bad(_frame("empty")), expect_in_error="00000001.jpg", protected=BAD, forbid_new=NO_TEACHER),
    Case("frame-truncated-run", "frames", "One truncated JPEG, then `mkd run`",
         "Named by the data stage; no teacher starts", argv=RUN_BAD, setup=on_bad(_frame("truncate", 5)),
         expect_in_error="00000005.jpg", protected=BAD, forbid_new=NO_TEACHER),
    Case("frame-not-image-run", "frames", "One frame that is a text file, then `mkd run`",
         "Named by the data stage; no teacher starts", argv=RUN_BAD, setup=on_bad(_frame("garbage", 8)),
         expect_in_error="00000008.jpg", protected=BAD, forbid_new=NO_TEACHER),
    # ---------------------------------------------------------------- videos
    Case("video-too-few-frames", "videos", "A video with 2 frames (4 needed), `mkd data check`",
         "Names the video", argv=CHECK, setup=on_bad(_keep_frames(2)), expect_exit=1, expect_in_error="v0",
         protected=BAD),
    Case("video-too-few-frames-run", "videos", "A video with 2 frames (4 needed), then `mkd run`",
         "Named by the data stage; no teacher starts", argv=RUN_BAD, setup=on_bad(_keep_frames(2)),
         expect_in_error="v0", protected=BAD, forbid_new=NO_TEACHER),
    Case("video-no-frames-run", "videos", "A listed video folder with no frames, then `mkd run`",
         "Named by the data stage; no teacher starts", argv=RUN_BAD, setup=on_bad(_keep_frames(0)),
         expect_in_error="v0", protected=BAD, forbid_new=NO_TEACHER),
    Case("class-empty-run", "videos", "A listed class whose folder holds no videos, then `mkd run`",
         "Names the missing videos; no teacher starts", argv=RUN_BAD, setup=on_bad(_empty_class),
         protected=BAD, forbid_new=NO_TEACHER),
]
