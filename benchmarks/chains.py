"""The benchmark's chains: layers of real networks and a few random shapes, fixed before
anything was measured.

``CHAINS`` (name -> raw chain) is what ``benchmarks/auto_bench.py`` measures: ResNet-18 and -50
blocks, MobileNet v1/v2, ResNeXt (grouped), dilated (DeepLab-style) convolutions, stems with
7x7 / stride-2 kernels and pooling, high-resolution shallow chains, batch 2, and random
shapes drawn once with a fixed seed (``python benchmarks/chains.py`` prints them).
"""

from __future__ import annotations

import json
import random


def conv(k: int, kernel: int = 3, stride: int = 1, groups: int = 1, dilation: int = 1,
         padding: int | None = None) -> dict:
    pad = (kernel - 1) * dilation // 2 if padding is None else padding
    return {"op": "conv2d", "channels": k, "kernel": kernel, "stride": stride,
            "padding": pad, "groups": groups, "dilation": dilation}


BN, RELU, RELU6 = {"op": "batch_norm"}, {"op": "relu"}, {"op": "relu6"}


def chain(shape: list[int], *layers: dict) -> dict:
    return {"input": {"shape": shape}, "layers": list(layers)}


def _random_chains(seed: int = 2026, count: int = 3) -> dict[str, dict]:
    """Random but plausible shapes (drawn once; the seed is fixed)."""
    rng = random.Random(seed)
    out = {}
    for i in range(count):
        c = rng.choice((24, 40, 48, 96))
        hw = rng.choice((30, 40, 52, 70))
        k1 = rng.choice((32, 48, 64))
        layers = [conv(k1, rng.choice((3, 5))), {"op": "bias_add"}, RELU,
                  conv(rng.choice((32, 64)), 3, stride=rng.choice((1, 2)))]
        if rng.random() < 0.5:
            layers.append({"op": rng.choice(("max_pool2d", "avg_pool2d")), "kernel": 2})
        out[f"random_{i + 1}"] = chain([1, c, hw, hw], *layers)
    return out


CHAINS: dict[str, dict] = {
    # ResNet-18 / 34
    "resnet18_stem": chain([1, 3, 224, 224], conv(64, 7, 2), BN, RELU,
                           {"op": "max_pool2d", "kernel": 3, "stride": 2, "padding": 1}),
    "resnet18_block": chain([1, 64, 56, 56], conv(64), BN, RELU, conv(64), BN,
                            {"op": "add", "other": "data"}, RELU),
    "resnet18_conv_bn_relu": chain([1, 64, 56, 56], conv(64), BN, RELU),
    "resnet18_down": chain([1, 64, 56, 56], conv(128, 3, 2), BN, RELU, conv(128), BN, RELU),
    "resnet18_layer3": chain([1, 256, 14, 14], conv(256), BN, RELU),
    "resnet18_layer4": chain([1, 512, 7, 7], conv(512), BN, RELU),
    "resnet_residual_256": chain([1, 256, 14, 14], conv(256), BN,
                                 {"op": "add", "other": "data"}, RELU),
    # ResNet-50 bottleneck
    "resnet50_bottleneck": chain([1, 256, 56, 56], conv(64, 1), BN, RELU, conv(64), BN, RELU,
                                 conv(256, 1), BN, {"op": "add", "other": "data"}, RELU),
    "resnet50_expand_1x1": chain([1, 64, 56, 56], conv(256, 1), BN, RELU),
    # MobileNet v1 / v2
    "mobilenet_dw_pw": chain([1, 32, 112, 112], conv(32, 3, groups=32), BN, RELU6,
                             conv(64, 1), BN, RELU6),
    "mobilenet_dw_s2": chain([1, 64, 112, 112], conv(64, 3, 2, groups=64), BN, RELU6,
                             conv(128, 1), BN, RELU6),
    "mobilenetv2_block": chain([1, 24, 56, 56], conv(144, 1), RELU6,
                               conv(144, 3, groups=144), RELU6, conv(24, 1),
                               {"op": "add", "other": "data"}),
    # ResNeXt (grouped)
    "resnext_grouped_3x3": chain([1, 128, 56, 56], conv(128, 3, groups=32), BN, RELU),
    "resnext_block": chain([1, 256, 28, 28], conv(128, 1), RELU, conv(128, 3, groups=32),
                           RELU, conv(256, 1), {"op": "add", "other": "data"}),
    # dilated (DeepLab-style)
    "dilated_256": chain([1, 256, 28, 28], conv(256, 3, dilation=2), RELU),
    "dilated_pair": chain([1, 64, 64, 64], conv(64, 3, dilation=2), RELU,
                          conv(64, 3, dilation=4), RELU),
    # stems
    "vgg_stem_pool": chain([1, 3, 224, 224], conv(64), RELU, conv(64), RELU,
                           {"op": "max_pool2d", "kernel": 2}),
    # high resolution, shallow
    "hires_shallow": chain([1, 16, 256, 256], conv(16), RELU, conv(16), RELU),
    "hires_conv_pool": chain([1, 8, 512, 512], conv(16), RELU,
                             {"op": "max_pool2d", "kernel": 2}),
    # DenseNet-121 transition (added with ONNX Runtime in the table: a prologue before a conv)
    "densenet_transition": chain([1, 256, 28, 28], BN, RELU, conv(128, 1),
                                 {"op": "avg_pool2d", "kernel": 2}),
    # batch 2
    "batch2_conv_bn_relu": chain([2, 64, 56, 56], conv(64), BN, RELU),
    "batch2_pointwise": chain([2, 128, 28, 28], conv(256, 1), RELU),
    **_random_chains(),
}


if __name__ == "__main__":
    print(json.dumps(CHAINS, indent=1))
