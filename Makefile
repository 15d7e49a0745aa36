# The two commands a new machine needs: `make serve` and `make test`.
.PHONY: serve test lint setup-service setup-dev

serve: setup-service
	.venv/bin/skelact serve

test: setup-dev lint
	.venv/bin/python -m pytest -q -n 2 --dist loadfile --durations=15

lint: setup-dev
	.venv/bin/ruff check .
	.venv/bin/mypy skeleton perception models training export service evaluation bench scripts

setup-service:
	scripts/setup.sh service

setup-dev:
	scripts/setup.sh dev
