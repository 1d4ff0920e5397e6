"""Engine output -> class map and overlay on the device: only uint8 leaves it, never logits.

    post = DevicePostprocessor("linear", lut)     # lut: labels.remap_table or None
    post(logits, geom, labels)                    # (C, h, w) -> writes (H, W) uint8 in place
    DeviceOverlay(palette, alpha)(frame, labels, overlay)   # (H, W, 3) uint8 BGR blend

Same filter modes and sampling as :mod:`drivesegrt.infer.postprocess` (the CPU path), with the same
index tables (``postprocess._tables``), so letterbox geometry maps identically:

``linear``: bilinear upsample of the logits (float32), then argmax: the arithmetic of
    ``F.interpolate(logits, (H, W), "bilinear", align_corners=False).argmax(0)``. Columns first
    at low height, then rows in chunks so the (C, rows, W) float block stays under
    ``chunk_bytes`` (the full (C, H, W) tensor of a 1080p frame is 91 MB for 11 classes). Class
    maps equal the CPU ``Postprocessor`` except where two classes tie to float rounding.
``point``: argmax at model resolution, nearest upsample of the labels. Exact.

Every buffer is allocated on the first frame of a geometry and reused; the optional remap table
is applied by the same gather that narrows the int64 argmax to uint8.
"""
from __future__ import annotations

import numpy as np

from ...labels import palette_lut
from ...preprocess import Geometry
from ..postprocess import _BAND, FILTER_MODES, _tables


class DevicePostprocessor:
    """(C, h, w) logits or (h, w) labels tensor -> (H, W) uint8 class ids, on their device.

    filter_mode: ``linear`` | ``point``. lut: optional 256-entry uint8 remap table.
    chunk_bytes: cap on the float block of one ``linear`` row chunk. Use from one stream at a
    time (the scratch buffers are shared by all calls).
    """

    def __init__(self, filter_mode: str = "linear", lut: np.ndarray | None = None,
                 chunk_bytes: int = 64 << 20):
        if filter_mode not in FILTER_MODES:
            raise ValueError(f"filter mode {filter_mode!r}; allowed: {', '.join(FILTER_MODES)}")
        self.filter_mode = filter_mode
        self.lut = np.arange(256, dtype=np.uint8) if lut is None else np.asarray(lut, np.uint8)
        if self.lut.shape != (256,):
            raise ValueError(f"remap table must have 256 entries, got shape {self.lut.shape}")
        self.chunk_bytes = int(chunk_bytes)
        self._plan = None
        self._plan_key = None

    def _make_plan(self, geom: Geometry, low_shape: tuple[int, ...], device):
        import torch

        c, (h, w) = (low_shape[0] if len(low_shape) == 3 else 0), low_shape[-2:]
        if c >= _BAND:
            raise ValueError(f"postprocess supports at most {_BAND - 1} classes, got {c}")
        (fh, fw) = geom.frame_hw
        (y0, y1, ly, ny), (x0, x1, lx, nx) = _tables(geom, (h, w))
        dev = lambda a, dt: torch.tensor(a, dtype=dt, device=device)         # noqa: E731
        i64, f32 = torch.int64, torch.float32
        plan = {
            "lut": dev(self.lut, torch.uint8),                                 # (256,)
            "near": (dev(ny, i64), dev(nx, i64)),                              # (H,), (W,)
            "low_idx": torch.empty((h, w), dtype=i64, device=device),
            "low_u8": torch.empty((h, w), dtype=torch.uint8, device=device),
            "rows_u8": torch.empty((fh, w), dtype=torch.uint8, device=device),
        }
        if c and self.filter_mode == "linear":
            rows = max(1, min(fh, self.chunk_bytes // max(1, 2 * 4 * c * fw)))
            plan.update({
                "rows": (dev(y0, i64), dev(y1, i64)), "wy": dev(ly, f32),      # (H,) each
                "cols": (dev(x0, i64), dev(x1, i64)), "wx": dev(lx, f32),      # (W,) each
                "chunk": rows,
                "logits": torch.empty((c, h, w), dtype=f32, device=device),
                "colsf": (torch.empty((c, h, fw), dtype=f32, device=device),
                          torch.empty((c, h, fw), dtype=f32, device=device)),
                # flat so that a shorter last chunk is still a contiguous (C, n, W) view
                "block": (torch.empty(c * rows * fw, dtype=f32, device=device),
                          torch.empty(c * rows * fw, dtype=f32, device=device)),
                "idx": torch.empty(rows * fw, dtype=i64, device=device),
            })
        return plan

    def __call__(self, output, geom: Geometry, out):
        """output: (C, h, w) logits (any float dtype) or (h, w) integer labels; out: (H, W)
        uint8 buffer on the same device, overwritten. Returns ``out``."""
        import torch

        if output.dim() not in (2, 3):
            raise ValueError(f"engine output must be (C,h,w) logits or (h,w) labels, "
                             f"got shape {tuple(output.shape)}")
        if tuple(out.shape) != tuple(geom.frame_hw) or out.dtype != torch.uint8:
            raise ValueError(f"output buffer {out.dtype} {tuple(out.shape)} does not match "
                             f"the frame {geom.frame_hw}")
        key = (geom, tuple(output.shape), output.device)
        if key != self._plan_key:
            self._plan, self._plan_key = self._make_plan(geom, key[1], output.device), key
        p = self._plan
        if output.dim() == 3 and self.filter_mode == "linear":
            return self._linear(output, p, out)
        if output.dim() == 3:
            torch.argmax(output, 0, out=p["low_idx"])                          # (h, w)
        else:
            p["low_idx"].copy_(output)
        torch.index_select(p["lut"], 0, p["low_idx"].view(-1), out=p["low_u8"].view(-1))
        torch.index_select(p["low_u8"], 0, p["near"][0], out=p["rows_u8"])    # (H, w)
        torch.index_select(p["rows_u8"], 1, p["near"][1], out=out)             # (H, W)
        return out

    @staticmethod
    def _linear(logits, p, out):
        import torch

        c, h, _ = logits.shape
        fh, fw = out.shape
        low = p["logits"]
        low.copy_(logits)                                                      # (C, h, w) f32
        a, b = p["colsf"]
        torch.index_select(low, 2, p["cols"][0], out=a)                        # (C, h, W)
        torch.index_select(low, 2, p["cols"][1], out=b)
        a.lerp_(b, p["wx"])
        rows = p["chunk"]
        for r in range(0, fh, rows):
            n = min(rows, fh - r)
            top = p["block"][0][: c * n * fw].view(c, n, fw)                   # (C, n, W)
            bottom = p["block"][1][: c * n * fw].view(c, n, fw)
            torch.index_select(a, 1, p["rows"][0][r:r + n], out=top)
            torch.index_select(a, 1, p["rows"][1][r:r + n], out=bottom)
            top.lerp_(bottom, p["wy"][r:r + n].view(1, n, 1))
            idx = p["idx"][: n * fw].view(n, fw)
            torch.argmax(top, 0, out=idx)                                      # (n, W) int64
            torch.index_select(p["lut"], 0, idx.view(-1), out=out[r:r + n].view(-1))
        return out


class DeviceOverlay:
    """Palette colors alpha-blended over the frame on its device: the arithmetic of
    ``visualize.Overlay``'s colorize + ``cv2.addWeighted`` (float32, rounded to nearest), so the
    result matches it within 1 grey level. Legend and HUD stay on the host (text drawing).

    palette: RGB per class id (after remap), alpha in [0, 1].
    """

    def __init__(self, palette, alpha: float = 0.5):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"overlay alpha must be in [0, 1], got {alpha}")
        self.alpha = float(alpha)
        self._colors_bgr = palette_lut(palette, bgr=True)                      # (256, 3) uint8
        self._bufs = None
        self._key = None

    def __call__(self, frame, labels, out):
        """frame (H, W, 3) uint8 BGR, labels (H, W) uint8, out (H, W, 3) uint8: all tensors on
        one device; ``out`` is overwritten and returned."""
        import torch

        h, w = labels.shape
        if tuple(frame.shape) != (h, w, 3) or tuple(out.shape) != (h, w, 3):
            raise ValueError(f"overlay: frame {tuple(frame.shape)}, labels {(h, w)} and output "
                             f"{tuple(out.shape)} disagree")
        key = ((h, w), labels.device)
        if key != self._key:
            dev = labels.device
            self._bufs = {"colors": torch.tensor(self._colors_bgr, device=dev),
                          "idx": torch.empty((h * w,), dtype=torch.int32, device=dev),
                          "color": torch.empty((h * w, 3), dtype=torch.uint8, device=dev),
                          "acc": torch.empty((h, w, 3), dtype=torch.float32, device=dev)}
            self._key = key
        b = self._bufs
        b["idx"].copy_(labels.view(-1))
        torch.index_select(b["colors"], 0, b["idx"], out=b["color"])          # (H*W, 3) BGR
        acc = b["acc"]
        torch.mul(frame, 1.0 - self.alpha, out=acc)                            # (H, W, 3) f32
        acc.add_(b["color"].view(h, w, 3), alpha=self.alpha).round_()
        out.copy_(acc)
        return out
