# The two commands of the README. Both set up what is missing first.
.PHONY: app test

app:
	./scripts/setup.sh
	.venv/bin/python -m explorer app

test:
	./scripts/setup.sh --test
	.venv/bin/python -m pytest -q tests
