"""The fault cases' workspace is the template again after any case, however it changed it."""

from __future__ import annotations

import os
from pathlib import Path

from tests.faults.workspace import fresh


def tree(root: Path) -> dict[str, tuple]:
    """Every entry: kind, then the inode (linked files), bytes (copied ones) or mtime (dirs)."""
    out: dict[str, tuple] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs:
            p = Path(folder, name)
            out[str(p.relative_to(root))] = ("dir", p.stat().st_mtime_ns)
        for name in files:
            p = Path(folder, name)
            if p.is_symlink():
                out[str(p.relative_to(root))] = ("link", os.readlink(p))
            elif p.suffix in (".jsonl", ".txt"):
                out[str(p.relative_to(root))] = ("copy", p.read_bytes(), p.stat().st_mtime_ns)
            else:
                out[str(p.relative_to(root))] = ("file", p.stat().st_ino)
    return out


def test_a_workspace_is_reset_to_the_template(tmp_path):
    template = tmp_path / "template"
    for video in ("a/v1", "a/v2", "b/v3"):
        (template / "data" / video).mkdir(parents=True)
        for i in range(3):
            (template / "data" / video / f"{i:08d}.jpg").write_bytes(b"frame %d" % i)
    (template / "runs").mkdir()
    (template / "runs" / "metrics.jsonl").write_text('{"task": 1}\n')
    (template / "runs" / "manifest.json").write_text("{}")
    (template / "runs" / "latest").symlink_to("manifest.json")
    os.utime(template / "data" / "a" / "v1", ns=(1, 10**18))
    want = tree(template)

    ws = fresh(template)
    assert tree(ws.root) == want
    r = ws.root
    (r / "data" / "a" / "v1" / "00000000.jpg").unlink()  # a removed frame
    (r / "data" / "b" / "v3" / "00000001.jpg").unlink()
    (r / "data" / "b" / "v3" / "00000001.jpg").write_bytes(b"other")  # a replaced one (new inode)
    (r / "data" / "b" / "v3" / "extra.jpg").write_bytes(b"x")  # an added one
    (r / "data" / "b" / "v9").mkdir()  # an added video
    os.rename(r / "data" / "a", r / "moved")  # a class folder gone
    with open(r / "runs" / "metrics.jsonl", "a") as fh:  # appended in place
        fh.write('{"task": 2}\n')
    (r / "runs" / "latest").unlink()
    (r / "runs" / "latest").mkdir()  # a link become a folder
    (r / "runs" / "manifest.json").unlink()  # a finished mark removed
    (r / "runs" / "new.tmp-1").write_text("left behind")

    again = fresh(template)
    assert again.root == ws.root
    assert tree(again.root) == want
    assert tree(template) == want  # the template itself untouched
