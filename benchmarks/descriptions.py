"""Titles and descriptions of the fast presets (numbers from benchmarks/bench.py, see README).

``PRESETS`` maps a preset name to (recipe, title, description); ``make_presets.py`` exports it.
"""

import json
from pathlib import Path

import recipes

_MEASURED = (
    "Measured by benchmarks/bench.py on the 2-core Zen 3 (AVX2, FMA peak ~205 GFLOP/s), "
    "interleaved with PyTorch 2.13 CPU on 2 threads"
)

PRESETS = {
    "seed_conv_relu_fused": (
        recipes.recipe_seed_conv_relu,
        "Seed program 1: conv 16x16 + relu fused, vectorized over the batch",
        "The seed's first program (16x3x244x244 input, 10 filters of 3x16x16, stride 1, no "
        "padding, relu; 12.9 GFLOP). The output is 229x229 (229 is prime), so no column tile "
        "divides it: the kernel vectorizes over the batch instead (16 images = 2 vectors of 8). "
        "cache_read + transform_layout copy the input to [c, h, w, n] inside the kernel; "
        "cache_write + transform_layout keep the accumulator tile (5 channels x 2 vectors of 8 "
        "images = 10 ymm registers) with n innermost, so every FMA uses a contiguous vector and "
        "a broadcast weight. relu is reverse_compute_inline'd into the accumulator's write-back: "
        "one loop nest, no second pass over the 33 MB output. Rows are split over the 2 cores. "
        "{seed_conv_relu_fused}",
    ),
    "seed_two_conv_fused": (
        recipes.recipe_seed_two_conv,
        "Seed program 2 (corrected): conv1+relu computed per tile of conv2, halos recomputed",
        "The seed's second program with the kernel shape fixed: conv2 takes conv1's 10 "
        "channels (10x10x16x16), so the chain is 16x3x244x244 -> conv 10x3x16x16 -> relu -> "
        "conv 10x10x16x16 (50 GFLOP). Both convs use the batch-vectorized tile of the first "
        "seed preset. conv2's 214 output rows are split into 2 tiles of 107 (one per core, "
        "parallel); conv1 (its write-back applying relu) is compute_at that tile, so each tile "
        "computes the 107 + 15 rows of conv1 it reads: the 15 halo rows are computed by both "
        "tiles (+6.5% of conv1's work). The intermediate is laid out [c, h, w, n]. What it "
        "buys: nothing measurable in time (the per-tile intermediate, 18 MB, is still larger "
        "than L2; the unfused schedule streams it from L3/memory at the same speed), but it "
        "shows the halo recomputation on the seed program and stays 2.5x faster than PyTorch. "
        "{seed_two_conv_fused}",
    ),
    "resnet_conv_relu_conv": (
        recipes.recipe_resnet_conv_relu_conv,
        "ResNet conv3x3-relu-conv3x3 (1x64x56x56), register-tiled for AVX2",
        "Each 3x3 conv (64->64, pad 1) is a register-tiled direct convolution: cache_write "
        "keeps a tile of 4 output channels x 2 rows x 8 columns (8 ymm accumulators) in "
        "registers while the reduction over 64 channels x 3 x 3 runs; the 8 columns are one "
        "AVX2 vector, the tile loops are unrolled, rows of tiles run in parallel on the 2 cores "
        "and each conv's padding is computed per row tile (compute_at). relu is "
        "compute_inline'd into conv2's padding, so it costs no pass of its own (in the "
        "benchmark this was within noise of a separate relu pass: the 800 KB tensor stays in "
        "cache). "
        "{resnet_conv_relu_conv}",
    ),
    "resnet_block_bn_add": (
        recipes.recipe_resnet_block_bn_add,
        "ResNet basic block: conv-bn-relu-conv-bn-add-relu, epilogues fused",
        "conv3x3-bn-relu-conv3x3-bn-add(input)-relu on 1x64x56x56. The same register-tiled "
        "convs as resnet_conv_relu_conv; the per-channel batch-norm scale and shift are inlined "
        "(LLVM hoists the sqrt out of the tile), bn1+relu1 run on each accumulator tile as it is "
        "written back, and bn2+add+relu2 likewise on conv2's tiles: two loop nests and no "
        "elementwise pass over memory. {resnet_block_bn_add}",
    ),
    "depthwise_pointwise_fused": (
        recipes.recipe_depthwise_pointwise_fused,
        "MobileNet depthwise 3x3 -> pointwise 1x1, fused per row tile (1x128x224x224)",
        "Depthwise 3x3 (pad 1, groups 128) then pointwise 1x1 (128->128) on 1x128x224x224: "
        "the 25.7 MB intermediate fits neither the 512 KB L2 nor, next to the input and output "
        "of the same size, the 32 MB L3. The pointwise conv is register-tiled (4 channels x 2 "
        "rows x 8 columns); the depthwise conv and its padding are compute_at its row tile, so "
        "the 2 intermediate rows x 128 channels (229 KB) are produced just before they are "
        "read, from L2 instead of memory. The depthwise conv keeps 2 vectors of 8 columns in "
        "registers (two independent 9-tap FMA chains) with the taps unrolled. The intermediate "
        "is laid out [n, h, w/8, c, w%8] (transform_layout) so the pointwise reduction over "
        "channels reads contiguous vectors (in plain NCHW the channel stride maps all channels "
        "to a few L1 sets). "
        "{depthwise_pointwise_fused}",
    ),
    "depthwise_pointwise_unfused": (
        recipes.recipe_depthwise_pointwise_unfused,
        "MobileNet depthwise 3x3 -> pointwise 1x1, best unfused schedule (for comparison)",
        "The same chain and the same pointwise schedule and blocked intermediate layout as "
        "depthwise_pointwise_fused, but the depthwise conv runs as its own pass over the whole "
        "image (parallel over channels, 2 vectors of 8 columns, taps unrolled, padding computed "
        "per channel plane): the 25.7 MB intermediate goes through memory. "
        "{depthwise_pointwise_unfused}",
    ),
    "conv_bias_bn_relu_fused": (
        recipes.recipe_conv_bias_bn_relu_fused,
        "Pointwise conv + bias + batch norm + relu fused into the conv's write-back",
        "1x1 conv 32->32 on 1x32x224x224 (6.4 MB per tensor) followed by bias, batch norm and "
        "relu. The conv is register-tiled (4 channels x 2 rows x 8 columns); bias and the "
        "batch-norm scale/shift are inlined into bn1, relu into bn1, and bn1 runs on each "
        "accumulator tile as it is written back: one pass over the output. A 1x1 conv has few "
        "FLOP per output element (64), so the three elementwise passes that fusion removes are "
        "a large part of the time. {conv_bias_bn_relu_fused}",
    ),
    "conv_bias_bn_relu_separate": (
        recipes.recipe_conv_bias_bn_relu_separate,
        "Pointwise conv + bias + batch norm + relu as separate passes (for comparison)",
        "Exactly the conv schedule of conv_bias_bn_relu_fused; bias, batch norm and relu are "
        "left as three passes of their own (each parallel over channels, vectorized by 8), "
        "each reading and writing a 6.4 MB tensor. {conv_bias_bn_relu_separate}",
    ),
    "conv_relu_conv_halo": (
        recipes.recipe_conv_relu_conv_halo,
        "conv-relu-conv fused with recomputed halos (tiles of 28 rows)",
        "The ResNet conv3x3-relu-conv3x3 chain (1x64x56x56) with conv2 split into 2 tiles of "
        "28 output rows (one per core); conv1, its padding and conv2's padding (applying relu) "
        "are compute_at the tile, so each tile computes the 30 rows of conv1 it needs: 2 halo "
        "rows are computed twice (+7% of conv1). conv1's register tile is 8 channels x 1 row "
        "so the halo guard stays outside the unrolled tile. What it buys: nothing on this "
        "machine, it is slower than the unfused resnet_conv_relu_conv: the 800 KB intermediate "
        "mostly stays in L2/L3 anyway, while fusion adds 7% recomputation, an 8x1 conv1 tile "
        "(more loads per FMA than 4x2) and only 2 parallel tiles. Tiles of 4, 8 and 14 rows "
        "were slower still. {conv_relu_conv_halo}",
    ),
}

RESULTS = Path(__file__).resolve().parent / "results.json"


def _sentence(res: dict, load: float) -> str:
    by = {r["key"]: r for r in res["rows"]}
    p = by["preset"]
    parts = [
        f"{p['median_ms']:.3g} ms, {p['gflops']:.0f} GFLOP/s "
        f"({100 * p['share_of_peak']:.0f}% of the {res['peak_gflops_best']:.0f} GFLOP/s "
        "FMA peak measured in the same rounds)",
        f"{by['torch']['speedup_of_preset']:.2f}x PyTorch ({by['torch']['median_ms']:.3g} ms)",
    ]
    if "unscheduled" in by:
        parts.append(f"{by['unscheduled']['speedup_of_preset']:.0f}x the unscheduled chain")
    parts.append(
        f"{by['unfused']['speedup_of_preset']:.2f}x {by['unfused']['name']} "
        f"({by['unfused']['median_ms']:.3g} ms)"
    )
    return f"{_MEASURED} (load average {load:.1f}): " + "; ".join(parts) + "."


def measured() -> dict:
    """{preset: sentence of numbers from benchmarks/results.json} ('' where not measured)."""
    out = {name: "" for name in PRESETS}
    if RESULTS.is_file():
        data = json.loads(RESULTS.read_text())
        for res in data["results"]:
            load = data.get("load_start", data["load_end"])[0]
            if res["preset"] in out:
                out[res["preset"]] = _sentence(res, load)
            other = res.get("unfused_preset")
            if other in out and other not in ("", res["preset"]) and not out[other]:
                u = next(r for r in res["rows"] if r["key"] == "unfused")
                out[other] = (
                    f"{_MEASURED} (load average {load:.1f}): {u['median_ms']:.3g} ms, "
                    f"{u['gflops']:.0f} GFLOP/s; {res['preset']} is "
                    f"{u['speedup_of_preset']:.2f}x faster."
                )
    return out
