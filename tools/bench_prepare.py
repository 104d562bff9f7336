"""The reference side of the prepare benchmark: qwen-omni-utils (torchcodec reader) + transformers'
Qwen2_5OmniProcessor on one video with its audio, timed, with peak RSS.

    python3 tools/bench_prepare.py --model tests/fixtures/omni-tiny-a --video clip.mp4 [--threads 2] [--save F]

Needs `pip install torchcodec` beside the fixture requirements (torchvision 0.29 dropped io.read_video, the
other reader qwen-omni-utils knows). A test clip: ffmpeg -f lavfi -i testsrc2=size=1920x1080:rate=30
-f lavfi -i sine=frequency=440:sample_rate=44100 -t 60 -c:v libx264 -preset ultrafast -c:a aac -shortest clip.mp4
"""

import argparse
import json
import resource
import time

import torch


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--video", required=True)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--save", help="also write the processor's tensors here (safetensors) to compare")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    from qwen_omni_utils import process_mm_info
    from transformers import Qwen2_5OmniProcessor

    t0 = time.perf_counter()
    processor = Qwen2_5OmniProcessor.from_pretrained(a.model)
    conversation = [
        {"role": "system", "content": [{"type": "text", "text": "You are Qwen."}]},
        {"role": "user", "content": [{"type": "video", "video": a.video}, {"type": "text", "text": "What happens?"}]},
    ]
    t1 = time.perf_counter()
    audios, images, videos = process_mm_info(conversation, use_audio_in_video=True)
    t2 = time.perf_counter()
    text = processor.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
    n, _, h, w = videos[0].shape
    inputs = processor(
        text=[text], videos=videos, audio=audios, audio_from_video_indices=[0], load_audio_from_video=True,
        videos_kwargs={"size": {"shortest_edge": h * w, "longest_edge": h * w}, "do_sample_frames": False, "fps": 2.0},
        return_tensors="pt", padding=True,
    )
    t3 = time.perf_counter()
    if a.save:
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in inputs.items() if isinstance(v, torch.Tensor)}, a.save)
    print(json.dumps({
        "impl": "qwen-omni-utils+transformers", "threads": torch.get_num_threads(),
        "load_processor_s": t1 - t0, "decode_sample_resize_audio_s": t2 - t1, "processor_s": t3 - t2,
        "total_s": t3 - t1, "seq_len": int(inputs["input_ids"].shape[-1]),
        "video_grid_thw": inputs["video_grid_thw"].tolist(),
        "peak_rss_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9,
    }))


if __name__ == "__main__":
    main()
