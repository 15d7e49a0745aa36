"""Pose estimation: the offline model bundle (`bundle`), MediaPipe's landmarker as two graphs
(`graph`), `PersonPose` building and duplicate removal (`person`), the estimators (`estimator`)
and worker processes that host estimators (`workers`). MediaPipe types never leave this package."""
