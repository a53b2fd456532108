"""First-run helper for ``make run``: a local admin when the database has no user."""

import secrets

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand

from tasks.auth.bearer import issue_local_token


class Command(BaseCommand):
    help = "Create the user 'admin' with a random password and an API token if no user exists."

    def add_arguments(self, parser):
        parser.add_argument("--url", default="http://127.0.0.1:8000", help="where it is served")

    def handle(self, *args, url: str, **options):
        User = get_user_model()
        if settings.ENTRA_MODE or User.objects.exists():
            self.stdout.write(
                "Users exist. Get an API token with: "
                ".venv/bin/python manage.py create_api_token <username>"
            )
            return
        password = secrets.token_urlsafe(12)
        user = User.objects.create_superuser("admin", "", password)
        token = issue_local_token(user, name="first run")
        self.stdout.write(
            "\nCreated the local admin user.\n"
            f"  Log in at {url}/ as admin / {password}\n"
            f"  API token: {token}\n"
            f"  e.g. curl -H 'Authorization: Bearer {token}' {url}/task-status\n"
            "  More tokens: .venv/bin/python manage.py create_api_token admin\n"
        )
