"""Benchmarks of the recognition pipeline: ``python -m bench`` (see docs/benchmarks.md).

Sections, measured side by side in one run on real clips:

* ``classifier`` -- ONNX Runtime vs the same model in PyTorch eager, per shipped model and batch size;
* ``pipeline`` -- a bare decode + MediaPipe pose loop vs ``POST /recognize`` on a real server;
* ``stream`` -- 1..N concurrent WebSocket clients at 15 / 30 fps: latency, drops, CPU, memory, batching.

The service package never imports this one; torch, psutil, matplotlib and websockets are
bench/dev dependencies only.
"""
