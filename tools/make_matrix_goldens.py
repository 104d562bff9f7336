#!/usr/bin/env python3
"""Reference goldens for the real-world media matrix (tests/media_matrix.rs), one command, deterministic:

    .venv-fixtures/bin/python tools/make_matrix_goldens.py

tests/media_matrix.rs makes its 21 kinds of media with the ffmpeg CLI at test time and checks that `avflow
prepare` succeeds or says why. This script makes the cases that must succeed once, with the same recipes, into
tests/fixtures/media/matrix/ (a few KB each, committed, so the bytes no longer depend on the ffmpeg version),
and runs on each what a Qwen2.5-Omni user runs: qwen-omni-utils + the real `Qwen2_5OmniProcessor` + HF's
Thinker, through tools/make_pipeline_goldens.py's `make_case` (the same call, the same stored fields).

Where the reference pipeline itself fails on a file (it has no answer for some of these containers), that is
recorded in matrix/reference.json with its error, and the test checks that avflow still prepares the file and
says what it did. Needs the ffmpeg CLI (scripts/setup.sh installs it).
"""
import json
import os
import shutil
import subprocess
import sys
import traceback

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import make_pipeline_goldens as pipeline  # noqa: E402  (registers the PyAV reader, holds make_case)
from transformers import Qwen2_5OmniProcessor, Qwen2_5OmniThinkerForConditionalGeneration  # noqa: E402
import transformers  # noqa: E402

MATRIX = os.path.join(pipeline.MEDIA, "matrix")
PICTURE = "testsrc=size=48x32:rate=10:duration=2"
SOUND = "sine=frequency=330:sample_rate=22050:duration=2"
QUESTION = "What happens?"


def ffmpeg(*args):
    # Bit-exact muxers and encoders: the same ffmpeg writes the same bytes (no UIDs, no version strings).
    *opts, out = args
    subprocess.run(["ffmpeg", "-v", "error", "-nostdin", "-y", *opts, "-fflags", "+bitexact", "-flags:v",
                    "+bitexact", "-flags:a", "+bitexact", out], check=True)


def lavfi(*sources):
    out = []
    for s in sources:
        out += ["-f", "lavfi", "-i", s]
    return out


def p(name):
    return os.path.join(MATRIX, name)


def make_ps(out):
    ffmpeg(*lavfi(PICTURE, SOUND), "-c:v", "mpeg2video", "-q:v", "2", "-c:a", "mp2", "-output_ts_offset", "10",
           "-f", "vob", out)


def make_ts(out):
    ffmpeg(*lavfi(PICTURE, SOUND), "-c:v", "libx264", "-qp", "0", "-c:a", "aac", "-output_ts_offset", "5", out)


def make_edit(out):
    src = p("edit-src.mp4")
    ffmpeg(*lavfi("testsrc=size=48x32:rate=10:duration=3", "sine=frequency=330:sample_rate=22050:duration=3"),
           "-c:v", "libx264", "-c:a", "aac", src)
    ffmpeg("-ss", "0.5", "-i", src, "-c", "copy", out)
    os.remove(src)


def make_vfr(out):
    ffmpeg(*lavfi("testsrc=size=48x32:rate=30:duration=2"), "-vf", "select='not(mod(n\\,3))+lt(n\\,20)'",
           "-fps_mode", "vfr", "-c:v", "ffv1", out)


def make_rotated(out):
    src = p("rot-src.mp4")
    ffmpeg(*lavfi(PICTURE, SOUND), "-c:v", "libx264", "-c:a", "aac", src)
    ffmpeg("-i", src, "-c", "copy", "-metadata:s:v:0", "rotate=90", out)
    os.remove(src)


def video_only(size="48x32", extra=(), duration="2"):
    def make(out):
        ffmpeg(*lavfi(f"testsrc=size={size}:rate=10:duration={duration}"), *extra, out)
    return make


def with_sound(sound=SOUND, extra=()):
    def make(out):
        ffmpeg(*lavfi(PICTURE, sound), *extra, "-c:v", "ffv1", "-c:a", "flac", out)
    return make


def sound_only(source, extra=()):
    def make(out):
        ffmpeg(*lavfi(source), *extra, out)
    return make


def make_two_tracks(out):
    ffmpeg(*lavfi(PICTURE, SOUND, "sine=frequency=880:sample_rate=48000:duration=2"), "-map", "0", "-map", "1",
           "-map", "2", "-c:v", "ffv1", "-c:a", "flac", out)


def make_truncated(out):
    src = p("whole.mkv")
    ffmpeg(*lavfi("testsrc=size=48x32:rate=10:duration=4", "sine=frequency=330:sample_rate=22050:duration=4"),
           "-c:v", "ffv1", "-c:a", "flac", src)
    data = open(src, "rb").read()
    os.remove(src)
    with open(out, "wb") as f:
        f.write(data[: len(data) * 6 // 10])


# (case name, file, recipe, kind, has sound): the matrix's cases that avflow prepares.
CASES = [
    ("ps", "ps.mpg", make_ps, "video", True),
    ("ts", "ts.ts", make_ts, "video", True),
    ("edit", "edit.mp4", make_edit, "video", True),
    ("vfr", "vfr.mkv", make_vfr, "video", False),
    ("rotated", "rotated.mp4", make_rotated, "video", True),
    ("odd", "odd.mkv", video_only("47x33", ("-c:v", "ffv1")), "video", False),
    ("tenbit", "tenbit.mkv", video_only(extra=("-pix_fmt", "yuv420p10le", "-c:v", "ffv1")), "video", False),
    ("yuv444", "yuv444.mkv", video_only(extra=("-pix_fmt", "yuv444p", "-c:v", "ffv1")), "video", False),
    ("interlaced", "interlaced.mkv",
     video_only(extra=("-vf", "interlace", "-flags", "+ilme+ildct", "-c:v", "mpeg2video")), "video", False),
    ("short", "short.mkv", video_only(duration="0.3", extra=("-c:v", "ffv1")), "video", False),
    ("m4a", "sound.m4a", sound_only(SOUND, ("-c:a", "aac")), "audio", True),
    ("twotracks", "twotracks.mkv", make_two_tracks, "video", True),
    ("surround", "surround.mkv", with_sound(extra=("-ac", "6")), "video", True),
    ("eightk", "eightk.wav", sound_only("sine=frequency=330:sample_rate=8000:duration=2"), "audio", True),
    ("ninetysixk", "ninetysixk.flac", sound_only("sine=frequency=330:sample_rate=96000:duration=2"), "audio",
     True),
    ("truncated", "truncated.mkv", make_truncated, "video", True),
    ("shortsound", "shortsound.mkv", with_sound("sine=frequency=330:sample_rate=22050:duration=1"), "video",
     True),
    ("longsound", "longsound.mkv", with_sound("sine=frequency=330:sample_rate=22050:duration=3"), "video", True),
]


def main():
    if os.path.isdir(MATRIX):
        shutil.rmtree(MATRIX)
    os.makedirs(MATRIX)
    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    transformers.logging.set_verbosity_error()
    processor = Qwen2_5OmniProcessor.from_pretrained(pipeline.MODEL)
    model = Qwen2_5OmniThinkerForConditionalGeneration.from_pretrained(
        pipeline.MODEL, attn_implementation="eager", dtype=torch.float32).eval()
    # make_case writes its goldens beside the media.
    pipeline.OUT = MATRIX
    report = {}
    for name, file, make, kind, sound in CASES:
        make(p(file))
        case = dict(name=f"matrix_{name}", items=[(kind, f"matrix/{file}")], question=QUESTION,
                    use_audio_in_video=kind == "video" and sound)
        if kind == "video":
            case["min_pixels"] = 3136
        try:
            pipeline.make_case(processor, model, case)
            report[file] = {"case": case["name"], "args": pipeline.cli_args(case), "reference": "ok"}
        except Exception as e:  # the reference's own failure is the finding
            last = traceback.extract_tb(e.__traceback__)[-1]
            report[file] = {"case": case["name"], "args": pipeline.cli_args(case), "reference": "failed",
                            "error": f"{type(e).__name__}: {e}".strip()[:400],
                            "where": f"{os.path.basename(last.filename)}:{last.lineno}"}
            print(name, "reference failed:", report[file]["error"], file=sys.stderr)
    with open(os.path.join(MATRIX, "reference.json"), "w") as f:
        json.dump(report, f, indent=1, sort_keys=True)
    total = sum(os.path.getsize(os.path.join(MATRIX, f)) for f in os.listdir(MATRIX))
    print(f"{len(CASES)} cases, {sum(r['reference'] == 'ok' for r in report.values())} with the reference's "
          f"tensors; total size {total / 1e3:.1f} KB", file=sys.stderr)


if __name__ == "__main__":
    main()
