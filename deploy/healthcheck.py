"""Container health check: GET a health endpoint of the local service, exit 0 on HTTP 200, else 1.

Used by the Dockerfile's HEALTHCHECK and docker-compose.yml (standard library only, no curl in the
image)::

    python /app/deploy/healthcheck.py [PATH]      # PATH defaults to /health/ready

The port is SKELACT_PORT (default 8000). With SKELACT_API_KEYS set, the first key is sent in the
X-API-Key header (readiness answers without one too, but then without the details). The body of a
failed check is printed, so that
``docker inspect --format '{{json .State.Health}}' <container>`` shows why the service is not ready.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.error
import urllib.request

DEFAULT_PATH = "/health/ready"


def first_api_key(value: str | None) -> str | None:
    """The first key of SKELACT_API_KEYS, written as the service reads it (``a,b`` or a JSON list)."""
    if not value or not value.strip():
        return None
    keys = json.loads(value) if value.strip().startswith("[") else value.split(",")
    return next((str(k).strip() for k in keys if str(k).strip()), None)


def check(path: str = DEFAULT_PATH, port: int | None = None, timeout: float = 4.0) -> tuple[bool, str]:
    """(healthy, detail) for ``GET http://127.0.0.1:<port><path>``."""
    port = port if port is not None else int(os.environ.get("SKELACT_PORT", "8000"))
    url = f"http://127.0.0.1:{port}{path}"
    request = urllib.request.Request(url)
    key = first_api_key(os.environ.get("SKELACT_API_KEYS"))
    if key:
        request.add_header("X-API-Key", key)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status == 200, f"{response.status} {response.read(2000).decode(errors='replace')}"
    except urllib.error.HTTPError as exc:  # 503 while models load, etc.
        return False, f"{exc.code} {exc.read(2000).decode(errors='replace')}"
    except (OSError, ValueError) as exc:  # refused, timeout, bad port
        return False, f"{url}: {exc}"


def main(argv: list[str]) -> int:
    healthy, detail = check(argv[1] if len(argv) > 1 else DEFAULT_PATH)
    if not healthy:
        print(detail, file=sys.stderr)
    return 0 if healthy else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))
