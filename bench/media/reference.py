"""The Python reference of the media benchmark: the same models through onnxruntime, driven
the way their own packages drive them, timed the way tf-media-bench times the Rust side.

    reference.py vad FILE [--probs]
        Decode to 16 kHz mono f32 with the ffmpeg CLI (the silero-vad package's read_audio
        needs torchaudio or torchcodec, neither of which is installed), then run
        silero_vad.load_silero_vad(onnx=True) (the same silero_vad.onnx, through
        onnxruntime) two ways:
          - iterator: the package's VADIterator over 512-sample chunks, its streaming API;
          - timestamps: get_speech_timestamps(threshold=0.5, min_speech_duration_ms=250,
            min_silence_duration_ms=100, speech_pad_ms=30), whose segments are compared
            with the Rust pipeline's.
    reference.py video FILE [--interval S]
        cv2.VideoCapture decodes every frame (grab) and converts the sampled ones to BGR
        (retrieve): the first frame, then the first frame at or after each multiple of the
        interval, as the Rust pipeline samples. Each sampled frame goes through
        rapidocr_onnxruntime.RapidOCR()(frame, use_cls=False) (PP-OCRv4 det + rec, default
        settings; the direction classifier is off because the Rust pipeline does not run
        it). The audio track, if any, goes through the VAD as above.

Model loading is outside the timed region on both sides. Prints one JSON object.
"""

import json
import math
import subprocess
import sys
import time

import numpy as np


def decode_16k(path):
    out = subprocess.run(
        ["ffmpeg", "-v", "error", "-nostdin", "-i", path, "-vn", "-f", "f32le", "-ac", "1",
         "-ar", "16000", "-"],
        check=True, capture_output=True).stdout
    return np.frombuffer(out, dtype=np.float32).copy()


def vad(path, want_probs=False):
    import torch
    from silero_vad import VADIterator, get_speech_timestamps, load_silero_vad

    model = load_silero_vad(onnx=True)

    t0 = time.perf_counter()
    wav = torch.from_numpy(decode_16k(path))
    t_decode = time.perf_counter() - t0

    # The streaming iterator, as the package documents it.
    iterator = VADIterator(model, threshold=0.5, sampling_rate=16000,
                           min_silence_duration_ms=100, speech_pad_ms=30)
    t0 = time.perf_counter()
    events = []
    for i in range(0, len(wav), 512):
        chunk = wav[i:i + 512]
        if len(chunk) < 512:
            chunk = torch.nn.functional.pad(chunk, (0, 512 - len(chunk)))
        event = iterator(chunk)
        if event:
            events.append(event)
    t_iterator = time.perf_counter() - t0
    iterator.reset_states()

    # get_speech_timestamps: the segmentation the Rust pipeline ports.
    t0 = time.perf_counter()
    stamps = get_speech_timestamps(wav, model, threshold=0.5, sampling_rate=16000,
                                   min_speech_duration_ms=250, min_silence_duration_ms=100,
                                   speech_pad_ms=30)
    t_stamps = time.perf_counter() - t0

    probs = None
    if want_probs:
        model.reset_states()
        probs = []
        for i in range(0, len(wav), 512):
            chunk = wav[i:i + 512]
            if len(chunk) < 512:
                break
            probs.append(model(chunk, 16000).item())

    media = len(wav) / 16000
    return {
        "media_seconds": media,
        "decode_seconds": t_decode,
        "iterator_seconds": t_iterator,
        "timestamps_seconds": t_stamps,
        # Decode plus the package's iterator: the pipeline's equivalent.
        "seconds": t_decode + t_iterator,
        "realtime_factor": media / (t_decode + t_iterator),
        "segments": [[s["start"] / 16000, s["end"] / 16000] for s in stamps],
        "iterator_events": len(events),
        "probs": probs,
    }


def video(path, interval=1.0):
    import cv2
    from rapidocr_onnxruntime import RapidOCR

    engine = RapidOCR()
    t0 = time.perf_counter()
    cap = cv2.VideoCapture(path)
    if not cap.isOpened():
        raise SystemExit(f"cv2 cannot open {path}")
    frames = []
    next_t = None
    index = 0
    while cap.grab():
        t = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        if next_t is not None and t < next_t - 1e-6:
            continue
        ok, frame = cap.retrieve()
        if not ok:
            continue
        result, _ = engine(frame, use_cls=False)
        lines = []
        for box, text, score in result or []:
            lines.append({"text": text, "confidence": float(score),
                          "box": [[float(x), float(y)] for x, y in box]})
        frames.append({"index": index, "time": t, "lines": lines})
        index += 1
        next_t = (math.floor(t / interval) + 1) * interval
    cap.release()
    t_video = time.perf_counter() - t0

    # The sound track, as the Rust video pipeline does in the same pass.
    speech = None
    t_audio = 0.0
    has_audio = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=index",
         "-of", "csv=p=0", path], capture_output=True, text=True).stdout.strip() != ""
    if has_audio:
        t0 = time.perf_counter()
        speech = vad(path)
        t_audio = time.perf_counter() - t0

    elapsed = t_video + t_audio
    return {
        "seconds": elapsed,
        "video_seconds": t_video,
        "audio_seconds": t_audio,
        "frames_sampled": len(frames),
        "frames_per_second": len(frames) / elapsed,
        "frames": frames,
        "speech_segments": speech["segments"] if speech else None,
    }


def main():
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "vad":
        out = vad(path, "--probs" in sys.argv)
    elif cmd == "video":
        interval = 1.0
        if "--interval" in sys.argv:
            interval = float(sys.argv[sys.argv.index("--interval") + 1])
        out = video(path, interval)
    else:
        raise SystemExit(__doc__)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
