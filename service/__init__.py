"""Inference service: video decoding, pose estimation, tracking, and the HTTP/WebSocket API."""
