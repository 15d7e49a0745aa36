"""Perception: video in, tracked people out. Torch-free and FastAPI-free.

* `perception.video` -- decoding videos and images into RGB frames with timestamps.
* `perception.pose` -- the MediaPipe pose bundle, the two-graph landmarker, the estimators and
  the worker processes that can host them.
* `perception.tracking` -- the online tracker (stable ids per frame) and a finished clip's
  tracks (history, stitching of one person's fragments, the primary person).

Both `training` (skeleton extraction) and `service` (the live pipeline) run these stages, so a
model is trained on exactly what it is served. Only `skeleton` is imported from here.
"""
