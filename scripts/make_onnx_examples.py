"""Write the example networks of :mod:`playground.model.examples` as ``.onnx`` files.

    python scripts/make_onnx_examples.py                       # artifacts/onnx/, a few KB each
    python scripts/make_onnx_examples.py -o DIR --weights random --no-classifier

By default the weights are declared (graph inputs with a shape and no data: what the importer
needs, a few KB per model); ``--weights random`` stores seeded random initializers instead
(ResNet-18 ~45 MB), for runtimes that execute the model (ONNX Runtime in the benchmark). The
files are generated, never committed: tests build the models in memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from playground.model.examples import EXAMPLES, build  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default=str(ROOT / "artifacts" / "onnx"))
    parser.add_argument("--weights", choices=("declared", "random"), default="declared")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--no-classifier", action="store_true",
                        help="end ResNet-18 and MobileNet v2 at their last conv block")
    parser.add_argument("names", nargs="*", help=f"some of {', '.join(EXAMPLES)} (default: all)")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.names) - set(EXAMPLES))
    if unknown:
        parser.error(f"no example {unknown[0]!r} (choose from {', '.join(EXAMPLES)})")
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    for name in args.names or EXAMPLES:
        options = {"batch": args.batch, "weights": args.weights}
        if name != "yolo_tiny":
            options["classifier"] = not args.no_classifier
        path = out / f"{name}.onnx"
        path.write_bytes(build(name, **options).SerializeToString())
        print(f"{path}: {path.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
