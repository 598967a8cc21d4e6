"""Files earlier stages wrote: features, checkpoints, model folders, results, manifests.

A corrupt file of a finished stage must give one line naming the file and the remedy,
and must not be deleted or rewritten behind the user's back (they may want to inspect
it); the other finished stages stay as they were.
"""

from __future__ import annotations

import io

import numpy as np

from tests.faults.table import Case
from tests.faults.workspace import Workspace

FUSE = ("run", "{cfg}", "--stages", "fuse", "--force", "fuse")
BASELINE = ("run", "{cfg}", "--stages", "student:baseline")
EVAL = ("eval", "@student:lite-mkd", "--episodes", "{episodes}")
#: what a rerun of an unfinished stage may append to before it fails
STAGE_LOGS = ("@student:baseline/log.txt", "@student:baseline/metrics.jsonl")


def _feature(ws: Workspace, stage: str = "features:rgb"):
    return sorted((ws.stage(stage) / "features").rglob("*.npy"))[0]


def _features(how: str):
    def setup(ws: Workspace) -> None:
        path = _feature(ws)
        if how == "missing":
            path.unlink()
        elif how == "shape":
            buf = io.BytesIO()
            np.save(buf, np.zeros((2, 3), dtype=np.float32))
            ws.write(path, buf.getvalue())
        else:
            ws.corrupt(path, how)
    return setup


def _ckpt(how: str, stage: str = "student:baseline"):
    def setup(ws: Workspace) -> None:
        d = ws.unfinish(stage)
        if how == "foreign":
            ws.write(d / "checkpoints" / "last.pt", (ws.stage("fuse") / "checkpoints" / "last.pt").read_bytes())
        else:
            ws.corrupt(d / "checkpoints" / "last.pt", how)
    return setup


def _model(name: str, how: str, stage: str = "student:lite-mkd", unfinish: str | None = None):
    def setup(ws: Workspace) -> None:
        if unfinish:
            ws.unfinish(unfinish)
        path = ws.stage(stage) / "model" / name
        if how == "missing":
            path.unlink()
        else:
            ws.corrupt(path, how)
    return setup


def _results(how: str):
    def setup(ws: Workspace) -> None:
        path = ws.runs / "smoke" / "results.json"
        if how == "foreign":
            ws.write(path, "[1, 2, 3]\n")
        else:
            ws.corrupt(path, how)
    return setup


def _episodes(how: str):
    def setup(ws: Workspace) -> None:
        ws.corrupt(ws.episodes, how)
    return setup


def _manifest(ws: Workspace) -> None:
    ws.corrupt(ws.stage("teacher:rgb") / "manifest.json", "truncate")


CASES = [
    # -------------------------------------------------------------- features
    Case("features-garbage", "features", "A teacher feature file (`.npy`) overwritten with junk, then the fuse stage reads it",
         "Names the feature file and the stage that wrote it", argv=FUSE, setup=_features("garbage"), expect_in_error="v0",
         unprotected=("@fuse",)),
    Case("features-truncated", "features", "A feature file cut in half", "Names the feature file",
         argv=FUSE, setup=_features("truncate"), expect_in_error="v0", unprotected=("@fuse",)),
    Case("features-wrong-shape", "features", "A feature file of shape (2, 3) instead of (T, D)",
         "Names the video and both shapes", argv=FUSE, setup=_features("shape"), expect_in_error="v0", unprotected=("@fuse",)),
    Case("features-missing", "features", "A feature file deleted", "Names the missing video",
         argv=FUSE, setup=_features("missing"), expect_in_error="v0", unprotected=("@fuse",)),
    # ----------------------------------------------------------- checkpoints
    Case("ckpt-garbage", "checkpoints", "`checkpoints/last.pt` of an unfinished stage overwritten with junk",
         "Names last.pt and the remedy (delete it to start the stage over); leaves it in place",
         argv=BASELINE, setup=_ckpt("garbage"), expect_in_error="last.pt", unprotected=STAGE_LOGS),
    Case("ckpt-truncated", "checkpoints", "`last.pt` cut in half (a crash while copying)",
         "Names last.pt and the remedy", argv=BASELINE, setup=_ckpt("truncate"), expect_in_error="last.pt",
         unprotected=STAGE_LOGS),
    Case("ckpt-empty", "checkpoints", "`last.pt` of zero bytes", "Names last.pt and the remedy",
         argv=BASELINE, setup=_ckpt("empty"), expect_in_error="last.pt", unprotected=STAGE_LOGS),
    Case("ckpt-text", "checkpoints", "`last.pt` holding text (torch's error is several lines)",
         "One line naming last.pt, not torch's multi-line text", argv=BASELINE, setup=_ckpt("text"),
         expect_in_error="last.pt", unprotected=STAGE_LOGS),
    Case("ckpt-foreign", "checkpoints", "`last.pt` of another stage (the fuse stage's) copied over the student's",
         "Says the checkpoint does not fit this stage, naming it", argv=BASELINE, setup=_ckpt("foreign"),
         expect_in_error="last.pt", unprotected=STAGE_LOGS),
    # ---------------------------------------------------------------- models
    Case("model-weights-garbage-eval", "models", "A finished student's `model/model.safetensors` overwritten with junk, `mkd eval`",
         "Names model.safetensors and the remedy", argv=EVAL, setup=_model("model.safetensors", "garbage"), expect_in_error="model.safetensors"),
    Case("model-weights-truncated-eval", "models", "`model.safetensors` cut in half, `mkd eval`", "Names model.safetensors",
         argv=EVAL, setup=_model("model.safetensors", "truncate"), expect_in_error="model.safetensors"),
    Case("model-json-garbage-eval", "models", "`model/model.json` overwritten with junk, `mkd eval`",
         "Names model.json", argv=EVAL, setup=_model("model.json", "garbage"), expect_in_error="model.json"),
    Case("model-json-missing-eval", "models", "`model.json` deleted, `mkd eval`",
         "Says there is no model card there", argv=EVAL, setup=_model("model.json", "missing"), expect_in_error="model.json"),
    Case("model-dir-missing-eval", "models", "`mkd eval` of a folder that does not exist",
         "Names the folder", argv=("eval", "{ws}/nomodel", "--episodes", "{episodes}"), expect_in_error="nomodel"),
    Case("model-weights-garbage-run", "models", "A finished student's `model.safetensors` junk, then the evaluate stage reads it",
         "Names model.safetensors; no results are written", argv=("run", "{cfg}", "--stages", "evaluate"),
         setup=_model("model.safetensors", "garbage", unfinish="evaluate"), expect_in_error="model.safetensors",
         unprotected=("@evaluate/log.txt",)),
    Case("model-json-garbage-run", "models", "A finished teacher's `model.json` junk, then the features stage reads it",
         "Names model.json", argv=("run", "{cfg}", "--stages", "features:rgb"),
         setup=_model("model.json", "text", stage="teacher:rgb", unfinish="features:rgb"), expect_in_error="model.json",
         unprotected=("@features:rgb/log.txt",)),
    Case("episodes-garbage", "models", "`mkd eval --episodes` of a junk episode file", "Names the episode file",
         argv=EVAL, setup=_episodes("garbage"), expect_in_error="episodes.json"),
    Case("episodes-missing", "models", "`mkd eval --episodes` of a file that does not exist", "Names the file",
         argv=("eval", "@student:lite-mkd", "--episodes", "{ws}/none.json"), expect_in_error="none.json"),
    # --------------------------------------------------------------- results
    Case("results-garbage", "results", "`runs/smoke/results.json` overwritten with junk, `mkd results`",
         "Names results.json", argv=("results", "{runs}"), setup=_results("garbage"), expect_in_error="results.json"),
    Case("results-not-utf8", "results", "`results.json` with Latin-1 bytes, `mkd results`",
         "Names results.json", argv=("results", "{runs}"), setup=_results("latin1"), expect_in_error="results.json"),
    Case("results-foreign", "results", "`results.json` holding a JSON list (another tool's file), `mkd results`",
         "Names results.json", argv=("results", "{runs}"), setup=_results("foreign"), expect_in_error="results.json"),
    Case("results-garbage-run", "results", "`results.json` junk, then `mkd run` of the finished experiment",
         "Names results.json (the report it prints from)", argv=("run", "{cfg}"), setup=_results("truncate"),
         expect_in_error="results.json"),
    Case("manifest-truncated", "results", "A finished stage's `manifest.json` cut in half, `mkd run --list`",
         "The stage is listed as not done (it will be redone), no traceback; the file is left as it was",
         argv=("run", "{cfg}", "--list"), setup=_manifest, expect_exit=0),
]
