# The two commands a newcomer needs: `make run` and `make test`.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# The resolver that writes requirements.lock (only `make lock` needs it; pinned so a refresh is repeatable).
UV_VERSION := 0.13.9

# Every dependency at the version and file hash requirements.lock names (pip checks hashes only for
# requirements, not constraints: pypa/pip#8792), then the bot itself, editable, with nothing more;
# `pip check` fails when pyproject.toml asks for something the lock lacks: run `make lock` then.
$(BIN)/.installed: pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet --require-hashes -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	$(BIN)/pip check
	touch $@

.PHONY: install run emulator try test lint lock pictures
install: $(BIN)/.installed

run: install ## run the bot (needs DISCORD_TOKEN and RUNCOMFY_API_TOKEN in .env)
	@if [ ! -f .env ] && [ -z "$$DISCORD_TOKEN" ]; then \
		echo "No .env here, and DISCORD_TOKEN is not in the environment. Make one from the example:"; \
		echo ""; \
		echo "    cp .env.example .env"; \
		echo ""; \
		echo "then fill in DISCORD_TOKEN (Developer Portal -> your application -> Bot -> Reset Token)"; \
		echo "and RUNCOMFY_API_TOKEN (your RunComfy profile -> API keys); README.md, 'Setting it up for a server'."; \
		echo "No RunComfy key yet? Run 'make emulator' and paste the two lines it prints instead of the RunComfy key."; \
		exit 2; \
	fi >&2
	$(BIN)/python -m bot run

emulator: install ## the local RunComfy stand-in; it prints the two .env lines that point the bot at it
	$(BIN)/python -m bot emulator

try: install ## one image from the built-in emulator, no token needed
	$(BIN)/python -m bot generate "a red fox, watercolor" --aspect-ratio 16:9 --seed 7 --emulator --output fox.png

test: install ## the whole test suite, four workers (it mostly waits: four fit on two cores)
	$(BIN)/python -m pytest -q -n 4 --dist worksteal

pictures: install ## the README's pictures (docs/pictures/*.png): the bot against the fakes, shot by headless Chromium
	$(BIN)/python -m tools.pictures

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

# After changing dependencies in pyproject.toml: `make lock` keeps every pin it can and adds what is new;
# `make lock UPGRADE=--upgrade` moves everything to the newest versions the ranges allow.
# One universal lock (Linux, macOS, Windows; Python 3.11 and up) with the hash of every file.
lock:
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet uv==$(UV_VERSION)
	$(BIN)/uv pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
		--quiet $(UPGRADE) -o requirements.lock
