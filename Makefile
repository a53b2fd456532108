# The two set-up commands: `make run` (a complete service on the embedded default)
# and `make test` (the whole suite, against PostgreSQL and Redis).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000
TEST_DATABASE_URL ?= postgres://postgres@127.0.0.1:5432/tasks
TEST_REDIS_URL ?= redis://127.0.0.1:6379/0
PYTEST_WORKERS ?= 2
# mypy.ini names the packages; django-stubs imports the settings: on the embedded default
# (no service, so no key is needed: production settings refuse to load without one),
# quietly (no dev-key warning).
MYPY := TASKSITE_QUIET_DEV_WARNING=1 DATABASE_URL= REDIS_URL= SECRET_KEY= $(VENV)/bin/mypy

.PHONY: run test lint install install-dev bench migrate worker beat stack

$(VENV)/.installed: requirements.txt
	$(PYTHON) -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --upgrade pip
	$(VENV)/bin/pip install --quiet -r requirements.txt
	touch $@

# Tests, type checks and benchmarks need more than the service (requirements-dev.txt).
$(VENV)/.installed-dev: $(VENV)/.installed requirements-dev.txt
	$(VENV)/bin/pip install --quiet -r requirements-dev.txt
	touch $@

install: $(VENV)/.installed

install-dev: $(VENV)/.installed-dev

migrate: install
	$(PY) manage.py migrate --noinput

run: migrate
	$(PY) manage.py ensure_local_admin --url http://127.0.0.1:$(PORT)
	$(PY) -m daphne -b 127.0.0.1 -p $(PORT) --websocket-max-message-size 65536 tasksite.asgi:application

# scripts/test_services.py: DATABASE_URL / REDIS_URL when given, else the servers on the
# default ports when they answer, else throwaway ones of its own (TEST_SERVICES=own:
# always), stopped afterwards; as root it first installs the Debian packages missing.
test: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MYPY)
	$(PY) scripts/test_services.py --default-database-url $(TEST_DATABASE_URL) \
		--default-redis-url $(TEST_REDIS_URL) -- \
		$(VENV)/bin/pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

lint: install-dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(MYPY)

bench: install-dev
	$(PY) -m bench $(BENCH_ARGS)

# Production layout (README, "Running in production"): gunicorn serves HTTP, daphne
# the WebSocket, one proxy in front sends /ws/ to daphne. Needs REDIS_URL.
HOST ?= 127.0.0.1
WS_PORT ?= 8001
WEB_WORKERS ?= 4
.PHONY: web websocket

# deploy/gunicorn.conf.py: sync workers, and the request limits nginx's agree with.
web: install
	WEB_WORKERS=$(WEB_WORKERS) $(VENV)/bin/gunicorn -c deploy/gunicorn.conf.py -b $(HOST):$(PORT) tasksite.wsgi:application

# Django keeps a persistent connection per thread, and under ASGI threads come
# and go: daphne connects per use (Django's advice for ASGI) unless told otherwise.
websocket: install
	DB_CONN_MAX_AGE=$${DB_CONN_MAX_AGE:-0} $(PY) -m daphne -b $(HOST) -p $(WS_PORT) --websocket-max-message-size 65536 tasksite.asgi:application

# Production layout with REDIS_URL set: separate worker and beat processes.
worker: install
	$(VENV)/bin/celery -A tasksite worker --pool prefork --concurrency 1 --loglevel INFO

beat: install
	$(VENV)/bin/celery -A tasksite beat --loglevel INFO

# The whole production layout on this machine (deploy/stack.py): the shipped nginx
# configuration on http://127.0.0.1:$(STACK_PORT) in front of gunicorn, two daphne,
# a Celery worker and beat, on PostgreSQL and Redis (DATABASE_URL, REDIS_URL).
# Ctrl-C stops it all.
STACK_PORT ?= 8080
stack: install
	DATABASE_URL=$${DATABASE_URL:-$(TEST_DATABASE_URL)} REDIS_URL=$${REDIS_URL:-$(TEST_REDIS_URL)} \
		STACK_PORT=$(STACK_PORT) $(PY) -m deploy.stack
