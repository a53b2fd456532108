"""Settings the REST benchmark serves: the project's, plus bare views beside its URLs.

``DJANGO_SETTINGS_MODULE=bench.rest_settings`` is ``tasksite.settings`` with two
changes only: ``bench.rest_urls``, which puts two bare Django views (one query,
no DRF, no authentication) in front of the project's own URLs, and, when
``BENCH_DB_POOL`` is set, Django's psycopg connection pool of that size
(``OPTIONS: {"pool": ...}``) for the ASGI candidates.
"""

from __future__ import annotations

import os

from tasksite.settings import *  # noqa: F403
from tasksite.settings import DATABASES

ROOT_URLCONF = "bench.rest_urls"

if os.environ.get("BENCH_DB_POOL"):
    DATABASES["default"]["OPTIONS"] = {
        "pool": {"min_size": 2, "max_size": int(os.environ["BENCH_DB_POOL"]), "timeout": 10}
    }
    DATABASES["default"]["CONN_MAX_AGE"] = 0
