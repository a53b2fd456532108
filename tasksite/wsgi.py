"""WSGI entry point (gunicorn): REST and the staff pages in production."""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksite.settings")

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

from tasksite.statement_timeout import limit_statements  # noqa: E402

# A web process: statements end after DATABASE_STATEMENT_TIMEOUT_MS (jobs' do not).
limit_statements(settings.DATABASES, settings.DATABASE_STATEMENT_TIMEOUT_MS)
application = get_wsgi_application()
