"""Runs the media benchmark side by side and prints the results as Markdown.

    compare.py --rust target/release/tf-media-bench --python VENV/bin/python --media DIR
               [--repeat N]

Each case runs Triggerfish and its baseline alternately, N times each (default 3), in the
same session; the table reports the median and the ratio of medians. Outputs are compared
too: VAD segments must match exactly; OCR must read the same text on the same frames (the
boxes and confidences are compared within a tolerance and the largest differences shown).

Uses only the standard library (it drives the two sides as subprocesses).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def timed(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, check=True, capture_output=True)
    return time.perf_counter() - t


def median(xs):
    return statistics.median(xs)


def vad_case(args, path):
    rust, py = [], []
    r_out = p_out = None
    for _ in range(args.repeat):
        r_out = run_json([args.rust, "vad", path])
        rust.append(r_out["seconds"])
        p_out = run_json([args.python, os.path.join(HERE, "reference.py"), "vad", path])
        py.append(p_out["seconds"])
    media = r_out["media_seconds"]
    same = r_out["segments"] == p_out["segments"]
    return {
        "media": media,
        "rust": median(rust),
        "python": median(py),
        "python_decode": p_out["decode_seconds"],
        "python_iterator": p_out["iterator_seconds"],
        "python_timestamps": p_out["timestamps_seconds"],
        "segments": len(r_out["segments"]),
        "same": same,
        "rust_runs": rust,
        "python_runs": py,
    }


def compare_frames(rust_frames, py_frames):
    """Per sampled frame: same set of texts? Largest box and confidence differences."""
    frames = min(len(rust_frames), len(py_frames))
    same_text = 0
    box_diff = 0.0
    conf_diff = 0.0
    lines = 0
    mismatches = []
    for i in range(frames):
        r = sorted(rust_frames[i]["lines"], key=lambda l: l["text"])
        p = sorted(py_frames[i]["lines"], key=lambda l: l["text"])
        if [l["text"] for l in r] == [l["text"] for l in p]:
            same_text += 1
            for a, b in zip(r, p):
                lines += 1
                conf_diff = max(conf_diff, abs(a["confidence"] - b["confidence"]))
                for pa, pb in zip(a["box"], b["box"]):
                    box_diff = max(box_diff, abs(pa[0] - pb[0]), abs(pa[1] - pb[1]))
        elif len(mismatches) < 3:
            mismatches.append((i, [l["text"] for l in r], [l["text"] for l in p]))
    return {
        "frames": frames,
        "frames_rust": len(rust_frames),
        "frames_python": len(py_frames),
        "same_text_frames": same_text,
        "lines": lines,
        "max_box_diff_px": box_diff,
        "max_confidence_diff": conf_diff,
        "mismatches": mismatches,
    }


def video_case(args, path):
    rust, py = [], []
    r_out = p_out = None
    for _ in range(args.repeat):
        r_out = run_json([args.rust, "video", path, "--frames"])
        rust.append(r_out["seconds"])
        p_out = run_json([args.python, os.path.join(HERE, "reference.py"), "video", path])
        py.append(p_out["seconds"])
    cmp = compare_frames(r_out["frames"], p_out["frames"])
    return {
        "media": r_out["media_seconds"],
        "frames": r_out["frames_sampled"],
        "rust": median(rust),
        "python": median(py),
        "python_video": p_out["video_seconds"],
        "python_audio": p_out["audio_seconds"],
        "speech_same": r_out["speech_segments"] == p_out["speech_segments"],
        "compare": cmp,
        "rust_runs": rust,
        "python_runs": py,
    }


def decode_case(args, path):
    rust, cli = [], []
    for _ in range(args.repeat):
        rust.append(run_json([args.rust, "decode", path])["seconds"])
        cli.append(timed(["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-f", "null", "-"]))
    return {"rust": median(rust), "ffmpeg": median(cli), "rust_runs": rust, "ffmpeg_runs": cli}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rust", required=True)
    ap.add_argument("--python", required=True)
    ap.add_argument("--media", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    audio = os.path.join(args.media, "speech-10min.m4a")
    video = os.path.join(args.media, "video-720p-60s.mp4")

    results = {
        "vad": vad_case(args, audio),
        "video": video_case(args, video),
        "decode_audio": decode_case(args, audio),
        "decode_video": decode_case(args, video),
    }
    print(json.dumps(results, indent=1), file=sys.stderr)

    v, o = results["vad"], results["video"]
    da, dv = results["decode_audio"], results["decode_video"]
    c = o["compare"]
    print("| case | Triggerfish | Python reference / ffmpeg CLI | ratio |")
    print("|---|---|---|---|")
    print(f"| VAD, 10-min AAC file (decode + resample + Silero VAD + segments) | "
          f"{v['rust']:.2f} s, **{v['media'] / v['rust']:.0f}× real time** | "
          f"{v['python']:.2f} s, {v['media'] / v['python']:.0f}× real time | **{v['python'] / v['rust']:.2f}×** |")
    print(f"| video, 720p 60 s, 1 frame/s: thumbnails, sprite, OCR, VAD on the sound track | "
          f"{o['rust']:.2f} s, **{o['frames'] / o['rust']:.2f} frames/s** | "
          f"{o['python']:.2f} s, {o['frames'] / o['python']:.2f} frames/s | **{o['python'] / o['rust']:.2f}×** |")
    print(f"| decode only, 10-min AAC | {da['rust']:.3f} s | ffmpeg -f null: {da['ffmpeg']:.3f} s | "
          f"{da['rust'] / da['ffmpeg']:.2f}× the CLI's time |")
    print(f"| decode only, 720p 60 s H.264 + AAC | {dv['rust']:.3f} s | ffmpeg -f null: {dv['ffmpeg']:.3f} s | "
          f"{dv['rust'] / dv['ffmpeg']:.2f}× the CLI's time |")
    print()
    print(f"- VAD outputs: {v['segments']} segments, identical to get_speech_timestamps: {v['same']}. "
          f"Python split: decode {v['python_decode']:.2f} s, VADIterator loop {v['python_iterator']:.2f} s "
          f"(get_speech_timestamps alone: {v['python_timestamps']:.2f} s).")
    print(f"- OCR outputs: {c['same_text_frames']}/{c['frames']} sampled frames read the same text "
          f"({c['lines']} lines); largest box difference {c['max_box_diff_px']:.1f} px, largest confidence "
          f"difference {c['max_confidence_diff']:.4f}; frames sampled: {c['frames_rust']} vs {c['frames_python']}. "
          f"Speech segments on the sound track identical: {o['speech_same']}.")
    if c["mismatches"]:
        print(f"- First differing frames (index, Triggerfish, Python): {c['mismatches']}")


if __name__ == "__main__":
    main()
