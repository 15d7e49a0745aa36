"""Accuracy of the served pipeline against the offline one, on real recordings.

`evaluation.upfall` runs the UP-Fall clips through the real service over HTTP (a server it starts
on loopback, or ``--url``) and offline (the skeleton cache or fresh `training.extract` skeletons,
`skeleton.preprocess`, ONNX Runtime, `skeleton.clip`), and compares them clip by clip; or gives a
stream's view of each clip (``--via online``). It sits above `service` and `training`: neither
imports it.
"""
