# The two commands of the README. Each does its own set-up (system packages, Python env, node tools)
# and is safe to run again.
.PHONY: demo test setup

setup:
	@bash infra/setup-debian.sh

demo: setup
	.venv/bin/citytwin demo

test: setup
	.venv/bin/python -m pytest -q -p no:cacheprovider
