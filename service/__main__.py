"""Command line: ``skelact serve`` and ``skelact recognize VIDEO`` (also ``python -m service ...``).

``recognize`` runs the very pipeline the HTTP endpoint runs (same ``ClipJob``), offline. Its stdout
is the JSON response and nothing else; everything else goes to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from service.core.config import Settings


def _serve(args: argparse.Namespace) -> int:
    from service.lifecycle import serve
    from service.memory import tune_malloc

    tune_malloc()  # before the app's threads start (docs/security.md, "Memory")
    from service.app import create_app

    overrides = {k: v for k, v in (("host", args.host), ("port", args.port)) if v is not None}
    settings = Settings(**overrides)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    serve(create_app(settings), settings)  # uvicorn; streams close with 1001 on SIGTERM
    return 0


def _private_stdout() -> TextIO:
    """A copy of stdout for the result alone; file descriptor 1 and ``sys.stdout`` then point at
    stderr, so whatever a library prints, from Python or native code (ONNX Runtime, MediaPipe's
    logging), never gets into ``skelact recognize clip.mp4 > result.json``."""
    sys.stdout.flush()
    out = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return out


async def _recognize(args: argparse.Namespace, out: TextIO) -> int:
    from service.clips.job import ClipJob
    from service.core.errors import ServiceError
    from service.state import ServiceState

    settings = Settings()
    state = ServiceState(settings)
    try:
        await state.start()
        if not state.ready:
            print(f"error: {state.not_ready_reason()}", file=sys.stderr)
            return 2
        try:
            model = state.model(args.model, args.unknown_threshold)  # as /recognize: sets, unknown
            job = ClipJob(state, model, args.top_k, args.stride)
            resp = await job.video(args.video, args.video.name, args.overlay)
        except ServiceError as exc:
            print(f"error: {exc.message}" + (f" ({exc.hint})" if exc.hint else ""), file=sys.stderr)
            return 2
    finally:
        await state.close()
    text = resp.model_dump_json(indent=2)
    if args.json:
        args.json.write_text(text)
    else:
        out.write(text + "\n")
        out.flush()
    clip = resp.clip
    summary = f"{args.video.name}: " + (
        f"{clip.label} ({clip.confidence:.2f}), track {clip.track_id}" if clip else "nobody detected"
    )
    print(
        summary + f"; {resp.stats.frames_processed} frames at {resp.stats.fps_processed:.1f} fps on "
        f"{resp.provider}",
        file=sys.stderr,
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="skelact", description="skeleton action recognition service")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP/WebSocket server (settings: SKELACT_* variables)")
    serve.add_argument("--host", default=None, help="bind address (default SKELACT_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, default=None, help="port (default SKELACT_PORT or 8000)")
    rec = sub.add_parser("recognize", help="recognise the actions in a video offline (same pipeline)")
    rec.add_argument("video", type=Path)
    rec.add_argument(
        "--model",
        default=None,
        help="model name, an action set as set:NAME, or one next to a base model as set:NAME,MODEL "
        "(default: SKELACT_DEFAULT_MODEL or the first)",
    )
    rec.add_argument(
        "--unknown-threshold",
        type=float,
        default=None,
        help="open-set threshold: windows below it are 'unknown' (default: the manifest's; -inf: never)",
    )
    rec.add_argument("--json", type=Path, default=None, help="write the JSON result here (default: stdout)")
    rec.add_argument("--overlay", type=Path, default=None, help="write an annotated video (.webm or .mp4)")
    rec.add_argument("--top-k", type=int, default=None)
    rec.add_argument("--stride", type=int, default=None, help="model frames between windows")
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if not args.video.is_file():
        parser.error(f"{args.video} is not a file")
    return asyncio.run(_recognize(args, _private_stdout()))


if __name__ == "__main__":
    raise SystemExit(main())
