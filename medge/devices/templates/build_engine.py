#!/usr/bin/env python3
"""Build the TensorRT engine of this medge bundle ON THE TARGET DEVICE (standalone; no medge needed).

Reads ``engine_config.json`` (written by ``medge compile``) and applies the same settings as
``build_engine.sh``: precision flags, DLA core and GPU fallback, workspace size, builder
optimization level, timing cache and the optimization profile for dynamic shapes.

TensorRT engines are not portable across devices or TensorRT versions: build this on the Jetson
that will run it, with the TensorRT version named in engine_config.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Build this bundle's TensorRT engine on the target device.")
    parser.add_argument("--config", default=str(HERE / "engine_config.json"), help="engine_config.json of the bundle")
    parser.add_argument("--onnx", help="ONNX model to parse (default: from the config)")
    parser.add_argument("--output", help="engine file to write (default: from the config)")
    parser.add_argument("--timing-cache", help="timing cache file (default: from the config)")
    parser.add_argument("--verbose", action="store_true", help="verbose TensorRT logging")
    return parser.parse_args(argv)


def _flag(cfg: dict, name: str) -> bool:
    """A builder flag of engine_config.json (``builder_flags``; top level in bundles from older medge)."""
    return bool((cfg.get("builder_flags") or cfg).get(name))


def _version_tuple(version: str) -> tuple[int, ...]:
    return tuple(int(p) for p in version.split(".")[:2] if p.isdigit())


def build(cfg: dict, onnx_path: Path, engine_path: Path, cache_path: Path, verbose: bool) -> int:
    try:
        import tensorrt as trt
    except ImportError:
        print(
            "build_engine.py: the 'tensorrt' Python package is not installed here. Run this on the target "
            f"device ({cfg.get('target')}) with TensorRT {cfg.get('tensorrt_version')} (JetPack ships it as "
            "python3-libnvinfer), or use build_engine.sh with trtexec.",
            file=sys.stderr,
        )
        return 3
    expected = cfg.get("tensorrt_version", "")
    if expected and _version_tuple(trt.__version__)[:1] != _version_tuple(expected)[:1]:
        print(f"build_engine.py: warning: TensorRT {trt.__version__} here, the bundle expects {expected}", file=sys.stderr)
    logger = trt.Logger(trt.Logger.VERBOSE if verbose else trt.Logger.WARNING)
    builder = trt.Builder(logger)
    flags = 0
    if _version_tuple(trt.__version__) < (10,):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH)
    if _flag(cfg, "strongly_typed"):
        flags |= 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        for i in range(parser.num_errors):
            print(f"build_engine.py: ONNX parser: {parser.get_error(i)}", file=sys.stderr)
        return 1
    config = builder.create_builder_config()
    workspace = int(cfg["workspace_mb"]) << 20
    if hasattr(config, "set_memory_pool_limit"):
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace)
    else:  # TensorRT < 8.4
        config.max_workspace_size = workspace
    if _flag(cfg, "fp16"):
        config.set_flag(trt.BuilderFlag.FP16)
    if _flag(cfg, "int8"):
        config.set_flag(trt.BuilderFlag.INT8)
    level = cfg.get("builder_optimization_level")
    if level is not None and hasattr(config, "builder_optimization_level"):
        config.builder_optimization_level = int(level)
    if cfg.get("dla_core") is not None:
        config.default_device_type = trt.DeviceType.DLA
        config.DLA_core = int(cfg["dla_core"])
        if cfg.get("allow_gpu_fallback"):
            config.set_flag(trt.BuilderFlag.GPU_FALLBACK)
    dynamic = [i for i in cfg["inputs"] if i["min"] != i["max"]]
    if dynamic:
        profile = builder.create_optimization_profile()
        for inp in cfg["inputs"]:
            profile.set_shape(inp["name"], inp["min"], inp["opt"], inp["max"])
        config.add_optimization_profile(profile)
    cache = config.create_timing_cache(cache_path.read_bytes() if cache_path.exists() else b"")
    config.set_timing_cache(cache, ignore_mismatch=False)
    t0 = time.perf_counter()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        print("build_engine.py: TensorRT could not build the engine (see the log above)", file=sys.stderr)
        return 1
    engine_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = engine_path.with_name(engine_path.name + ".tmp")
    tmp.write_bytes(bytes(serialized))
    tmp.replace(engine_path)
    cache_path.parent.mkdir(parents=True, exist_ok=True)
    cache_path.write_bytes(bytes(config.get_timing_cache().serialize()))
    print(f"built {engine_path} in {time.perf_counter() - t0:.1f} s with TensorRT {trt.__version__}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    config_path = Path(args.config)
    try:
        cfg = json.loads(config_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        print(f"build_engine.py: cannot read {config_path}: {exc}", file=sys.stderr)
        return 2
    base = config_path.parent
    onnx_path = Path(args.onnx) if args.onnx else base / cfg["onnx"]
    engine_path = Path(args.output) if args.output else base / cfg["engine"]
    cache_path = Path(args.timing_cache) if args.timing_cache else base / cfg["timing_cache"]
    if not onnx_path.is_file():
        print(f"build_engine.py: ONNX model not found: {onnx_path}", file=sys.stderr)
        return 2
    return build(cfg, onnx_path, engine_path, cache_path, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
