"""The floor of `/recommend`: image decode + preprocessing + the image branch alone.

No HTTP, no search, no database: the functions the route calls (``open_image`` as the route
calls it, ``image_tensor`` at the model's size, ``Matcher.embed_image_tensor`` at batch 1),
timed one by one on JPEGs of three sizes. Also shown: JPEG draft decoding (``open_image``'s
``draft_size``, DCT scaling), which the route does not use today.
"""

from __future__ import annotations

from benchmarks.common import Context, context_from_command_line, fmt, log, photo_jpegs, repeat, stats_ms
from benchmarks.records import FloorResults, FloorRow, Stats

PHOTO_SIZES = {
    "256x256 (dataset-size)": (256, 256),
    "1600x1200 (1.9 MP, the request photo)": (1600, 1200),
    "4032x3024 (12 MP phone photo)": (4032, 3024),
}


def run(ctx: Context) -> FloorResults:
    import torch

    from app.core.settings import Settings
    from model.image import open_image
    from model.inference import Matcher
    from model.transforms import image_tensor

    matcher = Matcher.load(ctx.checkpoint, "cpu")
    matcher.warmup()
    size = int(matcher.image_size)
    max_pixels = Settings().max_image_pixels
    default_threads = torch.get_num_threads()
    min_s = 0.5 if ctx.quick else 1.5
    rows = []
    for label, (w, h) in PHOTO_SIZES.items():
        jpegs, source = photo_jpegs(w, h, 1)
        jpeg = jpegs[0]
        img = open_image(jpeg, max_pixels=max_pixels)
        tensor = image_tensor(img, size)
        decode = stats_ms(repeat(lambda j=jpeg: open_image(j, max_pixels=max_pixels), min_reps=5, min_seconds=min_s))
        draft = stats_ms(
            repeat(lambda j=jpeg: open_image(j, max_pixels=max_pixels, draft_size=size), min_reps=5, min_seconds=min_s)
        )
        small = open_image(jpeg, max_pixels=max_pixels, draft_size=size)
        prep = stats_ms(repeat(lambda i=img: image_tensor(i, size), min_reps=5, min_seconds=min_s))
        prep_draft = stats_ms(repeat(lambda i=small: image_tensor(i, size), min_reps=5, min_seconds=min_s))
        embed: dict[int, Stats] = {}
        for threads in sorted({1, default_threads}):
            torch.set_num_threads(threads)
            try:
                embed[threads] = stats_ms(
                    repeat(lambda t=tensor: matcher.embed_image_tensor(t[None]), min_reps=10, min_seconds=min_s)
                )
            finally:
                torch.set_num_threads(default_threads)
        branch_best = min(e.p50 for e in embed.values())
        floor = decode.p50 + prep.p50 + embed[default_threads].p50
        best_floor = draft.p50 + prep_draft.p50 + branch_best
        row = FloorRow(
            photo=label,
            source=source,
            jpeg_kib=len(jpeg) / 1024,
            decode_ms=decode.p50,
            draft_decode_ms=draft.p50,
            preprocess_ms=prep.p50,
            draft_preprocess_ms=prep_draft.p50,
            embed_ms={str(k): v.p50 for k, v in embed.items()},
            floor_ms=floor,
            floor_best_threads_ms=decode.p50 + prep.p50 + branch_best,
            floor_with_draft_ms=best_floor,
        )
        log(
            f"floor {label}: decode {fmt(decode.p50)} + preprocess {fmt(prep.p50)} + image branch "
            f"{fmt(embed[default_threads].p50)} = {fmt(floor)} ms (draft decode: {fmt(best_floor)} ms)"
        )
        rows.append(row)
    return FloorResults(rows=rows, image_size=size, default_threads=default_threads)


def print_table(res: FloorResults) -> None:
    print(f"\nFloor: decode + preprocess + image branch at batch 1 (model input {res.image_size} px), ms")
    thr = sorted(res.rows[0].embed_ms, key=int)
    head = " ".join(f"{'branch ' + t + 'thr':>12}" for t in thr)
    print(
        f"{'photo':>38} {'KiB':>6} {'decode':>7} {'draft':>7} {'prep':>6} {head} {'floor':>7} {'best thr':>8} "
        f"{'draft floor':>11}"
    )
    for r in res.rows:
        emb = " ".join(f"{fmt(r.embed_ms[t], 2):>12}" for t in thr)
        print(
            f"{r.photo:>38} {r.jpeg_kib:>6.0f} {fmt(r.decode_ms):>7} {fmt(r.draft_decode_ms):>7} "
            f"{fmt(r.preprocess_ms):>6} {emb} {fmt(r.floor_ms):>7} {fmt(r.floor_best_threads_ms):>8} "
            f"{fmt(r.floor_with_draft_ms):>11}"
        )


def main() -> None:
    print_table(run(context_from_command_line(__doc__.splitlines()[0])))


if __name__ == "__main__":
    main()
