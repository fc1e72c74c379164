# The README's two commands: `make run` (whole platform) and `make test` (test suite).
.PHONY: run test lint fmt bench setup migrate

run:
	bash scripts/run.sh

test:
	bash scripts/test.sh $(ARGS)

setup:
	bash scripts/setup.sh

lint:
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy .

fmt:
	.venv/bin/ruff format .
	.venv/bin/ruff check --fix .

bench:
	bash scripts/setup.sh
	.venv/bin/python -m bench $(ARGS)

migrate:
	.venv/bin/python manage.py migrate
