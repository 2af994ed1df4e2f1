# The two commands a newcomer needs: `make run` and `make test`.
# Each creates .venv and installs what it needs the first time.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

.PHONY: install run emulator try test lint
install: $(BIN)/.installed

run: install ## run the bot (needs DISCORD_TOKEN and RUNCOMFY_API_TOKEN in .env)
	$(BIN)/python -m bot run

try: install ## one image from the built-in emulator, no token needed
	$(BIN)/python -m bot generate "a red fox, watercolor" --aspect-ratio 16:9 --seed 7 --emulator --output fox.png

test: install ## the whole test suite
	$(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
