"""lidarseg.visualize (PNG writer, scan panels, IoU chart) and `lidarseg visualize` / `lidarseg evaluate --plot`."""
import re
import shutil
import struct
import zlib

import numpy as np
import pytest

from lidarseg.cli import main
from lidarseg.data.io import read_label, read_scan, write_label
from lidarseg.data.labels import LabelMap
from lidarseg.visualize import (ERROR_COLORS, GAP_COLOR, colormap, png_bytes, scan_panel, scan_strips,
                                stack_strips, write_png)

LM = LabelMap.from_yaml()
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def decode_png(data: bytes) -> np.ndarray:
    """A minimal decoder for 8-bit RGB PNGs with filter type 0 (what png_bytes writes) -> uint8 [H,W,3]."""
    assert data[:8] == PNG_SIGNATURE
    pos, chunks = 8, []
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length:pos + 12 + length])
        assert crc == zlib.crc32(kind + body) & 0xFFFFFFFF
        chunks.append((kind, body))
        pos += 12 + length
    assert [k for k, _ in chunks] == [b"IHDR", b"IDAT", b"IEND"]
    w, h, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", chunks[0][1])
    assert (depth, color, interlace) == (8, 2, 0)
    raw = np.frombuffer(zlib.decompress(chunks[1][1]), np.uint8).reshape(h, 1 + 3 * w)
    assert np.all(raw[:, 0] == 0)
    return raw[:, 1:].reshape(h, w, 3)


def reference_pixels(points, H, W, fov_up=3.0, fov_down=-25.0):
    """RangeNet++'s pixel of every point in float64 (unclamped coordinates u, v and clamped px, py [N])."""
    xyz = points[:, :3].astype(np.float64)
    depth = np.linalg.norm(xyz, axis=1)
    fu, fd = np.deg2rad(fov_up), np.deg2rad(fov_down)
    u = 0.5 * (-np.arctan2(xyz[:, 1], xyz[:, 0]) / np.pi + 1.0) * W
    v = (1.0 - (np.arcsin(xyz[:, 2] / depth) - fd) / (fu - fd)) * H
    px = np.clip(np.floor(u), 0, W - 1).astype(np.int64)
    py = np.clip(np.floor(v), 0, H - 1).astype(np.int64)
    return u, v, px, py


def nearest_per_pixel(px, py, depth, H, W):
    """Plain loop over the points: each pixel keeps the point of smallest range (the first among equal ranges)
    -> idx int64 [H,W], -1 where empty."""
    idx = np.full((H, W), -1, np.int64)
    for i, (r, c, d) in enumerate(zip(py.tolist(), px.tolist(), depth.tolist())):
        j = idx[r, c]
        if j < 0 or d < depth[j]:
            idx[r, c] = i
    return idx


# ------------------------------------------------------------------------------------------------------------
# image primitives

def test_png_bytes_decode_to_the_array(tmp_path):
    rgb = np.random.default_rng(0).integers(0, 256, (7, 5, 3), dtype=np.uint8)
    data = png_bytes(rgb)
    np.testing.assert_array_equal(decode_png(data), rgb)
    path = tmp_path / "sub" / "img.png"
    write_png(path, rgb)
    assert path.read_bytes() == data and [p.name for p in path.parent.iterdir()] == ["img.png"]
    import matplotlib.image as mimg
    np.testing.assert_array_equal((mimg.imread(path)[..., :3] * 255).round().astype(np.uint8), rgb)
    with pytest.raises(ValueError, match=r"RGB image \[H,W,3\]"):
        png_bytes(np.zeros((4, 4), np.uint8))


def test_moved_functions_are_the_same_objects():
    from lidarseg import visualize
    from lidarseg.data.synthetic import preview
    from lidarseg.engine import logging

    assert preview.png_bytes is visualize.png_bytes and preview.write_png is visualize.write_png
    assert logging.colormap is visualize.colormap and logging.panels is visualize.panels


def test_colormap_and_panels():
    img = colormap(np.array([[0.0, 1.0, 5.0]]), np.array([[True, True, False]]))
    np.testing.assert_array_equal(img[0], [[68, 1, 84], [253, 231, 37], [0, 0, 0]])
    from lidarseg.visualize import panels
    out = panels(LM, np.ones((2, 3)), np.array([[1, 1, 0], [0, 1, 1]], bool), np.full((2, 3), 1),
                 np.full((2, 3), 9), weights=np.arange(6.0).reshape(2, 3))
    assert set(out) == {"range", "prediction", "ground_truth", "weight_map"}
    np.testing.assert_array_equal(out["prediction"][0, 0], LM.colors_rgb[1])
    np.testing.assert_array_equal(out["ground_truth"][0, 2], LM.colors_rgb[0])


def test_stack_strips_layout():
    a, b = np.zeros((2, 3, 3), np.uint8), np.full((2, 3, 3), 7, np.uint8)
    out = stack_strips([a, b], row_scale=3, gap=2)
    assert out.shape == (14, 3, 3)
    assert np.all(out[:6] == 0) and np.all(out[6:8] == GAP_COLOR) and np.all(out[8:] == 7)
    with pytest.raises(ValueError, match="row_scale"):
        stack_strips([a], row_scale=0)


# ------------------------------------------------------------------------------------------------------------
# scan panels on a synthetic scan

@pytest.fixture(scope="module")
def scan(synthetic_root):
    seq = synthetic_root / "sequences" / "08"
    return read_scan(seq / "velodyne" / "000000.bin"), read_label(seq / "labels" / "000000.label")


@pytest.mark.parametrize("width", [2048, 256])   # 256: many points per pixel, the nearest must win
def test_prediction_strip_matches_plain_transcription(scan, width):
    points, gt = scan
    rng = np.random.default_rng(1)
    raw_ids = np.array(sorted(LM.learning_map), np.uint32)
    pred = np.where(rng.random(len(gt)) < 0.3, raw_ids[rng.integers(0, len(raw_ids), len(gt))], gt)
    pred |= rng.integers(0, 5, len(gt)).astype(np.uint32) << 16          # instance bits are ignored
    H, scale, gap = 64, 2, 4
    img = scan_panel(points, pred, LM, gt=gt, sensor={"width": width}, row_scale=scale, gap=gap)
    assert img.dtype == np.uint8 and img.shape == (4 * H * scale + 3 * gap, width, 3)
    strips = [img[k * (H * scale + gap):k * (H * scale + gap) + H * scale] for k in range(4)]
    assert all(np.all(img[k * (H * scale + gap) - gap:k * (H * scale + gap)] == GAP_COLOR) for k in (1, 2, 3))
    for s in strips:
        np.testing.assert_array_equal(s[0::scale], s[1::scale])      # rows repeated
    pred_strip, gt_strip = strips[1][::scale], strips[2][::scale]

    from lidarseg.data.projection import spherical_projection
    proj = spherical_projection(points, H, width)
    # the projection's pixels are RangeNet++'s; they may differ by one where the synthetic sensor's regular beam
    # and azimuth grid puts a point on a pixel border (float32 rounding either way)
    u, v, px, py = reference_pixels(points, H, width)
    for got, ref, t in ((proj.px, px, u), (proj.py, py, v)):
        bad = got != ref
        assert np.all(np.abs(got[bad] - ref[bad]) == 1) and np.all(np.abs(t[bad] - np.round(t[bad])) < 1e-3)
    depth = np.linalg.norm(points[:, :3], axis=1)                     # float32, as RangeNet++
    idx = nearest_per_pixel(proj.px, proj.py, depth, H, width)
    train_pred = LM.to_train(pred)
    filled = idx >= 0
    expected = np.zeros((H, width, 3), np.uint8)
    expected[filled] = LM.colors_rgb[train_pred[idx[filled]]]
    np.testing.assert_array_equal(pred_strip, expected)
    expected[filled] = LM.colors_rgb[LM.to_train(gt)[idx[filled]]]
    np.testing.assert_array_equal(gt_strip, expected)
    assert np.all(strips[0][::scale][~filled] == 0)                   # no point: black range pixel
    if width == 256:   # the choice of point matters: the farthest point of a pixel often has another label
        farthest = nearest_per_pixel(proj.px, proj.py, -depth, H, width)
        assert (train_pred[farthest[filled]] != train_pred[idx[filled]]).sum() > 100
    assert (~filled).any() and filled.sum() > 0.5 * H * min(width, 512)


def test_error_map_colours():
    points = np.array([[10, 0, 0, 0.5], [0, 10, 0, 0.5], [-10, 0, 0, 0.5], [0, -10, 0, 0.5],
                       [10.5, 0, 0, 0.5]], np.float32)                    # the last hides behind the first
    gt = np.array([1, 9, 0, 5, 3])
    pred = np.array([1, 1, 4, 5, 2])
    strips = scan_strips(points, pred, LM, gt=gt, ids="train")
    assert list(strips) == ["range", "prediction", "ground_truth", "error"]
    err = strips["error"]
    from lidarseg.data.projection import spherical_projection
    proj = spherical_projection(points)
    colour = {tuple(ERROR_COLORS[k]): k for k in ERROR_COLORS}
    got = [colour[tuple(err[proj.py[i], proj.px[i]])] for i in range(4)]
    assert got == ["correct", "wrong", "unlabelled", "correct"]
    assert (err.reshape(-1, 3).any(axis=1)).sum() == 4                 # everything else black
    np.testing.assert_array_equal(strips["prediction"][proj.py[0], proj.px[0]], LM.colors_rgb[1])
    # without labels: range and prediction only
    only = scan_panel(points, pred, LM, ids="train", row_scale=1, gap=3)
    assert only.shape == (2 * 64 + 3, 2048, 3)
    with pytest.raises(ValueError, match="expected 5 labels"):
        scan_strips(points, pred[:4], LM, ids="train")


def test_iou_bar_chart(tmp_path):
    import matplotlib.image as mimg

    from lidarseg.visualize import iou_bar_chart
    path = tmp_path / "c" / "iou.png"
    iou_bar_chart(["car", "road", "pole"], [0.5, 0.9, 0.0], [100, 100000, 0], path, title="t",
                  colors=LM.colors_rgb[[1, 9, 18]])
    img = mimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 200 and [p.name for p in path.parent.iterdir()] == ["iou.png"]
    with pytest.raises(ValueError, match="same non-zero length"):
        iou_bar_chart(["car"], [0.5, 0.1], [1, 2], path)


# ------------------------------------------------------------------------------------------------------------
# the command

@pytest.fixture
def preds(synthetic_root, tmp_path):
    """Predictions of sequences 08 (labels copied; scan 000001 with every third point set to car) and 11."""
    root = tmp_path / "preds"
    out = root / "sequences" / "08" / "predictions"
    shutil.copytree(synthetic_root / "sequences" / "08" / "labels", out)
    lab = read_label(out / "000001.label")
    lab[::3] = 10
    write_label(out / "000001.label", lab)
    for scan in sorted((synthetic_root / "sequences" / "11" / "velodyne").glob("*.bin")):
        n = scan.stat().st_size // 16
        write_label(root / "sequences" / "11" / "predictions" / f"{scan.stem}.label", np.full(n, 40, np.uint32))
    return root


def test_cli_end_to_end(synthetic_root, preds, tmp_path, monkeypatch, capsys):
    from lidarseg import visualize
    from lidarseg.evaluation import evaluate

    seen = {}
    real = visualize.iou_bar_chart
    monkeypatch.setattr(visualize, "iou_bar_chart",
                        lambda *a, **k: (seen.update(args=a, kwargs=k), real(*a, **k))[1])
    out = tmp_path / "viz"
    assert main(["visualize", "--data", str(synthetic_root), "--pred", str(preds), "--split", "valid",
                 "--out", str(out), "--no-progress"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["08_000000.png", "08_000001.png", "08_000002.png", "iou.png"]
    H, W, scale, gap = 64, 2048, 2, 4
    for stem, corrupted in (("000000", False), ("000001", True)):
        img = decode_png((out / f"08_{stem}.png").read_bytes())
        assert img.shape == (4 * H * scale + 3 * gap, W, 3)
        err = img[3 * (H * scale + gap):]
        wrong = np.all(err == ERROR_COLORS["wrong"], axis=-1).sum()
        correct = np.all(err == ERROR_COLORS["correct"], axis=-1).sum()
        assert correct > 0 and (wrong > 0.2 * correct if corrupted else wrong == 0)
    # the chart shows the evaluator's numbers over all scans of the sequence
    res = evaluate(synthetic_root, preds, sequences=["08"], progress=False)
    inc = list(res.confusion.include)
    names, iou, points, path = seen["args"][:4]
    assert names == [LM.names[c] for c in inc] and path == out / "iou.png"
    np.testing.assert_array_equal(iou, res.confusion.iou()[inc])
    np.testing.assert_array_equal(points, res.confusion.gt_counts()[inc])
    assert seen["kwargs"]["miou"] == res.miou and 0 < res.miou < 1
    stdout = capsys.readouterr().out
    assert f"mIoU {100 * res.miou:.2f}%" in stdout and "100.0% of" in stdout

    # chosen positions, other geometry, a test split without labels
    out2 = tmp_path / "viz2"
    assert main(["visualize", "--data", str(synthetic_root), "--pred", str(preds), "--sequences", "8", "--index",
                 "2", "--out", str(out2), "--width", "512", "--row-scale", "1", "--no-iou"]) == 0
    assert [p.name for p in out2.iterdir()] == ["08_000002.png"]
    assert decode_png((out2 / "08_000002.png").read_bytes()).shape == (4 * H + 3 * gap, 512, 3)
    out3 = tmp_path / "viz3"
    assert main(["visualize", "--data", str(synthetic_root), "--pred", str(preds), "--split", "test",
                 "--scans", "2", "--out", str(out3)]) == 0
    assert sorted(p.name for p in out3.iterdir()) == ["11_000000.png", "11_000002.png"]
    assert decode_png((out3 / "11_000000.png").read_bytes()).shape == (2 * H * scale + gap, W, 3)
    assert "no labels, no iou.png" in capsys.readouterr().err


def test_evaluate_plot(synthetic_root, preds, tmp_path):
    plot = tmp_path / "plots" / "iou.png"
    assert main(["evaluate", "--data", str(synthetic_root), "--predictions", str(preds), "--split", "valid",
                 "--plot", str(plot), "--no-progress"]) == 0
    assert plot.read_bytes()[:8] == PNG_SIGNATURE and [p.name for p in plot.parent.iterdir()] == ["iou.png"]


@pytest.mark.parametrize("case", ["missing", "length", "unselected", "unselected-length", "index", "scans",
                                  "sequence", "split", "nopred"])
def test_cli_errors(synthetic_root, preds, tmp_path, case, capsys):
    pdir = preds / "sequences" / "08" / "predictions"
    data = synthetic_root
    extra = ["--index", "0", "1"]
    if case == "missing":
        (pdir / "000001.label").unlink()
        match = "prediction file not found: .*08/predictions/000001.label"
    elif case == "length":       # the second panel: found before the first is written
        write_label(pdir / "000001.label", np.zeros(10, np.uint32))
        match = r"prediction .*000001.label has 10 labels but its scan .*000001.bin has \d+ points"
    elif case == "unselected":   # a scan without a panel still needs a prediction for iou.png
        (pdir / "000002.label").unlink()
        match = "predictions missing in .*: 000002.label"
    elif case == "unselected-length":
        write_label(pdir / "000002.label", np.zeros(10, np.uint32))
        match = "prediction .*000002.label has 10 points but its label .*000002.label has"
    elif case == "index":
        extra = ["--index", "0", "3"]
        match = r"--index 3: out of range; split valid \(sequences 08\) has 3 scans"
    elif case == "scans":
        extra = ["--scans", "0"]
        match = "--scans must be at least 1"
    elif case == "sequence":
        extra = ["--sequences", "05"]
        match = "no scans in .*sequences/05/velodyne"
    elif case == "split":
        data = tmp_path / "empty"
        (data / "sequences" / "00").mkdir(parents=True)
        match = r"split valid: none of its sequences \(08\) exist under"
    else:
        shutil.rmtree(pdir)
        match = "prediction file not found"
    out = tmp_path / "viz"
    assert main(["visualize", "--data", str(data), "--pred", str(preds), "--out", str(out),
                 "--no-progress", *extra]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and re.search(match, err), err
    assert not out.exists()                                              # nothing written
