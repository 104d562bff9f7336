#!/usr/bin/env python3
"""Goldens of the WHOLE path media file -> model inputs -> Thinker forward, for tests/prepare.rs
(one command, deterministic; run after make_video_goldens.py and make_audio_goldens.py, whose clips it reads):

    /work/pyenv/bin/python tools/make_pipeline_goldens.py

For each case the reference is what a Qwen2.5-Omni user runs on the same files:

* qwen-omni-utils `process_mm_info(conversation, use_audio_in_video)` (PyAV stands in for torchvision's removed
  `io.read_video`: the reader registered by make_video_goldens.py; audio: librosa, and audioread's ffmpeg for
  the track of a video, as qwen-omni-utils does),
* the real `Qwen2_5OmniProcessor` from tests/fixtures/omni-tiny-a. transformers 5.x would re-resize the
  frames and ignores qwen-omni-utils' per-video fps, so the call passes `size` bounds that keep the frames'
  size, `do_sample_frames=False` and `fps` = qwen-omni-utils' sample fps (a scalar: the processor rejects the
  list qwen-omni-utils returns, so several videos in one prompt must share it). Audio of a video is passed
  explicitly with `audio_from_video_indices` (the processor would otherwise decode it again with torchcodec),
* `Qwen2_5OmniThinkerForConditionalGeneration` (f32, eager attention, CPU) on the same folder.

Each case stores, in tests/fixtures/media/pipeline/<case>.golden.{json,safetensors}: the `avflow prepare`
arguments (paths relative to tests/fixtures/media), `input_ids`, the grids, `video_second_per_grid`,
the position ids of `get_rope_index`, and the logits of the LAST position only (the files stay a few KB).

It also writes `pipeline/tone.mkv` (a second clip with its own sound, for the two-videos case) and, under
tests/fixtures/media/unsupported/, small files whose codec FFmpeg has no decoder for (a video stream, an
audio file, the audio track of a video), made with the ffmpeg CLI and a patched codec tag.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import warnings

import torch
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_video_goldens  # noqa: E402,F401  (registers the PyAV video reader in qwen-omni-utils)
from qwen_omni_utils import process_mm_info  # noqa: E402
from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration  # noqa: E402
import transformers  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MEDIA = os.path.join(ROOT, "tests", "fixtures", "media")
OUT = os.path.join(MEDIA, "pipeline")
BAD = os.path.join(MEDIA, "unsupported")
MODEL = os.path.join(ROOT, "tests", "fixtures", "omni-tiny-a")
SYSTEM = ("You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving "
          "auditory and visual inputs, as well as generating text and speech.")

CASES = [
    # (a) a clip with its sound, all defaults (frames upscaled to min_pixels, 2 fps, audio interleaved).
    dict(name="basic_av", items=[("video", "video/basic.mkv")], question="What do you see and hear?",
         use_audio_in_video=True),
    # (b) 6.3 s at 10 fps: 12 frames sampled at 1.905 fps (second_per_grid 1.05), odd size, no sound.
    dict(name="odd", items=[("video", "video/odd.mkv")], question="How many frames are there?",
         use_audio_in_video=False),
    # (c) two items: an image, then a separate 44.1 kHz stereo recording.
    dict(name="image_audio", items=[("image", "video/still.png"), ("audio", "audio/stereo44k.wav")],
         question="Does the sound match the picture?", use_audio_in_video=False),
    # (d) two clips, each with its own sound, in command-line order; small frames (--min-pixels 3136).
    dict(name="two_videos", items=[("video", "video/basic.mkv"), ("video", "pipeline/tone.mkv")],
         question="Which clip is louder — the first or the second?", use_audio_in_video=True,
         min_pixels=3136),
    # (e) seconds 2.3..6.1 of an 8-s clip with 48 kHz stereo sound (qwen-omni-utils' video_start/video_end: frames
    # 19..48 sampled as a clip of their own, the sound cut by librosa at 48 kHz before resampling).
    dict(name="range_av", items=[("video", "pipeline/long_av.mkv")], question="What happens in this part?",
         use_audio_in_video=True, start=2.3, end=6.1),
    # (f) a recording from 0.3 s to its end (audio_start, no audio_end), next to an image (not timed).
    dict(name="range_audio", items=[("image", "video/still.png"), ("audio", "audio/stereo44k.wav")],
         question="What do you hear after the click?", use_audio_in_video=False, start=0.3),
]


def make_clips():
    os.makedirs(OUT, exist_ok=True)
    # 3 s, 56x40 @ 8 fps (24 frames -> 6 sampled at exactly 2 fps, like basic.mkv, so one scalar fps fits
    # both videos), 48 kHz stereo sound (resampled and downmixed on the way in).
    make_video_goldens.ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=56x40:rate=8:duration=3",
        "-f", "lavfi", "-i", "sine=frequency=300:sample_rate=48000:duration=3",
        "-ac", "2", "-c:v", "ffv1", "-pix_fmt", "gbrp", "-c:a", "flac", "-shortest", f"{OUT}/tone.mkv")
    # 8 s, 56x40 @ 8 fps (64 frames), 48 kHz stereo sound that changes pitch every second: a clip to take a
    # time range of.
    make_video_goldens.ffmpeg(
        "-f", "lavfi", "-i", "testsrc=size=56x40:rate=8:duration=8",
        "-f", "lavfi", "-i", "aevalsrc=sin(2*PI*(200+100*floor(t))*t):s=48000:d=8",
        "-ac", "2", "-c:v", "ffv1", "-pix_fmt", "gbrp", "-c:a", "flac", "-shortest", f"{OUT}/long_av.mkv")


def riff_chunks(data: bytes, start: int, end: int):
    """(fourcc, payload offset, size) of the RIFF chunks in data[start:end], descending into LIST chunks."""
    pos = start
    while pos + 8 <= end:
        cc, size = data[pos:pos + 4], struct.unpack("<I", data[pos + 4:pos + 8])[0]
        if cc in (b"RIFF", b"LIST"):
            yield from riff_chunks(data, pos + 12, pos + 8 + size)
        else:
            yield cc, pos + 8, size
        pos += 8 + size + (size & 1)


def patch_avi(path: str, kind: bytes, tag: int):
    """Replaces the codec tag of the AVI stream of `kind` (b"vids"/b"auds") by `tag` in its stream header
    and its format chunk, so FFmpeg demuxes the stream but maps it to no codec."""
    data = bytearray(open(path, "rb").read())
    chunks = list(riff_chunks(data, 0, len(data)))
    for i, (cc, off, _) in enumerate(chunks):
        if cc == b"strh" and data[off:off + 4] == kind:
            strf_off = next(o for c, o, _ in chunks[i + 1:] if c == b"strf")
            if kind == b"vids":
                data[off + 4:off + 8] = struct.pack("<I", tag)  # fccHandler
                data[strf_off + 16:strf_off + 20] = struct.pack("<I", tag)  # BITMAPINFOHEADER.biCompression
            else:
                data[off + 4:off + 8] = struct.pack("<I", 0)
                data[strf_off:strf_off + 2] = struct.pack("<H", tag)  # WAVEFORMATEX.wFormatTag
            open(path, "wb").write(bytes(data))
            return
    raise RuntimeError(f"{path}: no {kind} stream")


def patch_wav(path: str, tag: int):
    data = bytearray(open(path, "rb").read())
    off = next(o for c, o, _ in riff_chunks(data, 0, len(data)) if c == b"fmt ")
    data[off:off + 2] = struct.pack("<H", tag)
    open(path, "wb").write(bytes(data))


def codec_of(path: str, kind: str) -> str:
    out = subprocess.run(["ffprobe", "-v", "error", "-select_streams", kind, "-show_entries",
                          "stream=codec_name,codec_tag_string", "-of", "json", path],
                         check=True, capture_output=True, text=True).stdout
    return json.dumps(json.loads(out)["streams"])


def make_unsupported():
    """Files whose codec no FFmpeg decoder handles: the tag is one that FFmpeg's tables map to no codec."""
    if os.path.isdir(BAD):
        shutil.rmtree(BAD)
    os.makedirs(BAD)
    raw_video = ["-f", "lavfi", "-i", "testsrc2=size=32x24:rate=4:duration=1", "-c:v", "rawvideo",
                 "-pix_fmt", "bgr24"]
    pcm = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=8000:duration=1", "-c:a", "pcm_s16le"]
    fourcc = struct.unpack("<I", b"QQV1")[0]
    audio_tag = 0x4F51  # not in FFmpeg's RIFF audio table (nor symphonia's)
    # A video stream with an unknown FourCC, with a decodable sound track.
    make_video_goldens.ffmpeg(*raw_video[:4], *pcm[:4], *raw_video[4:], *pcm[4:], f"{BAD}/video_codec.avi")
    patch_avi(f"{BAD}/video_codec.avi", b"vids", fourcc)
    # A decodable video whose sound track has an unknown format tag.
    make_video_goldens.ffmpeg(*raw_video[:4], *pcm[:4], *raw_video[4:], *pcm[4:], f"{BAD}/audio_track_codec.avi")
    patch_avi(f"{BAD}/audio_track_codec.avi", b"auds", audio_tag)
    # A WAV file with an unknown format tag.
    make_video_goldens.ffmpeg(*pcm, f"{BAD}/audio_codec.wav")
    patch_wav(f"{BAD}/audio_codec.wav", audio_tag)
    for f, kind in [("video_codec.avi", "v"), ("audio_track_codec.avi", "a"), ("audio_codec.wav", "a")]:
        desc = codec_of(f"{BAD}/{f}", kind)
        assert '"codec_name"' not in desc or "none" in desc, (f, desc)  # FFmpeg knows no codec for it
        print(f, desc)


def conversation(case):
    content = []
    for kind, rel in case["items"]:
        ele = {"type": kind, kind: os.path.join(MEDIA, rel)}
        if kind == "video" and "min_pixels" in case:
            ele["min_pixels"] = case["min_pixels"]
        if kind in ("video", "audio"):  # avflow's --start/--end apply to every timed item
            for key, k in (("start", f"{kind}_start"), ("end", f"{kind}_end")):
                if key in case:
                    ele[k] = case[key]
        content.append(ele)
    content.append({"type": "text", "text": case["question"]})
    return [{"role": "system", "content": [{"type": "text", "text": SYSTEM}]},
            {"role": "user", "content": content}]


def cli_args(case):
    args = []
    for kind, rel in case["items"]:
        args += [f"--{kind}", rel]
    args += ["--question", case["question"]]
    if "min_pixels" in case:
        args += ["--min-pixels", str(case["min_pixels"])]
    for key in ("start", "end"):
        if key in case:
            args += [f"--{key}", str(case[key])]
    return args


def run_processor(processor, case):
    conv = conversation(case)
    text = processor.apply_chat_template(conv, add_generation_prompt=True, tokenize=False)
    audios, images, videos, vkw = process_mm_info(conv, use_audio_in_video=case["use_audio_in_video"],
                                                  return_video_kwargs=True)
    call = dict(text=[text], return_tensors="pt", padding=True)
    doc = {}
    if images:
        call["images"] = images
    if videos:
        fps = set(vkw["fps"])
        assert len(fps) == 1, f"{case['name']}: the processor takes one fps for all videos, got {fps}"
        pixels = [v.shape[2] * v.shape[3] for v in videos]
        vk = {"fps": fps.pop(), "do_sample_frames": False, "cap_pixels_per_frame": False,
              "size": {"shortest_edge": min(pixels), "longest_edge": max(pixels)}}
        call["videos"] = videos
        call["videos_kwargs"] = vk
        doc["videos_kwargs"] = vk
        doc["sample_fps"] = vkw["fps"]
        doc["frames"] = [list(v.shape) for v in videos]
    if audios:
        call["audio"] = audios
        doc["audio_samples"] = [len(a) for a in audios]
    if case["use_audio_in_video"]:
        # qwen-omni-utils returns one audio per video here (in prompt order) and no standalone audio.
        assert not any(k == "audio" for k, _ in case["items"])
        call["audio_from_video_indices"] = list(range(len(videos)))
        call["load_audio_from_video"] = True
        doc["audio_from_video_indices"] = call["audio_from_video_indices"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        inputs = processor(**call)
    if videos:
        # The processor kept qwen-omni-utils' frame size (its resize is the identity).
        for v, g in zip(videos, inputs["video_grid_thw"].tolist()):
            assert [v.shape[2] // 14, v.shape[3] // 14] == g[1:], (v.shape, g)
    return text, dict(inputs), doc


def make_case(processor, model, case):
    text, inputs, doc = run_processor(processor, case)
    ids = inputs["input_ids"]
    assert ids.shape[0] == 1
    use_aiv = case["use_audio_in_video"]
    fam = inputs.get("feature_attention_mask")
    with torch.no_grad():
        model.model.rope_deltas = None
        logits = model(**inputs, use_audio_in_video=use_aiv, use_cache=False).logits[0]
        pos, _ = model.model.get_rope_index(
            ids, inputs.get("image_grid_thw"), inputs.get("video_grid_thw"), inputs["attention_mask"], use_aiv,
            fam.sum(-1) if fam is not None else None, inputs.get("video_second_per_grid"))
    tensors = {
        "input_ids": ids[0].to(torch.int32),
        "position_ids": pos[:, 0].to(torch.int32),
        "logits_last": logits[-1].float(),
    }
    meta = dict(case=case["name"], model="omni-tiny-a", args=cli_args(case), question=case["question"],
                use_audio_in_video=use_aiv, seq_len=int(ids.shape[1]), prompt=text, processor_call=doc,
                top5_last=torch.topk(logits[-1], 5).indices.tolist())
    for name in ["video_grid_thw", "image_grid_thw"]:
        if name in inputs:
            tensors[name] = inputs[name].to(torch.int32)
            meta[name] = inputs[name].tolist()
    if "video_second_per_grid" in inputs:
        spg = torch.as_tensor(inputs["video_second_per_grid"], dtype=torch.float32)
        tensors["video_second_per_grid"] = spg
        meta["video_second_per_grid"] = spg.tolist()
    if fam is not None:
        meta["audio_frames"] = fam.sum(-1).tolist()
    save_file({k: v.contiguous() for k, v in tensors.items()}, f"{OUT}/{case['name']}.golden.safetensors")
    with open(f"{OUT}/{case['name']}.golden.json", "w") as f:
        json.dump(meta, f, indent=1, sort_keys=True, ensure_ascii=False)
    print(case["name"], "seq", meta["seq_len"], "grids", meta.get("video_grid_thw"), meta.get("image_grid_thw"),
          "spg", meta.get("video_second_per_grid"), "audio frames", meta.get("audio_frames"))


def main():
    if os.path.isdir(OUT):
        shutil.rmtree(OUT)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    make_clips()
    make_unsupported()
    processor = Qwen2_5OmniProcessor.from_pretrained(MODEL)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        MODEL, attn_implementation="eager", dtype=torch.float32).eval()
    for case in CASES:
        make_case(processor, model, case)
    total = sum(os.path.getsize(os.path.join(d, f)) for d in (OUT, BAD) for f in os.listdir(d))
    print(f"total size {total / 1e3:.1f} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
