"""ASGI entry point: HTTP through Django, WebSocket through Channels (served by daphne)."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tasksite.settings")

from django.conf import settings  # noqa: E402

from tasksite.statement_timeout import limit_statements  # noqa: E402

# A web process: statements end after DATABASE_STATEMENT_TIMEOUT_MS (jobs' do not).
limit_statements(settings.DATABASES, settings.DATABASE_STATEMENT_TIMEOUT_MS)
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402

from tasks.routing import websocket_application  # noqa: E402

if not settings.REDIS_URL:
    # The embedded default: jobs and their schedule run in this process (Celery's
    # own worker on the memory:// broker), so nothing else needs installing.
    from operations.embedded import start_embedded_worker

    start_embedded_worker()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": websocket_application(),
    }
)
