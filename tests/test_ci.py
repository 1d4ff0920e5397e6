"""CI refuses to run without its test data: .ci/check_data.sh on missing, partial and
complete (stand-in) data folders, and .ci/run calling it before the tests."""
from __future__ import annotations

import subprocess

from helpers import ROOT

CHECK = ROOT / ".ci" / "check_data.sh"
SPLITS = {"train": 367, "val": 101, "test": 233}
FILES = ("videos/udacity_lanelines_solidWhiteRight.mp4", "videos/camvid_0016E5_val_15fps.mp4",
         "videos/regions/udacity_lanelines_solidWhiteRight.json",
         *(f"weights/espnetv2_cityscapes/espnetv2_s_{w}_city_1024x512.pth"
           for w in ("0.5", "1.0", "1.5", "2.0")),
         "weights/mobilenetv1_0.25_imagenet/model_best.pth.tar")


def check(data) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(CHECK), str(data)], capture_output=True, text=True,
                          timeout=60)


def stand_in_data(root):
    """A data folder with every name the check looks for (stand-in contents)."""
    for split, n in SPLITS.items():
        for folder in (split, f"{split}annot"):
            (root / "camvid" / folder).mkdir(parents=True)
            for i in range(n):
                (root / "camvid" / folder / f"{i:04d}.png").write_bytes(b"png")
    for f in FILES:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"data")
    return root


def test_missing_data_folder_fails_in_one_line(tmp_path):
    r = check(tmp_path / "nope")
    assert r.returncode == 1 and r.stdout == ""
    assert r.stderr == (f"ci: error: test data folder {tmp_path / 'nope'} is missing (the tests "
                        f"need ../shared/data beside the checkout)\n")


def test_incomplete_data_fails_naming_the_first_gap(tmp_path):
    data = stand_in_data(tmp_path / "data")
    (data / "camvid" / "val" / "0007.png").unlink()
    (data / FILES[0]).write_bytes(b"")                      # empty counts as missing
    r = check(data)
    assert r.returncode == 1
    assert r.stderr == (f"ci: error: test data at {data} is incomplete: camvid/val has 100 of "
                        f"101 images (and 1 more problem(s))\n")


def test_complete_data_passes(tmp_path):
    r = check(stand_in_data(tmp_path / "data"))
    assert r.returncode == 0 and r.stderr == ""
    assert r.stdout == f"ci: test data complete at {tmp_path / 'data'}\n"


def test_ci_run_checks_the_data_before_the_tests():
    lines = [ln.strip() for ln in (ROOT / ".ci" / "run").read_text().splitlines()]
    assert lines.index(".ci/check_data.sh") < lines.index("python3 -m pytest -q tests")
