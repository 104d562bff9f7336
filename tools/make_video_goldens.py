#!/usr/bin/env python3
"""Golden fixtures for src/media/video.rs (one command, deterministic):

    /work/pyenv/bin/python tools/make_video_goldens.py

Makes tiny clips with the ffmpeg CLI in LOSSLESS RGB codecs (ffv1/gbrp in .mkv) so every decoder yields the
same pixels, then records what the reference pipeline produces:

* sampling and resizing: qwen-omni-utils `fetch_video` / `fetch_image` (v2_5 vision_process.py). Its only
  reader available here is torchvision's, and torchvision 0.29 has removed `io.read_video`, so we register a
  PyAV reader that does what `_read_video_torchvision` did (decode every frame, `video_fps = average_rate`,
  `smart_nframes` + `torch.linspace(0, n-1, nframes).round()`); everything after decoding (the bicubic+antialias
  resize, `max_pixels` from `total_pixels`) is qwen-omni-utils' own code.
* model inputs: transformers' Qwen2VLVideoProcessor / Qwen2VLImageProcessor (what Qwen2_5OmniProcessor wraps),
  with the size passed explicitly (`shortest_edge`=min_pixels, `longest_edge`=max_pixels) and
  `do_sample_frames=False`, as qwen-omni-utils + the processor do together.

Writes tests/fixtures/media/video/<name>.<ext> and <name>.golden.safetensors + <name>.golden.json.
Pixel values are stored whole only where small; otherwise the resized uint8 frames (which determine them
exactly) plus the first rows and summary stats.
"""
import json
import math
import os
import shutil
import subprocess
import sys

import av
import numpy as np
import torch
from PIL import Image
from safetensors.torch import save_file

from qwen_omni_utils.v2_5 import vision_process as vp
from transformers.models.qwen2_vl.image_processing_qwen2_vl import Qwen2VLImageProcessor
from transformers.models.qwen2_vl.video_processing_qwen2_vl import Qwen2VLVideoProcessor

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, "tests", "fixtures", "media", "video")
FULL_PV_MAX_ROWS = 64  # pixel_values stored whole (where asked) up to 64 rows (64 x 1176 x 4 B = 300 KB)


def ffmpeg(*args):
    # bitexact: no encoder version strings or random segment UIDs, so reruns give identical files.
    bitexact = ["-fflags", "+bitexact", "-flags:v", "+bitexact", "-flags:a", "+bitexact"]
    subprocess.run(["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", *args[:-1], *bitexact, args[-1]], check=True)


def read_video_pyav(ele):
    """What torchvision<=0.24 `_read_video_torchvision` did, with PyAV (torchvision's own backend); a time range
    (`video_start`/`video_end`) picks its frames as qwen-omni-utils' decord and torchcodec readers do
    (`calculate_video_frame_range`, then `linspace(start_frame, end_frame, nframes)`)."""
    with av.open(ele["video"]) as c:
        s = c.streams.video[0]
        video_fps = float(s.average_rate)
        frames = [f.to_ndarray(format="rgb24") for f in c.decode(s)]
    video = torch.from_numpy(np.stack(frames)).permute(0, 3, 1, 2)  # TCHW uint8
    first, last, total_frames = vp.calculate_video_frame_range(ele, video.size(0), video_fps)
    nframes = vp.smart_nframes(ele, total_frames=total_frames, video_fps=video_fps)
    idx = torch.linspace(first, last, nframes).round().long()
    sample_fps = nframes / max(total_frames, 1e-6) * video_fps
    meta = dict(fps=video_fps, frames_indices=idx, total_num_frames=total_frames, video_backend="torchvision")
    return video[idx], meta, sample_fps


vp.VIDEO_READER_BACKENDS["torchvision"] = read_video_pyav
vp.FORCE_QWENVL_VIDEO_READER = "torchvision"
vp.get_video_reader_backend.cache_clear()

VIDEO_PROC = Qwen2VLVideoProcessor(min_pixels=128 * 28 * 28, max_pixels=768 * 28 * 28)
IMAGE_PROC = Qwen2VLImageProcessor(min_pixels=4 * 28 * 28, max_pixels=16384 * 28 * 28)


def make_clips():
    os.makedirs(OUT, exist_ok=True)
    lossless = ["-c:v", "ffv1", "-pix_fmt", "gbrp"]
    aud = lambda d: ["-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=16000:duration={d}"]
    # 4 s 64x48 @ 10 fps, moving pattern + audio.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=4", *aud(4),
           *lossless, "-c:a", "flac", "-shortest", f"{OUT}/basic.mkv")
    # odd length (6.3 s @ 10 fps = 63 frames), odd size 80x60.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=80x60:rate=10:duration=6.3", *lossless, f"{OUT}/odd.mkv")
    # portrait 48x96 @ 5 fps, 3 s.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=48x96:rate=5:duration=3", *lossless, f"{OUT}/portrait.mkv")
    # variable frame rate: drop frames of a 20 fps source irregularly, keep original timestamps.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=20:duration=3",
           "-vf", "select='not(mod(n\\,3))+lt(n\\,10)+gt(n\\,45)'", "-fps_mode", "vfr",
           *lossless, f"{OUT}/vfr.mkv")
    # no audio, 32x32 @ 8 fps, 2 s (also: upscaled by min_pixels).
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=32x32:rate=8:duration=2", *lossless, f"{OUT}/noaudio.mkv")
    # still image.
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=90x45:rate=1", "-frames:v", "1", f"{OUT}/still.png")
    # tiny lossy h264 (decode-only check).
    ffmpeg("-f", "lavfi", "-i", "testsrc2=size=64x48:rate=10:duration=2", "-c:v", "libx264", "-pix_fmt",
           "yuv420p", "-preset", "veryfast", "-crf", "30", "-bitexact", "-map_metadata", "-1",
           f"{OUT}/lossy.mp4")
    # bad inputs.
    with open(f"{OUT}/notmedia.mp4", "w") as f:
        f.write("this is not a video, just text renamed to .mp4\n" * 20)
    data = open(f"{OUT}/basic.mkv", "rb").read()
    with open(f"{OUT}/truncated.mkv", "wb") as f:
        f.write(data[:600])
    open(f"{OUT}/empty.mp4", "wb").close()
    # audio only (no video stream).
    ffmpeg(*aud(1), "-c:a", "flac", f"{OUT}/audioonly.mkv")


def save(name, tensors, meta):
    tensors = {k: v.contiguous() for k, v in tensors.items()}
    save_file(tensors, f"{OUT}/{name}.golden.safetensors")
    with open(f"{OUT}/{name}.golden.json", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def pv_tensors(pv, prefix, full):
    out = {f"{prefix}_head": pv[:2].clone()}
    if full and pv.shape[0] <= FULL_PV_MAX_ROWS:
        out[prefix] = pv
    return out, {f"{prefix}_shape": list(pv.shape), f"{prefix}_mean": pv.double().mean().item(),
                 f"{prefix}_abs_mean": pv.double().abs().mean().item()}


def video_golden(name, file, ele_extra, store_frames=True, full_pv=False):
    ele = {"video": f"{OUT}/{file}", **ele_extra}
    (video, meta), sample_fps = vp.fetch_video(ele, return_video_sample_fps=True, return_video_metadata=True)
    nframes, _, h, w = video.shape
    # the min/max qwen-omni-utils used, passed on explicitly so the processor keeps the size.
    f = 28
    min_pixels = ele.get("min_pixels", vp.VIDEO_MIN_TOKEN_NUM * f * f)
    total_pixels = ele.get("total_pixels", vp.MODEL_SEQ_LEN * f * f * 0.9)
    max_pixels = max(min(vp.VIDEO_MAX_TOKEN_NUM * f * f, total_pixels / nframes * 2), int(min_pixels * 1.05))
    max_pixels = min(ele.get("max_pixels", max_pixels), max_pixels)
    out = VIDEO_PROC(videos=[video], size={"shortest_edge": min_pixels, "longest_edge": int(max_pixels)},
                     do_sample_frames=False, return_tensors="pt")
    pv = out["pixel_values_videos"].float()
    grid = out["video_grid_thw"].long()
    second_per_grid = VIDEO_PROC.temporal_patch_size / sample_fps
    tensors, m = pv_tensors(pv, "pixel_values_videos", full_pv)
    tensors["video_grid_thw"] = grid
    tensors["indices"] = torch.as_tensor(meta["frames_indices"]).long()
    if store_frames:
        tensors["frames_u8"] = video.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)  # T,H,W,3
    m.update(dict(file=file, options=ele_extra, total_frames=int(meta["total_num_frames"]), video_fps=meta["fps"],
                  nframes=int(nframes), sample_fps=sample_fps, resized_height=h, resized_width=w,
                  min_pixels=min_pixels, max_pixels=max_pixels, video_second_per_grid=second_per_grid,
                  indices=[int(i) for i in meta["frames_indices"]], video_grid_thw=grid[0].tolist()))
    save(name, tensors, m)
    print(name, m["total_frames"], m["video_fps"], m["nframes"], (h, w), list(pv.shape))


def image_golden(name, file, ele_extra):
    ele = {"image": f"{OUT}/{file}", **ele_extra}
    img = vp.fetch_image(ele)
    f = 28
    min_pixels = ele.get("min_pixels", vp.IMAGE_MIN_TOKEN_NUM * f * f)
    max_pixels = ele.get("max_pixels", vp.IMAGE_MAX_TOKEN_NUM * f * f)
    out = IMAGE_PROC(images=[img], size={"shortest_edge": min_pixels, "longest_edge": max_pixels},
                     return_tensors="pt")
    pv = out["pixel_values"].float()
    grid = out["image_grid_thw"].long()
    tensors, m = pv_tensors(pv, "pixel_values", True)
    tensors["image_grid_thw"] = grid
    tensors["frames_u8"] = torch.from_numpy(np.array(img)).unsqueeze(0)
    m.update(dict(file=file, options=ele_extra, resized_height=img.size[1], resized_width=img.size[0],
                  min_pixels=min_pixels, max_pixels=max_pixels, image_grid_thw=grid[0].tolist()))
    save(name, tensors, m)
    print(name, img.size, list(pv.shape))


def lossy_meta():
    with av.open(f"{OUT}/lossy.mp4") as c:
        s = c.streams.video[0]
        frames = [fr.to_ndarray(format="rgb24") for fr in c.decode(s)]
        meta = dict(total_frames=len(frames), video_fps=float(s.average_rate), width=s.width, height=s.height,
                    mean_rgb=float(np.stack(frames).astype(np.float64).mean()))
    with open(f"{OUT}/lossy.golden.json", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True)


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    torch.manual_seed(0)
    make_clips()
    small = {"min_pixels": 4 * 28 * 28}
    video_golden("basic", "basic.mkv", small, full_pv=True)
    video_golden("basic_default", "basic.mkv", {}, store_frames=False)  # upscaled to 280x392: stats only
    video_golden("basic_fps1", "basic.mkv", {**small, "fps": 1.0})
    video_golden("basic_down", "basic.mkv", {"min_pixels": 784, "max_pixels": 1100})  # downscale 64x48 -> 28x28
    video_golden("odd", "odd.mkv", small)
    video_golden("portrait", "portrait.mkv", small)
    video_golden("vfr", "vfr.mkv", small)
    video_golden("noaudio", "noaudio.mkv", small)
    image_golden("still", "still.png", {})
    image_golden("still_down", "still.png", {"min_pixels": 784, "max_pixels": 3 * 28 * 28})
    lossy_meta()
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"total fixture size {total / 1e6:.2f} MB", file=sys.stderr)


if __name__ == "__main__":
    main()
