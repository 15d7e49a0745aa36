"""Inference service: the HTTP/WebSocket API, the clip and stream pipelines, and the classifier,
on top of `perception` (video, pose, tracking). Imports only `skeleton` and `perception` (no torch)."""
