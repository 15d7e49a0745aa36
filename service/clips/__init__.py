"""Whole-clip recognition (``POST /recognize`` and ``python -m service recognize``): the frames of
a video or a JSON skeleton clip (`source`), the pass that poses, tracks and classifies them with
the stages overlapping (`job`), and the clip's people, primary person and label (`result`)."""
