"""Tracking: landmark geometry both stages share (`geometry`), the online tracker that gives
people stable ids frame by frame (`tracker`), and a finished clip's tracks: history, stitching of
one person's fragments and the primary person (`clip_tracks`)."""
